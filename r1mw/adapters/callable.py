"""Any async callable taking OpenAI chat kwargs and returning an OpenAI-shaped dict or object."""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable, Iterator, Mapping

from ..pipeline import Pipeline
from ..types import Delta, Reply, Usage
from .base import call_through, make_upstream
from .shapes import chunk_dicts, delta_of_chunk, dict_of_reply, reply_of_dict

__all__ = ["DictNative", "wrap_callable"]


class DictNative:
    """Plain dicts: a hit returns a fresh ``chat.completion`` dict, a replay dict chunks."""

    kind = "dict"

    def to_reply(self, obj: Any) -> Reply:
        return reply_of_dict(obj, self.kind)

    def from_reply(self, reply: Reply) -> Any:
        return dict_of_reply(reply)

    def chunk_deltas(self, chunk: Any) -> tuple[list[Delta], Usage | None, Mapping[str, Any]]:
        return delta_of_chunk(chunk)

    def replay_chunks(self, reply: Reply, include_usage: bool) -> Iterator[Any]:
        return chunk_dicts(reply, include_usage=include_usage)


class ModelNative(DictNative):
    """Pydantic-style objects (``model_dump`` / ``model_validate``) of a known class."""

    def __init__(self, cls: type, chunk_cls: type | None = None, kind: str = "object") -> None:
        self.cls = cls
        self.chunk_cls = chunk_cls
        self.kind = kind

    def to_reply(self, obj: Any) -> Reply:
        return reply_of_dict(obj.model_dump() if hasattr(obj, "model_dump") else obj, self.kind)

    def from_reply(self, reply: Reply) -> Any:
        return self.cls.model_validate(dict_of_reply(reply))

    def replay_chunks(self, reply: Reply, include_usage: bool) -> Iterator[Any]:
        chunks = chunk_dicts(reply, include_usage=include_usage)
        if self.chunk_cls is None:
            return chunks
        return (self.chunk_cls.model_validate(c) for c in chunks)


class _LearningNative(DictNative):
    """For a callable of unknown return type: learn it from the first miss.

    Before any miss (a cache warmed by another process), hits answer as dicts unless
    ``returns=`` was given to :func:`wrap`.
    """

    def __init__(self) -> None:
        self.learned: DictNative | None = None

    def to_reply(self, obj: Any) -> Reply:
        if self.learned is None:
            self.learned = DictNative() if isinstance(obj, Mapping) else ModelNative(type(obj))
        return self.learned.to_reply(obj)

    def from_reply(self, reply: Reply) -> Any:
        return (self.learned or _DICT).from_reply(reply)

    def replay_chunks(self, reply: Reply, include_usage: bool) -> Iterator[Any]:
        return (self.learned or _DICT).replay_chunks(reply, include_usage)


_DICT = DictNative()


def wrap_callable(fn: Callable[..., Awaitable[Any]], pipe: Pipeline, *, returns: type | None = None,
                  chunk_type: type | None = None) -> Callable[..., Awaitable[Any]]:
    if returns is None or returns is dict:
        native: DictNative = _DICT if returns is dict else _LearningNative()
    else:
        native = ModelNative(returns, chunk_type)
    upstream = make_upstream(native, fn)

    @functools.wraps(fn)
    async def cached(**kwargs: Any) -> Any:
        return await call_through(pipe, native, upstream, kwargs)

    cached.__r1mw_pipeline__ = pipe  # type: ignore[attr-defined]
    return cached
