"""L3: append-only segment files with an in-RAM index, for large and slow disks.

Why this shape (Bitcask's): at 100,000 entries one file per entry costs a seek and an inode
per entry; here every write is one sequential append to the active segment, every read one
``pread`` at an offset the index knows, and start-up reads one small hint file per segment.

Layout of the directory::

    <ts>-<uid>.seg    records (see :mod:`r1mw.tiers.recordio`), appended only
    <ts>-<uid>.hint   compact index of a sealed segment (see :mod:`r1mw.tiers.hintfile`)
    maint.lock        flock'ed by the one process compacting or cleaning up

* **Newest wins.** Each record carries its write time in ns; whatever order segments are read
  in, a key resolves to its newest record, and a newer tombstone (delete, eviction) hides it.
* **Several processes** share a directory: each appends only to its own active segment and
  holds an exclusive ``flock`` on it while it writes. A segment nobody holds a lock on is
  sealed or orphaned (its writer died): only then may a torn tail be truncated. Each process
  keeps its own index; on a miss it looks at the directory again (at most every
  ``refresh_interval`` seconds) and reads what other processes appended since.
* **Eviction** is FIFO by write time (the index is ordered by it): an approximation of LRU
  that costs nothing per read, because a hot key is promoted to L1 by the store and comes
  back down to L3 with a fresh write time when L1/L2 evict it. Evicted live records go to
  ``on_evict(key, value)`` (the store moves them to L4); a tombstone keeps them from
  reappearing at the next start. Over the byte budget, the oldest sealed segment is dropped
  whole (its live records evicted the same way).
* **Compaction** copies the live records of a sealed segment whose dead ratio reached
  ``compact_ratio`` into a new segment (same age prefix), in a background thread; the index is
  switched under a short lock, and only then is the old file unlinked. A crash at any point
  leaves either file, or both (same records, same write times: harmless).
* **Crash safety**: a record is one ``write``; a torn tail after SIGKILL fails its checksum
  and is cut at the next start. Reads check key and checksum: a bad record is a miss (counted,
  dropped from the index), never wrong data. A failed write (ENOSPC) is truncated back and
  counted; the tier stays usable.
* **fsync**: on seal, compaction output and hints, not per record (a cache: a power loss may
  cost the unsynced tail of the active segment, which the checksum then cuts).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import inspect
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import recordio
from .fileutil import exclusive_nowait, remove_stale_tmp, try_flock, unlink, write_all
from .hintfile import HintEntry, read_hint, write_hint

__all__ = ["SegmentTier"]

log = logging.getLogger("r1mw.tiers.segment")

_SEG = ".seg"
_HINT = ".hint"


@dataclass(frozen=True, slots=True)
class _Loc:
    seg: str
    offset: int
    length: int
    ts: int
    expires: float


@dataclass(slots=True)
class _Segment:
    name: str
    path: str
    size: int = 0
    live: int = 0  # bytes of records the index points at
    sealed: bool = False
    ours: bool = False  # our active segment (we hold its flock)
    scanned: int = 0  # bytes already read into the index (foreign active segments grow)
    keys: set[bytes] = field(default_factory=set)
    tombs: dict[bytes, HintEntry] = field(default_factory=dict)
    entries: list[HintEntry] = field(default_factory=list)  # for the hint, while active

    @property
    def dead_ratio(self) -> float:
        return 1.0 - self.live / self.size if self.size else 0.0


class SegmentTier:
    """An append-only, segment-file tier of bytes values (L3).

    ``inline_reads=True`` reads on the event loop (fast disks, page cache warm: a ``pread`` is
    microseconds, a hop to a thread 120 us); the default keeps slow disks off the loop.
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str = "l3", max_entries: int = 100_000,
                 max_bytes: int = 0, segment_bytes: int = 64 * 2**20, inline_reads: bool = False,
                 compact_ratio: float = 0.5, refresh_interval: float = 1.0, fsync: bool = True) -> None:
        self.name = name
        self.path = Path(path)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # Whole-segment drops must stay a small part of the budget.
        self.segment_bytes = max(4096, min(segment_bytes, max_bytes // 4 if max_bytes else segment_bytes))
        self.inline_reads = inline_reads
        self.compact_ratio = compact_ratio
        self.refresh_interval = refresh_interval
        self.fsync = fsync
        self.on_evict: Callable[[bytes, bytes], Any] | None = None
        self._lock = threading.RLock()
        self._index: OrderedDict[bytes, _Loc] = OrderedDict()
        self._dead: dict[bytes, int] = {}  # key -> ts of the newest tombstone seen
        self._segs: dict[str, _Segment] = {}
        self._fds: dict[str, int] = {}
        self._retired: list[int] = []  # read fds of unlinked segments, closed at close()
        self._active: _Segment | None = None
        self._wfd = -1
        self._last_ts = 0
        self._last_refresh = 0.0
        self._pool = ThreadPoolExecutor(2, thread_name_prefix=f"r1mw-{name}")
        self._maint = ThreadPoolExecutor(1, thread_name_prefix=f"r1mw-{name}-compact")
        self._compacting: Future[int] | None = None
        self._closed = False
        self.hits = self.misses = self.sets = self.deletes = self.evictions = self.expired = 0
        self.corrupt = self.write_errors = self.read_errors = self.compactions = 0
        self.torn_tails = self.hint_fallbacks = self.refreshes = 0
        self._open()

    # -- start-up ----------------------------------------------------------------------
    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with self._maint_lock() as got:
            if got:  # nobody compacts: leftovers of a crashed compaction or hint write go
                remove_stale_tmp(str(self.path))
        found: list[tuple[HintEntry, str]] = []
        for name in self._list():
            found.extend(self._load_segment(name))
        found.sort(key=lambda item: item[0].ts)
        with self._lock:
            for entry, seg in found:
                self._apply(entry, seg)
            self._start_active()
            evicted = self._enforce()
        if evicted:
            log.info("%s: %d entries over capacity at start-up were evicted", self.name, len(evicted))

    def _list(self) -> list[str]:
        try:
            return sorted(n[:-len(_SEG)] for n in os.listdir(self.path) if n.endswith(_SEG))
        except OSError:
            return []

    def _seg_path(self, name: str) -> str:
        return str(self.path / (name + _SEG))

    def _hint_path(self, name: str) -> str:
        return str(self.path / (name + _HINT))

    def _load_segment(self, name: str) -> list[tuple[HintEntry, str]]:
        """Read a segment's records into (entry, segment) pairs: its hint, then a scan of what
        the hint does not cover. A segment nobody writes to gets its torn tail cut."""
        path = self._seg_path(name)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return []
        seg = _Segment(name, path)
        try:
            orphan = try_flock(fd)
            size = os.fstat(fd).st_size
            hint = read_hint(self._hint_path(name))
            entries: list[HintEntry] = []
            start = 0
            if hint is not None and hint[0] <= size:
                start, entries = hint[0], list(hint[1])
            elif os.path.exists(self._hint_path(name)) or (orphan and size):
                self.hint_fallbacks += 1
            if start < size:
                data = os.pread(fd, size - start, start)
                result = recordio.scan(data, 0)
                self.corrupt += result.corrupt
                for rec in result.records:
                    entries.append(HintEntry(rec.key, start + rec.offset, rec.length, rec.ts,
                                             rec.expires, rec.tombstone))
                good = start + result.good_end
                if good < size and orphan:
                    os.ftruncate(fd, good)  # a torn tail: the writer died mid-record
                    self.torn_tails += 1
                    size = good
                elif good < size:
                    size = good  # a live writer is mid-append: read the rest later
            seg.size = size
            seg.scanned = size
            seg.sealed = orphan
            if orphan and (hint is None or hint[0] != size):
                self._write_hint(seg, entries)
            if orphan:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            log.warning("%s: segment %s unreadable (%s); skipped", self.name, name, exc)
            os.close(fd)
            return []
        os.close(fd)
        self._segs[name] = seg
        return [(e, name) for e in entries]

    def _write_hint(self, seg: _Segment, entries: list[HintEntry]) -> None:
        try:
            write_hint(self._hint_path(seg.name), seg.size, entries, self.fsync)
        except OSError as exc:  # no hint: the next start scans this segment instead
            self.write_errors += 1
            log.warning("%s: hint for %s not written (%s)", self.name, seg.name, exc)

    def _start_active(self) -> None:
        """Open our own segment to append to, holding its flock while we write."""
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        path = self._seg_path(name)
        # Created under another name and renamed once locked: no other process ever sees our
        # active segment unlocked (it would take it for an orphan).
        fd = os.open(path + ".open.tmp", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(path + ".open.tmp", path)
        self._wfd = fd
        seg = self._active = _Segment(name, path, ours=True)
        self._segs[name] = seg
        # Read through an fd opened now: our records stay readable even if the file is unlinked.
        self._fds[name] = os.open(path, os.O_RDONLY)

    # -- index bookkeeping (under self._lock) -----------------------------------------------
    def _apply(self, e: HintEntry, segname: str) -> None:
        """Take a record into the index if it is the newest word on its key."""
        seg = self._segs[segname]
        key = e.key
        if e.tombstone:
            seg.tombs[key] = e
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
        loc = _Loc(segname, e.offset, e.length, e.ts, e.expires)
        self._index[key] = loc
        seg.live += e.length
        seg.keys.add(key)

    def _drop(self, key: bytes, loc: _Loc) -> None:
        if self._index.get(key) != loc:
            return  # already replaced or dropped
        del self._index[key]
        seg = self._segs.get(loc.seg)
        if seg is not None:
            seg.live -= loc.length
            seg.keys.discard(key)

    def _next_ts(self) -> int:
        ts = max(time.time_ns(), self._last_ts + 1)
        self._last_ts = ts
        return ts

    # -- reads ---------------------------------------------------------------------------
    def get_sync(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None (miss, expired, unreadable: counted)."""
        with self._lock:
            loc = self._index.get(key)
        if loc is None and self.refresh_interval >= 0 and self._refresh_due():
            self.refresh()
            with self._lock:
                loc = self._index.get(key)
        if loc is None:
            self.misses += 1
            return None
        if loc.expires and loc.expires <= time.time():
            with self._lock:
                self._drop(key, loc)
            self.expired += 1
            self.misses += 1
            return None
        value = self._read(key, loc)
        if value is None and loc.seg not in self._segs and self.refresh_interval >= 0:
            # Its segment vanished (compacted or dropped by another process): look again.
            self.refresh()
            with self._lock:
                again = self._index.get(key)
            if again is not None and again != loc:
                value = self._read(key, again)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return value

    def _read(self, key: bytes, loc: _Loc) -> bytes | None:
        fd = self._fd(loc.seg)
        if fd < 0:  # the file is gone: a miss, not an error
            self._segment_gone(loc.seg)
            with self._lock:
                self._drop(key, loc)
            return None
        try:
            data = os.pread(fd, loc.length, loc.offset)
        except OSError:
            self.read_errors += 1
            return None
        rec = recordio.parse(data) if len(data) == loc.length else None
        if rec is None or rec.key != key or rec.tombstone or rec.ts != loc.ts:
            self.corrupt += 1  # truncated, flipped or overwritten: never served
            with self._lock:
                self._drop(key, loc)
            return None
        return data[rec.value_start:rec.value_start + rec.value_len]

    def _fd(self, segname: str) -> int:
        fd = self._fds.get(segname)
        if fd is None:
            try:
                fd = os.open(self._seg_path(segname), os.O_RDONLY)
            except FileNotFoundError:
                return -1
            with self._lock:
                other = self._fds.setdefault(segname, fd)
            if other != fd:
                os.close(fd)
                fd = other
        return fd

    def _segment_gone(self, segname: str) -> None:
        """A segment vanished (another process compacted or dropped it, or it was deleted):
        forget it; a refresh picks up where its records went."""
        if os.path.exists(self._seg_path(segname)):
            return
        with self._lock:
            seg = self._segs.pop(segname, None)
            if seg is None or seg.ours:
                if seg is not None:
                    self._segs[segname] = seg
                return
            for key in list(seg.keys):
                loc = self._index.get(key)
                if loc is not None and loc.seg == segname:
                    del self._index[key]
            fd = self._fds.pop(segname, None)
            if fd is not None:
                self._retired.append(fd)
        self._last_refresh = 0.0  # look again at the next miss

    def exists_sync(self, key: bytes) -> bool:
        with self._lock:
            loc = self._index.get(key)
        return loc is not None and not (loc.expires and loc.expires <= time.time())

    # -- sharing a directory with other processes -----------------------------------------------
    def _refresh_due(self) -> bool:
        return time.monotonic() - self._last_refresh >= self.refresh_interval

    def refresh(self) -> None:
        """Read what other processes appended, and notice their new and vanished segments."""
        self._last_refresh = time.monotonic()
        self.refreshes += 1
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
        for name in [n for n, s in list(self._segs.items()) if not s.ours and n not in listed]:
            self._segment_gone(name)
        active = self._active
        if active is not None and active.name not in listed and not self._closed \
                and not os.path.exists(active.path):
            with self._lock:  # our own file was removed under us: append to a new one
                if self._active is active:
                    os.close(self._wfd)
                    active.sealed, active.ours = True, False
                    self._start_active()

    def _tail(self, seg: _Segment) -> list[tuple[HintEntry, str]]:
        """New records of a segment another process is still appending to."""
        try:
            fd = os.open(seg.path, os.O_RDONLY)
        except OSError:
            return []
        try:
            if try_flock(fd):  # its writer is gone: the segment is sealed now
                fcntl.flock(fd, fcntl.LOCK_UN)
                seg.sealed = True
            size = os.fstat(fd).st_size
            if size <= seg.scanned:
                return []
            data = os.pread(fd, size - seg.scanned, seg.scanned)
        finally:
            os.close(fd)
        result = recordio.scan(data, 0)
        out = [(HintEntry(r.key, seg.scanned + r.offset, r.length, r.ts, r.expires, r.tombstone), seg.name)
               for r in result.records]
        seg.scanned += result.good_end
        seg.size = max(seg.size, seg.scanned)
        return out

    # -- writes ----------------------------------------------------------------------------
    def set_sync(self, key: bytes, value: bytes, ttl: float | None = None) -> list[tuple[bytes, bytes]]:
        """Append ``value`` under ``key``; returns the ``(key, value)`` pairs evicted to make
        room (the async :meth:`set` hands them to ``on_evict``). A failed write is counted."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{self.name} stores bytes, got {type(value).__name__}")
        expires = time.time() + ttl if ttl else 0.0
        with self._lock:
            ts = self._next_ts()
            try:
                rec = recordio.pack(key, bytes(value), ts, expires)
            except ValueError:
                self.write_errors += 1
                return []
            entry = self._append(key, rec, ts, expires, False)
            if entry is None:
                return []
            self.sets += 1
            assert self._active is not None
            self._apply(entry, self._active.name)
            evicted = self._enforce()
            self._maybe_roll()
        return evicted

    def _append(self, key: bytes, rec: bytes, ts: int, expires: float, tombstone: bool) -> HintEntry | None:
        seg = self._active
        assert seg is not None
        offset = seg.size
        try:
            written = os.write(self._wfd, rec)
            if written != len(rec):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:
            self.write_errors += 1
            log.warning("%s: write failed (%s); entry not stored", self.name, exc)
            try:
                os.ftruncate(self._wfd, offset)  # leave no partial record behind
            except OSError:
                pass
            return None
        seg.size += len(rec)
        seg.scanned = seg.size
        entry = HintEntry(key, offset, len(rec), ts, expires, tombstone)
        seg.entries.append(entry)
        return entry

    def _tombstone(self, key: bytes) -> bool:
        ts = self._next_ts()
        entry = self._append(key, recordio.pack(key, b"", ts, 0.0, True), ts, 0.0, True)
        if entry is None:
            return False
        assert self._active is not None
        self._apply(entry, self._active.name)
        return True

    def delete_sync(self, key: bytes) -> bool:
        with self._lock:
            loc = self._index.get(key)
            if loc is None:
                return False
            self._drop(key, loc)
            self._tombstone(key)
            self.deletes += 1
            self._maybe_roll()
        return not (loc.expires and loc.expires <= time.time())

    def _enforce(self) -> list[tuple[bytes, bytes]]:
        """Evict until within ``max_entries`` and ``max_bytes`` (under self._lock)."""
        evicted: list[tuple[bytes, bytes]] = []
        while len(self._index) > self.max_entries:
            key, loc = next(iter(self._index.items()))
            self._evict(key, loc, evicted)
        rounds = len(self._segs) + 2
        while self.max_bytes and self._disk_bytes() > self.max_bytes and rounds:
            rounds -= 1
            oldest = next((s for n, s in sorted(self._segs.items()) if s.sealed), None)
            if oldest is None:
                if self._active is None or not self._active.size:
                    break
                self._roll()
                continue
            # Older versions of these keys can only sit in older segments: tombstones are
            # needed only while one exists.
            tomb = any(n < oldest.name for n in self._segs)
            for key in sorted(oldest.keys, key=lambda k: self._index[k].offset):
                self._evict(key, self._index[key], evicted, tomb)
            self._unlink_segment(oldest)
        return evicted

    def _evict(self, key: bytes, loc: _Loc, evicted: list[tuple[bytes, bytes]], tomb: bool = True) -> None:
        value = self._read(key, loc) if not (loc.expires and loc.expires <= time.time()) else None
        self._drop(key, loc)
        if tomb:
            self._tombstone(key)
        self.evictions += 1
        if value is not None:
            evicted.append((key, value))

    def _disk_bytes(self) -> int:
        return sum(s.size for s in self._segs.values())

    def _maybe_roll(self) -> None:
        if self._active is not None and self._active.size >= self.segment_bytes:
            self._roll()

    def _roll(self) -> None:
        """Seal the active segment (fsync, hint) and start a new one."""
        seg = self._active
        assert seg is not None
        try:
            if self.fsync:
                os.fsync(self._wfd)
        except OSError:
            self.write_errors += 1
        if seg.size:
            self._write_hint(seg, seg.entries)
        else:
            self._segs.pop(seg.name, None)
            fd = self._fds.pop(seg.name, None)
            if fd is not None:
                self._retired.append(fd)
            unlink(seg.path)
        seg.entries = []
        seg.sealed, seg.ours = True, False
        os.close(self._wfd)  # releases the flock
        self._wfd = -1
        self._start_active()

    def _unlink_segment(self, seg: _Segment) -> None:
        for key in list(seg.keys):
            loc = self._index.get(key)
            if loc is not None and loc.seg == seg.name:
                self._drop(key, loc)
        self._segs.pop(seg.name, None)
        fd = self._fds.pop(seg.name, None)
        if fd is not None:
            self._retired.append(fd)  # a reader thread may still hold it
        unlink(self._hint_path(seg.name))
        unlink(seg.path)

    # -- compaction ----------------------------------------------------------------------
    def compact_sync(self) -> int:
        """Rewrite sealed segments whose dead ratio reached ``compact_ratio``; returns how many.
        Runs in a background thread; readers keep reading meanwhile (one process at a time)."""
        done = 0
        with self._maint_lock() as got:
            if not got:
                return 0
            with self._lock:
                todo = [s for n, s in sorted(self._segs.items())
                        if s.sealed and s.size and s.dead_ratio >= self.compact_ratio]
            for seg in todo:
                if self._closed:
                    break
                if self._compact(seg):
                    done += 1
        self.compactions += done
        return done

    def _compact(self, seg: _Segment) -> bool:
        with self._lock:
            if self._segs.get(seg.name) is not seg:
                return False
            moving = sorted(((self._index[k], k) for k in seg.keys), key=lambda item: item[0].offset)
            older = any(n < seg.name for n in self._segs)
            # A tombstone matters only while an older segment may still hold its key.
            tombs = sorted(seg.tombs.values(), key=lambda e: e.offset) if older else []
        prefix = seg.name.split("-", 1)[0]
        newname = f"{prefix}-{uuid.uuid4().hex[:12]}"
        entries: list[HintEntry] = []
        newloc: dict[bytes, tuple[_Loc, _Loc]] = {}
        parts: list[bytes] = []
        size = 0
        try:
            fd = os.open(seg.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            for loc, key in moving:
                data = os.pread(fd, loc.length, loc.offset)
                rec = recordio.parse(data)
                if rec is None or rec.key != key:
                    self.corrupt += 1
                    continue
                if loc.expires and loc.expires <= time.time():
                    continue
                entries.append(HintEntry(key, size, len(data), loc.ts, loc.expires, False))
                newloc[key] = (loc, _Loc(newname, size, len(data), loc.ts, loc.expires))
                parts.append(data)
                size += len(data)
            for t in tombs:
                data = recordio.pack(t.key, b"", t.ts, 0.0, True)
                entries.append(HintEntry(t.key, size, len(data), t.ts, 0.0, True))
                parts.append(data)
                size += len(data)
        except OSError:
            os.close(fd)
            return False
        os.close(fd)
        if entries:
            newseg = _Segment(newname, self._seg_path(newname), size=size, scanned=size, sealed=True)
            tmp = newseg.path + ".tmp"
            try:
                wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    write_all(wfd, b"".join(parts))
                    if self.fsync:
                        os.fsync(wfd)
                finally:
                    os.close(wfd)
                write_hint(self._hint_path(newname), size, entries, self.fsync)
                os.replace(tmp, newseg.path)
            except OSError as exc:
                self.write_errors += 1
                log.warning("%s: compaction of %s failed (%s)", self.name, seg.name, exc)
                unlink(tmp)
                unlink(self._hint_path(newname))
                return False
        with self._lock:
            if self._segs.get(seg.name) is not seg:  # dropped or cleared meanwhile: undo
                unlink(self._hint_path(newname))
                unlink(self._seg_path(newname))
                return False
            if entries:
                self._segs[newname] = newseg
                for e in entries:
                    if e.tombstone:
                        newseg.tombs[e.key] = e
                for key, (old, new) in newloc.items():
                    if self._index.get(key) == old:  # not overwritten or deleted meanwhile
                        # assigning an existing key keeps its FIFO place: compaction is no write
                        self._index[key] = new
                        seg.live -= old.length
                        seg.keys.discard(key)
                        newseg.live += new.length
                        newseg.keys.add(key)
            self._unlink_segment(seg)
        return True

    def _maint_lock(self) -> contextlib.AbstractContextManager[bool]:
        return exclusive_nowait(str(self.path / "maint.lock"))

    def _wants_compaction(self) -> bool:
        with self._lock:
            return any(s.sealed and s.size and s.dead_ratio >= self.compact_ratio for s in self._segs.values())

    def _schedule_compaction(self) -> None:
        if self._closed or (self._compacting is not None and not self._compacting.done()):
            return
        if self._wants_compaction():
            self._compacting = self._maint.submit(self.compact_sync)

    def clear_sync(self) -> None:
        """Remove every segment of the directory (other processes' entries too)."""
        with self._lock:
            if self._wfd >= 0:
                os.close(self._wfd)
                self._wfd = -1
            for name in set(self._list()) | set(self._segs):
                unlink(self._hint_path(name))
                unlink(self._seg_path(name))
            self._retired.extend(self._fds.values())
            self._fds.clear()
            self._segs.clear()
            self._index.clear()
            self._dead.clear()
            self._start_active()

    def close_sync(self) -> None:
        """Wait for compaction, write the active segment's hint and release its lock."""
        if self._closed:
            return
        self._closed = True
        if self._compacting is not None:
            try:
                self._compacting.result()
            except Exception:  # noqa: BLE001 - a failed compaction must not stop close
                log.exception("%s: compaction failed", self.name)
        self._pool.shutdown(wait=True)
        self._maint.shutdown(wait=True)
        with self._lock:
            seg = self._active
            if seg is not None and self._wfd >= 0:
                try:
                    if self.fsync:
                        os.fsync(self._wfd)
                except OSError:
                    pass
                if seg.size:
                    self._write_hint(seg, seg.entries)
                os.close(self._wfd)
                self._wfd = -1
                if not seg.size:
                    unlink(seg.path)
            for fd in list(self._fds.values()) + self._retired:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fds.clear()
            self._retired.clear()

    # -- the Tier protocol (async) ------------------------------------------------------------
    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def get(self, key: bytes) -> bytes | None:
        if self.inline_reads:
            return self.get_sync(key)
        # A miss is answered from the index on the loop: the thread hop (50-120 us) is only
        # paid for a read from disk (or a look at other processes' segments).
        if key not in self._index and not (self.refresh_interval >= 0 and self._refresh_due()):
            self.misses += 1
            return None
        return await self._run(self.get_sync, key)  # type: ignore[no-any-return]

    async def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        if self.inline_reads:
            evicted = self.set_sync(key, value, ttl)
        else:
            evicted = await self._run(self.set_sync, key, value, ttl)
        if evicted:
            await self._deliver(evicted)
        self._schedule_compaction()

    async def _deliver(self, evicted: list[tuple[bytes, bytes]]) -> None:
        # on_evict runs on the event loop thread, never in an I/O thread.
        on_evict = self.on_evict
        if on_evict is None:
            return
        for key, value in evicted:
            try:
                result = on_evict(key, value)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # noqa: BLE001 - the next tier's fault is not this write's
                log.exception("%s: on_evict failed", self.name)

    async def delete(self, key: bytes) -> bool:
        if key not in self._index:
            return False
        found = self.delete_sync(key) if self.inline_reads else await self._run(self.delete_sync, key)
        self._schedule_compaction()
        return bool(found)

    async def exists(self, key: bytes) -> bool:
        return self.exists_sync(key)

    async def clear(self) -> None:
        if self.inline_reads:
            self.clear_sync()
        else:
            await self._run(self.clear_sync)

    async def compact(self) -> int:
        """Compact now (in the background thread) and wait for it."""
        return await asyncio.get_running_loop().run_in_executor(self._maint, self.compact_sync)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close_sync)

    def __len__(self) -> int:
        return len(self._index)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            segs = list(self._segs.values())
            entries = len(self._index)
        return {"entries": entries, "bytes": sum(s.size for s in segs), "live_bytes": sum(s.live for s in segs),
                "segments": len(segs), "hits": self.hits, "misses": self.misses, "sets": self.sets,
                "deletes": self.deletes, "evictions": self.evictions, "expired": self.expired,
                "corrupt": self.corrupt, "write_errors": self.write_errors, "read_errors": self.read_errors,
                "compactions": self.compactions, "torn_tails": self.torn_tails,
                "hint_fallbacks": self.hint_fallbacks, "refreshes": self.refreshes,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes}
