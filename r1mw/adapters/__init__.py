"""Adapters between native clients and the pipeline; :func:`wrap` picks the right one."""

from __future__ import annotations

import builtins
from typing import Any

from ..pipeline import Pipeline
from ..settings import Settings
from .callable import wrap_callable
from .litellm import is_litellm_callable, wrap_litellm
from .openai import CachedClient, is_openai_client

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

    Without ``pipe``, a ``Pipeline(Settings.from_env())`` is made; it starts on first use.

    >>> async def llm(**kwargs):
    ...     return {"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
    >>> cached = wrap(llm, Pipeline(Settings(stages="exact")))
    """
    if pipe is None:
        pipe = Pipeline(Settings.from_env())
    if is_openai_client(target):
        return CachedClient(target, pipe)
    if is_litellm_callable(target):
        return wrap_litellm(target, pipe)
    if builtins.callable(target):  # (the submodule .callable shadows the builtin here)
        return wrap_callable(target, pipe, returns=returns, chunk_type=chunk_type)
    raise TypeError(
        f"r1mw.wrap() takes an AsyncOpenAI-compatible client, litellm.acompletion or an async callable, "
        f"not {type(target).__name__}"
    )
