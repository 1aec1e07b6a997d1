"""L4: a cold archive of compressed blocks in append-only segments, where L3's evictions go.

Layout of the directory::

    <ts>-<uid>.arc    blocks, appended only
    <ts>-<uid>.idx    index of a sealed segment: per record, its key, block offset and length
                      (the hint format of :mod:`r1mw.tiers.hintfile`)
    frame.key         the secret seed of the block and record checksums (:mod:`r1mw.tiers.framekey`)

One block::

    magic b"R4B2" | codec B (0 raw, 1 lz4 frame, 2 zstd) | raw_len I | comp_len I
    | check Q (xxh3-64 of the 13 bytes before it + the payload, seeded with the directory's
      secret, see :mod:`r1mw.tiers.framekey`) | payload

The payload decompresses to records in the frame of :mod:`r1mw.tiers.recordio` (each with its
own checksum). Blocks of magic ``R4BK`` (older archives) are the same with an unseeded check:
read where a reader reaches them in order (a segment's start, after a good block, an index
entry), never where resynchronising after a bad block lands, which accepts ``R4B2`` blocks only:
a value's bytes can pass for an unkeyed block (even compressed: incompressible data is stored
as it is), never for a keyed one. Compressing several records together is what makes the archive small: replies
share most of their words, and zstd (or lz4 when ``zstandard`` is not installed) finds them
across records. Each block names its codec, so an archive stays readable when the default
changes.

* Writes gather in a pending block (served to reads from RAM) that is written when it reaches
  ``block_bytes``, when ``flush_interval`` seconds have passed at the next write, and at close.
  A crash loses at most the pending block: this is a cache's cold end. A delete that hides
  a record already on disk is written (and with ``fsync``, synced) at once: lost, it would
  bring back the older value of a key the store has since set again.
* Lookups go through the in-RAM index (key -> block); a few decoded blocks are kept in RAM.
* Over ``max_bytes`` (0 = unbounded) the oldest segment is dropped whole; each live record in
  it goes to ``on_evict(key, value)`` (the store tells the semantic index to forget the key).
* Several processes, start-up from index files, torn tails and vanished files are handled by
  the machinery L3 shares (:mod:`r1mw.tiers.segfiles`); a bad block is skipped by
  resynchronising on the next block magic.
* No compaction: overwritten and deleted records stay until their segment is dropped.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections import OrderedDict
from typing import Any

import lz4.frame
import xxhash

from ..codec import MsgpackCodec, decode
from ..errors import CodecError
from . import recordio
from .fileutil import remove_stale_tmp
from .hintfile import HintEntry
from .segfiles import Evicted, Loc, Segment, SegmentFiles

try:  # optional: better ratio than lz4 on text
    import zstandard
except ImportError:  # pragma: no cover - depends on the install
    zstandard = None  # type: ignore[assignment]  # optional: callers test for None

__all__ = ["ArchiveTier", "zstd_available"]

log = logging.getLogger("r1mw.tiers.archive")

_BLOCK = struct.Struct("<4sBIIQ")
_BLOCK_MAGIC = b"R4B2"  # keyed check
_UNKEYED_MAGIC = b"R4BK"  # older archives: unseeded check, read in order only
_RAW, _LZ4, _ZSTD = 0, 1, 2
_CODEC_IDS = {"raw": _RAW, "lz4": _LZ4, "zstd": _ZSTD}

Records = dict[bytes, tuple[int, bytes, bool]]  # key -> (ts, value, tombstone)

_PLAIN = MsgpackCodec(threshold=1 << 62)  # re-seals a value uncompressed


def uncompressed(value: bytes) -> bytes:
    """An entry envelope whose payload is compressed (lz4, zstd), re-sealed as plain msgpack:
    the block compressor then sees the text and finds what records share. The store reads
    either form (the envelope names its codec). Anything else is returned as it is."""
    if len(value) > 10 and value[:2] == b"R1" and value[4] & 1:
        try:
            return _PLAIN.encode(decode(value))
        except CodecError:
            pass
    return value


def zstd_available() -> bool:
    return zstandard is not None


def decode_block(data: bytes, offset: int = 0, *, seed: int, keyed_only: bool = False) -> tuple[bytes, int] | None:
    """``(raw records, block length)`` of the block at ``offset``, or None if it is bad.
    ``keyed_only``: accept keyed blocks only (where ``offset`` is a guess, not a boundary)."""
    if offset + _BLOCK.size > len(data):
        return None
    magic, codec, raw_len, comp_len, check = _BLOCK.unpack_from(data, offset)
    end = offset + _BLOCK.size + comp_len
    keyed = magic == _BLOCK_MAGIC
    if not (keyed or (magic == _UNKEYED_MAGIC and not keyed_only)) or end > len(data) \
            or raw_len >= recordio.MAX_VALUE:
        return None
    h = xxhash.xxh3_64(data[offset:offset + 13], seed=seed if keyed else 0)
    payload = data[offset + _BLOCK.size:end]
    h.update(payload)
    if h.intdigest() != check:
        return None
    try:
        if codec == _ZSTD:
            if zstandard is None:
                return None
            raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_len)
        elif codec == _LZ4:
            raw = lz4.frame.decompress(payload)
        elif codec == _RAW:
            raw = payload
        else:
            return None
    except Exception:  # noqa: BLE001 - any decoder fault is a bad block
        return None
    if len(raw) != raw_len:
        return None
    return raw, end - offset


class ArchiveTier(SegmentFiles):
    """Compressed, append-only, bounded by bytes (or not): the last tier (L4)."""

    DATA_SUFFIX = ".arc"
    INDEX_SUFFIX = ".idx"

    def __init__(self, path: str | os.PathLike[str], *, name: str = "l4", max_bytes: int = 0,
                 segment_bytes: int = 64 * 2**20, block_bytes: int = 64 * 2**10, codec: str = "auto",
                 level: int = 3, inline_reads: bool = False, refresh_interval: float = 1.0,
                 flush_interval: float = 1.0, fsync: bool = True, cached_blocks: int = 16,
                 recompress: bool = True) -> None:
        if codec == "auto":
            codec = "zstd" if zstandard is not None else "lz4"
        if codec not in _CODEC_IDS:
            raise ValueError(f"unknown archive codec {codec!r}: auto, zstd, lz4 or raw")
        if codec == "zstd" and zstandard is None:
            raise ValueError("archive codec zstd needs the zstandard package (pip install 'r1mw[zstd]')")
        super().__init__(path, name=name, max_bytes=max_bytes, segment_bytes=segment_bytes,
                         inline_reads=inline_reads, refresh_interval=refresh_interval, fsync=fsync, threads=1)
        self.block_bytes = block_bytes
        self.codec = codec
        self.level = level
        self.flush_interval = flush_interval
        self.cached_blocks = cached_blocks
        self.recompress = recompress
        self._codec_id = _CODEC_IDS[codec]
        self._zc = zstandard.ZstdCompressor(level=level) if codec == "zstd" else None
        self._blocks: OrderedDict[tuple[str, int], Records] = OrderedDict()
        self._pending: dict[bytes, bytes] = {}
        self._pending_recs: list[tuple[bytes, HintEntry]] = []
        self._pending_bytes = 0
        self._pending_since = 0.0
        self.segments_dropped = self.blocks_written = 0
        self.raw_bytes = self.stored_bytes = 0
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(str(self.path))
        self._open()

    # -- blocks -------------------------------------------------------------------------------
    def _encode_block(self, raw: bytes) -> bytes:
        if self._codec_id == _ZSTD:
            assert self._zc is not None
            payload = self._zc.compress(raw)
        elif self._codec_id == _LZ4:
            payload = lz4.frame.compress(raw)
        else:
            payload = raw
        head = _BLOCK.pack(_BLOCK_MAGIC, self._codec_id, len(raw), len(payload), 0)[:13]
        check = xxhash.xxh3_64(head, seed=self._seed)
        check.update(payload)
        return head + struct.pack("<Q", check.intdigest()) + payload

    def _scan_region(self, data: bytes, base: int) -> tuple[list[HintEntry], int]:
        entries: list[HintEntry] = []
        off = good_end = 0
        while off < len(data):
            got = decode_block(data, off, seed=self._seed)
            if got is None:  # resynchronise on the next good keyed block (never inside a value)
                nxt = data.find(_BLOCK_MAGIC, off + 1)
                while nxt != -1 and decode_block(data, nxt, seed=self._seed, keyed_only=True) is None:
                    nxt = data.find(_BLOCK_MAGIC, nxt + 1)
                if nxt == -1:
                    break
                self.corrupt += 1
                off = nxt
                continue
            raw, length = got
            result = recordio.scan(raw, seed=self._seed)
            self.corrupt += result.corrupt
            for rec in result.records:
                entries.append(HintEntry(rec.key, base + off, length, rec.ts, rec.expires, rec.tombstone))
            off = good_end = off + length
        return entries, good_end

    def _block(self, key: bytes, loc: Loc) -> Records | None:
        """The records of one block, decoded (a few are kept); None when its file is gone or
        unreadable, {} when it is corrupt (counted)."""
        assert loc.seg is not None
        ck = (loc.seg, loc.offset)
        with self._lock:
            cached = self._blocks.get(ck)
            if cached is not None:
                self._blocks.move_to_end(ck)
                return cached
        data = self._pread(key, loc)
        if data is None:
            return None
        got = decode_block(data, seed=self._seed)
        if got is None or got[1] != loc.length:
            self.corrupt += 1
            return {}
        raw = got[0]
        result = recordio.scan(raw, seed=self._seed)
        self.corrupt += result.corrupt
        records = {r.key: (r.ts, raw[r.value_start:r.value_start + r.value_len], r.tombstone)
                   for r in result.records}
        with self._lock:
            self._blocks[ck] = records
            while len(self._blocks) > self.cached_blocks:
                self._blocks.popitem(last=False)
        return records

    def _read(self, key: bytes, loc: Loc) -> bytes | None:
        if loc.seg is None:
            with self._lock:
                return self._pending.get(key)
        block = self._block(key, loc)
        if block is None:
            return None
        found = block.get(key)
        if found is None or found[0] != loc.ts or found[2]:
            self._discard_bad(key, loc)
            return None
        return found[1]

    def _segment_forgotten(self, name: str) -> None:
        for ck in [ck for ck in self._blocks if ck[0] == name]:
            del self._blocks[ck]

    def _forget_pending(self, key: bytes) -> None:
        self._pending.pop(key, None)

    # -- writes -------------------------------------------------------------------------------
    def set_sync(self, key: bytes, value: bytes, ttl: float | None = None) -> Evicted:
        """Add a record to the pending block; returns what a segment drop evicted. With
        ``recompress``, a compressed entry is stored uncompressed (see :func:`uncompressed`)."""
        value = self._as_bytes(value)
        return super().set_sync(key, uncompressed(value) if self.recompress else value, ttl)

    def _store(self, key: bytes, value: bytes, rec: bytes, ts: int, expires: float) -> Evicted:
        entry = HintEntry(key, 0, 0, ts, expires, False)
        self._add_pending(rec, entry)
        self._apply(entry, None)
        self._pending[key] = value
        self.sets += 1
        return self._after_pending()

    def _cheap_set(self, size: int) -> bool:
        # Gathering into the pending block is a few microseconds in RAM: no thread hop.
        return self._pending_bytes + size + 64 < self.block_bytes and \
            (not self._pending_recs or time.monotonic() - self._pending_since < self.flush_interval)

    def _add_pending(self, rec: bytes, entry: HintEntry) -> None:
        if not self._pending_recs:
            self._pending_since = time.monotonic()
        self._pending_recs.append((rec, entry))
        self._pending_bytes += len(rec)

    def _after_pending(self) -> Evicted:
        if self._pending_bytes >= self.block_bytes or \
                time.monotonic() - self._pending_since >= self.flush_interval:
            self._flush()
        return self._enforce()

    def _record_delete(self, key: bytes, loc: Loc) -> None:
        # Into the pending block, like any record. A segment drop it triggers evicts records
        # that on_evict must hear of (the semantic index forgets them): the async delete
        # delivers them.
        ts = self._next_ts()
        tomb = HintEntry(key, 0, 0, ts, 0.0, True)
        self._add_pending(recordio.pack_tombstone(key, ts, seed=self._seed), tomb)
        self._apply(tomb, None)
        if loc.seg is not None:
            # It hides a record on disk, and the store deletes a key when a newer value goes
            # above: left pending, a crash (or unsynced, a power loss) would bring the older
            # value back. Written now; rare next to sets (a set of a key held only here).
            self._flush()
            if self.fsync:
                self._sync_active()
        self._evicted_by_delete.extend(self._after_pending())

    def flush_sync(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        """Compress the pending records into one block and append it (under self._lock)."""
        if not self._pending_recs:
            return
        recs, self._pending_recs = self._pending_recs, []
        raw_len, self._pending_bytes = self._pending_bytes, 0
        block = self._encode_block(b"".join(r for r, _ in recs))
        offset = self._append(block)
        if offset is None:  # counted; these records are simply not archived
            for _, e in recs:
                loc = self._index.get(e.key)
                if loc is not None and loc.seg is None and loc.ts == e.ts:
                    self._drop(e.key, loc)
                    self._lost.append(e.key)
            return
        seg = self._active
        assert seg is not None
        self.blocks_written += 1
        self.raw_bytes += raw_len
        self.stored_bytes += len(block)
        for _, e in recs:
            placed = HintEntry(e.key, offset, len(block), e.ts, e.expires, e.tombstone)
            seg.entries.append(placed)
            if e.tombstone:
                seg.tombs[e.key] = placed
                continue
            loc = self._index.get(e.key)
            if loc is not None and loc.seg is None and loc.ts == e.ts:
                # in place: assigning an existing key keeps its order
                self._index[e.key] = Loc(seg.name, offset, len(block), e.ts, e.expires)
                self._pending.pop(e.key, None)
                seg.keys.add(e.key)
                seg.live += len(block)
        self._maybe_roll()

    def _evict_segment(self, seg: Segment, evicted: Evicted) -> None:
        blocks: dict[int, list[tuple[bytes, Loc]]] = {}
        for key in seg.keys:
            loc = self._index.get(key)
            if loc is not None and loc.seg == seg.name:
                blocks.setdefault(loc.offset, []).append((key, loc))
        for _, items in sorted(blocks.items()):
            block = self._block(items[0][0], items[0][1]) or {}
            for key, loc in items:
                found = block.get(key)
                value = found[1] if found is not None and found[0] == loc.ts and not found[2] else None
                self._hand_down(key, loc, value, evicted)
        self.segments_dropped += 1

    def _reset(self) -> None:
        self._blocks.clear()
        self._pending.clear()
        self._pending_recs.clear()
        self._pending_bytes = 0

    def _before_close(self) -> None:
        with self._lock:
            self._flush()

    async def flush(self) -> None:
        """Write the pending block now."""
        await self._run(self.flush_sync)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update(pending_bytes=self._pending_bytes, codec=self.codec, blocks_written=self.blocks_written,
                   raw_bytes=self.raw_bytes, stored_bytes=self.stored_bytes,
                   compression_ratio=self.raw_bytes / self.stored_bytes if self.stored_bytes else 0.0,
                   segments_dropped=self.segments_dropped)
        return out
