"""L4 archive tier: contract, compression, byte budget, restart, and fault tests."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from tier_faults import (PowerCut, abandon, child, count_served, count_served_async, damage_file, disk_full,
                         flip_at, flip_byte, remove_files, sigkill)

from r1mw.tiers.archive import ArchiveTier, zstd_available

pytestmark = pytest.mark.anyio
CODECS = ["lz4", pytest.param("zstd", marks=pytest.mark.skipif(not zstd_available(), reason="zstandard not installed"))]


def reply_bytes(i: int) -> bytes:
    """Something shaped like an encoded R1 reply: repetitive prose with a number in it."""
    text = f"Reasoning step {i}: the 50-day moving average of AAPL crossed above the 200-day. " * 6
    return json.dumps({"id": f"chatcmpl-{i}", "content": text, "reasoning_content": text[::-1]}).encode()


def open_tier(path: Path, **kw) -> ArchiveTier:
    kw.setdefault("block_bytes", 8192)
    kw.setdefault("segment_bytes", 64 * 1024)
    kw.setdefault("fsync", False)
    return ArchiveTier(path, **kw)


@pytest.fixture(params=CODECS)
async def tier(request, tmp_path):
    t = open_tier(tmp_path / "l4", codec=request.param)
    yield t
    await t.close()


async def test_get_after_set_delete_exists_clear(tier):
    assert await tier.get(b"k") is None
    await tier.set(b"k", b"v1")
    assert await tier.get(b"k") == b"v1"  # served from the pending block
    await tier.flush()
    assert await tier.get(b"k") == b"v1"  # and from disk
    await tier.set(b"k", b"v2")
    assert await tier.get(b"k") == b"v2" and await tier.exists(b"k")
    assert await tier.delete(b"k") is True and await tier.delete(b"k") is False
    assert await tier.get(b"k") is None and not await tier.exists(b"k")
    await tier.set(b"a", b"1")
    await tier.flush()
    await tier.clear()
    assert await tier.get(b"a") is None and len(tier) == 0
    await tier.set(b"b", b"2")
    assert await tier.get(b"b") == b"2"


async def test_ttl_expires(tier):
    await tier.set(b"short", b"x", ttl=0.05)
    await tier.set(b"long", b"y", ttl=60)
    await tier.flush()
    await asyncio.sleep(0.1)
    assert await tier.get(b"short") is None and await tier.get(b"long") == b"y"


async def test_blocks_compress_and_restart_keeps_everything(tmp_path, tier):
    data = {b"k%d" % i: reply_bytes(i) for i in range(400)}
    for k, v in data.items():
        await tier.set(k, v)
    await tier.delete(b"k7")
    s = tier.stats()
    assert s["blocks_written"] > 1 and s["compression_ratio"] > 2  # raw / stored
    assert s["stored_bytes"] * 2 < s["raw_bytes"]
    await tier.close()  # flushes the pending block
    raw = sum(len(v) for v in data.values())
    assert sum(p.stat().st_size for p in (tmp_path / "l4").glob("*.arc")) < raw / 2
    t = open_tier(tmp_path / "l4")
    assert len(t) == 399 and await t.get(b"k7") is None
    for k, v in data.items():
        if k != b"k7":
            assert await t.get(k) == v
    assert t.stats()["index_fallbacks"] == 0
    await t.close()


async def test_reads_blocks_of_any_codec(tmp_path):
    if not zstd_available():
        pytest.skip("zstandard not installed")
    t = open_tier(tmp_path, codec="lz4")
    await t.set(b"old", b"lz4 block")
    await t.close()
    t = open_tier(tmp_path, codec="zstd")
    await t.set(b"new", b"zstd block")
    await t.flush()
    assert await t.get(b"old") == b"lz4 block" and await t.get(b"new") == b"zstd block"
    await t.close()


async def test_byte_budget_drops_oldest_segments_and_reports_them(tmp_path):
    budget = 40_000
    t = open_tier(tmp_path, max_bytes=budget, block_bytes=2048, codec="lz4")
    dropped: dict[bytes, bytes] = {}
    t.on_evict = lambda k, v: dropped.__setitem__(k, v)
    data = {b"k%d" % i: os.urandom(300) for i in range(600)}  # incompressible
    for k, v in data.items():
        await t.set(k, v)
        assert t.stats()["bytes"] <= budget
    assert sum(p.stat().st_size for p in tmp_path.glob("*.arc")) <= budget
    assert t.stats()["segments_dropped"] >= 1
    assert dropped and all(data[k] == v for k, v in dropped.items())
    for k in dropped:
        assert await t.get(k) is None
    assert await t.get(b"k599") == data[b"k599"]
    await t.close()


async def test_a_delete_whose_tombstone_drops_a_segment_reports_what_it_evicted(tmp_path):
    # A tombstone fills the pending block, the block's flush passes the byte budget, and the
    # oldest segment goes: on_evict must hear of its records as it does after a set, or the
    # semantic index keeps pointing at them.
    t = open_tier(tmp_path, max_bytes=40_000, block_bytes=2048, segment_bytes=8192, codec="lz4")
    reported: set[bytes] = set()
    during_delete: list[bytes] = []
    deleting = False

    def on_evict(k, v):
        reported.add(k)
        if deleting:
            during_delete.append(k)

    t.on_evict = on_evict
    t.on_lost = reported.add
    data = {b"k%d" % i: os.urandom(300) for i in range(400)}  # incompressible: the archive is full
    keys = list(data)
    for k in keys:
        await t.set(k, data[k])
    deleted: set[bytes] = set()
    deleting = True
    for k in reversed(keys[-80:]):  # the newest: tombstones alone fill blocks now
        if k not in reported:
            await t.delete(k)
            deleted.add(k)
    deleting = False
    for k in keys:  # every key is deleted, reported gone, or still served intact
        if k not in deleted and k not in reported:
            assert await t.get(k) == data[k], "a record left the archive and on_evict never heard"
    assert during_delete, "no delete triggered a segment drop: the test lost its point"
    await t.close()


@pytest.mark.parametrize("fsync", [True, False])
async def test_a_delete_hiding_an_archived_record_survives_a_crash(tmp_path, fsync):
    # The store deletes a key from L4 when it stores a newer value above. If the tombstone
    # waited in the pending block, a crash (or with fsync, a power loss) would lose it and
    # bring the older value back. With fsync off only a crash is modelled (what was written
    # stays): the tombstone must at least be written.
    path = tmp_path / "l4"
    power = PowerCut()
    with power.recording():
        t = open_tier(path, fsync=fsync)
        await t.set(b"K" * 16, b"v1: overwritten since")
        await t.set(b"other" * 3, b"x")
        await t.flush()
        with t._lock:
            t._roll()  # sealed: K's v1 block is on disk
        await t.set(b"more" * 4, b"y")  # something pending, as usual
        assert await t.delete(b"K" * 16) is True  # store.set(K, v2): v2 went to L1/L2
        durable = power.snapshot()  # the process dies, or the power goes
        abandon(t)
    if fsync:
        PowerCut.cut(path, durable)
    t = open_tier(path, fsync=fsync)
    try:
        assert t.get_sync(b"K" * 16) is None  # never the value it had before the last set
        assert t.get_sync(b"other" * 3) == b"x"
    finally:
        t.close_sync()


async def test_unbounded_when_max_bytes_is_zero(tmp_path):
    t = open_tier(tmp_path, max_bytes=0, block_bytes=1024, segment_bytes=4096)
    for i in range(300):
        await t.set(b"k%d" % i, os.urandom(200))
    assert len(t) == 300 and t.stats()["segments_dropped"] == 0 and t.stats()["segments"] > 5
    await t.close()


# -- faults -----------------------------------------------------------------------------------


def fill(path: Path, n: int = 200) -> dict[bytes, bytes]:
    t = open_tier(path, block_bytes=2048, segment_bytes=16 * 1024, codec="lz4")
    data = {b"k%d" % i: reply_bytes(i) for i in range(n)}
    for k, v in data.items():
        t.set_sync(k, v)
    t.close_sync()
    return data


def served(path: Path, data: dict[bytes, bytes]) -> tuple[int, ArchiveTier]:
    t = open_tier(path)
    return count_served(t, data), t


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
async def test_bit_flip_in_a_block_is_a_miss_never_wrong_data(tmp_path, where):
    data = fill(tmp_path / "src")
    for variant in ("with-index", "scan"):
        d = tmp_path / variant
        shutil.copytree(tmp_path / "src", d)
        if variant == "scan":
            remove_files(d, "*.idx")
        flip_at(sorted(d.glob("*.arc"))[0], where, 0x01)
        n, t = served(d, data)
        assert len(data) - 60 <= n < len(data)  # the records of one block are lost, no more
        t.close_sync()


async def test_truncated_tail_block_is_cut(tmp_path):
    data = fill(tmp_path)
    newest = max(tmp_path.glob("*.arc"))
    (tmp_path / (newest.stem + ".idx")).unlink()
    os.truncate(newest, newest.stat().st_size - 100)
    n, t = served(tmp_path, data)
    assert 0 < n < len(data) and t.stats()["torn_tails"] == 1
    t.close_sync()
    n2, t = served(tmp_path, data)
    assert n2 == n and t.stats()["torn_tails"] == 0
    t.close_sync()


async def test_corrupt_index_falls_back_to_scanning(tmp_path):
    data = fill(tmp_path)
    idx = sorted(tmp_path.glob("*.idx"))[0]
    idx.write_bytes(idx.read_bytes()[:-5])
    n, t = served(tmp_path, data)
    assert n == len(data) and t.stats()["index_fallbacks"] == 1
    t.close_sync()


async def test_deleted_segment_is_a_miss(tmp_path):
    data = fill(tmp_path)
    t = open_tier(tmp_path, refresh_interval=0)
    for p in tmp_path.glob("*.arc"):
        p.unlink()
    for k, v in data.items():
        assert await t.get(k) in (v, None)
    await t.set(b"new", b"value")
    await t.flush()
    assert await t.get(b"new") == b"value"
    await t.close()


async def test_disk_full_fails_softly(tmp_path):
    t = open_tier(tmp_path)
    await t.set(b"before", b"ok")
    await t.flush()
    with disk_full(t, kept=lambda n: 7):
        await t.set(b"during", b"x" * 100)
        await t.flush()  # no exception
        assert t.stats()["write_errors"] == 1 and await t.get(b"during") is None
    await t.set(b"after", b"fine")
    await t.close()
    t = open_tier(tmp_path)
    assert t.stats()["corrupt"] == 0 and t.stats()["torn_tails"] == 0
    assert await t.get(b"before") == b"ok" and await t.get(b"after") == b"fine"
    await t.close()


KILLED = textwrap.dedent("""
    import sys, json
    from r1mw.tiers.archive import ArchiveTier
    t = ArchiveTier(sys.argv[1], block_bytes=1024, fsync=False, codec="lz4")
    i = 0
    while True:
        t.set_sync(b"k%d" % i, b"value-%d" % i * 40)
        if t.blocks_written >= 5 and t._pending_bytes == 0:
            print(json.dumps(sorted(k.decode() for k in t._index)), flush=True)
            break
        i += 1
    while True:
        t.set_sync(b"k%d" % i, b"value-%d" % i * 40)
        i += 1
