"""Batched write-behind: the store hands queued entries to L2 as one batch (``set_many``, one
thread hop for many files). Same end state as one ``set`` at a time, faults counted per entry,
entries readable while their batch is in flight, ``flush`` waits for it."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from r1mw.tiers import DiskTier

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
