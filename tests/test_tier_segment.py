"""L3 segment tier: contract, a stateful model with reopen and compaction, and fault tests
(truncation, bit flips, deleted files, SIGKILL mid-write, ENOSPC, two processes)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import textwrap
from collections import OrderedDict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from tier_faults import (PowerCut, abandon, child, count_served, count_served_async, damage_file, disk_full,
                         flip_at, flip_byte, remove_files, sigkill)

import r1mw
from r1mw.tiers import segment as segment_mod
from r1mw.tiers.segment import SegmentTier

pytestmark = pytest.mark.anyio


def value_of(i: int, size: int = 100) -> bytes:
    return (f"value-{i}-".encode() * (size // 8 + 1))[:size]


def open_tier(path: Path, **kw) -> SegmentTier:
    kw.setdefault("segment_bytes", 4096)
    kw.setdefault("fsync", False)
    return SegmentTier(path, **kw)


# -- contract -------------------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["thread", "inline"])
async def tier(request, tmp_path):
    t = open_tier(tmp_path / "l3", inline_reads=request.param)
    yield t
    await t.close()


async def test_get_after_set_delete_exists_clear(tier):
    assert await tier.get(b"k") is None
    await tier.set(b"k", b"v1")
    assert await tier.get(b"k") == b"v1"
    assert await tier.exists(b"k")
    await tier.set(b"k", b"v2")
    assert await tier.get(b"k") == b"v2"
    assert await tier.delete(b"k") is True
    assert await tier.delete(b"k") is False
    assert await tier.get(b"k") is None and not await tier.exists(b"k")
    await tier.set(b"a", b"1")
    await tier.set(b"b", b"")
    assert await tier.get(b"b") == b""
    await tier.clear()
    assert await tier.get(b"a") is None and len(tier) == 0
    await tier.set(b"c", b"3")
    assert await tier.get(b"c") == b"3"
    s = tier.stats()
    assert s["entries"] == 1 and s["hits"] >= 4 and s["misses"] >= 3


async def test_refuses_non_bytes_with_a_clear_error(tier):
    with pytest.raises(TypeError, match="stores bytes"):
        await tier.set(b"k", {"not": "bytes"})


async def test_ttl_expires(tier):
    await tier.set(b"short", b"x", ttl=0.05)
    await tier.set(b"long", b"y", ttl=60)
    await asyncio.sleep(0.1)
    assert await tier.get(b"short") is None
    assert not await tier.exists(b"short")
    assert await tier.get(b"long") == b"y"
    assert tier.stats()["expired"] == 1


async def test_ttl_survives_restart(tmp_path):
    t = open_tier(tmp_path)
    await t.set(b"short", b"x", ttl=0.05)
    await t.set(b"long", b"y", ttl=60)
    await t.close()
    await asyncio.sleep(0.1)
    t = open_tier(tmp_path)
    assert await t.get(b"short") is None and await t.get(b"long") == b"y"
    assert len(t) == 1
    await t.close()


async def test_capacity_in_entries_is_never_exceeded_and_evictions_are_handed_down(tmp_path):
    t = open_tier(tmp_path, max_entries=20)
    evicted: dict[bytes, bytes] = {}
    t.on_evict = lambda k, v: evicted.__setitem__(k, v)
    for i in range(100):
        await t.set(b"k%d" % i, value_of(i))
        assert len(t) <= 20
    # FIFO by write time: the 20 newest stay, the 80 oldest went down with their values.
    assert {k for k in t._index} == {b"k%d" % i for i in range(80, 100)}
    assert evicted == {b"k%d" % i: value_of(i) for i in range(80)}
    await t.close()
    t = open_tier(tmp_path, max_entries=20)  # evictions stay evicted after a restart
    assert len(t) == 20 and await t.get(b"k0") is None and await t.get(b"k99") == value_of(99)
    await t.close()


async def test_capacity_in_bytes_is_never_exceeded(tmp_path):
    budget = 64 * 1024
    t = open_tier(tmp_path, max_bytes=budget, segment_bytes=8192)
    dropped: list[bytes] = []
    t.on_evict = lambda k, v: dropped.append(k)
    for i in range(400):
        await t.set(b"k%d" % i, value_of(i, 500))
        assert t.stats()["bytes"] <= budget
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    assert on_disk <= budget
    assert dropped and await t.get(b"k399") == value_of(399, 500)
    assert all([await t.get(k) is None for k in dropped])
    await t.close()


async def test_restart_keeps_data_from_hints_without_reading_records(tmp_path, monkeypatch):
    t = open_tier(tmp_path)
    for i in range(200):
        await t.set(b"k%d" % i, value_of(i))
    await t.delete(b"k5")
    await t.close()
    assert len(list(tmp_path.glob("*.hint"))) == len(list(tmp_path.glob("*.seg")))
    scans = []
    real_scan = segment_mod.recordio.scan
    monkeypatch.setattr(segment_mod.recordio, "scan", lambda *a, **k: scans.append(1) or real_scan(*a, **k))
    t = open_tier(tmp_path)
    assert scans == []  # every segment came from its hint
    assert len(t) == 199 and await t.get(b"k5") is None
    assert all([await t.get(b"k%d" % i) == value_of(i) for i in range(200) if i != 5])
    await t.close()


async def test_compaction_reclaims_dead_bytes_and_keeps_live_data(tmp_path):
    t = open_tier(tmp_path, segment_bytes=4096)
    for i in range(300):
        await t.set(b"k%d" % (i % 50), value_of(i))
    for i in range(25):
        await t.delete(b"k%d" % i)
    await t.compact()
    s = t.stats()
    assert s["compactions"] >= 1
    assert s["bytes"] < 300 * 140  # most of 300 records were overwritten and are gone
    expected = {b"k%d" % (i % 50): value_of(i) for i in range(300)}
    for k, v in expected.items():
        assert await t.get(k) == (None if int(k[1:]) < 25 else v)
    await t.close()
    t = open_tier(tmp_path)
    for k, v in expected.items():
        assert await t.get(k) == (None if int(k[1:]) < 25 else v)
    await t.close()


async def test_plugins_register_l3_and_l4_from_settings(tmp_path):
    s = r1mw.Settings(tiers="l1,l3,l4", l3_size=5, l3_dir=str(tmp_path / "three"), l4_dir=str(tmp_path / "four"),
                      l3_inline_reads=True)
    async with r1mw.Pipeline(s) as pipe:
        l3, l4 = pipe.store.tiers[1], pipe.store.tiers[2]
        assert (l3.name, l4.name) == ("l3", "l4")
        assert l3.max_entries == 5 and l3.inline_reads and l3.path == tmp_path / "three"
        assert l4.path == tmp_path / "four"
        assert {"l3", "l4"} <= set(pipe.stats()["tiers"])


def test_bad_cold_tier_flags_fail_with_one_line():
    with pytest.raises(r1mw.ConfigError, match="R1MW_L4_CODEC='brotli' is invalid"):
        r1mw.Settings.from_env({"R1MW_L4_CODEC": "brotli"}, dotenv=None)
    with pytest.raises(r1mw.ConfigError, match="R1MW_L3_COMPACT_RATIO"):
        r1mw.Settings.from_env({"R1MW_L3_COMPACT_RATIO": "2"}, dotenv=None)


# -- a stateful model: FIFO eviction, reopen and compaction ---------------------------------

KEYS = st.sampled_from([b"k%d" % i for i in range(12)])
VALUES = st.binary(max_size=300)


class SegmentModel(RuleBasedStateMachine):
    """L3 against an ordered dict: set/get/delete/reopen/compact/clear, with a capacity of 8
    (FIFO by write time), tiny segments (many seals) and refresh on every miss."""

    MAX = 8

    @initialize()
    def setup(self):
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="r1mw-l3-model-")
        self.tier = open_tier(Path(self.dir), max_entries=self.MAX, segment_bytes=1024, refresh_interval=0,
                              compact_ratio=0.3)
        self.model: OrderedDict[bytes, bytes] = OrderedDict()

    def teardown(self):
        self.tier.close_sync()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(key=KEYS, value=VALUES)
    def set(self, key, value):
        evicted = self.tier.set_sync(key, value)
        self.model.pop(key, None)
        self.model[key] = value
        expected = []
        while len(self.model) > self.MAX:
            expected.append(self.model.popitem(last=False))
        assert evicted == expected

    @rule(key=KEYS)
    def get(self, key):
        assert self.tier.get_sync(key) == self.model.get(key)

    @rule(key=KEYS)
    def delete(self, key):
        assert self.tier.delete_sync(key) == (key in self.model)
        self.model.pop(key, None)

    @rule()
    def reopen(self):
        self.tier.close_sync()
        self.tier = open_tier(Path(self.dir), max_entries=self.MAX, segment_bytes=1024, refresh_interval=0,
                              compact_ratio=0.3)

    @rule()
    def compact(self):
        self.tier.compact_sync()

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self):
        self.tier.clear_sync()
        self.model.clear()

    @invariant()
    def same_keys_in_order(self):
        if hasattr(self, "tier"):
            assert list(self.tier._index) == list(self.model)
            assert self.tier.stats()["corrupt"] == 0


SegmentModel.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
test_segment_model = SegmentModel.TestCase


# -- faults ---------------------------------------------------------------------------------


def fill(path: Path, n: int = 60, size: int = 100) -> dict[bytes, bytes]:
    t = open_tier(path, segment_bytes=2048)
    data = {b"k%d" % i: value_of(i, size) for i in range(n)}
    for k, v in data.items():
        t.set_sync(k, v)
    t.close_sync()
    return data


def check_never_wrong(path: Path, data: dict[bytes, bytes]) -> tuple[int, SegmentTier]:
    """Every key reads as its value or a miss; returns how many were served."""
    t = open_tier(path)
    return count_served(t, data), t


async def test_truncated_tail_is_cut_at_start_and_earlier_records_stay(tmp_path):
    data = fill(tmp_path)
    newest = max(tmp_path.glob("*.seg"))
    (tmp_path / (newest.stem + ".hint")).unlink()  # as after a crash: no hint for it
    size = newest.stat().st_size
    os.truncate(newest, size - 30)  # the last record loses its end
    served, t = check_never_wrong(tmp_path, data)
    assert served == len(data) - 1
    assert t.stats()["torn_tails"] == 1 and newest.stat().st_size < size - 30
    t.set_sync(b"new", b"after")  # still writable
    assert t.get_sync(b"new") == b"after"
    t.close_sync()
    served, t = check_never_wrong(tmp_path, data)
    assert served == len(data) - 1 and t.stats()["torn_tails"] == 0
    t.close_sync()


@pytest.mark.parametrize("where", [0.05, 0.3, 0.5, 0.77, 0.95])
async def test_bit_flips_never_serve_wrong_data(tmp_path, where):
    data = fill(tmp_path / "src")
    for variant in ("with-hint", "scan"):
        d = tmp_path / variant
        shutil.copytree(tmp_path / "src", d)
        if variant == "scan":
            remove_files(d, "*.hint")
        flip_at(sorted(d.glob("*.seg"))[0], where, 0x20)
        served, t = check_never_wrong(d, data)
        assert served >= len(data) - 2  # one record lost (two if the flip hit a boundary)
        assert t.stats()["corrupt"] >= 1
        t.close_sync()


async def test_corrupt_hint_falls_back_to_scanning_its_segment(tmp_path):
    data = fill(tmp_path)
    hint = sorted(tmp_path.glob("*.hint"))[0]
    raw = bytearray(hint.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    hint.write_bytes(bytes(raw))
    served, t = check_never_wrong(tmp_path, data)
    assert served == len(data) and t.stats()["hint_fallbacks"] == 1
    t.close_sync()


async def test_segments_deleted_while_reading_are_misses(tmp_path):
    data = fill(tmp_path)
    t = open_tier(tmp_path, refresh_interval=0)
    first = list(data)[:5]
    for k in first:  # these segments now have open read fds
        assert t.get_sync(k) == data[k]
    for seg in tmp_path.glob("*.seg"):
        seg.unlink()
    for k, v in data.items():
        assert await t.get(k) in (v, None)
    assert await t.get(list(data)[-1]) is None
    await t.set(b"again", b"works")
    assert await t.get(b"again") == b"works"
    await t.close()


WRITER = textwrap.dedent("""
    import os, sys, time
    from r1mw.tiers import segment
    from r1mw.tiers.segment import SegmentTier
    path, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t = SegmentTier(path, segment_bytes=1 << 20, fsync=False)
    def value(i):
        return (b"value-%d-" % i) * 50
    for i in range(n):
        t.set_sync(b"k%d" % i, value(i))
    print("written", n, flush=True)
    if mode == "torn":
        real = os.write
        def half(fd, data):  # the kernel took half of the record, then the process died
            real(fd, bytes(data[: len(data) // 2]))
            print("mid-write", flush=True)
            time.sleep(60)
        segment.os.write = half
        t.set_sync(b"k%d" % n, value(n))
    else:
        i = n
        while True:
            t.set_sync(b"k%d" % i, value(i))
            i += 1
""")


@pytest.mark.parametrize("mode", ["torn", "busy"])
async def test_sigkill_writer_mid_write_then_reopen(tmp_path, mode):
    with child(WRITER, str(tmp_path), mode, "200") as proc:
        assert proc.stdout.readline().split() == ["written", "200"]
        if mode == "torn":
            assert proc.stdout.readline().strip() == "mid-write"
        sigkill(proc)
    t = open_tier(tmp_path)
    for i in range(200):  # everything written before the kill is there
        assert t.get_sync(b"k%d" % i) == (b"value-%d-" % i) * 50
    for k in list(t._index):  # whatever else is there is right
        i = int(k[1:])
        assert t.get_sync(k) == (b"value-%d-" % i) * 50
    s = t.stats()
    assert s["corrupt"] == 0
    if mode == "torn":
        assert s["torn_tails"] == 1 and t.get_sync(b"k200") is None
    t.close_sync()


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
@pytest.mark.parametrize("how", ["deleted", "evicted"])
async def test_a_set_above_keeps_the_older_value_hidden_after_a_power_cut(tmp_path, inline, how):
    # The store hides a key's L3 record by deleting it from L3 when it stores a newer value
    # above (L1/L2). With fsync on, that must survive a power loss: the key's tombstone (written
    # by the delete, or earlier by its eviction to L4) is durable before delete() returns.
    path = tmp_path / "l3"
    power = PowerCut()
    with power.recording():
        t = SegmentTier(path, max_entries=1 if how == "evicted" else 100, inline_reads=inline, fsync=True)
        await t.set(b"K" * 16, b"v1: overwritten since")
        with t._lock:
            t._roll()  # sealed, fsynced: K's v1 record is durable
        if how == "evicted":  # K moves on to L4, its eviction tombstone goes to the active segment
            await t.set(b"other" * 3, b"x")
            assert not t.exists_sync(b"K" * 16)
        await t.delete(b"K" * 16)  # store.set(K, v2): v2 went to L1/L2 (lost in the cut too)
        durable = power.snapshot()  # the power goes
        abandon(t)
    PowerCut.cut(path, durable)
    t = SegmentTier(path, inline_reads=inline, fsync=True)
    try:
        assert t.get_sync(b"K" * 16) is None  # never the value it had before the last set
    finally:
        t.close_sync()


async def test_disk_full_fails_softly_and_corrupts_nothing(tmp_path):
    t = open_tier(tmp_path)
    await t.set(b"before", b"ok")
    with disk_full(t, kept=lambda n: n // 3):  # a partial write, then no space
        await t.set(b"during", b"x" * 500)  # no exception
        assert await t.delete(b"before") is True  # the tombstone failed to write: still deleted here
        assert t.stats()["write_errors"] == 2
        assert await t.get(b"during") is None
    await t.set(b"after", b"fine")
    assert await t.get(b"after") == b"fine"
    await t.close()
    t = open_tier(tmp_path)
    s = t.stats()
    assert s["corrupt"] == 0 and s["torn_tails"] == 0
    assert await t.get(b"after") == b"fine" and await t.get(b"during") is None
    await t.close()


SHARER = textwrap.dedent("""
    import sys, json
    from r1mw.tiers.segment import SegmentTier
    path = sys.argv[1]
    t = SegmentTier(path, segment_bytes=4096, fsync=False, refresh_interval=0)
    for i in range(80):
        t.set_sync(b"child-%d" % i, b"c%d" % i * 20)
    t.delete_sync(b"child-0")
    print("written", flush=True)
    sys.stdin.readline()
    seen = sum(t.get_sync(b"parent-%d" % i) == b"p%d" % i * 20 for i in range(80))
    print(json.dumps({"seen": seen, "deleted": t.get_sync(b"parent-1")}), flush=True)
    sys.stdin.readline()
    t.close_sync()
""")


async def test_two_processes_share_one_directory(tmp_path):
    parent = open_tier(tmp_path, refresh_interval=0)
    with child(SHARER, str(tmp_path), stdin=True) as proc:
        for i in range(80):
            parent.set_sync(b"parent-%d" % i, b"p%d" % i * 20)
        parent.delete_sync(b"parent-1")
        assert proc.stdout.readline().strip() == "written"
        # The child's segments are still being written (it holds their locks): read them live.
        for i in range(1, 80):
            assert parent.get_sync(b"child-%d" % i) == b"c%d" % i * 20
        assert parent.get_sync(b"child-0") is None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"seen": 79, "deleted": None}
        proc.stdin.write("done\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    parent.close_sync()
    t = open_tier(tmp_path)
    assert len(t) == 158 and t.stats()["corrupt"] == 0 and t.stats()["torn_tails"] == 0
    t.close_sync()


async def test_reads_go_on_while_compaction_runs(tmp_path):
    t = open_tier(tmp_path, segment_bytes=2048)
    for i in range(600):  # set_sync: no background compaction yet
        t.set_sync(b"k%d" % (i % 40), value_of(i))
    expected = {b"k%d" % (i % 40): value_of(i) for i in range(600)}
    compaction = asyncio.ensure_future(t.compact())
    rounds = 0
    while not compaction.done() or rounds < 3:
        got = await asyncio.gather(*(t.get(k) for k in expected))
        assert got == list(expected.values())
        rounds += 1
    assert await compaction >= 1
    await t.close()


async def test_crash_between_compaction_steps_leaves_correct_data(tmp_path, monkeypatch):
    t = open_tier(tmp_path, segment_bytes=2048)
    for i in range(300):
        t.set_sync(b"k%d" % (i % 30), value_of(i))
    t.delete_sync(b"k3")
    expected = {b"k%d" % (i % 30): value_of(i) for i in range(300)}
    del expected[b"k3"]
    # The compacted copy is in place but the old segments were never removed (a crash there),
    # and a half-written compaction output is left behind.
    from r1mw.tiers import segfiles

    monkeypatch.setattr(segfiles, "unlink", lambda path: None)
    assert t.compact_sync() >= 1
    monkeypatch.undo()
    assert len(list(tmp_path.glob("*.seg"))) > t.stats()["segments"]  # both copies on disk
    (tmp_path / "00000000000000000001-deadbeef0000.seg.tmp").write_bytes(b"R3 half a record")
    t.close_sync()
    t = open_tier(tmp_path)
    assert len(t) == len(expected)
    for k, v in expected.items():
        assert t.get_sync(k) == v
    assert t.get_sync(b"k3") is None and t.stats()["corrupt"] == 0
    t.close_sync()


async def test_other_writers_updates_and_deletes_are_seen_after_a_refresh(tmp_path):
    # Two tiers on one directory behave as two processes (each open() is its own flock owner).
    a = open_tier(tmp_path, refresh_interval=0)
    b = open_tier(tmp_path, refresh_interval=0)
    a.set_sync(b"k", b"one")
    a.set_sync(b"gone", b"soon")
    assert b.get_sync(b"k") == b"one" and b.get_sync(b"gone") == b"soon"
    a.set_sync(b"k", b"two")
    a.delete_sync(b"gone")
    assert b.get_sync(b"k") == b"two"  # b had "one" in its index: a hit still looks again
    assert b.get_sync(b"gone") is None
    b.set_sync(b"k", b"three")
    assert a.get_sync(b"k") == b"three"
    a.close_sync()
    b.close_sync()
    c = open_tier(tmp_path)
    assert c.get_sync(b"k") == b"three" and c.get_sync(b"gone") is None
    c.close_sync()


class SharedDirectoryModel(RuleBasedStateMachine):
    """Two writers on one directory (two tiers: two flock owners, as two processes would be)
    against one dict: whichever writes, both read what the model holds."""

    @initialize()
    def setup(self):
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="r1mw-l3-shared-")
        self.tiers = [self._open(), self._open()]
        self.model: dict[bytes, bytes] = {}

    def _open(self) -> SegmentTier:
        return open_tier(Path(self.dir), segment_bytes=1024, refresh_interval=0, compact_ratio=0.3)

    def teardown(self):
        for t in self.tiers:
            t.close_sync()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(who=st.integers(0, 1), key=KEYS, value=VALUES)
    def set(self, who, key, value):
        self.tiers[who].set_sync(key, value)
        self.model[key] = value

    @rule(who=st.integers(0, 1), key=KEYS)
    def get(self, who, key):
        assert self.tiers[who].get_sync(key) == self.model.get(key)

    @rule(who=st.integers(0, 1), key=KEYS)
    def delete(self, who, key):
        assert self.tiers[who].delete_sync(key) == (key in self.model)
        self.model.pop(key, None)

    @rule(who=st.integers(0, 1))
    def reopen(self, who):
        self.tiers[who].close_sync()
        self.tiers[who] = self._open()

    @rule(who=st.integers(0, 1))
    def compact(self, who):
        self.tiers[who].compact_sync()


SharedDirectoryModel.TestCase.settings = settings(max_examples=30, stateful_step_count=40, deadline=None,
                                                  suppress_health_check=[HealthCheck.too_slow])
test_shared_directory_model = SharedDirectoryModel.TestCase


def test_compaction_keeps_a_tombstone_another_process_s_younger_segment_still_needs(tmp_path):
    # Found by SharedDirectoryModel: writer B's segment is older than writer A's, and the
    # delete B wrote there is the only thing hiding A's record; compacting B's segment must
    # keep it, or the deleted entry comes back (in A, and for every process that starts).
    a, b = open_tier(tmp_path, refresh_interval=0, compact_ratio=0.3), open_tier(tmp_path, refresh_interval=0)
    a.close_sync()
    a = open_tier(tmp_path, refresh_interval=0, compact_ratio=0.3)  # A's segment is now the youngest
    a.set_sync(b"k0", b"v")
    assert b.delete_sync(b"k0")
    b.close_sync()
    b = open_tier(tmp_path, refresh_interval=0, compact_ratio=0.3)
    b.compact_sync()
    assert a.get_sync(b"k0") is None and not a.delete_sync(b"k0")
    fresh = open_tier(tmp_path, refresh_interval=0)
    assert fresh.get_sync(b"k0") is None
    for t in (a, b, fresh):
        t.close_sync()


async def test_conforms_to_the_tier_protocol(tier):
    from r1mw.protocols import Tier

    assert isinstance(tier, Tier)
    assert hasattr(tier, "on_evict") and callable(tier.close)


async def test_calls_after_close_are_misses_and_no_ops(tmp_path):
    t = open_tier(tmp_path)
    await t.set(b"k", b"v")
    await t.close()
    await t.close()
    assert await t.get(b"k") is None
    await t.set(b"k2", b"v2")
    assert await t.delete(b"k") is False
    await t.clear()
    t = open_tier(tmp_path)
    assert await t.get(b"k") == b"v" and await t.get(b"k2") is None
    await t.close()


@pytest.mark.parametrize("damage", ["truncate", "flip", "zero"])
async def test_damage_under_an_open_tier_is_a_miss_never_wrong_data(tmp_path, damage):
    data = fill(tmp_path)
    t = open_tier(tmp_path, refresh_interval=-1)
    segs = sorted(tmp_path.glob("*.seg"))
    for seg in segs[:-1]:
        damage_file(seg, damage, start=7, step=97)
    served = await count_served_async(t, data)
    assert served < len(data) and t.stats()["corrupt"] > 0
    await t.close()


@settings(max_examples=40, deadline=None)
@given(pos=st.floats(0, 0.999), bit=st.integers(0, 7), hints=st.booleans())
def test_any_flipped_bit_is_never_served(tmp_path_factory, pos, bit, hints):
    d = tmp_path_factory.mktemp("flip")
    data = fill(d, n=20)
    if not hints:
        remove_files(d, "*.hint")
    flip_at(sorted(d.glob("*.seg"))[0], pos, 1 << bit)
    served, t = check_never_wrong(d, data)
    assert served >= len(data) - 2
    t.close_sync()


async def test_small_segments_left_by_restarts_are_merged(tmp_path):
    expected = {}
    for run in range(6):  # each restart seals one small segment
        t = open_tier(tmp_path, segment_bytes=64 * 1024)
        for i in range(5):
            key = b"r%d-%d" % (run, i)
            expected[key] = value_of(run * 10 + i)
            t.set_sync(key, expected[key])
        t.close_sync()
    assert len(list(tmp_path.glob("*.seg"))) == 6
    t = open_tier(tmp_path, segment_bytes=64 * 1024)
    assert await t.compact() == 1
    assert len(list(tmp_path.glob("*.seg"))) == 2  # the merged one and the new active one
    assert all([await t.get(k) == v for k, v in expected.items()])
    await t.close()
    t = open_tier(tmp_path)
    assert len(t) == 30 and all(t.get_sync(k) == v for k, v in expected.items())
    t.close_sync()


# -- the shared tier contract (tests/tier_conformance.py) -------------------------------------

from tier_conformance import TierConformance  # noqa: E402


def _flip_record(tier: SegmentTier, key: bytes) -> bool:
    loc = tier._index[key]
    flip_byte(tier._data_path(loc.seg), loc.offset + loc.length - 3, 0x10)
    return True


class TestSegmentTierConformance(TierConformance):
    def make_tier(self, path, max_entries):
        return SegmentTier(path / "l3", max_entries=max_entries, segment_bytes=4096, fsync=False)

    def corrupt(self, tier, key):
        return _flip_record(tier, key)


class TestSegmentTierInlineConformance(TestSegmentTierConformance):
    def make_tier(self, path, max_entries):
        return SegmentTier(path / "l3", max_entries=max_entries, inline_reads=True, fsync=False)