""")


async def test_sigkill_writer_then_reopen(tmp_path):
    with child(KILLED, str(tmp_path)) as proc:
        flushed = json.loads(proc.stdout.readline())
        sigkill(proc)
    t = open_tier(tmp_path)
    for k in flushed:  # every flushed block survives the kill
        assert t.get_sync(k.encode()) == b"value-%d" % int(k[1:]) * 40
    for k in list(t._index):
        assert t.get_sync(k) == b"value-%d" % int(k[1:]) * 40
    assert t.stats()["corrupt"] == 0
    t.close_sync()


async def test_other_writers_archive_is_read_after_a_refresh(tmp_path):
    a = open_tier(tmp_path, refresh_interval=0)
    b = open_tier(tmp_path, refresh_interval=0)
    a.set_sync(b"k", b"one")
    a.flush_sync()  # pending blocks are private until written
    assert b.get_sync(b"k") == b"one"
    a.set_sync(b"k", b"two")
    a.delete_sync(b"k")
    a.set_sync(b"j", b"jay")
    a.flush_sync()
    assert b.get_sync(b"k") is None and b.get_sync(b"j") == b"jay"
    a.close_sync()
    b.close_sync()


class ArchiveModel(RuleBasedStateMachine):
    """L4 against a dict: set/get/delete/flush/reopen/clear with tiny blocks and segments."""

    @initialize()
    def setup(self):
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="r1mw-l4-model-")
        self.tier = self._open()
        self.model: dict[bytes, bytes] = {}

    def _open(self) -> ArchiveTier:
        return open_tier(Path(self.dir), block_bytes=256, segment_bytes=4096, codec="lz4", refresh_interval=0)

    def teardown(self):
        self.tier.close_sync()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(key=st.sampled_from([b"k%d" % i for i in range(10)]), value=st.binary(max_size=200))
    def set(self, key, value):
        self.tier.set_sync(key, value)
        self.model[key] = value

    @rule(key=st.sampled_from([b"k%d" % i for i in range(10)]))
    def get(self, key):
        assert self.tier.get_sync(key) == self.model.get(key)

    @rule(key=st.sampled_from([b"k%d" % i for i in range(10)]))
    def delete(self, key):
        assert self.tier.delete_sync(key) == (key in self.model)
        self.model.pop(key, None)

    @rule()
    def flush(self):
        self.tier.flush_sync()

    @rule()
    def reopen(self):
        self.tier.close_sync()
        self.tier = self._open()
        assert len(self.tier) == len(self.model)

    @rule()
    def clear(self):
        self.tier.clear_sync()
        self.model.clear()


ArchiveModel.TestCase.settings = settings(max_examples=30, stateful_step_count=40, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
test_archive_model = ArchiveModel.TestCase


async def test_conforms_to_the_tier_protocol(tier):
    from r1mw.protocols import Tier

    assert isinstance(tier, Tier)
    assert hasattr(tier, "on_evict") and callable(tier.close)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
async def test_damage_under_an_open_archive_is_a_miss_never_wrong_data(tmp_path, damage):
    data = fill(tmp_path)
    t = open_tier(tmp_path, refresh_interval=-1)
    for seg in sorted(tmp_path.glob("*.arc"))[:-1]:
        damage_file(seg, damage, start=40, step=501)
    served = await count_served_async(t, data)
    assert served < len(data) and t.stats()["corrupt"] > 0
    await t.close()


# -- the shared tier contract (tests/tier_conformance.py) -------------------------------------

from tier_conformance import TierConformance  # noqa: E402


class TestArchiveTierConformance(TierConformance):
    def make_tier(self, path, max_entries):
        # Bounded in bytes only: a budget of a few records' worth.
        return ArchiveTier(path / "l4", max_bytes=max_entries * 60, block_bytes=64, fsync=False, codec="lz4")

    def bound(self, tier, max_entries):
        return "bytes", tier.max_bytes

    def corrupt(self, tier, key):
        tier.flush_sync()
        loc = tier._index[key]
        tier._blocks.clear()
        flip_byte(tier._data_path(loc.seg), loc.offset + loc.length - 2, 0x10)
        return True


async def test_compressed_entries_are_archived_uncompressed_inside_blocks(tmp_path):
    from r1mw.codec import Lz4Codec, decode, peek_codec
    from r1mw.tiers import Entry

    codec = Lz4Codec()
    entries = [codec.encode(Entry({"answer": reply_bytes(i).decode()}).to_wire()) for i in range(50)]
    assert all(peek_codec(e) == "msgpack+lz4" and e[4] & 1 for e in entries)
    t = open_tier(tmp_path, codec="lz4", block_bytes=64 * 1024)
    for i, e in enumerate(entries):
        await t.set(b"k%d" % i, e)
    await t.close()
    t = open_tier(tmp_path)
    for i, e in enumerate(entries):
        got = await t.get(b"k%d" % i)
        assert peek_codec(got) == "msgpack" and decode(got) == decode(e)  # same value, plain envelope
    await t.set(b"not-an-envelope", b"R1 but not an entry")
    assert await t.get(b"not-an-envelope") == b"R1 but not an entry"
    await t.close()
    t = open_tier(tmp_path / "as-given", codec="lz4", block_bytes=64 * 1024, recompress=False)
    for i, e in enumerate(entries):
        await t.set(b"k%d" % i, e)
    assert await t.get(b"k1") == entries[1]
    await t.close()
