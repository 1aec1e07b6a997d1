"""Batched write-behind: the store hands queued entries to L2 as one batch (``set_many``, one
thread hop for many files). Same end state as one ``set`` at a time, faults counted per entry,
entries readable while their batch is in flight, ``flush`` waits for it."""

from __future__ import annotations

import asyncio
import errno
import os
import threading

import pytest

from r1mw.tiers import DiskTier, Entry, MemoryTier, TieredStore

pytestmark = pytest.mark.anyio


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


def value(i: int, tag: str = "v") -> bytes:
    return f"{tag}:{i}:".encode() + bytes([i % 251]) * (50 + i % 300)


def on_disk(tier: DiskTier) -> dict[bytes, bytes]:
    out = {}
    for d, _, fs in os.walk(tier.directory):
        for f in fs:
            k = bytes.fromhex(f)
            out[k] = tier.get_sync(k)
    return out


@pytest.mark.parametrize("inline", [False, True])
async def test_set_many_leaves_the_state_one_set_at_a_time_leaves(tmp_path, inline):
    # Duplicates, keys already stored (each starts a run of its own) and evictions inside a run.
    one = DiskTier(tmp_path / "one", max_entries=6, inline_writes=inline)
    many = DiskTier(tmp_path / "many", max_entries=6, inline_writes=inline)
    evicted: dict[str, list] = {"one": [], "many": []}
    one.on_evict = lambda k, v: evicted["one"].append((k, v))
    many.on_evict = lambda k, v: evicted["many"].append((k, v))
    for i in range(4):
        await one.set(key(i), value(i, "old"))
        await many.set(key(i), value(i, "old"))
    items = [(key(i % 9), value(i, "new"), None) for i in (5, 6, 2, 7, 5, 8, 1, 3, 4, 6, 10, 11)]
    for k, v, ttl in items:
        await one.set(k, v, ttl)
    rest, runs = items, []
    while rest:  # each call takes a prefix: a run of keys new to the tier, or one item
        outcomes = await many.set_many(rest)
        assert outcomes and all(o is None for o in outcomes)
        runs.append(len(outcomes))
        rest = rest[len(outcomes):]
    assert runs[:2] == [2, 1] and max(runs) > 1  # 5 6 | 2 (stored: alone) | ...
    assert on_disk(many) == on_disk(one)
    assert list(many._index.keys()) == list(one._index.keys())
    assert evicted["many"] == evicted["one"] and evicted["one"]
    assert many.stats()["writes"] == one.stats()["writes"]


async def test_set_many_writes_a_run_of_new_keys_in_one_thread_hop_in_order(tmp_path, monkeypatch):
    tier = DiskTier(tmp_path, max_entries=100)
    hops, order = [], []
    real_to_thread, real_write = asyncio.to_thread, tier._write

    async def counting(fn, *args):
        hops.append(fn.__name__)
        return await real_to_thread(fn, *args)

    def recording(k, v, ttl):
        order.append(k)
        return real_write(k, v, ttl)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    tier._write = recording
    items = [(key(i), value(i), None) for i in range(20)]
    await tier.set_many(items)
    assert hops == ["_write_run"]
    assert order == [k for k, _, _ in items]
    assert on_disk(tier) == {k: v for k, v, _ in items}


async def test_one_failing_write_in_a_run_is_counted_and_the_others_land(tmp_path, monkeypatch):
    tier = DiskTier(tmp_path, max_entries=100)
    real_write = os.write

    def full_for_7(fd, data):
        if value(7) in bytes(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_for_7)
    real_check = tier._write

    def broken_for_9(k, v, ttl):
        if k == key(9):
            raise RuntimeError("bug")
        return real_check(k, v, ttl)

    tier._write = broken_for_9
    items = [(key(i), value(i), None) for i in range(12)]
    results = await tier.set_many(items)
    assert [i for i, r in enumerate(results) if r is not None] == [9]
    assert isinstance(results[9], RuntimeError)
    assert tier.stats()["write_errors"] == 1  # the refused one, as set counts it
    assert on_disk(tier) == {key(i): value(i) for i in range(12) if i not in (7, 9)}
    assert len(tier) == 10
    assert not [f for _, _, fs in os.walk(tmp_path) for f in fs if f.startswith(".tmp-")]


