"""Fault injection for the tests of the file tiers (L2 disk, L3 segments, L4 archive): damaged
bytes, a full disk, a writer process killed mid-write, and the check that follows every fault:
a key reads as its value or as a miss, never as wrong data.

Imported by the test modules as ``tier_faults`` (pytest puts ``tests/`` on the path, as for
``tier_conformance``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent  # child processes import r1mw from here

# -- damaged bytes --------------------------------------------------------------------------


def flip_byte(path: str | os.PathLike[str], offset: int, mask: int) -> None:
    """XOR the byte at ``offset`` of ``path`` with ``mask``, in place (the file stays open
    elsewhere: a tier reading it sees the damage, as after a bad sector)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ mask]))


def flip_at(path: Path, fraction: float, mask: int) -> None:
    """XOR the byte at ``fraction`` of the way into ``path`` with ``mask``."""
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * fraction)] ^= mask
    path.write_bytes(bytes(raw))


def damage_file(path: Path, damage: str, start: int, step: int) -> None:
    """``truncate``: cut ``path`` to half its length; ``flip`` / ``zero``: flip a bit of (or
    zero) every ``step``-th byte from ``start`` on."""
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        os.truncate(path, len(raw) // 2)
        return
    for pos in range(start, len(raw), step):
        raw[pos] = 0 if damage == "zero" else raw[pos] ^ 0x10
    path.write_bytes(bytes(raw))


def remove_files(directory: Path, pattern: str) -> None:
    """Remove what ``pattern`` matches in ``directory`` (index files: the tier must scan)."""
    for p in directory.glob(pattern):
        p.unlink()


# -- never wrong data -----------------------------------------------------------------------


def count_served(tier: Any, data: Mapping[bytes, bytes]) -> int:
    """Read every key with ``get_sync``: each is its value or a miss; returns how many hit."""
    served = 0
    for k, v in data.items():
        got = tier.get_sync(k)
        assert got in (v, None)  # never wrong data
        served += got is not None
    return served


async def count_served_async(tier: Any, data: Mapping[bytes, bytes]) -> int:
    """:func:`count_served` through the async ``get`` (the path a pipeline takes)."""
    served = 0
    for k, v in data.items():
        got = await tier.get(k)
        assert got in (v, None)  # never wrong data
        served += got is not None
    return served


# -- a full disk ----------------------------------------------------------------------------


@contextlib.contextmanager
def disk_full(tier: Any, kept: Callable[[int], int]) -> Iterator[None]:
    """While in the block, a write to ``tier``'s active segment writes its first
    ``kept(len(data))`` bytes and then fails with ENOSPC, as a disk filling up mid-write does;
    other writes go through."""
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        if fd == tier._wfd:  # looked up per call: the active segment changes when it rolls
            real_write(fd, bytes(data[:kept(len(data))]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", full)
        yield


# -- a power cut ----------------------------------------------------------------------------


class PowerCut:
    """Models what survives a power loss: a file keeps what it held at its last ``fsync`` and
    nothing written after (never fsynced: empty). While :meth:`recording`, every ``os.fsync``
    notes its file's size (by inode, so renames keep it); :meth:`cut` then truncates every file
    of a directory to what was noted before the cut."""

    def __init__(self) -> None:
        self.synced: dict[int, int] = {}

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            real_fsync(fd)
            st = os.fstat(fd)
            self.synced[st.st_ino] = st.st_size

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "fsync", fsync)
            yield

    def snapshot(self) -> dict[int, int]:
        """What is durable now (the moment of the cut)."""
        return dict(self.synced)

    @staticmethod
    def cut(directory: Path, durable: Mapping[int, int]) -> None:
        """Truncate every file under ``directory`` to its durable size (files that grew after
        the snapshot lose the rest; files never fsynced lose everything)."""
        for p in directory.rglob("*"):
            if p.is_file():
                keep = durable.get(p.stat().st_ino, 0)
                if p.stat().st_size > keep:
                    os.truncate(p, keep)


def abandon(tier: Any) -> None:
    """Drop a segment tier (L3, L4) as a crash does: nothing flushed, no index file written, its
    descriptors closed as the kernel closes a dead process's (its segments are orphans now)."""
    tier._closed = True
    tier._pool.shutdown(wait=True)
    maint = getattr(tier, "_maint", None)
    if maint is not None:
        maint.shutdown(wait=True)
    for fd in [tier._wfd, *tier._fds.values(), *(fd for _, fd in tier._retired)]:
        if fd >= 0:
            os.close(fd)


# -- other processes ------------------------------------------------------------------------


@contextlib.contextmanager
def child(script: str, *args: str, stdin: bool = False) -> Iterator[subprocess.Popen[str]]:
    """Run ``script`` in a new Python process (text pipes to its stdout, and stdin if asked);
    killed at the end of the block if it is still running, whatever the test asserted."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE if stdin else None,
                            stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def sigkill(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` with no chance to clean up (no close, no flush, locks released by the
    kernel) and wait for it."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
