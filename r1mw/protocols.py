"""The contracts plugins implement. No logic lives here.

A plugin contributes objects that satisfy these protocols through the registration hooks
of :mod:`r1mw.hookspecs`. They are structural (``typing.Protocol``): no base class needed.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence, runtime_checkable

from .types import Reply, Request, StreamedReply

__all__ = ["Codec", "Embedder", "Guard", "Handler", "Stage", "Tier"]

Handler = Callable[[Request], Awaitable["Reply | StreamedReply"]]
"""The next step of the chain: the following stage, or the upstream call at the end."""


@runtime_checkable
class Stage(Protocol):
    """One step of the request path (the middleware onion).

    ``handle`` gets the request and the rest of the chain and returns an awaitable: an
    ``async def`` method, or a plain one that returns ``call_next(request)`` as it is (one
    coroutine less per request, as the template stage does). It may answer by itself
    (a hit: set ``request.source``/``request.tier`` and return a :class:`Reply`) or
    ``await call_next(request)`` and look at what comes back. A streaming miss comes back
    as a :class:`StreamedReply`: use ``reply.on_complete(...)`` to act on the assembled reply.

    Optional methods the pipeline calls when present:
    ``async start()``, ``async close()``, ``stats() -> dict``.
    """

    name: str

    def handle(self, request: Request, call_next: Handler) -> Awaitable["Reply | StreamedReply"]: ...


@runtime_checkable
class Tier(Protocol):
    """An async key-value store for encoded entries, bounded in entries and bytes.

    Method names follow aiocache's ``BaseCache`` (get/set/delete/exists/clear) so an
    aiocache backend can serve as a tier through an adapter. Keys are bytes; values are
    encoded entries (bytes) except for a RAM tier, which may keep decoded objects.
    A tier never raises on a read fault: a corrupt or unreachable entry is a miss, counted.

    Optional attributes the :class:`~r1mw.tiers.TieredStore` uses when present:
    ``takes`` (``"entry"`` for decoded entries, else bytes), ``on_evict`` (set by the store to
    ``callable(key, value)``: call it for what the tier evicts, so it moves down a tier),
    ``on_lost`` (``callable(key)``: the tier removed a key on its own, expired or corrupt),
    ``write_through = True`` (written on every store, e.g. a shared Redis tier), ``close()``,
    ``set_many(items)`` on the durable tier (the first that takes bytes): ``set`` for a prefix
    of at least one of ``[(key, value, ttl), ...]``, returning one outcome per handled item
    (None, or the exception its ``set`` would raise); the write-behind then lands queued
    entries as batches (L2: one thread hop for many files). See ``DiskTier.set_many``.
    ``tests/tier_conformance.py`` is the contract every tier passes.
    """

    name: str

    async def get(self, key: bytes) -> Any | None: ...

    async def set(self, key: bytes, value: Any, ttl: float | None = None) -> None: ...

    async def delete(self, key: bytes) -> bool: ...

    async def exists(self, key: bytes) -> bool: ...

    async def clear(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


@runtime_checkable
class Codec(Protocol):
    """Bytes in, bytes out; never pickle. ``decode`` raises CodecError on bad input."""

    name: str

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalized float32 vectors (shape ``(len(texts), dim)``)."""

    name: str
    dim: int

    async def load(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    def embed(self, texts: Sequence[str]) -> Any: ...


@runtime_checkable
class Guard(Protocol):
    """Vetoes a semantic candidate: True when ``stored`` and ``asked`` may share an answer.

    Guards see only candidates above the similarity threshold, so they cost nothing on
    a miss. ``info`` holds what the semantic stage knows (similarity, template slots).
    """

    name: str

    def allows(self, asked: str, stored: str, info: Mapping[str, Any]) -> bool: ...
