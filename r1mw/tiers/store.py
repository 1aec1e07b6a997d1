"""TieredStore: fastest tier first; promote hits, demote evictions, drop what leaves the last.

Write path (also in docs/design.md, "Tiers"): ``set`` encodes the entry once (so an
unencodable value fails before anything is written), puts the decoded entry in the RAM tier,
writes the bytes to the first tier that takes bytes (the durable one, L2 by default) and to
every tier that declares ``write_through = True`` (a shared Redis tier), and deletes the key
from the other tiers so that no older version can resurface. All of it is awaited before
``set`` returns: when ``set`` returns, the entry is in the durable tier's directory (renamed
into place; on disk after an fsync only with ``R1MW_L2_FSYNC=file|full``). ``set_behind``
(what the exact stage uses) encodes and fills the RAM tier at once and leaves the rest to a
task the store owns; ``get`` sees entries whose write is in flight, ``close`` awaits them.
When several are queued and the durable tier has ``set_many``, the task lands them as one
batch (L2: one thread hop for up to ``batch_max`` files), to the same end state.

What a tier evicts moves one tier down (demotion) unless that tier already holds it; what
leaves the last tier, and is held by no tier above, fires the drop listeners. A hit below
the first tier is decoded and promoted to the first tier. A tier fault is a miss, counted.

Codecs: every bytes tier stores what ``codec`` encodes, unless the tier names its own with an
``entry_codec`` attribute (e.g. a tier shared with other machines, which cannot see this
machine's zstd dictionaries, takes a dictionary-free codec); an entry moving between tiers of
different codecs is re-encoded. Reads decode with the tier's codec: the built-in codecs read
any envelope whatever built-in codec wrote it; a plugin's codec reads what it wrote.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Callable, Sequence

from ..codec import Codec, Lz4Codec
from .entry import Entry

__all__ = ["TieredStore"]

log = logging.getLogger("r1mw.tiers")

_WINDOW = 1024  # recent get latencies kept per tier


class _Counters:
    __slots__ = ("promotions", "demotions", "corrupt", "errors", "latency")

    def __init__(self) -> None:
        self.promotions = self.demotions = self.corrupt = self.errors = 0
        self.latency: deque[float] = deque(maxlen=_WINDOW)


class TieredStore:
    """Tiers in order, fastest first. A tier declares what it takes with ``takes``:
    ``"entry"`` (decoded :class:`Entry` objects, the RAM tier) or ``"bytes"`` (the default:
    entries encoded by ``codec``). Tiers with an ``on_evict`` attribute get it set to the
    store's demotion hook.

    ``get_nowait(key)`` is the first tier's own synchronous lookup when it has one (an L1
    hit with no await and no extra frame); ``await get(key)`` returns ``(entry, tier name)``
    or ``None``.
    """

    batch_max = 16  # write-behind entries per batch: a lookup below RAM waits for at most one

    def __init__(self, tiers: Sequence[Any], codec: Codec | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        if not tiers:
            raise ValueError("a TieredStore needs at least one tier")
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        self.tiers = list(tiers)
        self.first = self.tiers[0]
        self.codec = codec if codec is not None else Lz4Codec()
        self._clock = clock
        self._entry = [getattr(t, "takes", "bytes") == "entry" for t in self.tiers]
        self._codecs: list[Codec] = [getattr(t, "entry_codec", None) or self.codec for t in self.tiers]
        nowait = getattr(self.first, "get_nowait", None) if self._entry[0] else None
        self.get_nowait: Callable[[bytes], Entry | None] = nowait if nowait is not None else _none
        self.has_nowait = nowait is not None
        self._nowait_set = getattr(self.first, "set_nowait", None) if self._entry[0] else None
        self._queue: deque[tuple[bytes, Entry, Any, bytes]] = deque()
        self._lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._behind: dict[bytes, Entry] = {}  # key -> entry whose write-behind is in flight
        self._closed = False
        self.write_errors = 0
        durable = next((i for i, takes_entry in enumerate(self._entry) if not takes_entry), None)
        written = {0} | ({durable} if durable is not None else set())
        written |= {i for i, t in enumerate(self.tiers) if getattr(t, "write_through", False)}
        self._written = sorted(written)
        self._invalidated = [i for i in range(len(self.tiers)) if i not in written]
        self._counters = [_Counters() for _ in self.tiers]
        self._pending: deque[tuple[int, bytes, Any]] = deque()
        self._moving: set[bytes] = set()  # keys a demotion is carrying down right now
        # Per tier: ``miss_nowait(key) -> bool``, True when the tier can tell at once, without
        # I/O that may block, that it does not hold the key (None: it cannot).
        self._miss_nowait = [getattr(t, "miss_nowait", None) for t in self.tiers]
        self._drop_listeners: list[Callable[[bytes], Any]] = []
        # The write-behind hands queued entries to a tier with ``set_many`` as one batch.
        self._durable = durable
        self._batched = durable is not None and hasattr(self.tiers[durable], "set_many")
        for i, tier in enumerate(self.tiers):
            if hasattr(tier, "on_evict"):
                tier.on_evict = self._evicted_from(i)
            if hasattr(tier, "on_lost"):
                tier.on_lost = self._lost_from(i)

    # -- listeners ------------------------------------------------------------------------
    def add_drop_listener(self, listener: Callable[[bytes], Any]) -> None:
        """Call ``listener(key)`` when a key leaves the store: evicted from the last tier and
        held by no other, expired, or deleted. The semantic index drops its vector then."""
        self._drop_listeners.append(listener)

    def _dropped(self, key: bytes) -> None:
        for listener in self._drop_listeners:
            try:
                listener(key)
            except Exception:
                log.exception("drop listener %r failed", listener)

    @property
    def promotions(self) -> int:
        return sum(c.promotions for c in self._counters)

    # -- reads -------------------------------------------------------------------------------
    async def get(self, key: bytes, *, after_nowait: bool = False) -> tuple[Entry, str] | None:
        """Look tier by tier; decode, check expiry, promote. ``after_nowait=True`` skips the
        first tier when the caller has just asked it through ``get_nowait``."""
        if self._behind:  # written behind and not yet in its tiers: readers still see it
            pending = self._behind.get(key)
            if pending is not None and not pending.expired(self._clock()):
                return pending, self.tiers[0].name
        if after_nowait and self.has_nowait and self._certain_miss(key):
            return None
        # Below RAM, a lookup waits for a write or demotion in progress: a key on its way
        # from one tier to the next is in neither for a moment.
        async with self._lock:
            return await self._get_locked(key, after_nowait)

    def _certain_miss(self, key: bytes) -> bool:
        """A miss known without waiting for the writer: no tier below RAM holds the key, and it
        is not on its way down (evicted and queued, or being demoted). Back-to-back misses
        would otherwise each wait for the previous miss's disk write."""
        if key in self._moving:
            return False
        for _, k, _ in self._pending:
            if k == key:
                return False
        probes = self._miss_nowait
        for i in range(1, len(probes)):
            probe = probes[i]
            if probe is None or not probe(key):
                return False
        return True

    async def _get_locked(self, key: bytes, after_nowait: bool) -> tuple[Entry, str] | None:
        start = 1 if after_nowait and self.has_nowait else 0
        tiers = self.tiers
        for i in range(start, len(tiers)):
            tier = tiers[i]
            counters = self._counters[i]
            t0 = time.perf_counter()
            try:
                found = await tier.get(key)
            except Exception as exc:
                counters.errors += 1
                log.warning("tier %s: get failed: %r", tier.name, exc)
                continue
            counters.latency.append(time.perf_counter() - t0)
            if found is None:
                continue
            if self._entry[i]:
                entry = found
            else:
                entry = self._decode(i, found)
                if entry is None:
                    await self._safe_delete(i, key)
                    self._pending.append((i, key, None))  # dropped if no other tier has it
                    continue
            if entry.expired(self._clock()):
                await self._expire(key)
                return None
            if i:
                self._counters[0].promotions += 1
                ttl = entry.expires - self._clock() if entry.expires else None
                payload = entry if self._entry[0] else self._payload(i, 0, found, entry)
                await self._safe_set(0, key, payload, ttl)
                await self._settle()
            return entry, tier.name
        if self._pending:
            await self._settle()
        return None

    def _payload(self, i: int, j: int, value: Any, entry: Entry) -> bytes:
        """Bytes for bytes tier ``j`` of what tier ``i`` held: as they are under the same codec."""
        if not self._entry[i] and self._codecs[i] is self._codecs[j]:
            return value
        return self._codecs[j].encode(entry.to_wire())

    def _decode(self, i: int, data: Any) -> Entry | None:
        # The tier's own codec, never a fixed envelope reader: a plugin's codec (any bytes, in
        # r1mw.protocols.Codec) would otherwise see every entry it wrote dropped as corrupt.
        try:
            return Entry.from_wire(self._codecs[i].decode(data))
        except Exception as exc:  # whatever a plugin's codec raises on bad bytes: a miss
            self._counters[i].corrupt += 1
            log.warning("tier %s: undecodable entry dropped: %s", self.tiers[i].name, exc)
            return None

    # -- writes ---------------------------------------------------------------------------------
    async def set(self, key: bytes, entry: Entry) -> None:
        """Store ``entry`` (see the module docstring for where). Raises UnencodableValueError
        for a value the codec refuses, before anything is written; tier faults are logged."""
        wire = entry.to_wire()
        await self._write(key, entry, wire, self.codec.encode(wire))

    async def _write(self, key: bytes, entry: Entry, wire: Any, data: bytes, *, behind: bool = False) -> None:
        # Writes, promotions and demotions are serialized: a write's invalidation of the colder
        # tiers must not interleave with a demotion of the same key into them (the key would be
        # deleted from the only tier holding it).
        async with self._lock:
            await self._write_locked(key, entry, wire, data, behind)

    async def _write_locked(self, key: bytes, entry: Entry, wire: Any, data: bytes, behind: bool) -> None:
        encoded = {id(self.codec): data}
        ttl = None
        if entry.expires:
            ttl = entry.expires - self._clock()
            if ttl <= 0:
                return
        for i in self._written:
            if self._entry[i]:
                # A write-behind put the entry in RAM already: writing it again, later, would
                # make it the newest and push out entries used since.
                if not (behind and i == 0 and self._nowait_set is not None):
                    await self._safe_set(i, key, entry, ttl)
                continue
            codec = self._codecs[i]
            blob = encoded.get(id(codec))
            if blob is None:
                blob = encoded[id(codec)] = codec.encode(wire)
            await self._safe_set(i, key, blob, ttl)
        for i in self._invalidated:
            await self._safe_delete(i, key)
        await self._settle()

    async def _safe_set(self, i: int, key: bytes, value: Any, ttl: float | None) -> bool:
        try:
            await self.tiers[i].set(key, value, ttl)
            return True
        except Exception as exc:
            self._counters[i].errors += 1
            log.warning("tier %s: set failed: %r", self.tiers[i].name, exc)
            return False

    async def _safe_delete(self, i: int, key: bytes) -> bool:
        try:
            return bool(await self.tiers[i].delete(key))
        except Exception as exc:
            self._counters[i].errors += 1
            log.warning("tier %s: delete failed: %r", self.tiers[i].name, exc)
            return False

    # -- demotion -------------------------------------------------------------------------------
    def _evicted_from(self, i: int) -> Callable[[bytes, Any], None]:
        pending = self._pending

        def on_evict(key: bytes, value: Any) -> None:
            # Called synchronously inside the tier; the async work happens in _settle.
            pending.append((i, key, value))

        return on_evict

    def _lost_from(self, i: int) -> Callable[[bytes], None]:
        pending = self._pending

        def on_lost(key: bytes) -> None:
            # The tier removed the key on its own (expired, corrupt): maybe the store lost it.
            pending.append((i, key, None))

        return on_lost

    async def _settle(self) -> None:
        """Move what tiers evicted one tier down, until nothing is left to move; report
        keys no tier holds any more."""
        pending = self._pending
        dropped: set[bytes] = set()
        while pending:
            item = pending.popleft()
            i, key, value = item
            try:
                if value is None:
                    if key not in dropped and not await self._held(key):
                        dropped.add(key)
                        self._dropped(key)
                else:
                    self._moving.add(key)
                    try:
                        await self._demote(i, key, value)
                    finally:
                        self._moving.discard(key)
            except asyncio.CancelledError:
                pending.appendleft(item)  # not moved yet: close() settles it
                raise
            except Exception:
                log.exception("demotion of a key from %s failed", self.tiers[i].name)

    async def _held(self, key: bytes) -> bool:
        """Whether any tier holds ``key`` (the evicting one may hold a newer copy), or it is
        on its way down, or its write-behind is queued or in flight."""
        if key in self._behind:
            return True
        if any(k == key and v is not None for _, k, v in self._pending):
            return True
        for k in range(len(self.tiers)):
            if await self._safe_exists(k, key):
                return True
        return False

    async def _safe_exists(self, i: int, key: bytes) -> bool:
        try:
            return bool(await self.tiers[i].exists(key))
        except Exception as exc:
            self._counters[i].errors += 1
            log.warning("tier %s: exists failed: %r", self.tiers[i].name, exc)
            return False

    async def _demote(self, i: int, key: bytes, value: Any) -> None:
        entry = value if self._entry[i] else self._decode(i, value)
        expired = entry is None or entry.expired(self._clock())
        j = i + 1
        if not expired and j < len(self.tiers):
            if await self._safe_exists(j, key):
                return  # same version already there (set invalidates older ones)
            assert entry is not None
            ttl = entry.expires - self._clock() if entry.expires else None
            payload: Any = entry if self._entry[j] else self._payload(i, j, value, entry)
            if await self._safe_set(j, key, payload, ttl):
                self._counters[j].demotions += 1
                return
            if await self._held(key):  # could not move it down; maybe another tier has it
                return
            self._dropped(key)
            return
        # Left the last tier (or expired): dropped unless a tier still holds it.
        if expired and key in self._behind:
            return  # a newer version is queued: its copies in other tiers are not this one's
        if expired:
            for k in range(len(self.tiers)):
                if k != i:
                    await self._safe_delete(k, key)
        elif await self._held(key):
            return
        self._dropped(key)

    async def _expire(self, key: bytes) -> None:
        for i in range(len(self.tiers)):
            await self._safe_delete(i, key)
        self._dropped(key)

    # -- the rest ------------------------------------------------------------------------------
    async def delete(self, key: bytes) -> bool:
        if key in self._behind:  # let its write land first, or it would bring the key back
            await self.flush()
        found = False
        for i in range(len(self.tiers)):
            found = await self._safe_delete(i, key) or found
        if found:
            self._dropped(key)
        return found

    async def clear(self) -> None:
        """Empty every tier (drop listeners are not called per key)."""
        await self.flush()
        for tier in self.tiers:
            await tier.clear()
        self._pending.clear()

    def set_behind(self, key: bytes, entry: Entry) -> bool:
        """Store ``entry`` without making the caller wait for the slow tiers (write-behind).

        The entry is encoded first (UnencodableValueError before anything is kept, as with
        :meth:`set`). When this returns the entry is in the RAM tier (later requests hit at
        once); the writes to the other tiers are queued for one writer task the store owns,
        awaited by :meth:`flush` and :meth:`close`. Durability: a graceful close writes
        everything, also when the loop's shutdown cancelled the writer first (a cancelled write
        goes back to the queue); a crash loses at most the writes still queued, which are later
        misses, never wrong data.
        """
        if self._closed:  # e.g. a stream that ended after the pipeline closed: keep nothing
            return False
        wire = entry.to_wire()
        data = self.codec.encode(wire)  # an unencodable value fails here, before anything is kept
        if self._entry[0] and self._nowait_set is not None:
            if not (entry.expires and entry.expires <= self._clock()):
                self._nowait_set(key, entry)
        self._behind[key] = entry
        # One writer drains the queue in order: background writes never race each other's
        # demotions, and a backlog is a queue, not thousands of tasks.
        self._queue.append((key, entry, wire, data))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain(), name="r1mw-write-behind")
        return True

    async def _drain(self) -> None:
        queue = self._queue
        while queue:
            if len(queue) > 1 and self._batched:
                await self._drain_batch()
                continue
            item = queue.popleft()
            key, entry, wire, data = item
            try:
                await self._write(key, entry, wire, data, behind=True)
            except asyncio.CancelledError:
                # The loop is shutting down (asyncio.run cancels every task): the entry goes
                # back, still visible to get, for close()/flush() to write. Done only once written.
                queue.appendleft(item)
                raise
            except Exception as exc:  # nobody awaits this task: a fault is counted, not raised
                self.write_errors += 1
                log.warning("write-behind of an entry failed: %r", exc)
            if self._behind.get(key) is entry:
                del self._behind[key]

    async def _drain_batch(self) -> None:
        """Write the queue's head (up to ``batch_max`` entries of distinct keys) as one batch:
        the durable tier (L2) gets them in one ``set_many`` call (one thread hop for all), the
        other written tiers one at a time. Every entry stays visible to ``get`` (``_behind``)
        until its batch has landed; faults are counted per entry."""
        queue = self._queue
        batch: list[tuple[bytes, Entry, Any, bytes]] = []
        keys: set[bytes] = set()
        while queue and len(batch) < self.batch_max and queue[0][0] not in keys:
            item = queue.popleft()
            keys.add(item[0])
            batch.append(item)
        # Nothing is done until written: a cancelled batch (the loop shutting down) goes back
        # whole, for close()/flush() to write; writing an entry twice leaves the same state.
        done: list[tuple[bytes, Entry, Any, bytes]] = []
        try:
            async with self._lock:
                done = await self._write_batch_locked(batch)
        except Exception as exc:  # nobody awaits this task: a fault is counted, not raised
            done = batch
            self.write_errors += len(batch)
            log.warning("write-behind of %d entries failed: %r", len(batch), exc)
        finally:
            if len(done) < len(batch):  # the tier took a prefix (or none): the rest goes back, in order
                queue.extendleft(reversed(batch[len(done):]))
            behind = self._behind
            for key, entry, _, _ in done:
                if behind.get(key) is entry:
                    del behind[key]

    async def _write_batch_locked(self, batch: list[tuple[bytes, Entry, Any, bytes]]
                                  ) -> list[tuple[bytes, Entry, Any, bytes]]:
        """``_write_locked(..., behind=True)`` for the entries of ``batch`` (distinct keys)
        that the durable tier's ``set_many`` takes (a prefix); returns the entries handled.

        Same end state as one write at a time (docs/design.md, "Tiers"): demotions already
        queued land first, as they would after a single write; ``set_many`` takes only keys
        new to it, so what it evicts meanwhile is either a key outside the batch or a batch
        entry it has written (its new version); the batch's keys are then deleted from the
        colder tiers, and only then do the evicted entries move down.
        """
        now = self._clock()
        live: list[tuple[int, float | None]] = []  # (position in batch, ttl)
        for n, (_, entry, _, _) in enumerate(batch):
            ttl = None
            if entry.expires:
                ttl = entry.expires - now
                if ttl <= 0:
                    continue  # expired while queued: nothing to write (as _write_locked)
            live.append((n, ttl))
        if not live:
            return batch
        if self._pending:
            await self._settle()
        d = self._durable
        assert d is not None  # batched only with a durable tier (__init__)
        encoded: dict[tuple[int, int], bytes] = {}

        def blob(i: int, n: int) -> bytes:
            codec = self._codecs[i]
            if codec is self.codec:
                return batch[n][3]
            got = encoded.get((id(codec), n))
            if got is None:
                got = encoded[(id(codec), n)] = codec.encode(batch[n][2])
            return got

        try:
            outcomes = list(await self.tiers[d].set_many([(batch[n][0], blob(d, n), ttl) for n, ttl in live]))
        except Exception as exc:
            outcomes = [exc] * len(live)
        if not outcomes:  # a tier breaking the contract (at least one): count, do not loop
            outcomes = [RuntimeError(f"{self.tiers[d].name}: set_many took nothing")] * len(live)
        for outcome in outcomes:
            if outcome is not None:
                self._counters[d].errors += 1
                log.warning("tier %s: set failed: %r", self.tiers[d].name, outcome)
        live = live[: len(outcomes)]
        handled = batch[: live[-1][0] + 1]
        for i in self._written:
            if i == d:
                continue
            if self._entry[i]:
                if not (i == 0 and self._nowait_set is not None):  # set_behind put them there
                    for n, ttl in live:
                        await self._safe_set(i, batch[n][0], batch[n][1], ttl)
                continue
            for n, ttl in live:
                await self._safe_set(i, batch[n][0], blob(i, n), ttl)
        for i in self._invalidated:
            for n, _ in live:
                await self._safe_delete(i, batch[n][0])
        await self._settle()
        return handled

    async def flush(self) -> None:
        """Wait until every write-behind has reached its tiers."""
        while self._queue or (self._writer is not None and not self._writer.done()):
            writer = self._writer
            if writer is None or writer.done():
                writer = self._writer = asyncio.get_running_loop().create_task(self._drain(), name="r1mw-write-behind")
            # wait(), not await: a writer cancelled by the loop's shutdown put its entries back
            # and ends here without cancelling us; the next turn starts a writer for them.
            # (Our own cancellation still raises, and does not cancel the writer.)
            await asyncio.wait((writer,))
            if not writer.cancelled():
                writer.result()  # a writer's own bug surfaces as it did before

    async def close(self) -> None:
        self._closed = True
        await self.flush()
        if self._pending:  # demotions a cancelled writer left unmoved
            async with self._lock:
                await self._settle()
        # A codec training a dictionary in a thread writes into the cache dir: let it finish
        # before the tiers (and maybe the directory) go away.
        for codec in {id(c): c for c in (self.codec, *self._codecs)}.values():
            wait = getattr(codec, "wait_trained", None)
            if wait is not None:
                await asyncio.to_thread(wait, 60.0)
        for tier in self.tiers:
            close = getattr(tier, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("tier %s failed to close", tier.name)

    def stats(self) -> dict[str, Any]:
        """Per tier: the tier's own figures (entries, bytes, hits, misses, evictions, ...)
        plus promotions into it, demotions into it, undecodable entries, errors and get
        latency percentiles (us) over the last 1024 lookups through ``get``. Tiers appear in
        their order, fastest first; ``promotions`` is the total."""
        out: dict[str, Any] = {"promotions": self.promotions}
        for tier, c, codec, takes_entry in zip(self.tiers, self._counters, self._codecs, self._entry):
            figures = dict(tier.stats())
            figures["corrupt"] = figures.get("corrupt", 0) + c.corrupt
            if not takes_entry:
                figures["entry_codec"] = codec.name
                codec_stats = getattr(codec, "stats", None)
                if codec_stats is not None:
                    figures["codec_stats"] = cs = codec_stats()
                    if cs.get("compression_ratio") is not None:  # msgpack bytes / stored bytes
                        figures.setdefault("compression_ratio", cs["compression_ratio"])
            figures.update(promotions=c.promotions, demotions=c.demotions, errors=c.errors,
                           latency_us=_percentiles(c.latency))
            out[tier.name] = figures
        return out


def _none(key: bytes) -> None:
    return None


def _percentiles(window: deque[float]) -> dict[str, float]:
    if not window:
        return {"count": 0}
    ordered = sorted(window)
    n = len(ordered)
    return {"count": n, "p50": ordered[n // 2] * 1e6, "p99": ordered[min(n - 1, int(n * 0.99))] * 1e6}
