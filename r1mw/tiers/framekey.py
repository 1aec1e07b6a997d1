"""The per-directory secret that keys the record checksums of the segment tiers (L3, L4).

Why: after a torn tail or a damaged header, the scanner looks for the next record it can
verify. A stored value may hold, byte for byte, what looks like a record of another key
(values are stored verbatim: small envelopes, msgpack, context-cache bytes), and anyone can
compute an unkeyed xxh3. Checked with a seed nobody outside the directory knows, a record that
verifies is one the tier wrote, so resynchronising can never land inside a value.

The file, ``<dir>/frame.key``::

    magic b"R3KEY001" | seed Q (random) | xxh3-64 of the 16 bytes before it (Q)

It is created with the directory (temp file, fsync, hard link: two processes starting at once
agree on one key, whichever links first) and read at every open. Losing it loses what was
written with it (those records fail their checks: counted misses), never more.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
import uuid
from pathlib import Path

import xxhash

from .fileutil import unlink, write_new

__all__ = ["KEY_FILE", "load_or_create"]

log = logging.getLogger("r1mw.tiers")

KEY_FILE = "frame.key"
_MAGIC = b"R3KEY001"
_FORMAT = struct.Struct("<8sQQ")


def _read(path: Path) -> int | None:
    """The seed in ``path``; None when the file is missing or damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) != _FORMAT.size:
        return None
    magic, seed, check = _FORMAT.unpack(data)
    if magic != _MAGIC or xxhash.xxh3_64_intdigest(data[:16]) != check:
        return None
    return int(seed)


def load_or_create(directory: Path, fsync: bool = True, seed: int | None = None) -> tuple[int, bool]:
    """The directory's seed, and whether this call created it (the directory had none).
    ``seed``: the one to write when creating (a tier putting back the key it already uses)."""
    path = directory / KEY_FILE
    wanted = seed
    seed = _read(path)
    if seed is not None:
        return seed, False
    if path.exists():  # damaged: what was written with it cannot be verified any more
        log.warning("%s is damaged; a new key replaces it (entries written before become misses)", path)
        unlink(str(path))
    body = _MAGIC + struct.pack("<Q", wanted or secrets.randbits(64) or 1)  # (seed 0 is unseeded xxh3)
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    made = False
    try:
        write_new(tmp, body + struct.pack("<Q", xxhash.xxh3_64_intdigest(body)), fsync)
        try:
            os.link(tmp, path)  # atomic, and never replaces the key another process just made
            made = True
        except FileExistsError:
            pass
    finally:
        unlink(tmp)
    if made and fsync:
        _fsync_dir(directory)
    seed = _read(path)
    if seed is None:
        raise OSError(f"could not create {path}: check that the directory is writable")
    return seed, made


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
