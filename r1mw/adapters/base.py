"""What every adapter shares: native kwargs -> Request, pipeline, Reply -> native result.

An adapter supplies four translations (:class:`Native`); :func:`call_through` does the rest:

* a miss returns exactly what the upstream returned (its own object, its own stream);
* a hit returns a fresh object of the same native type, or a replayed stream of the
  native chunk type, with ``close()``/``aclose()`` like the SDK's own streams;
* upstream exceptions propagate as raised.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Protocol

from ..keys import split_params
from ..pipeline import Pipeline
from ..types import CacheControl, Delta, Reply, Request, StreamedReply, Usage
from ..errors import WrapError

__all__ = ["Native", "PassthroughStream", "ReplayStream", "call_through"]

log = logging.getLogger("r1mw")


class Native(Protocol):
    """The translations between one family of clients and r1mw's types."""

    kind: str  # "dict", "openai", "litellm": recorded in stored replies

    def to_reply(self, obj: Any) -> Reply: ...

    def from_reply(self, reply: Reply, request: Request | None = None) -> Any: ...

    def chunk_deltas(self, chunk: Any) -> tuple[list[Delta], Usage | None, Mapping[str, Any]]: ...

    def replay_chunks(self, reply: Reply, include_usage: bool) -> Iterator[Any]: ...

    def rebuilds(self, reply: Reply) -> bool: ...

    def answered(self, stream_asked: bool, streamed: bool) -> None: ...

    def serves_unlearned(self, reply: Reply) -> bool: ...

    # Whether the type a miss answers with is known yet, for a plain and a streamed request
    # (a wrapper learning it from its first miss serves nothing stored before that), and
    # whether streamed chunks can be rebuilt at all.
    plain_known: bool
    stream_known: bool
    stream_rebuildable: bool