class GatedDisk(DiskTier):
    """L2 whose writer thread stops before writing ``gated`` until ``gate`` is set; it records
    the runs it was handed."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.gate = threading.Event()
        self.gated: bytes | None = None
        self.reached = threading.Event()
        self.runs: list[list[bytes]] = []
        self.fail: set[bytes] = set()

    def _write_run(self, run):
        self.runs.append([k for k, _, _ in run])
        return super()._write_run(run)

    def _write(self, k, v, ttl):
        if k == self.gated:
            self.reached.set()
            self.gate.wait()
        if k in self.fail:
            raise RuntimeError("bug in the writer")
        return super()._write(k, v, ttl)


async def until(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.001)


def make(tmp_path, l1=100, **kw):
    l1t = MemoryTier("l1", max_entries=l1)
    l2t = GatedDisk(tmp_path / "l2", "l2", max_entries=1000, **kw)
    return TieredStore([l1t, l2t]), l1t, l2t


async def test_queued_writes_land_as_one_batch_in_order(tmp_path):
    store, l1, l2 = make(tmp_path)
    for i in range(10):  # queued before the writer task first runs
        store.set_behind(key(i), Entry({"i": i}))
    store.set_behind(key(3), Entry({"i": "3 again"}))  # a key twice: a batch holds it once
    await store.flush()
    assert l2.runs == [[key(i) for i in range(10)]]  # then key 3 again, alone: a plain set
    got = {k: (await store.get(k))[0].value for k in map(key, range(10))}
    assert got == {key(i): {"i": "3 again" if i == 3 else i} for i in range(10)}
    found = await store.get(key(3), after_nowait=True)  # past RAM: from L2
    assert found is not None and found[0].value == {"i": "3 again"} and found[1] == "l2"
    assert l2.stats()["writes"] == 11 and store.write_errors == 0 and not store._behind


async def test_a_batch_in_flight_is_readable_and_flush_waits_for_it(tmp_path):
    store, l1, l2 = make(tmp_path)
    l2.gated = key(4)
    try:
        for i in range(8):
            store.set_behind(key(i), Entry({"i": i}))
        await until(l2.reached)  # the writer thread is inside the batch, stopped before key 4
        assert l2.runs == [[key(i) for i in range(8)]]
        for i in range(8):  # past RAM (after_nowait) and from the top: found in flight
            found = await asyncio.wait_for(store.get(key(i), after_nowait=True), 5)
            assert found is not None and found[0].value == {"i": i}
            found = await asyncio.wait_for(store.get(key(i)), 5)
            assert found is not None and found[0].value == {"i": i}
        # A key nobody stored is a miss at once: it does not wait for the batch.
        assert await asyncio.wait_for(store.get(key(99), after_nowait=True), 5) is None
        flushing = asyncio.ensure_future(store.flush())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not flushing.done()  # the batch has not landed: flush must not return
        store.set_behind(key(20), Entry({"i": 20}))  # queued behind the batch in flight
    finally:
        l2.gate.set()
    await asyncio.wait_for(flushing, 10)
    assert not store._queue and not store._behind
    assert l2.runs == [[key(i) for i in range(8)]]  # the last one alone: a plain set
    for i in [*range(8), 20]:
        assert l2.get_sync(key(i)) is not None
        found = await store.get(key(i), after_nowait=True)
        assert found is not None and found[0].value == {"i": i}


async def test_close_waits_for_a_batch_in_flight(tmp_path):
    store, _, l2 = make(tmp_path)
    l2.gated = key(2)
    try:
        for i in range(5):
            store.set_behind(key(i), Entry({"i": i}))
        await until(l2.reached)
        closing = asyncio.ensure_future(store.close())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not closing.done()
    finally:
        l2.gate.set()
    await asyncio.wait_for(closing, 10)
    assert sorted(on_disk(l2)) == [key(i) for i in range(5)]


async def test_a_failing_entry_in_a_batch_is_counted_and_the_others_land(tmp_path, monkeypatch):
    store, l1, l2 = make(tmp_path, l1=10)
    l2.fail = {key(3)}
    real_write = os.write

    def full_for_5(fd, data):  # the disk refuses entry 5 only (ENOSPC)
        if b"entry-5" in bytes(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_for_5)
    for i in range(8):
        store.set_behind(key(i), Entry(f"entry-{i}"))
    await store.flush()
    assert l2.runs == [[key(i) for i in range(8)]]
    stats = store.stats()["l2"]
    assert stats["errors"] == 1  # the writer's fault, counted by the store for that entry
    assert stats["write_errors"] == 1  # the refused write, counted by the tier as set does
    assert store.write_errors == 0
    assert sorted(on_disk(l2)) == [key(i) for i in range(8) if i not in (3, 5)]
    for i in range(8):
        found = await store.get(key(i), after_nowait=True)  # past RAM, which still has all 8
        if i in (3, 5):
            assert found is None
        else:
            assert found is not None and found[0].value == f"entry-{i}"


async def test_sparse_writes_do_not_batch(tmp_path):
    store, _, l2 = make(tmp_path)
    for i in range(5):
        store.set_behind(key(i), Entry({"i": i}))
        await store.flush()
    assert l2.runs == []  # one entry at a time: DiskTier.set, as before batching
    assert sorted(on_disk(l2)) == [key(i) for i in range(5)]
