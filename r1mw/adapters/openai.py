"""AsyncOpenAI (and compatible clients): ``client.chat.completions.create`` is cached,
every other attribute of the client passes through untouched."""

from __future__ import annotations

from typing import Any

from ..pipeline import Pipeline
from .base import call_through, make_upstream
from .callable import ModelNative

__all__ = ["CachedClient", "is_openai_client"]


def is_openai_client(target: Any) -> bool:
    completions = getattr(getattr(target, "chat", None), "completions", None)
    return callable(getattr(completions, "create", None))


def _native_for(create: Any) -> ModelNative:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    return ModelNative(ChatCompletion, ChatCompletionChunk, kind="openai")


class _Proxy:
    """Delegates every attribute to ``target`` except the ``overrides``."""

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
        setattr(object.__getattribute__(self, "_target"), name, value)

    def __repr__(self) -> str:
        return f"<r1mw cached {object.__getattribute__(self, '_target')!r}>"


class CachedClient(_Proxy):
    """``r1mw.wrap(AsyncOpenAI(), pipe)``: same shape as the client it wraps."""

    __slots__ = ()

    def __init__(self, client: Any, pipe: Pipeline) -> None:
        completions = client.chat.completions
        native = _native_for(completions.create)
        upstream = make_upstream(native, completions.create)

        async def create(**kwargs: Any) -> Any:
            return await call_through(pipe, native, upstream, kwargs)

        create.__doc__ = completions.create.__doc__
        create.__r1mw_pipeline__ = pipe  # type: ignore[attr-defined]
        chat = _Proxy(client.chat, {"completions": _Proxy(completions, {"create": create})})
        super().__init__(client, {"chat": chat, "r1mw_pipeline": pipe})

    # AsyncOpenAI is an async context manager; the wrapper closes the client, not the pipeline.
    async def __aenter__(self) -> "CachedClient":
        await object.__getattribute__(self, "_target").__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await object.__getattribute__(self, "_target").__aexit__(*exc)