class ReplayStream:
    """A hit replayed as a stream of the client's own chunk type."""

    def __init__(self, chunks: Iterator[Any], response: Any = None) -> None:
        self._chunks = chunks
        self._closed = False
        self.response = response

    def __aiter__(self) -> "ReplayStream":
        return self

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        try:
            return next(self._chunks)
        except StopIteration:
            self._closed = True
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._closed = True

    async def close(self) -> None:
        self._closed = True

    async def __aenter__(self) -> "ReplayStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class PassthroughStream:
    """A miss streamed to the caller chunk by chunk as the upstream sends them, while the
    pipeline assembles the reply (stored only if the stream ends normally)."""

    def __init__(self, streamed: StreamedReply, upstream: Any) -> None:
        self._streamed = streamed
        self._iter = streamed.__aiter__()
        self._upstream = upstream  # the SDK's own stream object: attributes pass through

    def __aiter__(self) -> "PassthroughStream":
        return self

    async def __anext__(self) -> Any:
        return await self._iter.__anext__()

    async def aclose(self) -> None:
        aclose = getattr(self._iter, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._streamed.aclose()

    close = aclose

    async def __aenter__(self) -> "PassthroughStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upstream, name)

    def __del__(self) -> None:
        # Dropped without reaching its end (or never iterated): the stream will not finish,
        # so identical requests waiting on it must stop waiting and make their own call.
        streamed = self.__dict__.get("_streamed")
        if streamed is not None and not streamed.done:
            try:
                streamed.abandon()
            except RuntimeError:  # the event loop is already closed: nobody is waiting
                pass


def make_upstream(native: Native, fn: Callable[..., Awaitable[Any]]) -> Callable[[Request], Awaitable[Reply | StreamedReply]]:
    """The terminal call of the chain for one client: ``fn(**kwargs)`` translated back."""

    async def upstream(request: Request) -> Reply | StreamedReply:
        result = fn(**request.upstream_kwargs())
        if inspect.isawaitable(result):
            result = await result
        elif not hasattr(result, "__aiter__"):
            # An async generator function is a fine streaming callable; anything else is a misuse.
            raise WrapError(f"r1mw.wrap(): the wrapped callable returned {type(result).__name__}, "
                            "not an awaitable; wrap an async function")
        streamed = hasattr(result, "__aiter__")
        native.answered(request.stream, streamed)
        if streamed:
            closer = getattr(result, "aclose", None) or getattr(result, "close", None)
            if request.stream:
                request.meta["native_stream"] = result
                return StreamedReply(_aiter(result), native.chunk_deltas, closer=closer, native=native.kind,
                                     check=_checker(native))
            # A callable that always streams, asked for a plain reply: read it to the end.
            whole = StreamedReply(_aiter(result), native.chunk_deltas, closer=closer, native=native.kind)
            async for _ in whole:
                pass
            reply = await whole.result()
        else:
            # (A callable that ignores stream=True returns a complete reply: it is replayed as chunks.)
            reply = native.to_reply(result)
            request.meta["native"] = (result, reply)
        if reply.storable and not native.rebuilds(reply):
            # The miss is served as it came; stored, it would make every later hit fail.
            _warn_once(native, "a reply r1mw cannot rebuild in the client's type was served and not cached")
            request.control = replace(request.control, no_store=True)
        return reply

    return upstream


def _checker(native: Native) -> Callable[[Reply], bool]:
    def check(reply: Reply) -> bool:
        if native.rebuilds(reply):
            return True
        _warn_once(native, "a streamed reply r1mw cannot rebuild in the client's type was served and not cached")
        return False

    return check


_warned: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def _warn_once(native: Native, message: str, *args: Any) -> None:
    # Once per wrapped client and message: the same cause repeats on every such reply.
    seen = _warned.setdefault(native, set())
    if message in seen:
        log.debug(message, *args)
        return
    seen.add(message)
    log.warning(message + " (logged once per wrapped client)", *args)


async def _aiter(stream: Any) -> AsyncIterator[Any]:
    async for chunk in stream:
        yield chunk


async def call_through(pipe: Pipeline, native: Native, upstream: Callable[[Request], Awaitable[Any]],
                       kwargs: dict[str, Any]) -> Any:
    """Run one native call (``create(**kwargs)``) through the pipeline.

    ``kwargs`` is consumed (the wrappers pass the fresh dict of their own ``**kwargs``)."""
    control = CacheControl.from_mapping(kwargs.pop("cache", None))
    try:
        model = kwargs.pop("model")
        messages = kwargs.pop("messages")
    except KeyError as exc:
        raise TypeError(f"missing required argument {exc.args[0]!r}") from None
    stream = bool(kwargs.pop("stream", False))
    params, passthrough = split_params(kwargs)
    if stream and not native.stream_rebuildable:
        control = replace(control, no_cache=True)  # chunks r1mw cannot rebuild: nothing to serve
    request = pipe.request(str(model), list(messages), params, passthrough, stream=stream,
                           control=control, upstream=upstream)
    known = native.stream_known if stream else native.plain_known
    if not known and not request.control.no_cache:
        _accepting_only(request, native)
    reply = await pipe.handle(request)
    # (_result inlined: this is every hit's path)
    try:
        if isinstance(reply, StreamedReply):
            return PassthroughStream(reply, request.meta.get("native_stream"))
        original = request.meta.get("native")
        if original is not None and original[1] is reply:
            # The upstream's own answer, untouched by the stages: as it came (replayed as
            # chunks for a stream request answered with a complete reply).
            return ReplayStream(native.replay_chunks(reply, _wants_usage(passthrough))) if stream else original[0]
        if known or _serves(native, stream, reply):
            if stream:
                return ReplayStream(native.replay_chunks(reply, _wants_usage(passthrough)))
            return native.from_reply(reply, request)
    except Exception as exc:
        # A reply that cannot be rebuilt in the client's type (an entry stored by an older
        # version, say) is the cache's fault, never the caller's: ask the upstream afresh.
        _warn_once(native, "a cached reply could not be rebuilt (%s: %s); the request was sent upstream",
                   type(exc).__name__, str(exc).partition("\n")[0])
        return await _fresh(pipe, native, upstream, request, control, passthrough)
    # Only behind a stage that serves what the cache holds although the request said no_cache
    # (see _accepting_only): not served in a guessed type, the upstream is asked.
    return await _fresh(pipe, native, upstream, request, control, passthrough)


def _serves(native: Native, stream: bool, reply: Reply) -> bool:
    """Whether a reply this wrapper did not fetch itself (stored, or another request's) can
    be given back in the type its misses answer with (known now, or a dict that needs none)."""
    return (native.stream_known if stream else native.plain_known) or native.serves_unlearned(reply)


def _accepting_only(request: Request, native: Native) -> None:
    """Before this wrapper has learned the type its misses answer with (it is learned from a
    live answer, never guessed; unknown after a restart, or on a cache another wrapper
    filled), what the cache holds is served only if it can be given back in that type, and a
    request that goes upstream must not be counted a hit. So the exact stage decides, before
    any stage or counter has seen a hit: ``meta["accepts"]``, under ``no_cache``, which keeps
    the other stages' lookups out. It still joins an identical call in flight, so the first
    calls after a start share one upstream call."""
    stream = request.stream
    request.control = replace(request.control, no_cache=True)
    request.meta["accepts"] = lambda reply: _serves(native, stream, reply)


def _result(native: Native, request: Request, reply: Reply | StreamedReply, passthrough: dict[str, Any]) -> Any:
    """What the caller gets: the upstream's own object or stream, or the reply rebuilt."""
    if isinstance(reply, StreamedReply):
        return PassthroughStream(reply, request.meta.get("native_stream"))
    if request.stream:
        return ReplayStream(native.replay_chunks(reply, _wants_usage(passthrough)))
    original = request.meta.get("native")
    if original is not None and original[1] is reply:
        return original[0]
    return native.from_reply(reply, request)


async def _fresh(pipe: Pipeline, native: Native, upstream: Callable[[Request], Awaitable[Any]],
                 request: Request, control: CacheControl, passthrough: dict[str, Any]) -> Any:
    """The request again, without a lookup: the upstream's own answer (stored if it can be)."""
    again = pipe.request(request.model, request.messages, request.params, passthrough, stream=request.stream,
                         control=replace(control, no_cache=True), upstream=upstream)
    return _result(native, again, await pipe.handle(again), passthrough)


def _wants_usage(passthrough: Mapping[str, Any]) -> bool:
    # As the OpenAI API does: a usage-only chunk (empty choices) only when asked for, since
    # `chunk.choices[0]` in the caller's loop would fail on it.
    options = passthrough.get("stream_options") or {}
    return bool(options.get("include_usage", False)) if isinstance(options, Mapping) else False
