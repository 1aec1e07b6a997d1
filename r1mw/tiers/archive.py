"""L4: a cold archive of compressed blocks in append-only segments, where L3's evictions go.

Layout of the directory::

    <ts>-<uid>.arc    blocks, appended only
    <ts>-<uid>.idx    index of a sealed segment: per record, its key, block offset and length
                      (the hint format of :mod:`r1mw.tiers.hintfile`)

One block::

    magic b"R4BK" | codec B (0 raw, 1 lz4 frame, 2 zstd) | raw_len I | comp_len I
    | check Q (xxh3-64 of the 13 bytes before it + the payload) | payload

The payload decompresses to records in the frame of :mod:`r1mw.tiers.recordio` (each with its
own checksum). Compressing several records together is what makes the archive small: replies
share most of their words, and zstd (or lz4 when ``zstandard`` is not installed) finds them
across records. Each block names its codec, so an archive stays readable when the default
changes.

* Writes gather in a pending block (served to reads from RAM) that is written when it reaches
  ``block_bytes``, when ``flush_interval`` seconds have passed at the next write, and at close.
  A crash loses at most the pending block: this is a cache's cold end.
* Lookups go through the in-RAM index (key -> block); a few decoded blocks are kept in RAM.
* Over ``max_bytes`` (0 = unbounded) the oldest segment is dropped whole; each live record in
  it goes to ``on_evict(key, value)`` (the store tells the semantic index to forget the key).
* Several processes: each appends to its own segment under ``flock``; a torn tail block of a
  segment nobody holds is cut at start-up; others' segments are read on a miss (at most every
  ``refresh_interval`` seconds), as in L3.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import inspect
import logging
import os
import struct
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lz4.frame
import xxhash

from . import recordio
from .fileutil import remove_stale_tmp, try_flock, unlink
from .hintfile import HintEntry, read_hint, write_hint

try:  # optional: better ratio than lz4 on text
    import zstandard
except ImportError:  # pragma: no cover - depends on the install
    zstandard = None

__all__ = ["ArchiveTier", "zstd_available"]

log = logging.getLogger("r1mw.tiers.archive")

_ARC = ".arc"
_IDX = ".idx"
_BLOCK = struct.Struct("<4sBIIQ")
_BLOCK_MAGIC = b"R4BK"
_RAW, _LZ4, _ZSTD = 0, 1, 2
_CODEC_IDS = {"raw": _RAW, "lz4": _LZ4, "zstd": _ZSTD}


def zstd_available() -> bool:
    return zstandard is not None


@dataclass(frozen=True, slots=True)
class _Loc:
    seg: str | None  # None: still in the pending block
    offset: int
    length: int
    ts: int
    expires: float


@dataclass(slots=True)
class _Seg:
    name: str
    path: str
    size: int = 0
    sealed: bool = False
    ours: bool = False
    scanned: int = 0
    keys: set[bytes] = field(default_factory=set)
    entries: list[HintEntry] = field(default_factory=list)


class ArchiveTier:
    """Compressed, append-only, bounded by bytes (or not): the last tier (L4)."""

    def __init__(self, path: str | os.PathLike[str], *, name: str = "l4", max_bytes: int = 0,
                 segment_bytes: int = 64 * 2**20, block_bytes: int = 16 * 2**10, codec: str = "auto",
                 level: int = 3, inline_reads: bool = False, refresh_interval: float = 1.0,
                 flush_interval: float = 1.0, fsync: bool = True, cached_blocks: int = 16) -> None:
        if codec == "auto":
            codec = "zstd" if zstandard is not None else "lz4"
        if codec not in _CODEC_IDS:
            raise ValueError(f"unknown archive codec {codec!r}: auto, zstd, lz4 or raw")
        if codec == "zstd" and zstandard is None:
            raise ValueError("archive codec zstd needs the zstandard package (pip install 'r1mw[zstd]')")
        self.name = name
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, min(segment_bytes, max_bytes // 4 if max_bytes else segment_bytes))
        self.block_bytes = block_bytes
        self.codec = codec
        self.level = level
        self.inline_reads = inline_reads
        self.refresh_interval = refresh_interval
        self.flush_interval = flush_interval
        self.fsync = fsync
        self.cached_blocks = cached_blocks
        self.on_evict: Callable[[bytes, bytes], Any] | None = None
        self._codec_id = _CODEC_IDS[codec]
        self._zc = zstandard.ZstdCompressor(level=level) if codec == "zstd" else None
        self._lock = threading.RLock()
        self._index: dict[bytes, _Loc] = {}
        self._dead: dict[bytes, int] = {}
        self._segs: dict[str, _Seg] = {}
        self._blocks: OrderedDict[tuple[str, int], dict[bytes, tuple[int, bytes, bool]]] = OrderedDict()
        self._pending: dict[bytes, tuple[int, bytes]] = {}
        self._pending_recs: list[tuple[bytes, HintEntry]] = []
        self._pending_bytes = 0
        self._pending_since = 0.0
        self._active: _Seg | None = None
        self._wfd = -1
        self._last_ts = 0
        self._last_refresh = 0.0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"r1mw-{name}")
        self._closed = False
        self.hits = self.misses = self.sets = self.deletes = self.evictions = self.expired = 0
        self.corrupt = self.write_errors = self.read_errors = self.segments_dropped = 0
        self.torn_tails = self.index_fallbacks = self.blocks_written = 0
        self.raw_bytes = self.stored_bytes = 0
        self._open()

    # -- blocks ----------------------------------------------------------------------------
    def _encode_block(self, raw: bytes) -> bytes:
        if self._codec_id == _ZSTD:
            assert self._zc is not None
            payload = self._zc.compress(raw)
        elif self._codec_id == _LZ4:
            payload = lz4.frame.compress(raw)
        else:
            payload = raw
        head = _BLOCK.pack(_BLOCK_MAGIC, self._codec_id, len(raw), len(payload), 0)[:13]
        check = xxhash.xxh3_64(head)
        check.update(payload)
        return head + struct.pack("<Q", check.intdigest()) + payload

    @staticmethod
    def _decode_block(data: bytes, offset: int = 0) -> tuple[bytes, int] | None:
        """``(raw records, block length)`` of the block at ``offset``, or None if it is bad."""
        if offset + _BLOCK.size > len(data):
            return None
        magic, codec, raw_len, comp_len, check = _BLOCK.unpack_from(data, offset)
        end = offset + _BLOCK.size + comp_len
        if magic != _BLOCK_MAGIC or end > len(data) or raw_len >= recordio.MAX_VALUE:
            return None
        h = xxhash.xxh3_64(data[offset:offset + 13])
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

    def _scan_blocks(self, data: bytes, base: int) -> tuple[list[HintEntry], int]:
        """Records of every good block in ``data`` (file offset ``base``); and the end of the
        last good block (bad bytes after it are a torn tail)."""
        entries: list[HintEntry] = []
        off = good_end = 0
        while off < len(data):
            got = self._decode_block(data, off)
            if got is None:
                nxt = data.find(_BLOCK_MAGIC, off + 1)
                while nxt != -1 and self._decode_block(data, nxt) is None:
                    nxt = data.find(_BLOCK_MAGIC, nxt + 1)
                if nxt == -1:
                    break
                self.corrupt += 1
                off = nxt
                continue
            raw, length = got
            result = recordio.scan(raw)
            self.corrupt += result.corrupt
            for rec in result.records:
                entries.append(HintEntry(rec.key, base + off, length, rec.ts, rec.expires, rec.tombstone))
            off = good_end = off + length
        return entries, good_end

    # -- start-up ----------------------------------------------------------------------------
    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(str(self.path))
        found: list[tuple[HintEntry, str]] = []
        for name in self._list():
            found.extend(self._load_segment(name))
        found.sort(key=lambda item: item[0].ts)
        with self._lock:
            for entry, seg in found:
                self._apply(entry, seg)
            self._start_active()

    def _list(self) -> list[str]:
        try:
            return sorted(n[:-len(_ARC)] for n in os.listdir(self.path) if n.endswith(_ARC))
        except OSError:
            return []

    def _arc_path(self, name: str) -> str:
        return str(self.path / (name + _ARC))

    def _idx_path(self, name: str) -> str:
        return str(self.path / (name + _IDX))

    def _load_segment(self, name: str) -> list[tuple[HintEntry, str]]:
        path = self._arc_path(name)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return []
        seg = _Seg(name, path)
        try:
            orphan = try_flock(fd)
            size = os.fstat(fd).st_size
            idx = read_hint(self._idx_path(name))
            entries: list[HintEntry] = []
            start = 0
            if idx is not None and idx[0] <= size:
                start, entries = idx[0], list(idx[1])
            elif os.path.exists(self._idx_path(name)) or (orphan and size):
                self.index_fallbacks += 1
            if start < size:
                more, good = self._scan_blocks(os.pread(fd, size - start, start), start)
                entries.extend(more)
                good += start
                if good < size and orphan:
                    os.ftruncate(fd, good)
                    self.torn_tails += 1
                size = good if good < size else size
            seg.size = seg.scanned = size
            seg.sealed = orphan
            if orphan and (idx is None or idx[0] != size):
                self._write_idx(seg, entries)
            if orphan:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            log.warning("%s: segment %s unreadable (%s); skipped", self.name, name, exc)
            os.close(fd)
            return []
        os.close(fd)
        self._segs[name] = seg
        return [(e, name) for e in entries]

    def _write_idx(self, seg: _Seg, entries: list[HintEntry]) -> None:
        try:
            write_hint(self._idx_path(seg.name), seg.size, entries, self.fsync)
        except OSError as exc:
            self.write_errors += 1
            log.warning("%s: index of %s not written (%s)", self.name, seg.name, exc)

    def _start_active(self) -> None:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        path = self._arc_path(name)
        fd = os.open(path + ".open.tmp", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # locked before other processes can list it
        os.rename(path + ".open.tmp", path)
        self._wfd = fd
        self._active = self._segs[name] = _Seg(name, path, ours=True)

    # -- index (under self._lock) -----------------------------------------------------------
    def _apply(self, e: HintEntry, segname: str | None) -> None:
        key = e.key
        if e.tombstone:
            if self._dead.get(key, -1) < e.ts:
                self._dead[key] = e.ts
            old = self._index.get(key)
            if old is not None and old.ts <= e.ts:
                self._drop(key, old)
            return
        if self._dead.get(key, -1) >= e.ts:
            return
        old = self._index.get(key)
        if old is not None:
            if old.ts > e.ts:
                return
            self._drop(key, old)
        if e.expires and e.expires <= time.time():
            return
        self._index[key] = _Loc(segname, e.offset, e.length, e.ts, e.expires)
        if segname is not None:
            self._segs[segname].keys.add(key)

    def _drop(self, key: bytes, loc: _Loc) -> None:
        if self._index.get(key) != loc:
            return
        del self._index[key]
        if loc.seg is None:
            self._pending.pop(key, None)
        else:
            seg = self._segs.get(loc.seg)
            if seg is not None:
                seg.keys.discard(key)

    def _next_ts(self) -> int:
        ts = max(time.time_ns(), self._last_ts + 1)
        self._last_ts = ts
        return ts

    # -- reads ------------------------------------------------------------------------------
    def get_sync(self, key: bytes) -> bytes | None:
        with self._lock:
            loc = self._index.get(key)
            if loc is not None and loc.seg is None:
                pending = self._pending.get(key)
                if pending is not None and not (loc.expires and loc.expires <= time.time()):
                    self.hits += 1
                    return pending[1]
        if loc is None and self.refresh_interval >= 0 and \
                time.monotonic() - self._last_refresh >= self.refresh_interval:
            self.refresh()
            with self._lock:
                loc = self._index.get(key)
        if loc is None or loc.seg is None:
            self.misses += 1
            return None
        if loc.expires and loc.expires <= time.time():
            with self._lock:
                self._drop(key, loc)
            self.expired += 1
            self.misses += 1
            return None
        block = self._block(loc.seg, loc.offset, loc.length)
        found = block.get(key) if block is not None else None
        if found is None or found[0] != loc.ts or found[2]:
            with self._lock:
                self._drop(key, loc)
            if block is not None:
                self.corrupt += 1
            elif self.refresh_interval >= 0:
                self.refresh()  # its segment is gone: see what the directory holds now
            self.misses += 1
            return None
        self.hits += 1
        return found[1]

    def _block(self, segname: str, offset: int, length: int) -> dict[bytes, tuple[int, bytes, bool]] | None:
        """The records of one block, decoded (a few are kept), or None when unreadable."""
        ck = (segname, offset)
        with self._lock:
            cached = self._blocks.get(ck)
            if cached is not None:
                self._blocks.move_to_end(ck)
                return cached
        try:
            with open(self._arc_path(segname), "rb") as f:
                data = os.pread(f.fileno(), length, offset)
        except FileNotFoundError:
            return None
        except OSError:
            self.read_errors += 1
            return None
        got = self._decode_block(data)
        if got is None or got[1] != length:
            self.corrupt += 1
            return {}
        raw = got[0]
        result = recordio.scan(raw)
        self.corrupt += result.corrupt
        records = {r.key: (r.ts, raw[r.value_start:r.value_start + r.value_len], r.tombstone)
                   for r in result.records}
        with self._lock:
            self._blocks[ck] = records
            while len(self._blocks) > self.cached_blocks:
                self._blocks.popitem(last=False)
        return records

    def exists_sync(self, key: bytes) -> bool:
        with self._lock:
            loc = self._index.get(key)
        return loc is not None and not (loc.expires and loc.expires <= time.time())

    def refresh(self) -> None:
        """Read segments other processes wrote since we last looked."""
        self._last_refresh = time.monotonic()
        names = self._list()
        listed = set(names)
        found: list[tuple[HintEntry, str]] = []
        for name in names:
            with self._lock:
                seg = self._segs.get(name)
            if seg is None:
                found.extend(self._load_segment(name))
            elif not seg.ours and not seg.sealed:
                found.extend(self._tail(seg))
        found.sort(key=lambda item: item[0].ts)
        with self._lock:
            for entry, segname in found:
                if segname in self._segs:
                    self._apply(entry, segname)
            for name in [n for n, s in self._segs.items() if not s.ours and n not in listed]:
                self._forget(self._segs[name])
            active = self._active
            if active is not None and active.name not in listed and not self._closed \
                    and not os.path.exists(active.path):
                os.close(self._wfd)  # our file was removed under us: append to a new one
                self._forget(active)
                self._start_active()

    def _tail(self, seg: _Seg) -> list[tuple[HintEntry, str]]:
        try:
            fd = os.open(seg.path, os.O_RDONLY)
        except OSError:
            return []
        try:
            if try_flock(fd):
                seg.sealed = True
            size = os.fstat(fd).st_size
            data = os.pread(fd, size - seg.scanned, seg.scanned) if size > seg.scanned else b""
        finally:
            os.close(fd)
        entries, good = self._scan_blocks(data, seg.scanned)
        seg.scanned += good
        seg.size = max(seg.size, seg.scanned)
        return [(e, seg.name) for e in entries]

    def _forget(self, seg: _Seg) -> None:
        for key in list(seg.keys):
            loc = self._index.get(key)
            if loc is not None and loc.seg == seg.name:
                self._drop(key, loc)
        self._segs.pop(seg.name, None)
        for ck in [ck for ck in self._blocks if ck[0] == seg.name]:
            del self._blocks[ck]

    # -- writes -----------------------------------------------------------------------------
    def set_sync(self, key: bytes, value: bytes, ttl: float | None = None) -> list[tuple[bytes, bytes]]:
        """Add a record to the pending block; returns what a segment drop evicted."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{self.name} stores bytes, got {type(value).__name__}")
        value = bytes(value)
        expires = time.time() + ttl if ttl else 0.0
        with self._lock:
            ts = self._next_ts()
            try:
                rec = recordio.pack(key, value, ts, expires)
            except ValueError:
                self.write_errors += 1
                return []
            entry = HintEntry(key, 0, 0, ts, expires, False)
            self._add_pending(rec, entry)
            self._apply(entry, None)
            self._pending[key] = (ts, value)
            self.sets += 1
            return self._after_write()

    def _add_pending(self, rec: bytes, entry: HintEntry) -> None:
        if not self._pending_recs:
            self._pending_since = time.monotonic()
        self._pending_recs.append((rec, entry))
        self._pending_bytes += len(rec)

    def _after_write(self) -> list[tuple[bytes, bytes]]:
        if self._pending_bytes >= self.block_bytes or \
                time.monotonic() - self._pending_since >= self.flush_interval:
            self._flush()
        return self._enforce()

    def delete_sync(self, key: bytes) -> bool:
        with self._lock:
            loc = self._index.get(key)
            if loc is None:
                return False
            self._drop(key, loc)
            ts = self._next_ts()
            entry = HintEntry(key, 0, 0, ts, 0.0, True)
            self._add_pending(recordio.pack(key, b"", ts, 0.0, True), entry)
            self._dead[key] = ts
            self.deletes += 1
            self._after_write()
        return not (loc.expires and loc.expires <= time.time())

    def flush_sync(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        """Compress the pending records into one block and append it (under self._lock)."""
        if not self._pending_recs:
            return
        recs, self._pending_recs = self._pending_recs, []
        raw_len = self._pending_bytes
        self._pending_bytes = 0
        block = self._encode_block(b"".join(r for r, _ in recs))
        seg = self._active
        assert seg is not None
        offset = seg.size
        try:
            written = os.write(self._wfd, block)
            if written != len(block):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:
            self.write_errors += 1
            log.warning("%s: block write failed (%s); %d records not archived", self.name, exc, len(recs))
            try:
                os.ftruncate(self._wfd, offset)
            except OSError:
                pass
            for _, e in recs:
                loc = self._index.get(e.key)
                if loc is not None and loc.seg is None and loc.ts == e.ts:
                    self._drop(e.key, loc)
            return
        seg.size = seg.scanned = offset + len(block)
        self.blocks_written += 1
        self.raw_bytes += raw_len
        self.stored_bytes += len(block)
        for _, e in recs:
            placed = HintEntry(e.key, offset, len(block), e.ts, e.expires, e.tombstone)
            seg.entries.append(placed)
            loc = self._index.get(e.key)
            if not e.tombstone and loc is not None and loc.seg is None and loc.ts == e.ts:
                self._index[e.key] = _Loc(seg.name, offset, len(block), e.ts, e.expires)
                self._pending.pop(e.key, None)
                seg.keys.add(e.key)
        if seg.size >= self.segment_bytes:
            self._roll()

    def _roll(self) -> None:
        seg = self._active
        assert seg is not None
        try:
            if self.fsync:
                os.fsync(self._wfd)
        except OSError:
            self.write_errors += 1
        self._write_idx(seg, seg.entries)
        seg.entries = []
        seg.sealed, seg.ours = True, False
        os.close(self._wfd)
        self._wfd = -1
        self._start_active()

    def _disk_bytes(self) -> int:
        return sum(s.size for s in self._segs.values())

    def _enforce(self) -> list[tuple[bytes, bytes]]:
        evicted: list[tuple[bytes, bytes]] = []
        rounds = len(self._segs) + 2
        while self.max_bytes and self._disk_bytes() > self.max_bytes and rounds:
            rounds -= 1
            oldest = next((s for n, s in sorted(self._segs.items()) if s.sealed), None)
            if oldest is None:
                if self._active is None or not self._active.size:
                    break
                self._roll()
                continue
            self._drop_segment(oldest, evicted)
        return evicted

    def _drop_segment(self, seg: _Seg, evicted: list[tuple[bytes, bytes]]) -> None:
        """Remove a whole segment; its live records are handed back as evicted."""
        live = {}
        for key in seg.keys:
            loc = self._index.get(key)
            if loc is not None and loc.seg == seg.name:
                live.setdefault((loc.offset, loc.length), []).append((key, loc))
        for (offset, length), items in sorted(live.items()):
            block = self._block(seg.name, offset, length) or {}
            for key, loc in items:
                found = block.get(key)
                self._drop(key, loc)
                self.evictions += 1
                if found is not None and found[0] == loc.ts and not found[2]:
                    evicted.append((key, found[1]))
        self._forget(seg)
        self.segments_dropped += 1
        unlink(self._idx_path(seg.name))
        unlink(seg.path)

    def clear_sync(self) -> None:
        with self._lock:
            if self._wfd >= 0:
                os.close(self._wfd)
                self._wfd = -1
            for name in set(self._list()) | set(self._segs):
                unlink(self._idx_path(name))
                unlink(self._arc_path(name))
            self._segs.clear()
            self._index.clear()
            self._dead.clear()
            self._blocks.clear()
            self._pending.clear()
            self._pending_recs.clear()
            self._pending_bytes = 0
            self._start_active()

    def close_sync(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        with self._lock:
            self._flush()
            seg = self._active
            if seg is not None and self._wfd >= 0:
                try:
                    if self.fsync:
                        os.fsync(self._wfd)
                except OSError:
                    pass
                if seg.size:
                    self._write_idx(seg, seg.entries)
                os.close(self._wfd)
                self._wfd = -1
                if not seg.size:
                    unlink(seg.path)

    # -- the Tier protocol (async) --------------------------------------------------------------
    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def get(self, key: bytes) -> bytes | None:
        if self.inline_reads:
            return self.get_sync(key)
        loc = self._index.get(key)
        if loc is None:  # a miss, or a pending record: no thread hop needed
            if not (self.refresh_interval >= 0 and
                    time.monotonic() - self._last_refresh >= self.refresh_interval):
                self.misses += 1
                return None
        elif loc.seg is None:
            return self.get_sync(key)
        return await self._run(self.get_sync, key)  # type: ignore[no-any-return]

    async def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        evicted = self.set_sync(key, value, ttl) if self.inline_reads else await self._run(self.set_sync, key, value, ttl)
        on_evict = self.on_evict
        if evicted and on_evict is not None:
            for k, v in evicted:
                try:
                    result = on_evict(k, v)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # noqa: BLE001
                    log.exception("%s: on_evict failed", self.name)

    async def delete(self, key: bytes) -> bool:
        if key not in self._index:
            return False
        return bool(self.delete_sync(key) if self.inline_reads else await self._run(self.delete_sync, key))

    async def exists(self, key: bytes) -> bool:
        return self.exists_sync(key)

    async def clear(self) -> None:
        await self._run(self.clear_sync)

    async def flush(self) -> None:
        """Write the pending block now."""
        await self._run(self.flush_sync)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close_sync)

    def __len__(self) -> int:
        return len(self._index)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            size = self._disk_bytes()
            entries = len(self._index)
        return {"entries": entries, "bytes": size, "pending_bytes": self._pending_bytes, "codec": self.codec,
                "segments": len(self._segs), "blocks_written": self.blocks_written,
                "compression_ratio": self.stored_bytes / self.raw_bytes if self.raw_bytes else 0.0,
                "hits": self.hits, "misses": self.misses, "sets": self.sets, "deletes": self.deletes,
                "evictions": self.evictions, "segments_dropped": self.segments_dropped,
                "expired": self.expired, "corrupt": self.corrupt, "write_errors": self.write_errors,
                "read_errors": self.read_errors, "torn_tails": self.torn_tails,
                "index_fallbacks": self.index_fallbacks, "max_bytes": self.max_bytes}
