"""Small file helpers shared by the segment tiers (L3, L4): locks, whole writes, unlink."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from typing import Iterator

__all__ = ["exclusive_nowait", "try_flock", "unlink", "write_all", "write_file", "write_new"]

log = logging.getLogger("r1mw.tiers")


def try_flock(fd: int) -> bool:
    """Take an exclusive ``flock`` without waiting: False when another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def exclusive_nowait(path: str) -> Iterator[bool]:
    """Hold the lock file ``path`` for the block if nobody else does (yields whether we got it)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        yield try_flock(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_new(path: str, data: bytes, fsync: bool) -> None:
    """Create (or truncate) ``path`` and write ``data`` whole, fsync'ed if asked. No rename:
    ``path`` is a temporary name, and the caller renames it when what goes with it is ready."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: str, data: bytes, fsync: bool) -> None:
    """Write a whole file under a temporary name, then rename: whole or absent."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        write_new(tmp, data, fsync)
        os.replace(tmp, path)
    except OSError:
        unlink(tmp)
        raise


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s (%s)", path, exc)


def remove_stale_tmp(directory: str, min_age: float = 60.0) -> int:
    """Remove ``*.tmp`` files older than ``min_age`` seconds: leftovers of a crash mid-write
    (a younger one may belong to a live process about to rename it)."""
    import time

    removed = 0
    now = time.time()
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if name.endswith(".tmp"):
            path = os.path.join(directory, name)
            try:
                if now - os.stat(path).st_mtime >= min_age:
                    unlink(path)
                    removed += 1
            except OSError:
                pass
    return removed
