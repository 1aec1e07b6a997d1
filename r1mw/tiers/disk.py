"""L2: one file per entry on a local SSD directory, crash-safe and shareable between processes.

Layout: ``<dir>/<first key byte, hex>/<key hex>`` (256 fan-out directories). A file is::

    b"R1D1" | expires f64 | key length u16 | value length u32 | key | value | xxh3-64 of all before

Writes go to a temp file in the same directory (``.tmp-<pid>-<tier token>-<n>``) and are renamed over
the final name, so a reader in any process sees the old file, the new file or no file,
never a half-written one. A file that fails its checks (short, wrong magic, wrong lengths,
wrong checksum, another key) is a miss: counted as corrupt and removed.

Durability (``fsync``): ``none`` (default) leaves flushing to the OS: a crash of the process
loses nothing written, a power cut may lose recent entries or leave empty/garbled files,
which the checksum turns into misses. ``file`` fsyncs the file before the rename; ``full``
also fsyncs the directory after it. (An fsync costs about
0.3 ms, in the writer thread.)

Start-up does not read entries: it lists the fan-out directories and stats each file
(size and mtime), removes temp files of dead writers, and rebuilds the eviction order from
mtimes. Expiry is read from the header when an entry is read. Another process's writes are
found on read (a file the index does not know is adopted); the index is resynchronised by
a rescan after ``rescan_every`` writes and at most every ``rescan_interval`` seconds, so the
bounds hold per process and converge when several share the directory.

Reads run inline: an open/read/close of a warm page costs microseconds where a hop to a
thread costs 120 us. ``inline_reads=False`` sends every read to a thread, for directories
on slow or network disks where a read may block for milliseconds. Writes go to a thread
(``inline_writes=False``, the default): creating and renaming a file costs 30-300 us on a
shared SSD and milliseconds at p99, which must not stall the event loop; they are off the
hit path anyway (a write follows an upstream call of seconds).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import secrets
import struct
import time
from pathlib import Path
from typing import Any, Callable

import xxhash

from .policy import Policy, make_policy

__all__ = ["DiskTier"]

log = logging.getLogger("r1mw.tiers.disk")

_MAGIC = b"R1D1"
_HEAD = struct.Struct("<4sdHI")  # magic, expires, key length, value length
_SUM = struct.Struct("<Q")
_OVERHEAD = _HEAD.size + _SUM.size
_digest = xxhash.xxh3_64_intdigest
_TMP = ".tmp-"
FSYNC_POLICIES = ("none", "file", "full")


class DiskTier:
    """Bytes on disk, one file per entry, bounded by ``max_entries`` and ``max_bytes``."""

    takes = "bytes"

    def __init__(self, directory: str | os.PathLike[str], name: str = "l2", max_entries: int = 10_000,
                 max_bytes: int = 0, *, fsync: str = "none", policy: str = "s3fifo",
                 inline_reads: bool = True, read_size: int = 64 * 1024, rescan_every: int = 1000,
                 rescan_interval: float = 30.0, inline_writes: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.name = name
        self.directory = Path(directory)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.inline_reads = inline_reads
        self.inline_writes = inline_writes
        self.read_size = read_size
        self.rescan_every = rescan_every
        self.rescan_interval = rescan_interval
        self._clock = clock
        self._policy_name = policy
        # The policy orders files for eviction; values are unused, sizes are file sizes.
        self._index: Policy = make_policy(policy, max(1, max_entries or 1 << 62), max_bytes)
        self._seq = itertools.count()
        # Temp names are unique per tier object, not just per process: two tiers of one
        # process on one directory (two pipelines) would otherwise pick the same name and
        # delete each other's file in flight. The pid stays first (_reap_temp reads it).
        self._tmp_prefix = f"{_TMP}{os.getpid()}-{secrets.token_hex(4)}-"
        self._writes_since_scan = 0
        self._scanned_at = time.monotonic()
        self.on_evict: Callable[[bytes, bytes], Any] | None = None
        self.on_lost: Callable[[bytes], Any] | None = None  # removed on its own: expired, corrupt
        self.hits = self.misses = self.evictions = self.expired = 0
        self.corrupt = self.write_errors = self.writes = 0
        self._open()

    # -- start-up -----------------------------------------------------------------------
    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        """Rebuild the index from names, sizes and mtimes only (no entry is read)."""
        found: list[tuple[float, bytes, int]] = []
        now = time.time()
        try:
            with os.scandir(self.directory) as top:
                subdirs = [d.path for d in top if d.is_dir(follow_symlinks=False) and len(d.name) == 2]
        except FileNotFoundError:  # removed under us (rm -rf of the cache): empty; a write makes it again
            subdirs = []
        for sub in subdirs:
            try:
                with os.scandir(sub) as files:
                    for f in files:
                        name = f.name
                        try:
                            st = f.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if name.startswith(_TMP):
                            self._reap_temp(f.path, name, st.st_mtime, now)
                            continue
                        try:
                            key = bytes.fromhex(name)
                        except ValueError:
                            continue
                        found.append((st.st_mtime, key, st.st_size))
            except FileNotFoundError:
                continue
        found.sort()
        index = make_policy(self._policy_name, self._index.max_entries, self.max_bytes)
        self._index = index
        overflow: list[bytes] = []
        for _, key, size in found:
            for node in index.put(key, None, size):
                overflow.append(node.key)  # type: ignore[arg-type]
        # Bounds lowered since the last run, or other processes overfilled the directory.
        self._evict(overflow)
        self._writes_since_scan = 0
        self._scanned_at = time.monotonic()  # rescans stay at most one per rescan_interval

    @staticmethod
    def _reap_temp(path: str, name: str, mtime: float, now: float) -> None:
        # A temp file of a dead writer (killed mid-write) is garbage; a live writer's is not.
        try:
            pid = int(name[len(_TMP):].split("-", 1)[0])
        except ValueError:
            pid = 0
        alive = pid > 0 and _pid_alive(pid)
        if not alive or now - mtime > 3600:
            try:
                os.unlink(path)
            except OSError:
                pass

    # -- paths ----------------------------------------------------------------------------
    def _path(self, key: bytes) -> str:
        h = key.hex()
        return os.path.join(self.directory, h[:2] if len(h) >= 2 else "00", h)

    # -- reads ------------------------------------------------------------------------------
    async def get(self, key: bytes) -> bytes | None:
        if self.inline_reads:
            return self.get_sync(key)
        # Only the file I/O goes to the thread; the index is touched on the event loop.
        path = self._path(key)
        return self._finish(key, path, await asyncio.to_thread(self._read_file, path))

    def miss_nowait(self, key: bytes) -> bool:
        """True (a miss, counted) when the key is in neither the index nor the directory (a
        file another process wrote is found by the stat). Only with inline reads: on a slow
        disk even a stat may block, and the store then takes the awaited path."""
        if not self.inline_reads or key in self._index:
            return False
        try:
            os.stat(self._path(key))
        except FileNotFoundError:
            self.misses += 1
            return True
        except OSError:
            return False
        return False

    def get_sync(self, key: bytes) -> bytes | None:
        """Read an entry in the calling thread; None on a miss, expiry or fault."""
        path = self._path(key)
        return self._finish(key, path, self._read_file(path))

    def _read_file(self, path: str) -> bytes | OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            return exc
        try:
            data = os.read(fd, self.read_size)
            if len(data) == self.read_size:  # maybe more: read to the end
                rest = [data]
                while chunk := os.read(fd, 1 << 20):
                    rest.append(chunk)
                data = b"".join(rest)
            return data
        except OSError as exc:
            return exc
        finally:
            os.close(fd)

    def _finish(self, key: bytes, path: str, data: bytes | OSError) -> bytes | None:
        if isinstance(data, OSError):
            self.misses += 1
            if isinstance(data, FileNotFoundError):
                self._forget(key)
            else:
                log.warning("l2 read of %s failed: %s", path, data)
            return None
        value = self._check(key, data)
        if value is None:
            self._corrupt(key, path)
            return None
        expires = _HEAD.unpack_from(data)[1]
        if expires and expires <= self._clock():
            self._remove(key)
            self.expired += 1
            self.misses += 1
            self._lost(key)
            return None
        node = self._index.get(key)
        if node is None:  # written by another process: adopt it
            self._account(key, len(data))
        self.hits += 1
        return value

    @staticmethod
    def _check(key: bytes, data: bytes) -> bytes | None:
        n = len(data)
        if n < _OVERHEAD:
            return None
        magic, _, klen, vlen = _HEAD.unpack_from(data)
        if magic != _MAGIC or _OVERHEAD + klen + vlen != n:
            return None
        view = memoryview(data)
        if _SUM.unpack_from(view, n - _SUM.size)[0] != _digest(view[: n - _SUM.size]):
            return None
        start = _HEAD.size
        if view[start : start + klen] != key:
            return None
        return data[start + klen : n - _SUM.size]

    def _corrupt(self, key: bytes, path: str) -> None:
        self.corrupt += 1
        self.misses += 1
        log.warning("l2: corrupt entry %s removed", path)
        self._remove(key)
        self._lost(key)

    def _lost(self, key: bytes) -> None:
        if self.on_lost is not None:
            self.on_lost(key)

    # -- writes -------------------------------------------------------------------------------
    async def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        if self.inline_writes and self.fsync == "none":
            ok = self._write(key, value, ttl)
        else:
            ok = await asyncio.to_thread(self._write, key, value, ttl)
        if ok:
            self._account(key, _OVERHEAD + len(key) + len(value))

    async def set_many(self, items: list[tuple[bytes, bytes, float | None]]) -> list[BaseException | None]:
        """``set`` for the first items of ``(key, value, ttl)``, in order, with one thread hop
        for all of them instead of one each (the write-behind drains its queue through this).
        Handles a prefix, at least one item: the longest run of distinct keys the index does
        not hold (or the first item alone). Returns one outcome per handled item: None when
        done as ``set`` does it (a disk that refuses is counted in ``write_errors`` and logged,
        as by ``set``), or the exception ``set`` would have raised; one item's fault does not
        stop the others.

        Why runs of new keys: accounting item k (which may evict, reading a file back) then
        never meets a file that a later item of the run has already overwritten, so the tier
        ends as ``set`` called in turn leaves it, and what it evicts carries the version
        ``set`` in turn would have (the store relies on that, see TieredStore._drain_batch).
        A rescan waits for the end of the run for the same reason.
        """
        index = self._index
        end, seen, n = 0, set(), len(items)
        while end < n and (k := items[end][0]) not in seen and k not in index:
            seen.add(k)
            end += 1
        run = items[: max(end, 1)]
        if len(run) == 1:
            key, value, ttl = run[0]
            try:
                await self.set(key, value, ttl)
            except Exception as exc:
                return [exc]
            return [None]
        if self.inline_writes and self.fsync == "none":
            done = self._write_run(run)
        else:  # cancelled (as with set): the thread still writes, files are adopted on read
            done = await asyncio.to_thread(self._write_run, run)
        results: list[BaseException | None] = [None] * len(run)
        for j, (key, value, _) in enumerate(run):
            outcome = done[j]
            if outcome is True:
                self._account(key, _OVERHEAD + len(key) + len(value), rescan=False)
            elif outcome is not False:
                results[j] = outcome
        self._maybe_rescan()
        return results

    def _write_run(self, run: list[tuple[bytes, bytes, float | None]]) -> list[bool | Exception]:
        """In order: True written, False refused (counted by ``_write``), or what it raised."""
        out: list[bool | Exception] = []
        for key, value, ttl in run:
            try:
                out.append(self._write(key, value, ttl))
            except Exception as exc:
                out.append(exc)
        return out

    def set_sync(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        if self._write(key, value, ttl):
            self._account(key, _OVERHEAD + len(key) + len(value))

    def _write(self, key: bytes, value: bytes, ttl: float | None) -> bool:
        """Write atomically; False (counted, logged) when the disk refuses. Never raises."""
        expires = self._clock() + ttl if ttl else 0.0
        body = _HEAD.pack(_MAGIC, expires, len(key), len(value)) + key + value
        data = body + _SUM.pack(_digest(body))
        path = self._path(key)
        tmp = os.path.join(os.path.dirname(path), f"{self._tmp_prefix}{next(self._seq)}")
        fd = -1
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync != "none":
                os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
            if self.fsync == "full":
                dfd = os.open(os.path.dirname(path), os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as exc:
            self.write_errors += 1
            level = logging.WARNING if exc.errno in (errno.ENOSPC, errno.EDQUOT) else logging.ERROR
            log.log(level, "l2: cannot write %s: %s (entry not stored)", path, exc)
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
        self.writes += 1
        return True

    def _account(self, key: bytes, size: int, rescan: bool = True) -> None:
        self._evict([node.key for node in self._index.put(key, None, size)])  # type: ignore[misc]
        self._writes_since_scan += 1
        if rescan:
            self._maybe_rescan()

    def _maybe_rescan(self) -> None:
        if (self.rescan_every and self._writes_since_scan >= self.rescan_every
                and time.monotonic() - self._scanned_at >= self.rescan_interval):
            self._scan()

    def _evict(self, victims: list[bytes]) -> None:
        """Remove evicted files, handing each readable, unexpired value to ``on_evict``."""
        for victim in victims:
            self.evictions += 1
            on_evict = self.on_evict
            if on_evict is None:
                self._unlink(victim)
                continue
            data = self._read_raw(victim)
            self._unlink(victim)
            if data is not None:
                on_evict(victim, data)
            else:  # expired or unreadable: nothing to move down
                self._lost(victim)

    def _read_raw(self, key: bytes) -> bytes | None:
        try:
            with open(self._path(key), "rb") as f:
                data = f.read()
        except OSError:
            return None
        value = self._check(key, data)
        if value is None:
            self.corrupt += 1
            return None
        expires = _HEAD.unpack_from(data)[1]
        if expires and expires <= self._clock():
            return None  # expired: dropped, not demoted
        return value

    def sample(self, limit: int) -> list[bytes]:
        """Up to ``limit`` stored values (checked, unexpired), newest first: for training."""
        out: list[bytes] = []
        for key in reversed(list(self._index.keys())):
            if len(out) >= limit:
                break
            value = self._read_raw(key)  # type: ignore[arg-type]
            if value is not None:
                out.append(value)
        return out

    # -- removal --------------------------------------------------------------------------------
    def _unlink(self, key: bytes) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("l2: cannot remove %s: %s", self._path(key), exc)

    def _forget(self, key: bytes) -> None:
        self._index.pop(key)

    def _remove(self, key: bytes) -> None:
        self._index.pop(key)
        self._unlink(key)

    async def delete(self, key: bytes) -> bool:
        existed = os.path.exists(self._path(key))
        self._remove(key)
        return existed

    def contains(self, key: bytes) -> bool:
        return os.path.exists(self._path(key))

    async def exists(self, key: bytes) -> bool:
        """True when a file is there (not read: expiry and checksum are checked by ``get``)."""
        return self.contains(key)

    async def clear(self) -> None:
        for key in list(self._index.keys()):
            self._unlink(key)  # type: ignore[arg-type]
        self._scan()  # files other processes wrote
        for key in list(self._index.keys()):
            self._unlink(key)  # type: ignore[arg-type]
        self._index.clear()

    async def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._index)

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self._index), "bytes": self._index.bytes, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions, "expired": self.expired,
                "corrupt": self.corrupt, "writes": self.writes, "write_errors": self.write_errors,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes, "fsync": self.fsync,
                "dir": str(self.directory)}


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
