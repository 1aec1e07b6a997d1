"""The exact stage: answer a request whose canonical key is stored; single-flight the rest.

Key: :func:`r1mw.keys.key_of` over namespace, model, messages (or the canonical messages a
template stage left in ``request.meta["key_messages"]``) and answer-changing parameters.
A miss goes down the chain inside a single-flight task, so identical concurrent requests
make one upstream call, and a cancelled caller does not stop the store.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, cast

import r1mw
from r1mw import Entry, Reply, Request, StreamedReply, key_of

log = logging.getLogger("r1mw.exact")


class ExactStage:
    name = "exact"

    def __init__(self, pipeline: r1mw.Pipeline) -> None:
        assert pipeline.store is not None
        self.store = pipeline.store
        # Tiers beyond a synchronous RAM tier need an awaited lookup after get_nowait.
        self.multi_tier = len(pipeline.store.tiers) > 1 or not pipeline.store.has_nowait
        self._get_nowait = pipeline.store.get_nowait  # bound once: the L1 hit is one call
        self._first = pipeline.store.first.name
        self.flight = pipeline.singleflight
        self.default_ttl = pipeline.settings.default_ttl
        self.spawn = pipeline.spawn
        self.events = pipeline.events
        self.stored = 0
        self.store_errors = 0
        self.not_storable = 0
        self.unkeyable = 0

    @staticmethod
    def key(request: Request) -> bytes:
        key = request.key
        if key is None:
            messages = request.meta.get("key_messages", request.messages)
            key = request.key = key_of(request.namespace, request.model, messages, request.params)
        return key

    async def handle(self, request: Request, call_next: r1mw.Handler) -> Reply | StreamedReply:
        try:
            key = self.key(request)
        except Exception as exc:  # a cache fault: the request goes upstream, uncached
            self.unkeyable += 1
            log.warning("exact: request not keyable, not cached: %s: %s", type(exc).__name__, exc)
            return await call_next(request)
        if request.control.no_cache:
            accepts = request.meta.get("accepts")
            if accepts is not None:
                return await self._accepting(request, call_next, key, accepts)
            return await self._fetch(request, call_next, key)
        if request.control.max_age is not None:
            return await self._no_older_than(request, call_next, key)
        entry = self._get_nowait(key)
        if entry is not None:
            request.source, request.tier = "exact", self._first
            return entry.reply
        if self.multi_tier:
            found = await self.store.get(key, after_nowait=True)
            if found is not None:
                request.source, request.tier = "exact", found[1]
                return found[0].reply
            # While we looked below, an identical request may have been answered and stored:
            # look in RAM again (no await between this and joining the flight).
            entry = self._get_nowait(key)
            if entry is not None:
                request.source, request.tier = "exact", self._first
                return entry.reply
        reply, coalesced = await self.flight.run(key, lambda: self._fetch(request, call_next, key))
        request.coalesced = coalesced
        return reply

    async def _no_older_than(self, request: Request, call_next: r1mw.Handler, key: bytes) -> Reply | StreamedReply:
        """A caller accepting only replies stored at most ``control.max_age`` seconds ago
        (LiteLLM's ``s-maxage``): an older entry is fetched afresh, and the fresh reply replaces
        it for everybody. A call in flight is younger than any entry: it is joined."""
        found = await self.store.get(key)
        if found is not None:
            if not request.control.too_old(found[0].stored_at):
                request.source, request.tier = "exact", found[1]
                return found[0].reply
            request.control = dataclasses.replace(request.control, no_cache=True)  # a refetch
            return await self._fetch(request, call_next, key)
        reply, coalesced = await self.flight.run(key, lambda: self._fetch(request, call_next, key))
        request.coalesced = coalesced
        return reply

    async def _accepting(self, request: Request, call_next: r1mw.Handler, key: bytes,
                         accepts: Callable[[Reply], bool]) -> Reply | StreamedReply:
        """A lookup for a caller that can take only some of the replies it did not fetch
        itself (``request.meta["accepts"]``: an adapter that has not learned yet what type its
        upstream answers with). What it cannot take is never served, so never counted a hit:
        the request makes its own call, whose answer replaces the entry. It still joins an
        identical call in flight (the first calls after a start share one upstream call)."""
        found = await self.store.get(key)
        if found is not None and accepts(found[0].reply) and not request.control.too_old(found[0].stored_at):
            request.source, request.tier = "exact", found[1]
            return found[0].reply
        reply, coalesced = await self.flight.run(key, lambda: self._fetch(request, call_next, key))
        # (A coalesced reply is a Reply: SingleFlight gives its waiters a stream's assembled reply.)
        if coalesced and not accepts(cast(Reply, reply)):  # another wrapper's call: not ours to take
            return await self._fetch(request, call_next, key)
        request.coalesced = coalesced
        return reply

    async def _fetch(self, request: Request, call_next: r1mw.Handler, key: bytes) -> Reply | StreamedReply:
        reply = await call_next(request)
        control = request.control
        if control.no_store or request.source != "upstream" or (control.ttl is not None and control.ttl <= 0):
            return reply
        if isinstance(reply, StreamedReply):
            reply.on_complete(lambda done: self._store(request, key, done))
        else:
            self._store(request, key, reply)
        return reply

    def _store(self, request: Request, key: bytes, reply: Reply) -> None:
        # Write-behind: the reply is in RAM now (identical requests hit from here on); the
        # disk and shared tiers are written by a task the store awaits at close. The caller
        # does not wait for a disk write after an upstream call.
        if not reply.storable:  # an empty or failed reply: served, never cached
            self.not_storable += 1
            return
        ttl = request.control.ttl if request.control.ttl is not None else self.default_ttl
        meta: dict[str, Any] = request.meta.get("store_meta", {})
        entry = Entry(reply, time.time() + ttl if ttl and ttl != math.inf else 0.0, meta)
        try:
            if not self.store.set_behind(key, entry):
                return  # the store is closed
        except r1mw.CodecError as exc:  # a cache fault: the caller still gets the reply
            self.store_errors += 1
            log.warning("exact: reply not stored: %s", exc)
            return
        self.stored += 1
        if self.events.enabled:
            self.events.emit("stored", key=key, namespace=request.namespace, model=request.model)

    def stats(self) -> dict[str, Any]:
        return {"stored": self.stored, "store_errors": self.store_errors, "not_storable": self.not_storable,
                "unkeyable": self.unkeyable,
                "inflight": len(self.flight),
                "leaders": self.flight.leaders, "coalesced": self.flight.coalesced}


@r1mw.hookimpl
def r1mw_register_stages() -> dict[str, Callable[[r1mw.Pipeline], r1mw.Stage | None]]:
    return {"exact": ExactStage}
