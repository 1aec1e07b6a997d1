"""The machinery the segment tiers (L3, L4) share: a directory of append-only segment files,
one in-RAM index, several processes, crash recovery.

* **Files.** ``<ts>-<uid><DATA_SUFFIX>`` holds appended data; ``<ts>-<uid><INDEX_SUFFIX>`` is
  the index of a sealed segment (the hint format of :mod:`r1mw.tiers.hintfile`). Names sort
  by age. What a data region contains (records for L3, compressed blocks for L4) is the
  subclass's :meth:`SegmentFiles._scan_region`.
* **Newest wins.** Every record carries its write time in ns; whatever order segments are
  read in, a key resolves to its newest record and a newer tombstone hides it. Start-up,
  compaction and several writers are therefore order-independent.
* **Several processes.** Each appends only to its own active segment, created under a temporary
  name, ``flock``'ed, then renamed into place (no other process ever sees it unlocked). A
  segment nobody holds a lock on is sealed or orphaned: only then may a torn tail be cut or an
  index written. On a lookup a process looks at the directory again (at most every
  ``refresh_interval`` seconds) and reads what others appended since: their writes and
  deletes are seen within that interval.
* **Start-up** reads each segment's index file and scans only what it does not cover (a
  missing or corrupt index makes that one segment be scanned).
* **Faults** are misses or no-ops, counted: a failed append is truncated back; a segment that
  vanished (deleted, compacted or dropped by another process) makes its keys misses and the
  directory be looked at again; a bad record is dropped from the index.
* **Keyed checksums.** ``frame.key`` (:mod:`r1mw.tiers.framekey`) holds the directory's secret
  seed: records (and L4 blocks) are checksummed with it, so a scan that resynchronises after
  damage only ever lands on something the tier wrote, never inside a value.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import inspect
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import recordio
from .fileutil import try_flock, unlink
from .framekey import KEY_FILE, load_or_create
from .hintfile import HintEntry, read_hint, write_hint

__all__ = ["Loc", "Segment", "SegmentFiles"]

log = logging.getLogger("r1mw.tiers")

Evicted = list[tuple[bytes, bytes]]

_RETIRE_AFTER = 30.0  # seconds a forgotten segment's read fd stays open


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


@dataclass(frozen=True, slots=True)
class Loc:
    """Where the newest record of a key is: segment (None = still in RAM, L4's pending block),
    offset and length of the record (L3) or of its block (L4), write time, expiry."""

    seg: str | None
    offset: int
    length: int
    ts: int
    expires: float


@dataclass(slots=True)
class Segment:
    name: str
    path: str
    size: int = 0
    live: int = 0  # bytes the index points at (L3's dead ratio)
    sealed: bool = False
    ours: bool = False  # our active segment (we hold its flock)
    scanned: int = 0  # bytes read into the index (another process's active segment grows)
    synced: int = 0  # bytes of our active segment known to be on disk (fsync'ed)
    keys: set[bytes] = field(default_factory=set)
    tombs: dict[bytes, HintEntry] = field(default_factory=dict)
    entries: list[HintEntry] = field(default_factory=list)  # for its index file, while active

    @property
    def dead_ratio(self) -> float:
        return 1.0 - self.live / self.size if self.size else 0.0


class SegmentFiles:
    """Base of :class:`~r1mw.tiers.segment.SegmentTier` and :class:`~r1mw.tiers.archive.ArchiveTier`."""

    DATA_SUFFIX = ".seg"
    INDEX_SUFFIX = ".hint"
    # Deletes remembered to hide older records read out of order (another process's compacted
    # segment). Past this many, the oldest are forgotten: at worst such a key's older value
    # comes back, never another key's.
    DEAD_MAX = 200_000

    def __init__(self, path: str | os.PathLike[str], *, name: str, max_bytes: int, segment_bytes: int,
                 inline_reads: bool, refresh_interval: float, fsync: bool, threads: int) -> None:
        self.name = name
        self.path = Path(path)
        self.max_bytes = max_bytes
        # Whole-segment drops must stay a small part of the byte budget.
        self.segment_bytes = max(4096, min(segment_bytes, max_bytes // 4 if max_bytes else segment_bytes))
        self.inline_reads = inline_reads
        self.refresh_interval = refresh_interval
        self.fsync = fsync
        self.on_evict: Callable[[bytes, bytes], Any] | None = None
        # on_lost(key): the tier lost a key on its own (expired, corrupt, not writable); the
        # store then checks whether another tier holds it. Called on the event loop.
        self.on_lost: Callable[[bytes], Any] | None = None
        self._lost: deque[bytes] = deque()
        # What a delete's own write evicted (L4: the tombstone filled a block past the byte
        # budget): delete returns a bool, so the async delete hands these to on_evict.
        self._evicted_by_delete: Evicted = []
        self._lock = threading.RLock()
        self._index: OrderedDict[bytes, Loc] = OrderedDict()  # in write-time order
        self._dead: dict[bytes, int] = {}  # key -> ts of the newest tombstone seen
        self._segs: dict[str, Segment] = {}
        self._fds: dict[str, int] = {}
        # Read fds of forgotten segments, closed a while later: a reader thread may still be
        # about to pread through one (and if it were late, key + ts + checksum catch it).
        self._retired: list[tuple[float, int]] = []
        self._active: Segment | None = None
        self._wfd = -1
        self._last_ts = 0
        self._seed = 0  # keys the record checksums; read from the directory by _open()
        self._last_refresh = 0.0
        self._closed = False
        self._start_failed = False  # the last attempt to start an active segment failed (logged)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"r1mw-{name}")
        self.hits = self.misses = self.sets = self.deletes = self.evictions = self.expired = 0
        self.corrupt = self.write_errors = self.read_errors = 0
        self.torn_tails = self.index_fallbacks = self.refreshes = 0

    # -- what a subclass provides ---------------------------------------------------------------
    def _scan_region(self, data: bytes, base: int) -> tuple[list[HintEntry], int]:
        """Entries found in ``data`` (read from file offset ``base``) and the end offset (within
        ``data``) of the last good unit: bad bytes after it are a torn tail."""
        raise NotImplementedError

    def _read(self, key: bytes, loc: Loc) -> bytes | None:
        """The value at ``loc``, or None (counted; a bad record leaves the index)."""
        raise NotImplementedError

    def _evict_segment(self, seg: Segment, evicted: Evicted) -> None:
        """Hand the live records of a segment about to be dropped to ``evicted``."""
        raise NotImplementedError

    def _enforce_entries(self, evicted: Evicted) -> None:
        """Evict to an entry bound, if the tier has one."""

    def _forget_pending(self, key: bytes) -> None:
        """A key whose newest record was still in RAM left the index."""

    def _segment_forgotten(self, name: str) -> None:
        """A segment left the directory (drop caches that name it)."""

    # -- start-up ----------------------------------------------------------------------------
    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._seed, created = load_or_create(self.path, self.fsync)
        if created and self._list():
            log.warning("%s: %s had data but no %s (a cache from before r1mw keyed its records, or the "
                        "file was removed); made a new one. Records written before it are read only in "
                        "order, never found by resynchronising after damage; any keyed with a lost key "
                        "are misses. Nothing to do: the tier goes on", self.name, self.path, KEY_FILE)
        found: list[tuple[HintEntry, str]] = []
        for name in self._list():
            found.extend(self._load_segment(name))
        found.sort(key=lambda item: item[0].ts)
        with self._lock:
            for entry, segname in found:
                self._apply(entry, segname)
            self._start_active()
            evicted = self._enforce()
        if evicted:
            log.info("%s: %d entries over capacity at start-up were evicted", self.name, len(evicted))

    def _list(self) -> list[str]:
        n = len(self.DATA_SUFFIX)
        try:
            return sorted(f[:-n] for f in os.listdir(self.path) if f.endswith(self.DATA_SUFFIX))
        except OSError:
            return []

    def _data_path(self, name: str) -> str:
        return str(self.path / (name + self.DATA_SUFFIX))

    def _index_path(self, name: str) -> str:
        return str(self.path / (name + self.INDEX_SUFFIX))

    def _load_segment(self, name: str) -> list[tuple[HintEntry, str]]:
        """A segment's entries: from its index file, then a scan of what that does not cover.
        A segment nobody writes to gets its torn tail cut and its index file (re)written."""
        path = self._data_path(name)
        writable = True
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                return []
            try:  # a read-only directory (a mounted snapshot, other permissions): still served
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                return []
            writable = False
        seg = Segment(name, path)
        try:
            orphan = try_flock(fd)
            size = os.fstat(fd).st_size
            index = read_hint(self._index_path(name))
            entries: list[HintEntry] = []
            start = 0
            if index is not None and index[0] <= size:
                start, entries = index[0], list(index[1])
            elif os.path.exists(self._index_path(name)) or (orphan and size):
                self.index_fallbacks += 1
            if start < size:
                more, good = self._scan_region(os.pread(fd, size - start, start), start)
                entries.extend(more)
                good += start
                if good < size and orphan and writable:
                    os.ftruncate(fd, good)  # a torn tail: its writer died mid-append
                    self.torn_tails += 1
                size = min(size, good)  # (a live writer mid-append: the rest is read later)
            seg.size = seg.scanned = size
            seg.sealed = orphan
            if orphan and (index is None or index[0] != size):
                self._write_index(seg, entries)
            if orphan:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            log.warning("%s: segment %s unreadable (%s); skipped", self.name, name, exc)
            os.close(fd)
            return []
        os.close(fd)
        self._segs[name] = seg
        return [(e, name) for e in entries]

    def _write_index(self, seg: Segment, entries: list[HintEntry]) -> None:
        try:
            write_hint(self._index_path(seg.name), seg.size, entries, self.fsync)
        except OSError as exc:  # no index: the next start scans this segment instead
            self.write_errors += 1
            log.warning("%s: index of %s not written (%s)", self.name, seg.name, exc)

    def _start_active(self) -> bool:
        """Open our own segment to append to, holding its flock while we write. False when
        the directory refuses (full, not writable): counted, logged once; there is then no
        active segment, writes are refused (counted) and the next write tries again. A
        directory removed under us (``rm -rf`` of the cache) is made again."""
        self._active, self._wfd = None, -1
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        path = self._data_path(name)
        tmp = path + ".open.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        fd = -1
        try:
            try:
                fd = os.open(tmp, flags, 0o644)
            except FileNotFoundError:
                self._remake_directory()
                fd = os.open(tmp, flags, 0o644)
            # Created under another name and renamed once locked: no other process ever sees
            # our active segment unlocked (it would take it for an orphan).
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(tmp, path)
            # Read through an fd opened now: our records stay readable even if the file is unlinked.
            rfd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            if fd >= 0:
                _close(fd)
                unlink(tmp)
                unlink(path)
            self.write_errors += 1
            if not self._start_failed:
                log.warning("%s: cannot start a segment in %s (%s); writes are refused until it can",
                            self.name, self.path, exc)
            self._start_failed = True
            return False
        self._start_failed = False
        self._wfd = fd
        self._active = self._segs[name] = Segment(name, path, ours=True)
        self._fds[name] = rfd
        return True

    def _remake_directory(self) -> None:
        """Our directory was removed under us: make it again, with the checksum key we use
        (or the one another process already put back, which we then take)."""
        log.warning("%s: %s was removed while in use; making it again", self.name, self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._seed, _ = load_or_create(self.path, self.fsync, seed=self._seed)

    # -- the index (under self._lock) ------------------------------------------------------------
    def _apply(self, e: HintEntry, segname: str | None) -> None:
        """Take a record into the index if it is the newest word on its key."""
        key = e.key
        seg = self._segs.get(segname) if segname is not None else None
        if e.tombstone:
            if seg is not None:
                seg.tombs[key] = e
            if self._dead.get(key, -1) < e.ts:
                self._dead.pop(key, None)
                self._dead[key] = e.ts
                if len(self._dead) > self.DEAD_MAX:  # bounded: forget the oldest deletes
                    del self._dead[next(iter(self._dead))]
            old = self._index.get(key)
            if old is not None and old.ts <= e.ts:
                self._drop(key, old)
            return
        dead = self._dead.get(key)
        if dead is not None:
            if dead >= e.ts:
                return
            del self._dead[key]  # a newer record: its ts now guards against older ones
        old = self._index.get(key)
        if old is not None:
            if old.ts > e.ts:
                return
            self._drop(key, old)
        if e.expires and e.expires <= time.time():
            return
        self._index[key] = Loc(segname, e.offset, e.length, e.ts, e.expires)
        if seg is not None:
            seg.live += e.length
            seg.keys.add(key)

    def _drop(self, key: bytes, loc: Loc) -> None:
        if self._index.get(key) != loc:
            return  # already replaced or dropped
        del self._index[key]
        if loc.seg is None:
            self._forget_pending(key)
            return
        seg = self._segs.get(loc.seg)
        if seg is not None:
            seg.live -= loc.length
            seg.keys.discard(key)

    def _next_ts(self) -> int:
        ts = max(time.time_ns(), self._last_ts + 1)
        self._last_ts = ts
        return ts

    # -- reads -----------------------------------------------------------------------------------
    def get_sync(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None (miss, expired, unreadable: counted)."""
        if self._refresh_due():  # other processes' writes and deletes: seen within the interval
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
            self._lost.append(key)
            return None
        value = self._read(key, loc)
        if value is None and loc.seg is not None and loc.seg not in self._segs and self.refresh_interval >= 0:
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

    def _discard_bad(self, key: bytes, loc: Loc) -> None:
        """The record at ``loc`` failed its checks (truncated, flipped or overwritten): counted
        and dropped from the index so it is never served; the store hears the key was lost."""
        self.corrupt += 1
        with self._lock:
            self._drop(key, loc)
        self._lost.append(key)

    def _fd(self, segname: str) -> int:
        """A read descriptor of a segment (kept open), or -1 when its file is gone."""
        fd = self._fds.get(segname)
        if fd is None:
            try:
                fd = os.open(self._data_path(segname), os.O_RDONLY)
            except FileNotFoundError:
                return -1
            with self._lock:
                other = self._fds.setdefault(segname, fd)
            if other != fd:
                os.close(fd)
                fd = other
        return fd

    def _pread(self, key: bytes, loc: Loc) -> bytes | None:
        """The bytes at ``loc`` (None when the file is gone or unreadable, counted)."""
        assert loc.seg is not None
        fd = self._fd(loc.seg)
        if fd < 0:  # the file is gone: a miss, not an error
            self._segment_gone(loc.seg)
            with self._lock:
                self._drop(key, loc)
            return None
        try:
            return os.pread(fd, loc.length, loc.offset)
        except OSError:
            self.read_errors += 1
            return None

    def exists_sync(self, key: bytes) -> bool:
        loc = self._index.get(key)
        return loc is not None and not (loc.expires and loc.expires <= time.time())

    # -- other processes' writes ---------------------------------------------------------------------
    def _refresh_due(self) -> bool:
        return self.refresh_interval >= 0 and time.monotonic() - self._last_refresh >= self.refresh_interval

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
                    wfd, self._wfd = self._wfd, -1  # never kept: the number is reused by the next open
                    _close(wfd)
                    self._forget(active)
                    self._start_active()

    def _tail(self, seg: Segment) -> list[tuple[HintEntry, str]]:
        """New entries of a segment another process is still appending to."""
        try:
            fd = os.open(seg.path, os.O_RDONLY)
        except OSError:
            return []
        try:
            if try_flock(fd):  # its writer is gone: sealed now
                fcntl.flock(fd, fcntl.LOCK_UN)
                seg.sealed = True
            size = os.fstat(fd).st_size
            data = os.pread(fd, size - seg.scanned, seg.scanned) if size > seg.scanned else b""
        finally:
            os.close(fd)
        entries, good = self._scan_region(data, seg.scanned)
        seg.scanned += good
        seg.size = max(seg.size, seg.scanned)
        return [(e, seg.name) for e in entries]

    def _segment_gone(self, segname: str) -> None:
        """Forget a segment whose file vanished; the next miss looks at the directory again."""
        if os.path.exists(self._data_path(segname)):
            return
        with self._lock:
            seg = self._segs.get(segname)
            if seg is not None and not seg.ours:
                self._forget(seg)
        self._last_refresh = 0.0

    def _forget(self, seg: Segment) -> None:
        """Drop a segment from the index and the table (under self._lock)."""
        for key in list(seg.keys):
            loc = self._index.get(key)
            if loc is not None and loc.seg == seg.name:
                self._drop(key, loc)
        self._segs.pop(seg.name, None)
        fd = self._fds.pop(seg.name, None)
        if fd is not None:
            self._retire(fd)
        self._segment_forgotten(seg.name)

    def _retire(self, fd: int) -> None:
        now = time.monotonic()
        self._retired.append((now, fd))
        while self._retired and now - self._retired[0][0] > _RETIRE_AFTER:
            _close(self._retired.pop(0)[1])

    # -- writes (under self._lock) ----------------------------------------------------------------
    def _append(self, data: bytes) -> int | None:
        """Append to the active segment; its offset, or None when the write failed (counted,
        truncated back: no partial record is left behind)."""
        seg = self._active
        if seg is None:  # could not start one before (counted then): try again now
            if not self._start_active():
                return None
            seg = self._active
            assert seg is not None
        offset = seg.size
        try:
            written = os.write(self._wfd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:
            self.write_errors += 1
            log.warning("%s: write failed (%s); not stored", self.name, exc)
            try:
                os.ftruncate(self._wfd, offset)
            except OSError:
                pass
            return None
        seg.size = seg.scanned = offset + len(data)
        return offset

    def _sync_active(self) -> None:
        """fsync the active segment now (under self._lock); a failure is counted."""
        seg = self._active
        if seg is None or self._wfd < 0:
            return
        try:
            os.fsync(self._wfd)
            seg.synced = seg.size
        except OSError as exc:
            self.write_errors += 1
            log.warning("%s: fsync failed (%s); a power loss may cost recent writes", self.name, exc)

    def _disk_bytes(self) -> int:
        return sum(s.size for s in self._segs.values())

    def _maybe_roll(self) -> None:
        if self._active is not None and self._active.size >= self.segment_bytes:
            self._roll()

    def _roll(self) -> None:
        """Seal the active segment (fsync, index file) and start a new one."""
        seg = self._active
        assert seg is not None
        try:
            if self.fsync:
                os.fsync(self._wfd)
        except OSError:
            self.write_errors += 1
        if seg.size:
            self._write_index(seg, seg.entries)
        else:
            self._forget(seg)
            unlink(seg.path)
        seg.entries = []
        seg.sealed, seg.ours = True, False
        os.close(self._wfd)  # releases the flock
        self._wfd = -1
        self._start_active()

    def _enforce(self) -> Evicted:
        """Evict until within the bounds (under self._lock); returns what left."""
        evicted: Evicted = []
        self._enforce_entries(evicted)
        rounds = len(self._segs) + 2
        while self.max_bytes and self._disk_bytes() > self.max_bytes and rounds:
            rounds -= 1
            oldest = next((s for _, s in sorted(self._segs.items()) if s.sealed), None)
            if oldest is None:
                if self._active is None or not self._active.size:
                    break
                self._roll()
                continue
            self._evict_segment(oldest, evicted)
            self._unlink_segment(oldest)
        return evicted

    def _hand_down(self, key: bytes, loc: Loc, value: bytes | None, evicted: Evicted) -> None:
        """``key`` leaves the index by eviction (counted): its value goes to ``evicted`` for
        on_evict; with no value to move down (expired, unreadable) the store hears it was lost."""
        self._drop(key, loc)
        self.evictions += 1
        if value is not None:
            evicted.append((key, value))
        else:
            self._lost.append(key)

    def _unlink_segment(self, seg: Segment) -> None:
        self._forget(seg)
        self._unlink_files(seg.name)

    def _unlink_files(self, name: str) -> None:
        """Remove a segment's index file, then its data file (either may already be gone)."""
        unlink(self._index_path(name))
        unlink(self._data_path(name))

    def clear_sync(self) -> None:
        """Remove every segment of the directory (other processes' entries too)."""
        with self._lock:
            if self._wfd >= 0:
                os.close(self._wfd)
                self._wfd = -1
            for name in set(self._list()) | set(self._segs):
                self._unlink_files(name)
                self._segment_forgotten(name)
            for fd in self._fds.values():
                self._retire(fd)
            self._fds.clear()
            self._segs.clear()
            self._index.clear()
            self._dead.clear()
            self._reset()
            self._start_active()

    def _reset(self) -> None:
        """Forget RAM-only state at clear()."""

    def _before_close(self) -> None:
        """Finish background work before the files close."""

    def close_sync(self) -> None:
        """Finish, write the active segment's index, release its lock, close descriptors."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        self._before_close()
        with self._lock:
            seg = self._active
            if seg is not None and self._wfd >= 0:
                try:
                    if self.fsync:
                        os.fsync(self._wfd)
                except OSError:
                    pass
                if seg.size:
                    self._write_index(seg, seg.entries)
                os.close(self._wfd)
                self._wfd = -1
                if not seg.size:
                    unlink(seg.path)
            for fd in list(self._fds.values()) + [fd for _, fd in self._retired]:
                _close(fd)
            self._fds.clear()
            self._retired.clear()

    # -- the Tier protocol (async) -------------------------------------------------------------------
    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:  # late calls after close(): misses and no-ops, not errors
            return None
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _report_lost(self) -> None:
        on_lost = self.on_lost
        while self._lost:
            key = self._lost.popleft()
            if on_lost is not None:
                try:
                    on_lost(key)
                except Exception:  # noqa: BLE001
                    log.exception("%s: on_lost failed", self.name)

    async def get(self, key: bytes) -> bytes | None:
        value = await self._get(key)
        if self._lost:
            self._report_lost()
        return value

    async def _get(self, key: bytes) -> bytes | None:
        if self._closed:
            return None
        if self.inline_reads:
            return self.get_sync(key)
        # Misses and values still in RAM are answered on the loop: the thread hop (50-120 us)
        # is only paid for a read from disk (or a look at other processes' segments).
        loc = self._index.get(key)
        if loc is None and not self._refresh_due():
            self.misses += 1
            return None
        if loc is not None and loc.seg is None and not (loc.expires and loc.expires <= time.time()):
            value = self._read(key, loc)  # still in RAM (L4's pending block)
            if value is not None:
                self.hits += 1
                return value
        return await self._run(self.get_sync, key)

    async def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        if self._closed:
            return
        if self.inline_reads or self._cheap_set(len(value)):
            evicted = self.set_sync(key, value, ttl)
        else:
            evicted = await self._run(self.set_sync, key, value, ttl)
        if evicted:
            await self._deliver(evicted)
        await self._deliver_delete_evictions()  # a delete_sync called outside delete() left some
        if self._lost:
            self._report_lost()
        self._after_write()

    def set_sync(self, key: bytes, value: bytes, ttl: float | None = None) -> Evicted:
        """Store ``value`` under ``key``; returns the ``(key, value)`` pairs evicted to make
        room (the async :meth:`set` hands them to ``on_evict``). A failed write is counted."""
        value = self._as_bytes(value)
        expires = time.time() + ttl if ttl else 0.0
        with self._lock:
            ts = self._next_ts()
            # Both tiers frame a write as a recordio record (L4 then gathers them into blocks).
            try:
                rec = recordio.pack(key, value, ts, expires, seed=self._seed)
            except ValueError:  # key or value past the frame's limits: simply not stored
                self.write_errors += 1
                return []
            return self._store(key, value, rec, ts, expires)

    def _store(self, key: bytes, value: bytes, rec: bytes, ts: int, expires: float) -> Evicted:
        """Write ``rec``, the record of a set of ``value`` under ``key``, and take it into the
        index (under self._lock); returns what was evicted to make room."""
        raise NotImplementedError

    def _as_bytes(self, value: object) -> bytes:
        """``value`` as bytes; for anything else a TypeError naming the tier (a caller's bug,
        not a cache fault to count)."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{self.name} stores bytes, got {type(value).__name__}")
        return bytes(value)

    def _cheap_set(self, size: int) -> bool:
        """Whether a set of ``size`` bytes touches no file (then it runs on the loop)."""
        return False

    def delete_sync(self, key: bytes) -> bool:
        """Delete ``key``; whether it was there and not expired. The subclass writes its
        tombstone (:meth:`_record_delete`): dropping the index entry alone would let the
        deleted record come back at the next start or in another process."""
        if self._refresh_due():  # another process may have written it since we looked
            self.refresh()
        with self._lock:
            loc = self._index.get(key)
            if loc is None:
                return False
            self._drop(key, loc)
            self.deletes += 1
            self._record_delete(key, loc)
        return not (loc.expires and loc.expires <= time.time())

    def _record_delete(self, key: bytes, loc: Loc) -> None:
        """Write the tombstone of a deleted ``key`` (whose record was at ``loc``), take it into
        the index, then do what follows any write (under self._lock)."""
        raise NotImplementedError

    def _after_write(self) -> None:
        """Called on the loop after each async write (L3 schedules compaction here)."""

    async def _deliver(self, evicted: Evicted) -> None:
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

    async def _deliver_delete_evictions(self) -> None:
        if self._evicted_by_delete:
            with self._lock:
                evicted, self._evicted_by_delete = self._evicted_by_delete, []
            await self._deliver(evicted)

    async def delete(self, key: bytes) -> bool:
        if self._closed or (key not in self._index and not self._refresh_due()):
            return False
        found = self.delete_sync(key) if self.inline_reads else await self._run(self.delete_sync, key)
        await self._deliver_delete_evictions()
        if self._lost:
            self._report_lost()
        self._after_write()
        return bool(found)

    async def exists(self, key: bytes) -> bool:
        return self.exists_sync(key)

    async def clear(self) -> None:
        if self._closed:
            return
        if self.inline_reads:
            self.clear_sync()
        else:
            await self._run(self.clear_sync)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close_sync)

    def __len__(self) -> int:
        return len(self._index)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            segs = list(self._segs.values())
            entries = len(self._index)
        return {"entries": entries, "bytes": sum(s.size for s in segs), "segments": len(segs),
                "hits": self.hits, "misses": self.misses, "sets": self.sets, "deletes": self.deletes,
                "evictions": self.evictions, "expired": self.expired, "corrupt": self.corrupt,
                "write_errors": self.write_errors, "read_errors": self.read_errors,
                "torn_tails": self.torn_tails, "index_fallbacks": self.index_fallbacks,
                "refreshes": self.refreshes, "max_bytes": self.max_bytes}
