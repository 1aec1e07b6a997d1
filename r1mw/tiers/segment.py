"""L3: append-only segment files with an in-RAM index, for large and slow disks.

Why this shape (Bitcask's): at 100,000 entries one file per entry costs a seek and an inode
per entry; here every write is one sequential append to the active segment, every read one
``pread`` at an offset the index knows, and start-up reads one small hint file per segment.

Layout of the directory::

    <ts>-<uid>.seg    records (see :mod:`r1mw.tiers.recordio`), appended only
    <ts>-<uid>.hint   compact index of a sealed segment (see :mod:`r1mw.tiers.hintfile`)
    maint.lock        flock'ed by the one process compacting or cleaning up
    frame.key         the secret seed of the record checksums (see :mod:`r1mw.tiers.framekey`)

Newest-wins records, several processes, start-up from hints and torn-tail recovery are the
shared machinery of :mod:`r1mw.tiers.segfiles`. What is L3's own:

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
  cost the unsynced tail of the active segment, which the checksum then cuts); and when
  the store deletes a key whose tombstone (written by that delete, or by the key's eviction)
  is still unsynced, since a newer value of it lives above: without that, a power loss could
  bring the older value back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from . import recordio
from .fileutil import exclusive_nowait, remove_stale_tmp, unlink, write_new
from .hintfile import HintEntry, write_hint
from .segfiles import Evicted, Loc, Segment, SegmentFiles

__all__ = ["SegmentTier"]

log = logging.getLogger("r1mw.tiers.segment")

_MERGE_AT_LEAST = 4  # small sealed segments in a row before they are merged


class SegmentTier(SegmentFiles):
    """An append-only, segment-file tier of bytes values (L3).

    ``inline_reads=True`` reads and writes on the event loop (fast disks, page cache warm: a
    ``pread`` is microseconds, a hop to a thread 50-120 us); the default keeps slow disks off
    the loop. ``refresh_interval`` < 0 never looks for other processes' writes.
    """

    DATA_SUFFIX = ".seg"
    INDEX_SUFFIX = ".hint"

    def __init__(self, path: str | os.PathLike[str], *, name: str = "l3", max_entries: int = 100_000,
                 max_bytes: int = 0, segment_bytes: int = 64 * 2**20, inline_reads: bool = False,
                 compact_ratio: float = 0.5, refresh_interval: float = 1.0, fsync: bool = True) -> None:
        super().__init__(path, name=name, max_bytes=max_bytes, segment_bytes=segment_bytes,
                         inline_reads=inline_reads, refresh_interval=refresh_interval, fsync=fsync, threads=2)
        self.max_entries = max_entries
        self.compact_ratio = compact_ratio
        self._maint = ThreadPoolExecutor(1, thread_name_prefix=f"r1mw-{name}-compact")
        self._compacting: Future[int] | None = None
        self._next_check = 0.0
        self.compactions = 0
        self.path.mkdir(parents=True, exist_ok=True)
        with self._maint_lock() as got:
            if got:  # nobody compacts: leftovers of a crashed compaction or hint write go
                remove_stale_tmp(str(self.path))
        self._open()

    # -- the record format ---------------------------------------------------------------------
    def _scan_region(self, data: bytes, base: int) -> tuple[list[HintEntry], int]:
        result = recordio.scan(data, seed=self._seed)
        self.corrupt += result.corrupt
        return [HintEntry(r.key, base + r.offset, r.length, r.ts, r.expires, r.tombstone)
                for r in result.records], result.good_end

    def _read(self, key: bytes, loc: Loc) -> bytes | None:
        data = self._pread(key, loc)
        if data is None:
            return None
        rec = recordio.parse(data, seed=self._seed) if len(data) == loc.length else None
        if rec is None or rec.key != key or rec.tombstone or rec.ts != loc.ts:
            self._discard_bad(key, loc)
            return None
        return data[rec.value_start:rec.value_start + rec.value_len]

    # -- writes ------------------------------------------------------------------------------------
    def _store(self, key: bytes, value: bytes, rec: bytes, ts: int, expires: float) -> Evicted:
        # Appended now (L4 gathers into a pending block instead); _append counts a failure.
        if not self._write(key, rec, ts, expires, False):
            if key not in self._index:
                self._lost.append(key)  # not stored here: the store may have lost it
            return []
        self.sets += 1
        evicted = self._enforce()
        self._maybe_roll()
        return evicted

    def _write(self, key: bytes, rec: bytes, ts: int, expires: float, tombstone: bool) -> bool:
        offset = self._append(rec)
        if offset is None:
            return False
        seg = self._active
        assert seg is not None
        entry = HintEntry(key, offset, len(rec), ts, expires, tombstone)
        seg.entries.append(entry)
        self._apply(entry, seg.name)
        return True

    def _tombstone(self, key: bytes) -> None:
        ts = self._next_ts()
        self._write(key, recordio.pack_tombstone(key, ts, seed=self._seed), ts, 0.0, True)

    def _record_delete(self, key: bytes, loc: Loc) -> None:
        self._tombstone(key)
        self._sync_tombstone(key)
        self._maybe_roll()

    # A delete from the store means a newer value of the key now lives in a tier above, maybe
    # not on disk yet: the tombstone hiding its older record here must survive a power loss,
    # or that older value comes back. Deletes that find something are rare next to sets.
    def _tombstone_unsynced(self, key: bytes) -> bool:
        seg = self._active
        tomb = seg.tombs.get(key) if seg is not None else None
        return tomb is not None and tomb.offset >= seg.synced  # type: ignore[union-attr]

    def _sync_tombstone(self, key: bytes) -> None:
        """With fsync on, make the active segment durable if it holds ``key``'s newest
        tombstone unsynced (under self._lock)."""
        if self.fsync and self._tombstone_unsynced(key):
            self._sync_active()

    def _sync_tombstone_locked(self, key: bytes) -> None:
        with self._lock:
            self._sync_tombstone(key)

    async def delete(self, key: bytes) -> bool:
        # A key evicted from here (to L4) and now stored again above: its eviction tombstone
        # hides the older record. A dict lookup on the store's set path; an fsync when needed.
        if self.fsync and key not in self._index and self._tombstone_unsynced(key) and not self._closed:
            if self.inline_reads:
                self._sync_tombstone_locked(key)
            else:
                await self._run(self._sync_tombstone_locked, key)
        return await super().delete(key)

    # -- eviction: FIFO by write time ----------------------------------------------------------------
    def _enforce_entries(self, evicted: Evicted) -> None:
        while len(self._index) > self.max_entries:
            key, loc = next(iter(self._index.items()))
            self._evict(key, loc, evicted)

    def _evict_segment(self, seg: Segment, evicted: Evicted) -> None:
        # Older versions of these keys can only sit in older segments: tombstones are needed
        # only while one exists.
        tomb = any(n < seg.name for n in self._segs)
        for key in sorted(seg.keys, key=lambda k: self._index[k].offset):
            self._evict(key, self._index[key], evicted, tomb)

    def _evict(self, key: bytes, loc: Loc, evicted: Evicted, tomb: bool = True) -> None:
        value = self._read(key, loc) if not (loc.expires and loc.expires <= time.time()) else None
        self._hand_down(key, loc, value, evicted)
        if tomb:
            self._tombstone(key)  # or it would come back at the next start

    # -- compaction ----------------------------------------------------------------------------------
    def _maint_lock(self) -> contextlib.AbstractContextManager[bool]:
        return exclusive_nowait(str(self.path / "maint.lock"))

    def compact_sync(self) -> int:
        """Rewrite sealed segments whose dead ratio reached ``compact_ratio``, and merge runs of
        small sealed segments (restarts leave one each); returns how many outputs were written.
        Runs in a background thread; readers keep reading meanwhile (one process at a time)."""
        done = 0
        with self._maint_lock() as got:
            if not got:
                return 0
            for group in self._compaction_groups():
                if self._closed:
                    break
                if self._compact(group):
                    done += 1
        self.compactions += done
        return done

    def _compaction_groups(self) -> list[list[Segment]]:
        small = self.segment_bytes // 4
        with self._lock:
            sealed = [s for _, s in sorted(self._segs.items()) if s.sealed and s.size]
        groups = [[s] for s in sealed if s.dead_ratio >= self.compact_ratio]
        run: list[Segment] = []
        for s in sealed:  # runs of small segments merge into one, up to a segment's size
            if s.size < small and s.dead_ratio < self.compact_ratio and \
                    sum(x.live for x in run) + s.live < self.segment_bytes:
                run.append(s)
                continue
            if len(run) >= _MERGE_AT_LEAST:
                groups.append(run)
            run = [s] if s.size < small and s.dead_ratio < self.compact_ratio else []
        if len(run) >= _MERGE_AT_LEAST:
            groups.append(run)
        return groups

    def _compact(self, group: list[Segment]) -> bool:
        """Copy the live records of ``group`` (and the tombstones still needed) into one new
        segment named with the group's oldest age, then switch the index and unlink the group."""
        names = {s.name for s in group}
        oldest = min(names)
        with self._lock:
            if any(self._segs.get(s.name) is not s for s in group):
                return False
            moving = sorted(((self._index[k], k) for s in group for k in s.keys),
                            key=lambda item: (item[0].seg, item[0].offset))
            # A tombstone matters while another segment may hold an older record of its key:
            # one created before the tombstone was written. Not "an older name" only: another
            # process's segment can be younger than ours and still hold the key's older record.
            others = {n for n in self._segs if n not in names} | {n for n in self._list() if n not in names}
            born = min((_age(n) for n in others), default=None)
            tombs: dict[bytes, HintEntry] = {}
            if born is not None:
                for s in group:
                    for t in s.tombs.values():
                        if t.ts > born and (t.key not in tombs or tombs[t.key].ts < t.ts):
                            tombs[t.key] = t
        newname = f"{oldest.split('-', 1)[0]}-{uuid.uuid4().hex[:12]}"  # same age
        entries: list[HintEntry] = []
        newloc: dict[bytes, tuple[Loc, Loc]] = {}
        parts: list[bytes] = []
        size = 0
        fds: dict[str, int] = {}
        try:
            for loc, key in moving:
                assert loc.seg is not None
                if loc.seg not in fds:
                    fds[loc.seg] = os.open(self._data_path(loc.seg), os.O_RDONLY)
                data = os.pread(fds[loc.seg], loc.length, loc.offset)
                rec = recordio.parse(data, seed=self._seed)
                if rec is None or rec.key != key:
                    self.corrupt += 1
                    continue
                if loc.expires and loc.expires <= time.time():
                    continue
                if not rec.keyed:  # an older cache's record: keyed now, so resync can find it
                    value = data[rec.value_start:rec.value_start + rec.value_len]
                    data = recordio.pack(key, value, rec.ts, rec.expires, seed=self._seed)
                entries.append(HintEntry(key, size, len(data), loc.ts, loc.expires, False))
                newloc[key] = (loc, Loc(newname, size, len(data), loc.ts, loc.expires))
                parts.append(data)
                size += len(data)
            for t in tombs.values():
                data = recordio.pack_tombstone(t.key, t.ts, seed=self._seed)
                entries.append(HintEntry(t.key, size, len(data), t.ts, 0.0, True))
                parts.append(data)
                size += len(data)
        except OSError:
            return False
        finally:
            for fd in fds.values():
                os.close(fd)
        newseg = Segment(newname, self._data_path(newname), size=size, scanned=size, sealed=True)
        if entries:
            tmp = newseg.path + ".tmp"
            try:
                # The hint is written before the rename: the new segment never appears without it.
                write_new(tmp, b"".join(parts), self.fsync)
                write_hint(self._index_path(newname), size, entries, self.fsync)
                os.replace(tmp, newseg.path)
            except OSError as exc:
                self.write_errors += 1
                log.warning("%s: compaction of %s failed (%s)", self.name, oldest, exc)
                unlink(tmp)
                unlink(self._index_path(newname))
                return False
        with self._lock:
            if any(self._segs.get(s.name) is not s for s in group):  # dropped or cleared meanwhile
                self._unlink_files(newname)
                return False
            if entries:
                self._segs[newname] = newseg
                newseg.tombs = {e.key: e for e in entries if e.tombstone}
                for key, (old, new) in newloc.items():
                    if self._index.get(key) == old:  # not overwritten or deleted meanwhile
                        # assigning an existing key keeps its FIFO place: compaction is no write
                        self._index[key] = new
                        src = self._segs[old.seg]  # type: ignore[index]
                        src.live -= old.length
                        src.keys.discard(key)
                        newseg.live += new.length
                        newseg.keys.add(key)
            for seg in group:
                self._unlink_segment(seg)
        return True

    def _wants_compaction(self) -> bool:
        return bool(self._compaction_groups())

    def _after_write(self) -> None:
        # Looking for work costs a sort of the segment table: at most once a second.
        if self._closed or (self._compacting is not None and not self._compacting.done()):
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + 1.0
        if self._wants_compaction():
            self._compacting = self._maint.submit(self.compact_sync)

    async def compact(self) -> int:
        """Compact now (in the background thread) and wait for it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._maint, self.compact_sync)

    def _before_close(self) -> None:
        if self._compacting is not None:
            try:
                self._compacting.result()
            except Exception:  # noqa: BLE001 - a failed compaction must not stop close
                log.exception("%s: compaction failed", self.name)
        self._maint.shutdown(wait=True)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        with self._lock:
            out["live_bytes"] = sum(s.live for s in self._segs.values())
        out.update(compactions=self.compactions, hint_fallbacks=self.index_fallbacks, max_entries=self.max_entries)
        return out


def _age(segname: str) -> int:
    """When a segment was started (the nanoseconds its name begins with); its records are
    all written after that. A name we did not make counts as the oldest (keeps tombstones)."""
    try:
        return int(segname.split("-", 1)[0])
    except ValueError:
        return 0
