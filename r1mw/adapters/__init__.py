"""Adapters between native clients and the pipeline; :func:`wrap` picks the right one."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any, Callable, cast

from ..pipeline import Pipeline
from ..settings import Settings
from .callable import wrap_callable
from .litellm import is_litellm_callable, wrap_litellm
from .openai import CachedClient, is_openai_client
from ..errors import WrapError

__all__ = ["wrap"]


def wrap(target: Any, pipe: Pipeline | None = None, *, returns: Any = None, chunk_type: Any = None) -> Any:
    """Wrap a client so its chat completions go through ``pipe``.

    * an ``AsyncOpenAI``-compatible client: ``client.chat.completions.create`` is cached,
      every other attribute passes through;
    * ``litellm.acompletion``: hits come back as LiteLLM's ``ModelResponse``;
    * any async callable taking OpenAI chat kwargs: hits come back in the type its misses
      have (dict, or the class of the object it returns; ``returns=`` fixes it up front,
      ``chunk_type=`` the class of the chunks it streams). Until the type is known, nothing
      stored is served to it (it is learned from its first miss, never guessed).

    Without ``pipe``, a ``Pipeline(Settings.from_env())`` is made for each event loop that
    uses the wrapper: it starts on first use and closes (writing what it still holds) when
    that loop shuts down, so each ``asyncio.run()`` gets its own over the same tiers.

    >>> async def llm(**kwargs):
    ...     return {"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
    >>> cached = wrap(llm, Pipeline(Settings(stages="exact")))
    """
    if pipe is None:
        # Stands in for a Pipeline: request and handle, the rest forwarded (__getattr__).
        pipe = cast(Pipeline, _PipelinePerLoop(Settings.from_env()))
    if is_openai_client(target):
        return CachedClient(target, pipe)
    if is_litellm_callable(target):
        return wrap_litellm(target, pipe)
    if builtins.callable(target):  # (the submodule .callable shadows the builtin here)
        return wrap_callable(target, pipe, returns=returns, chunk_type=chunk_type)
    raise WrapError(
        f"r1mw.wrap() takes an AsyncOpenAI-compatible client, litellm.acompletion or an async callable, "
        f"not {type(target).__name__}"
    )


class _PipelinePerLoop:
    """What ``wrap(target)`` without a pipeline serves through: ``Pipeline(settings)``, one per
    event loop. A pipeline belongs to the loop its workers run on, and nobody else can close
    this one, so each is made on its loop's first request and closed when that loop shuts
    down (:meth:`Pipeline.close_with_loop`): a script's last answers reach the disk tiers, and
    a second ``asyncio.run()`` gets a fresh pipeline that finds them there.

    Adapters call ``request`` and ``handle``; any other attribute is the current loop's
    pipeline's (outside a loop: the latest one made). One closed by hand (``close()``) is
    replaced on its loop's next request.
    """

    def __init__(self, settings: Settings, setup: Callable[[Pipeline], None] | None = None) -> None:
        self.settings = settings
        self._setup = setup  # run on each pipeline made (services its owner publishes)
        self._by_loop: dict[asyncio.AbstractEventLoop, Pipeline] = {}
        self._latest: Pipeline | None = None

    def current(self) -> Pipeline:
        loop = asyncio.get_running_loop()
        pipe = self._by_loop.get(loop)
        if pipe is None:
            pipe = self._by_loop[loop] = self._latest = Pipeline(self.settings)
            if self._setup is not None:
                self._setup(pipe)
            # Forgotten once closed at the loop's end: no reference to a dead loop is kept.
            pipe.close_with_loop().add_done_callback(lambda _: self._forget(loop, pipe))
        return pipe

    def _forget(self, loop: asyncio.AbstractEventLoop, pipe: Pipeline) -> None:
        if self._by_loop.get(loop) is pipe:
            del self._by_loop[loop]

    async def close(self) -> None:
        """Close the running loop's pipeline, if one was made (the next request makes another)."""
        pipe = self._by_loop.get(asyncio.get_running_loop())
        if pipe is not None:
            await pipe.close()

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return self.current().request(*args, **kwargs)

    def handle(self, request: Any) -> Any:
        return self.current().handle(request)  # the coroutine itself: no extra frame

    def __getattr__(self, name: str) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pipe = self._latest if self._latest is not None else Pipeline(self.settings)
        else:
            pipe = self.current()
        return getattr(pipe, name)
