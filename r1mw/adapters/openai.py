"""AsyncOpenAI (and compatible clients): ``client.chat.completions.create`` is cached,
every other attribute of the client passes through untouched.

A hit is rebuilt with ``ChatCompletion.model_validate`` (about 4 us; the SDK's own
non-validating ``construct`` is ten times slower) and a replayed stream is made of
``ChatCompletionChunk`` objects. ``with_options()`` and ``copy()`` return wrapped clients on the
same pipeline, so a per-call timeout does not silently bypass the cache. The raw-response
views (``with_raw_response``, ``with_streaming_response``) pass through uncached: they
promise the HTTP response, which a hit does not have.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from ..pipeline import Pipeline
from .base import call_through, make_upstream
from .callable import DictNative, ModelNative, learning_native
from ..errors import WrapError

__all__ = ["CachedClient", "is_openai_client"]


def is_openai_client(target: Any) -> bool:
    completions = getattr(getattr(target, "chat", None), "completions", None)
    return callable(getattr(completions, "create", None))


def _sentinels() -> tuple[type, ...]:
    try:
        import openai
    except ImportError:  # a compatible client from another SDK
        return ()

    return tuple(t for t in (getattr(openai, "NotGiven", None), getattr(openai, "Omit", None)) if t is not None)


def _native() -> ModelNative:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    return ModelNative(ChatCompletion, ChatCompletionChunk, kind="openai")


def _is_openai_sdk(client: Any) -> bool:
    """An ``AsyncOpenAI`` (``AsyncAzureOpenAI``, or the caller's own subclass, defined in any
    module): its replies are the SDK's ``ChatCompletion``, whatever the subclass adds."""
    # Not imported here: a client of the SDK means the SDK is imported already, and a
    # compatible client of another SDK must not pay for importing it.
    openai = sys.modules.get("openai")
    base = getattr(openai, "AsyncOpenAI", None)
    return isinstance(base, type) and isinstance(client, base)


def _native_for(client: Any) -> DictNative:
    """The OpenAI SDK's own classes for its clients; for a compatible client of another SDK
    (its own ``ChatCompletion`` class), the classes are learned from its first miss."""
    if _is_openai_sdk(client):
        return _native()
    return learning_native(type(client).__name__, dicts_possible=False)


class _Proxy:
    """Delegates every attribute to ``target`` except the ``overrides``.

    ``__class__`` reports the target's class, so ``isinstance(wrapped, AsyncOpenAI)`` holds
    for code that checks it (as ``unittest.mock`` does with ``spec``).
    """

    __slots__ = ("_target", "_overrides")

    def __init__(self, target: Any, overrides: dict[str, Any]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_overrides", overrides)

    def __getattr__(self, name: str) -> Any:
        overrides = object.__getattribute__(self, "_overrides")
        if name in overrides:
            return overrides[name]
        return getattr(object.__getattribute__(self, "_target"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        overrides = object.__getattribute__(self, "_overrides")
        if name in overrides:  # e.g. a library patching chat.completions.create: keep its patch
            overrides[name] = value
        else:
            setattr(object.__getattribute__(self, "_target"), name, value)

    def __dir__(self) -> list[str]:
        target = object.__getattribute__(self, "_target")
        return sorted(set(dir(target)) | set(object.__getattribute__(self, "_overrides")))

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(object.__getattribute__(self, "_target"))

    def __repr__(self) -> str:
        return f"<r1mw cached {object.__getattribute__(self, '_target')!r}>"


class CachedClient(_Proxy):
    """``r1mw.wrap(AsyncOpenAI(), pipe)``: same shape as the client it wraps."""

    __slots__ = ()

    def __init__(self, client: Any, pipe: Pipeline) -> None:
        completions = client.chat.completions
        if not inspect.iscoroutinefunction(inspect.unwrap(completions.create)):
            raise WrapError(
                f"r1mw.wrap() needs an async client (AsyncOpenAI); {type(client).__name__}"
                ".chat.completions.create is not a coroutine function"
            )
        native = _native_for(client)
        upstream = make_upstream(native, completions.create)
        sentinels = frozenset(_sentinels())
        original = completions.create

        async def create(**kwargs: Any) -> Any:
            for name, value in kwargs.items():
                if type(value) in sentinels:  # the SDK's NOT_GIVEN / omit: same as leaving it out
                    kwargs = {k: v for k, v in kwargs.items() if type(v) not in sentinels}
                    break
            if not native.rebuildable:  # a compatible client whose replies r1mw cannot rebuild
                kwargs.pop("cache", None)
                return await original(**kwargs)
            return await call_through(pipe, native, upstream, kwargs)

        create.__doc__ = original.__doc__
        create.__wrapped__ = original  # type: ignore[attr-defined]
        create.__r1mw_pipeline__ = pipe  # type: ignore[attr-defined]

        def rewrap(method: Any) -> Any:
            def wrapped(*args: Any, **kwargs: Any) -> CachedClient:
                return CachedClient(method(*args, **kwargs), pipe)

            wrapped.__doc__ = method.__doc__
            return wrapped

        chat = _Proxy(client.chat, {"completions": _Proxy(completions, {"create": create})})
        overrides: dict[str, Any] = {"chat": chat, "r1mw_pipeline": pipe}
        for name in ("with_options", "copy"):
            method = getattr(client, name, None)
            if callable(method):
                overrides[name] = rewrap(method)
        super().__init__(client, overrides)

    # AsyncOpenAI is an async context manager; the wrapper closes the client, not the pipeline.
    async def __aenter__(self) -> "CachedClient":
        await object.__getattribute__(self, "_target").__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await object.__getattribute__(self, "_target").__aexit__(*exc)
