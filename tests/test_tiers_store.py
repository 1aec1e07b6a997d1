"""TieredStore against a plain model: values never wrong or stale, entries reachable until
they leave the last tier, bounds hold, TTL; plus promotion, demotion, faults and stats."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import r1mw
from r1mw.codec import Lz4Codec
from r1mw.tiers import DiskTier, Entry, MemoryTier, TieredStore

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class DictTier:
    """A minimal bytes tier shaped like the cold tiers: name, stats, on_evict, FIFO bound."""

    def __init__(self, name: str, cap: int) -> None:
        self.name, self.cap = name, cap
        self.data: dict[bytes, bytes] = {}
        self.on_evict: Any = None
        self.fail = False

    async def get(self, key):
        if self.fail:
            raise ConnectionError("tier down")
        return self.data.get(key)

    async def set(self, key, value, ttl=None):
        if self.fail:
            raise ConnectionError("tier down")
        assert isinstance(value, bytes)
        self.data.pop(key, None)
        self.data[key] = value
        while len(self.data) > self.cap:
            old = next(iter(self.data))
            evicted = self.data.pop(old)
            if self.on_evict is not None:
                self.on_evict(old, evicted)

    async def delete(self, key):
        if self.fail:
            raise ConnectionError("tier down")
        return self.data.pop(key, None) is not None

    async def exists(self, key):
        if self.fail:
            raise ConnectionError("tier down")
        return key in self.data

    def miss_nowait(self, key):
        return not self.fail and key not in self.data

    async def clear(self):
        self.data.clear()

    def stats(self):
        return {"entries": len(self.data), "bytes": sum(map(len, self.data.values())), "hits": 0,
                "misses": 0, "evictions": 0}


KEYS = [bytes([i]) * 16 for i in range(10)]


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="r1mw-store-")
        self.clock = Clock()
        self.l1 = MemoryTier("l1", max_entries=3, clock=self.clock)
        self.l2 = self._new_l2()
        self.l3 = DictTier("l3", 5)
        self.store = TieredStore([self.l1, self.l2, self.l3], Lz4Codec(50), clock=self.clock)
        self.dropped: list[bytes] = []
        self.store.add_drop_listener(self.dropped.append)
        self.model: dict[bytes, tuple[int, float]] = {}
        self.fragile: set[bytes] = set()  # damaged on disk: may be gone, never wrong
        self.counter = 0

    inline_writes = False

    def _new_l2(self) -> DiskTier:
        return DiskTier(os.path.join(self.dir, "l2"), "l2", max_entries=4, clock=self.clock,
                        inline_writes=self.inline_writes)

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.flush())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _after(self) -> None:
        for key in self.dropped:
            # Dropped means gone from every tier.
            assert not any(self.run(t.exists(key)) for t in self.store.tiers)
            self.model.pop(key, None)
        self.dropped.clear()

    @rule(key=st.sampled_from(KEYS), ttl=st.sampled_from([0, 0, 5, 20]), size=st.integers(0, 300))
    def set(self, key, ttl, size):
        self.counter += 1
        expires = self.clock.now + ttl if ttl else 0.0
        value = {"n": self.counter, "pad": "x" * size}
        self.run(self.store.set(key, Entry(value, expires)))
        self.model[key] = (self.counter, expires)
        self.fragile.discard(key)
        self._after()

    @rule(key=st.sampled_from(KEYS), as_the_exact_stage=st.booleans())
    def get(self, key, as_the_exact_stage):
        if as_the_exact_stage:  # RAM first, then the tiers below without the first
            entry = self.store.get_nowait(key)
            found = (entry, "l1") if entry is not None else self.run(self.store.get(key, after_nowait=True))
        else:
            found = self.run(self.store.get(key))
        expected = self.model.get(key)
        live = expected is not None and not (expected[1] and expected[1] <= self.clock.now)
        if found is None:
            if key in self.fragile:  # its L2 file was damaged: losing it is allowed
                self.model.pop(key, None)
                self.fragile.discard(key)
            else:
                assert not live, f"{key[:1]!r} is stored and live but unreachable"
        else:
            assert live, "an expired, deleted or dropped entry came back"
            assert found[0].value["n"] == expected[0]  # never a stale version
        self._after()

    @rule(key=st.sampled_from(KEYS))
    def get_nowait(self, key):
        entry = self.store.get_nowait(key)
        expected = self.model.get(key)
        if entry is not None:
            assert expected is not None and entry.value["n"] == expected[0]
            assert not (expected[1] and expected[1] <= self.clock.now)

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key):
        self.run(self.store.delete(key))
        self.model.pop(key, None)
        self._after()

    @rule(key=st.sampled_from(KEYS), where=st.floats(0, 1))
    def damage_l2_file(self, key, where):
        path = self.l2._path(key)
        if os.path.exists(path):
            data = bytearray(open(path, "rb").read())
            data[min(len(data) - 1, int(len(data) * where))] ^= 0x21
            open(path, "wb").write(bytes(data))
            self.fragile.add(key)

    @rule(dt=st.sampled_from([1, 6, 30]))
    def advance(self, dt):
        self.clock.now += dt

    @precondition(lambda self: self.counter % 7 == 3)
    @rule()
    def restart_l2(self):
        # A new process opens the same L2 directory: nothing stored is lost.
        self.run(self.store.flush())
        self.l2 = self._new_l2()
        tiers = [self.l1, self.l2, self.l3]
        self.store = TieredStore(tiers, Lz4Codec(50), clock=self.clock)
        self.store.add_drop_listener(self.dropped.append)

    @invariant()
    def bounds_hold(self):
        assert len(self.l1) <= 3
        assert self.l2.stats()["entries"] <= 4
        assert len([f for _, _, fs in os.walk(os.path.join(self.dir, "l2")) for f in fs]) <= 4
        assert len(self.l3.data) <= 5


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)


class WriteBehindStoreMachine(StoreMachine):
    """The same model with the exact stage's writes: RAM at once, the slower tiers by the
    store's writer task, which lands during the next rule (reads in between must see the
    entry). L2 writes run inline so that the interleavings are the same on every run."""

    inline_writes = True

    @rule(key=st.sampled_from(KEYS), size=st.integers(0, 300))
    def set_behind(self, key, size):
        self.counter += 1
        value = {"n": self.counter, "pad": "y" * size}

        async def put():
            self.store.set_behind(key, Entry(value))

        self.run(put())
        self.model[key] = (self.counter, 0.0)
        self.fragile.discard(key)
        self._after()


    @rule(keys=st.lists(st.sampled_from(KEYS), min_size=2, max_size=8), size=st.integers(0, 300))
    def set_behind_many(self, keys, size):
        # Several writes queued before the writer runs: it lands them as batches (distinct
        # keys each; a repeated key starts the next batch).
        values = []
        for key in keys:
            self.counter += 1
            values.append((key, {"n": self.counter, "pad": "z" * size}))

        async def put():
            for key, value in values:
                self.store.set_behind(key, Entry(value))

        self.run(put())
        for key, value in values:
            self.model[key] = (value["n"], 0.0)
            self.fragile.discard(key)
        self._after()


TestWriteBehindStoreMachine = WriteBehindStoreMachine.TestCase
TestWriteBehindStoreMachine.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)


def make_store(tmp_path, l1=2, l2=3, **kw):
    l1t = MemoryTier("l1", max_entries=l1)
    l2t = DiskTier(tmp_path / "l2", "l2", max_entries=l2)
    return TieredStore([l1t, l2t], **kw), l1t, l2t


async def test_promotion_and_demotion_are_counted(tmp_path):
    store, l1, l2 = make_store(tmp_path)
    for i in range(4):
        await store.set(KEYS[i], Entry({"i": i}))
    assert len(l1) == 2 and l2.stats()["entries"] == 3  # written through to l2, l2 evicted one
    found = await store.get(KEYS[1])
    assert found is not None and found[1] == "l2" and found[0].value == {"i": 1}
    assert store.get_nowait(KEYS[1]) is not None  # promoted
    stats = store.stats()
    assert stats["l1"]["promotions"] == 1 and stats["promotions"] == 1
    assert stats["l2"]["latency_us"]["count"] >= 1
    assert [k for k in stats if k != "promotions"] == ["l1", "l2"]


async def test_eviction_from_l1_moves_the_entry_down(tmp_path):
    # l2 first misses the entry (it was deleted there), so L1's eviction must write it.
    store, l1, l2 = make_store(tmp_path, l1=1, l2=10)
    await store.set(KEYS[0], Entry({"i": 0}))
    await l2.delete(KEYS[0])
    await store.set(KEYS[1], Entry({"i": 1}))  # evicts KEYS[0] from l1
    assert await l2.get(KEYS[0]) is not None
    assert store.stats()["l2"]["demotions"] == 1
    assert (await store.get(KEYS[0]))[1] == "l2"


async def test_drop_listener_fires_only_when_the_last_tier_lets_go(tmp_path):
    store, l1, l2 = make_store(tmp_path, l1=1, l2=2)
    dropped = []
    store.add_drop_listener(dropped.append)
    for i in range(4):
        await store.set(KEYS[i], Entry({"i": i}))
    # l2 keeps 2 of the 4, l1 keeps the newest (also in l2): two keys left the store
    assert len(dropped) == 2
    for key in dropped:
        assert await store.get(key) is None
    assert await store.delete(KEYS[3]) is True
    assert dropped[-1] == KEYS[3]


async def test_single_ram_tier_drops_evicted_keys(tmp_path):
    store = TieredStore([MemoryTier("l1", max_entries=2)])
    dropped = []
    store.add_drop_listener(dropped.append)
    for i in range(5):
        await store.set(KEYS[i], Entry({"i": i}))
    assert len(dropped) == 3


async def test_a_newer_set_hides_older_versions_in_colder_tiers(tmp_path):
    l1, l3 = MemoryTier("l1", max_entries=1), DictTier("l3", 10)
    l2 = DiskTier(tmp_path / "l2", "l2", max_entries=1)
    store = TieredStore([l1, l2, l3])
    await store.set(KEYS[0], Entry({"v": "old"}))
    await store.set(KEYS[1], Entry({"v": "other"}))  # pushes KEYS[0] down to l3
    assert KEYS[0] in l3.data
    await store.set(KEYS[0], Entry({"v": "new"}))
    assert KEYS[0] not in l3.data  # invalidated
    for i in range(2, 5):
        await store.set(KEYS[i], Entry({"v": i}))
    assert (await store.get(KEYS[0]))[0].value == {"v": "new"}


async def test_unencodable_value_fails_before_anything_is_written(tmp_path):
    store, l1, l2 = make_store(tmp_path)
    with pytest.raises(r1mw.UnencodableValueError):
        await store.set(KEYS[0], Entry({"bad": {1, 2}}))
    assert store.get_nowait(KEYS[0]) is None and await l2.get(KEYS[0]) is None


async def test_corrupt_and_undecodable_entries_are_misses(tmp_path):
    store, l1, l2 = make_store(tmp_path)
    dropped = []
    store.add_drop_listener(dropped.append)
    await store.set(KEYS[0], Entry({"i": 0}))
    await l1.clear()
    await l2.set(KEYS[0], b"not an envelope")  # checksummed by l2, but not a codec envelope
    assert await store.get(KEYS[0]) is None
    assert store.stats()["l2"]["corrupt"] == 1
    assert not await l2.exists(KEYS[0])
    assert dropped == [KEYS[0]]  # it left the store


async def test_a_failing_tier_is_a_miss_and_never_an_exception(tmp_path):
    l1, bad = MemoryTier("l1", max_entries=1), DictTier("remote", 10)
    store = TieredStore([l1, bad])
    dropped = []
    store.add_drop_listener(dropped.append)
    await store.set(KEYS[0], Entry({"i": 0}))
    bad.fail = True
    await store.set(KEYS[1], Entry({"i": 1}))  # no exception; KEYS[0]'s demotion fails too
    assert await store.get(KEYS[0]) is None
    assert (await store.get(KEYS[1]))[1] == "l1"
    assert store.stats()["remote"]["errors"] >= 2
    assert dropped == [KEYS[0]]  # it could not move down: it left the store


async def test_expired_entries_leave_every_tier(tmp_path):
    clock = Clock()
    l1 = MemoryTier("l1", max_entries=5, clock=clock)
    l2 = DiskTier(tmp_path / "l2", "l2", clock=clock)
    store = TieredStore([l1, l2], clock=clock)
    dropped = []
    store.add_drop_listener(dropped.append)
    await store.set(KEYS[0], Entry({"i": 0}, expires=clock.now + 10))
    assert (await store.get(KEYS[0]))[1] == "l1"
    clock.now += 11
    assert store.get_nowait(KEYS[0]) is None
    assert await store.get(KEYS[0]) is None
    assert not await l2.exists(KEYS[0]) and dropped == [KEYS[0]]


async def test_a_bytes_tier_can_be_first(tmp_path):
    store = TieredStore([DiskTier(tmp_path / "l2", "l2")])
    await store.set(KEYS[0], Entry({"i": 0}))
    assert store.get_nowait(KEYS[0]) is None
    found = await store.get(KEYS[0], after_nowait=True)
    assert found[0].value == {"i": 0} and found[1] == "l2"


async def test_l1_byte_budget_holds_and_overflow_moves_down(tmp_path):
    l1 = MemoryTier("l1", max_entries=100, max_bytes=3000)
    l2 = DiskTier(tmp_path / "l2", "l2")
    store = TieredStore([l1, l2])
    for i in range(10):
        await store.set(KEYS[i], Entry({"text": "x" * 900}))
        assert l1.stats()["bytes"] <= 3000
    assert len(l1) < 10
    assert all([(await store.get(k)) is not None for k in KEYS])


async def test_a_rescan_that_finds_the_directory_overfull_moves_entries_down(tmp_path):
    l2 = DiskTier(tmp_path / "l2", "l2", max_entries=3)
    l3 = DictTier("l3", 100)
    store = TieredStore([l2, l3])
    for i in range(3):
        await store.set(KEYS[i], Entry({"i": i}))
    other = DiskTier(tmp_path / "l2", "l2", max_entries=100)  # another process, larger bound
    for i in range(3, 6):
        await other.set(KEYS[i], Lz4Codec().encode(Entry({"i": i}).to_wire()))
    l2._scan()
    await store._settle()
    assert l2.stats()["entries"] == 3
    assert all([(await store.get(k))[0].value == {"i": i} for i, k in enumerate(KEYS[:6])])


class GatedTier(DictTier):
    """A bytes tier whose writes wait until ``gate`` opens (a slow disk, deterministically)."""

    def __init__(self, name: str, cap: int) -> None:
        super().__init__(name, cap)
        self.gate = asyncio.Event()
        self.writing: list[bytes] = []

    async def set(self, key, value, ttl=None):
        self.writing.append(key)
        if key == KEYS[0]:
            await self.gate.wait()
        await super().set(key, value, ttl)


async def test_a_miss_does_not_wait_for_the_writer_but_a_key_on_its_way_down_is_found():
    l1, l2 = MemoryTier("l1", max_entries=1), GatedTier("l2", 10)
    store = TieredStore([l1, l2])
    l2.gate.set()
    await store.set(KEYS[0], Entry({"i": 0}))
    await l2.delete(KEYS[0])  # KEYS[0] now lives in RAM only
    l2.gate.clear()
    writer = asyncio.create_task(store.set(KEYS[1], Entry({"i": 1})))  # evicts KEYS[0]: a demotion
    while KEYS[0] not in l2.writing:
        await asyncio.sleep(0)
    # The writer holds the store (the demotion's write is stuck): a key no tier has is a miss at once.
    assert await asyncio.wait_for(store.get(KEYS[5], after_nowait=True), 1) is None
    assert l1.get_nowait(KEYS[0]) is None and KEYS[0] not in l2.data  # in neither tier right now
    waiting = asyncio.create_task(store.get(KEYS[0], after_nowait=True))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # on its way down: the lookup waits for the demotion, no false miss
    l2.gate.set()
    await writer
    found = await asyncio.wait_for(waiting, 1)
    assert found is not None and found[0].value == {"i": 0}


async def test_an_entry_another_process_wrote_is_not_a_certain_miss(tmp_path):
    ours = TieredStore([MemoryTier("l1", max_entries=4), DiskTier(tmp_path / "l2", "l2", max_entries=10)])
    theirs = TieredStore([MemoryTier("l1", max_entries=4), DiskTier(tmp_path / "l2", "l2", max_entries=10)])
    await theirs.set(KEYS[3], Entry({"from": "another process"}))
    found = await ours.get(KEYS[3], after_nowait=True)
    assert found is not None and found[0].value == {"from": "another process"} and found[1] == "l2"
    misses = ours.tiers[1].stats()["misses"]
    assert await ours.get(KEYS[4], after_nowait=True) is None
    assert ours.tiers[1].stats()["misses"] == misses + 1  # the quick miss is counted


class StuckTier(DictTier):
    """A bytes tier whose writes wait until ``gate`` opens; ``batched`` adds ``set_many``."""

    def __init__(self, name: str, cap: int, batched: bool) -> None:
        super().__init__(name, cap)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        if batched:
            self.set_many = self._set_many

    async def set(self, key, value, ttl=None):
        self.entered.set()
        await self.gate.wait()
        await super().set(key, value, ttl)

    async def _set_many(self, items):
        self.entered.set()
        await self.gate.wait()
        for k, v, ttl in items:
            await DictTier.set(self, k, v, ttl)
        return [None] * len(items)


@pytest.mark.parametrize("batched", [False, True])
async def test_a_write_behind_cancelled_by_the_loop_shutdown_is_written_at_close(batched):
    # asyncio.run() cancels every task left when main() returns, the store's writer among them,
    # while it is inside a write; the pipeline's close() runs after (or beside) that.
    l2 = StuckTier("l2", 100, batched)
    store = TieredStore([MemoryTier("l1", max_entries=100), l2])
    for i in range(5):
        store.set_behind(KEYS[i], Entry({"i": i}))
    await l2.entered.wait()
    store._writer.cancel()
    l2.gate.set()
    await store.close()  # the writer is cancelled, not done yet: close neither raises nor drops
    assert sorted(l2.data) == sorted(KEYS[:5])
    assert store._behind == {} and store.write_errors == 0
