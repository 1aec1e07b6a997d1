"""Keyed record checksums of the segment tiers (L3, L4): resynchronising after damage never
lands inside a value, whatever record- or block-shaped bytes the value holds; caches written
before the key (unkeyed records and blocks) still load; the key file's life (created with the
directory, shared, missing, damaged)."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from tier_faults import abandon, flip_byte

from r1mw.tiers import recordio
from r1mw.tiers.archive import ArchiveTier
from r1mw.tiers.segment import SegmentTier

A, B, C = b"A" * 16, b"B" * 16, b"C" * 16
FORGED = b"a reply that was never stored under B"


# -- the formats older caches hold (and anyone can compute: the checks are unkeyed) -------------


def unkeyed_record(key: bytes, value: bytes, ts: int, tombstone: bool = False) -> bytes:
    """A version 1 record, as r1mw wrote them before the key."""
    prefix = struct.pack("<2sBBHIqd", b"R3", 1, int(tombstone), len(key), len(value), ts, 0.0)
    return prefix + struct.pack("<Q", xxhash.xxh3_64_intdigest(prefix + key + value)) + key + value


def unkeyed_block(records: bytes) -> bytes:
    """An ``R4BK`` archive block (raw codec) around ``records``, as r1mw wrote them before the key."""
    head = struct.pack("<4sBII", b"R4BK", 0, len(records), len(records))
    return head + struct.pack("<Q", xxhash.xxh3_64_intdigest(head + records)) + records


def forgery(kind: str) -> bytes:
    """Bytes a stored value may hold: a record of key B, with a check someone computed."""
    if kind == "unkeyed":
        return unkeyed_record(B, FORGED, 1 << 62)
    return recordio.pack(B, FORGED, 1 << 62, seed=0x5EED)  # keyed, with a guess at the seed


def a_value_holding(forged: bytes) -> bytes:
    return b"<reply text> " + forged + b" <more reply text>" * 20


# -- the scanner ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["unkeyed", "guessed-seed"]), pos=st.integers(0, 10**6), bit=st.integers(0, 7),
       before=st.binary(max_size=40), torn=st.booleans(), seed=st.integers(1, 2**64 - 1))
def test_resync_only_finds_records_the_tier_wrote(kind, pos, bit, before, torn, seed):
    rec_a = recordio.pack(A, before + forgery(kind) + before, 10, seed=seed)
    rec_c = recordio.pack(C, b"written after A", 11, seed=seed)
    pos %= len(rec_a)
    if torn:  # the writer died in the middle of A's append
        found = recordio.scan(rec_a[:pos], seed=seed).records
        assert found == []
        return
    damaged = bytearray(rec_a + rec_c)
    damaged[pos] ^= 1 << bit  # one flipped bit anywhere in A's record
    found = recordio.scan(bytes(damaged), seed=seed).records
    assert [r.key for r in found] == [C]  # A is lost, C found by resynchronising, never B


def test_records_of_older_caches_are_read_in_order_never_by_resync():
    seed = 0xC0FFEE
    old = [unkeyed_record(b"k%d" % i, b"old value %d" % i, 100 + i) for i in range(3)]
    buf = old[0] + recordio.pack(b"new", b"keyed", 200, seed=seed) + old[1] + old[2]
    assert [r.key for r in recordio.scan(buf, seed=seed).records] == [b"k0", b"new", b"k1", b"k2"]
    assert recordio.parse(old[0], seed=seed) is not None  # where an index points: read
    assert recordio.parse(old[0], seed=seed, keyed_only=True) is None  # where a search lands: not
    damaged = b"\x00" + buf[1:]
    assert [r.key for r in recordio.scan(damaged, seed=seed).records] == [b"new", b"k1", b"k2"]


# -- L3 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["unkeyed", "guessed-seed"])
@pytest.mark.parametrize("damage", ["torn-tail", "header-flip", "value-flip"])
def test_l3_never_serves_a_record_found_inside_a_value(tmp_path, kind, damage):
    t = SegmentTier(tmp_path, inline_reads=True, fsync=False)
    t.set_sync(A, a_value_holding(forgery(kind)))
    t.set_sync(C, b"written after A")
    loc = t._index[A]
    path = t._data_path(loc.seg)
    abandon(t)  # a crash: the segment has no index file, the next start scans it
    if damage == "torn-tail":  # A's append was cut short (C never made it)
        os.truncate(path, loc.offset + loc.length - 50)
    else:
        flip_byte(path, loc.offset + (5 if damage == "header-flip" else loc.length - 60), 0x01)
    t = SegmentTier(tmp_path, inline_reads=True, fsync=False)
    try:
        assert t.get_sync(B) is None  # never stored: never served
        assert t.get_sync(A) is None
        if damage != "torn-tail":
            assert t.get_sync(C) == b"written after A"  # one bad record costs one record
        assert t.stats()["entries"] == (0 if damage == "torn-tail" else 1)
    finally:
        t.close_sync()


@pytest.mark.anyio
async def test_the_store_never_serves_a_reply_forged_in_context_bytes(tmp_path):
    from r1mw.codec import Lz4Codec
    from r1mw.tiers import DiskTier, MemoryTier, TieredStore
    from r1mw.tiers.entry import Entry
    from r1mw.types import Choice, Reply

    def build() -> TieredStore:
        return TieredStore([MemoryTier("l1", 1), DiskTier(tmp_path / "l2", "l2", max_entries=1),
                            SegmentTier(tmp_path / "l3", inline_reads=True, fsync=False)], codec=Lz4Codec())

    reply = Lz4Codec().encode(Entry(Reply(choices=(Choice(index=0, content="FORGED: sell everything"),))).to_wire())
    page = b"retrieved page ... " + unkeyed_record(B, reply, 1 << 62) + b" ... end of page"
    store = build()
    await store.set(A, Entry(page))  # a context-cache value: bytes a user fetched
    await store.set(b"F" * 16, Entry(b"filler"))  # A moves down to L3
    l3 = store.tiers[2]
    path = l3._data_path(l3._index[A].seg)
    abandon(l3)  # the process dies
    await store.tiers[1].close()  # (L2 holds nothing of interest here)
    os.truncate(path, os.path.getsize(path) - 20)  # in the middle of A's append
    store = build()
    try:
        assert await store.get(B) is None
    finally:
        await store.close()


def old_l3_dir(path: Path, n: int = 5) -> dict[bytes, bytes]:
    """A directory written before the key: one segment of unkeyed records, no frame.key."""
    path.mkdir(parents=True, exist_ok=True)
    data = {b"old-%d" % i: b"old value %d " % i * 10 for i in range(n)}
    recs = b"".join(unkeyed_record(k, v, 1_000 + i) for i, (k, v) in enumerate(data.items()))
    (path / "00000000000000000001-0123456789ab.seg").write_bytes(recs)
    return data


def test_an_l3_cache_from_before_the_key_still_loads(tmp_path, caplog):
    data = old_l3_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="r1mw.tiers"):
        t = SegmentTier(tmp_path, inline_reads=True, fsync=False)
    assert "frame.key" in caplog.text  # said once, with what it means
    assert all(t.get_sync(k) == v for k, v in data.items())
    t.set_sync(b"new", b"keyed")
    t.close_sync()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="r1mw.tiers"):
        t = SegmentTier(tmp_path, inline_reads=True, fsync=False)  # from the index files now
    assert "frame.key" not in caplog.text
    assert all(t.get_sync(k) == v for k, v in data.items()) and t.get_sync(b"new") == b"keyed"
    t.close_sync()


def test_a_torn_old_segment_keeps_the_records_before_the_tear(tmp_path):
    data = old_l3_dir(tmp_path)
    seg = next(tmp_path.glob("*.seg"))
    os.truncate(seg, seg.stat().st_size - 7)
    t = SegmentTier(tmp_path, inline_reads=True, fsync=False)
    try:
        served = {k: t.get_sync(k) for k in data}
        assert list(served.values())[:-1] == list(data.values())[:-1] and served[b"old-4"] is None
        assert t.stats()["torn_tails"] == 1
    finally:
        t.close_sync()


@pytest.mark.anyio
async def test_compaction_keys_the_records_of_an_older_cache(tmp_path):
    data = old_l3_dir(tmp_path, n=40)
    t = SegmentTier(tmp_path, inline_reads=True, fsync=False, segment_bytes=4096)
    for i in range(30):  # overwrite most of them: the old segment is mostly dead
        data[b"old-%d" % i] = b"new value %d" % i
        t.set_sync(b"old-%d" % i, data[b"old-%d" % i])
    assert await t.compact() >= 1
    assert all(t.get_sync(k) == v for k, v in data.items())
    records = [r for p in tmp_path.glob("*.seg") for r in recordio.scan(p.read_bytes(), seed=t._seed).records]
    assert records and all(r.keyed for r in records)
    t.close_sync()


# -- L4 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["torn-tail", "header-flip"])
def test_l4_never_serves_a_block_found_inside_a_value(tmp_path, damage):
    # A raw-codec archive stores values as they are; zstd and lz4 do too for bytes they cannot
    # compress. The value holds a whole block (holding a record of B) with a good unkeyed check.
    t = ArchiveTier(tmp_path, codec="raw", fsync=False)
    t.set_sync(A, b"<page> " + unkeyed_block(unkeyed_record(B, FORGED, 1 << 62)) + b" </page>" * 20)
    t.flush_sync()
    t.set_sync(C, b"written after A")
    t.flush_sync()
    loc = t._index[A]
    path = t._data_path(loc.seg)
    abandon(t)
    if damage == "torn-tail":
        os.truncate(path, loc.offset + loc.length - 30)
    else:
        flip_byte(path, loc.offset + 6, 0x01)  # A's block's raw_len
    t = ArchiveTier(tmp_path, codec="raw", fsync=False)
    try:
        assert t.get_sync(B) is None and t.get_sync(A) is None
        if damage != "torn-tail":
            assert t.get_sync(C) == b"written after A"
    finally:
        t.close_sync()


def test_an_archive_from_before_the_key_still_loads(tmp_path, caplog):
    tmp_path.mkdir(exist_ok=True)
    data = {b"old-%d" % i: b"archived value %d " % i * 10 for i in range(6)}
    recs = [unkeyed_record(k, v, 1_000 + i) for i, (k, v) in enumerate(data.items())]
    (tmp_path / "00000000000000000001-0123456789ab.arc").write_bytes(
        unkeyed_block(b"".join(recs[:3])) + unkeyed_block(b"".join(recs[3:])))
    with caplog.at_level(logging.WARNING, logger="r1mw.tiers"):
        t = ArchiveTier(tmp_path, fsync=False)
    assert "frame.key" in caplog.text
    assert all(t.get_sync(k) == v for k, v in data.items())
    t.close_sync()
    t = ArchiveTier(tmp_path, fsync=False)  # from its index file now
    assert all(t.get_sync(k) == v for k, v in data.items())
    t.close_sync()


# -- the key file ---------------------------------------------------------------------------


@pytest.mark.parametrize("tier", [SegmentTier, ArchiveTier])
def test_the_key_is_made_once_and_shared_by_every_opener(tmp_path, tier):
    first = tier(tmp_path, fsync=False)
    second = tier(tmp_path, fsync=False)  # another process on the same directory
    try:
        assert (tmp_path / "frame.key").is_file() and first._seed == second._seed
    finally:
        first.close_sync()
        second.close_sync()
    again = tier(tmp_path, fsync=False)
    assert again._seed == first._seed
    again.close_sync()


@pytest.mark.parametrize("loss", ["removed", "damaged"])
def test_a_lost_key_makes_misses_never_wrong_data(tmp_path, caplog, loss):
    t = SegmentTier(tmp_path, inline_reads=True, fsync=False)
    data = {b"k%d" % i: b"value %d" % i for i in range(10)}
    for k, v in data.items():
        t.set_sync(k, v)
    t.close_sync()
    key_file = tmp_path / "frame.key"
    if loss == "removed":
        key_file.unlink()
    else:
        key_file.write_bytes(b"\x00" * key_file.stat().st_size)
    with caplog.at_level(logging.WARNING, logger="r1mw.tiers"):
        t = SegmentTier(tmp_path, inline_reads=True, fsync=False)
    try:
        assert "frame.key" in caplog.text
        assert all(t.get_sync(k) is None for k in data)  # unverifiable: misses, counted
        assert t.stats()["corrupt"] >= 1
        t.set_sync(b"k0", b"stored again")  # the tier goes on with its new key
        assert t.get_sync(b"k0") == b"stored again"
    finally:
        t.close_sync()
