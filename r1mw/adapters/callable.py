"""Any async callable taking OpenAI chat kwargs and returning an OpenAI-shaped dict or object.

What a hit returns is what a miss returned: a fresh dict for a dict, an object of the same
class for a pydantic model (rebuilt with ``model_validate``; ``parse_obj`` on pydantic 1).
The class is learned from the first miss, or fixed up front with ``returns=`` (a model
class, ``dict``, or a function that builds the object from the OpenAI-shaped dict).
Streamed chunks are learned the same way, from a live stream (or ``chunk_type=``).
Until the class is known, nothing found in the cache is served: the call goes upstream (its
answer is stored, and teaches the class), so a hit never comes back in a guessed type. The
lookup still runs, so identical calls in flight share one upstream call.

A callable whose objects r1mw cannot rebuild (no ``model_validate``, no ``returns=``) is
not cached: a hit could not have the type of a miss. It warns once and passes calls through.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import replace
from collections.abc import Mapping
from typing import Any, Awaitable, Callable, Iterator

from ..pipeline import Pipeline
from ..types import Delta, Reply, Request, Usage
from .base import call_through, make_upstream
from .shapes import (built_chunks, chunk_dicts, delta_of_chunk, dict_of_reply, reply_of_dict, reshape, shape_of,
                     shaped_dict_of_reply)
from ..errors import WrapError

__all__ = ["DictNative", "ModelNative", "learning_native", "wrap_callable"]


def _builder(cls: Any) -> Callable[[dict[str, Any]], Any] | None:
    """How to rebuild an object of ``cls`` from its OpenAI-shaped dict, if r1mw knows how."""
    if cls is dict:
        return None
    for name in ("model_validate", "parse_obj"):  # pydantic 2, pydantic 1
        build = getattr(cls, name, None)
        if callable(build):
            return build
    if not isinstance(cls, type) and callable(cls):
        return cls  # a factory: returns=lambda d: MyReply(**d)
    return None


def _same(data: dict[str, Any]) -> dict[str, Any]:
    return data


def _dump(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    return dump() if dump is not None else obj


class DictNative:
    """Plain dicts: a hit returns a fresh ``chat.completion`` dict, a replay dict chunks."""

    kind = "dict"
    rebuildable = True
    # Whether the type a miss answers with is known (a hit may be served in it), for a plain
    # request and for a streamed one; and whether streamed chunks can be rebuilt at all.
    plain_known = True
    stream_known = True
    stream_rebuildable = True

    def answered(self, stream_asked: bool, streamed: bool) -> None:
        """A miss came back: a stream or a complete reply, asked as a stream or not."""

    def to_reply(self, obj: Any) -> Reply:
        reply = reply_of_dict(obj, self.kind)
        # A hit gives back the keys this miss had, no more, no fewer (a few us, on a miss only).
        shape = shape_of(obj, reply)
        return reply if shape is None else replace(reply, shape=shape)

    def from_reply(self, reply: Reply, request: Request | None = None) -> Any:
        out = dict_of_reply(reply)
        if reply.shape is not None:  # (shaped_dict_of_reply inlined: this runs on every dict hit)
            reshape(out, reply)
        return out

    def chunk_deltas(self, chunk: Any) -> tuple[list[Delta], Usage | None, Mapping[str, Any]]:
        return delta_of_chunk(chunk)

    def replay_chunks(self, reply: Reply, include_usage: bool) -> Iterator[Any]:
        return chunk_dicts(reply, include_usage=include_usage)

    def rebuilds(self, reply: Reply) -> bool:
        """Whether a hit could give ``reply`` back (checked on a miss, before it is stored)."""
        return True  # a dict is always a dict

    def serves_unlearned(self, reply: Reply) -> bool:
        """Whether a reply not the upstream's own may be served although the type misses
        answer with is not learned yet (only asked then)."""
        return False


class _LearnsChunks(DictNative):
    """Learns the chunk class from the first chunk of a live stream."""

    _build_chunk: Callable[[dict[str, Any]], Any] | None = None

    def chunk_deltas(self, chunk: Any) -> tuple[list[Delta], Usage | None, Mapping[str, Any]]:
        if not self.stream_known:
            self._learn_chunks(chunk)
        return delta_of_chunk(chunk)

    def _learn_chunks(self, chunk: Any) -> None:
        # Dicts, or a class r1mw can rebuild (model_validate), or one it cannot.
        if self._build_chunk is None and not isinstance(chunk, Mapping):
            self._build_chunk = _builder(type(chunk))
            if self._build_chunk is None:
                self.stream_rebuildable = False  # streamed calls skip the lookup from now on
        self.stream_known = True
        self._learned_chunks(isinstance(chunk, Mapping))

    def _learned_chunks(self, dicts: bool) -> None:
        """The chunk type is learned (``dicts``: they are dicts)."""

    def answered(self, stream_asked: bool, streamed: bool) -> None:
        if stream_asked and not streamed:
            # A complete reply asked as a stream was replayed as chunks: a hit replays alike.
            self.stream_known = True


class ModelNative(_LearnsChunks):
    """Objects of a known class, rebuilt from the OpenAI-shaped dict on a hit."""

    def __init__(self, cls: Any, chunk_cls: Any = None, kind: str = "object") -> None:
        build = _builder(cls) if cls is not dict else _same
        if build is None:
            raise WrapError(
                f"returns={getattr(cls, '__name__', cls)!r}: r1mw cannot rebuild it from a dict; "
                "pass a pydantic model class, dict, or a function dict -> object"
            )
        self.cls = cls
        self._build = build
        self._build_chunk = _builder(chunk_cls) if chunk_cls is not None else None
        self.kind = kind
        # Without chunk_type, the chunk class is learned from a live stream.
        self.stream_known = chunk_cls is not None

    def to_reply(self, obj: Any) -> Reply:
        if self.cls is dict:  # returns=dict with a chunk_type: dicts keep their keys (DictNative)
            return super().to_reply(obj)
        return reply_of_dict(_dump(obj), self.kind)

    def from_reply(self, reply: Reply, request: Request | None = None) -> Any:
        if self.cls is dict:
            return shaped_dict_of_reply(reply)
        return self._build(dict_of_reply(reply))

    def replay_chunks(self, reply: Reply, include_usage: bool) -> Iterator[Any]:
        chunks = chunk_dicts(reply, include_usage=include_usage)
        build = self._build_chunk
        if build is None:
            return chunks
        return built_chunks(build, chunks)

    def rebuilds(self, reply: Reply) -> bool:
        # The SDKs build a miss without validating it; a hit is rebuilt with validation
        # (model_validate), which may refuse what the miss carried.
        try:
            self._build(dict_of_reply(reply))
        except Exception:
            return False
        return True


class _LearningNative(_LearnsChunks):
    """For a callable of unknown return type: learn it from the first miss.

    The completion class is learned from a plain miss, the chunk class from a live stream,
    independently. Before that (a cache warmed by another wrapper, or by a previous process)
    nothing is served from the cache (``plain_known``/``stream_known``: see call_through).
    The class is only ever learned from a live object, never from stored data.
    """

    plain_known = False
    stream_known = False

    def __init__(self, name: str, dicts_possible: bool = True) -> None:
        self.name = name
        self.learned: DictNative | None = None
        self._build_chunk: Callable[[dict[str, Any]], Any] | None = None
        self._dicts_possible = dicts_possible

    def serves_unlearned(self, reply: Reply) -> bool:
        # A reply a wrapper answering dicts stored (a process sharing the cache through Redis
        # or the disk, or a sibling wrapper): served as a dict, which needs no class. Entries
        # stored from objects are not (their class is never taken from stored data).
        return self._dicts_possible and self.learned is None and reply.native == "dict"

    def _learn(self, obj: Any) -> DictNative:
        learned = self.learned
        if learned is None:
            if isinstance(obj, Mapping):
                learned = DictNative()
            elif _builder(type(obj)) is not None:
                learned = ModelNative(type(obj))
            else:
                learned = _Opaque()
                warnings.warn(
                    f"r1mw.wrap({self.name}): it returns {type(obj).__name__} objects, which r1mw cannot "
                    "rebuild on a hit; calls pass through uncached (pass returns=... to cache them)",
                    RuntimeWarning, stacklevel=2)
            self.learned = learned
            self.plain_known = learned.rebuildable
            if type(learned) is DictNative:
                self.stream_known = True  # a callable speaking dicts streams dicts
        return learned

    def _learned_chunks(self, dicts: bool) -> None:
        if dicts and self.learned is None:
            # A callable streaming dicts answers in dicts (a plain request answered with a
            # stream is the assembled dict in any case).
            self.learned = _DICT
            self.plain_known = True

    def answered(self, stream_asked: bool, streamed: bool) -> None:
        super().answered(stream_asked, streamed)
        if streamed and not stream_asked and self.learned is None:
            # A callable that always streams: the plain miss answered with the assembled dict.
            self.learned = _DICT
            self.plain_known = True

    @property
    def rebuildable(self) -> bool:  # type: ignore[override]
        return self.learned is None or self.learned.rebuildable

    def to_reply(self, obj: Any) -> Reply:
        return self._learn(obj).to_reply(obj)

    def from_reply(self, reply: Reply, request: Request | None = None) -> Any:
        return (self.learned or _DICT).from_reply(reply)

    def replay_chunks(self, reply: Reply, include_usage: bool) -> Iterator[Any]:
        chunks = chunk_dicts(reply, include_usage=include_usage)
        build = self._build_chunk
        return chunks if build is None else built_chunks(build, chunks)

    def rebuilds(self, reply: Reply) -> bool:
        return (self.learned or _DICT).rebuilds(reply)


class _Opaque(DictNative):
    rebuildable = False

    def to_reply(self, obj: Any) -> Reply:
        return reply_of_dict(_dump(obj), "object")


_DICT = DictNative()


def learning_native(name: str, chunk_type: Any = None, *, dicts_possible: bool = True) -> DictNative:
    """A native that learns the completion and chunk classes from the first miss/stream
    (the chunk class is known up front with ``chunk_type``). ``dicts_possible=False``: its
    misses are never dicts (an SDK client's), so nothing stored is served before one."""
    native = _LearningNative(name, dicts_possible)
    if chunk_type is not None:
        native._build_chunk = _chunk_builder(chunk_type)
        native.stream_known = True
    return native


def _chunk_builder(chunk_type: Any) -> Callable[[dict[str, Any]], Any] | None:
    build = _builder(chunk_type)
    if build is None and chunk_type is not dict:
        raise WrapError(f"chunk_type={getattr(chunk_type, '__name__', chunk_type)!r}: r1mw cannot rebuild it "
                        "from a dict; pass a pydantic model class, dict, or a function dict -> object")
    return build


def wrap_callable(fn: Callable[..., Awaitable[Any]], pipe: Pipeline, *, returns: Any = None,
                  chunk_type: Any = None) -> Callable[..., Awaitable[Any]]:
    """Wrap ``fn(**openai_chat_kwargs)``; see the module docstring for ``returns=`` and
    ``chunk_type=`` (the class of the chunks it streams)."""
    native: DictNative
    if returns is dict and chunk_type in (None, dict):
        native = _DICT
    elif returns is None:
        native = learning_native(getattr(fn, "__qualname__", None) or type(fn).__name__, chunk_type)
    else:
        if chunk_type is not None:
            _chunk_builder(chunk_type)  # refused here, at wrap() time
        native = ModelNative(returns, chunk_type)
    upstream = make_upstream(native, fn)

    @functools.wraps(fn, updated=())  # not the callable's own __dict__ (its state)
    async def cached(**kwargs: Any) -> Any:
        if not native.rebuildable:
            kwargs.pop("cache", None)
            return await fn(**kwargs)
        return await call_through(pipe, native, upstream, kwargs)

    cached.__r1mw_pipeline__ = pipe  # type: ignore[attr-defined]
    return cached
