"""Hint files: the compact index of one segment, so start-up reads hints, not records.

A hint lists, for every record of its segment up to ``seg_size`` bytes, where it is and its
header fields (no values)::

    magic b"R3HINT01" | seg_size Q | count I
    count x ( flags B | klen H | offset Q | length I | ts q | expires d | key )
    xxh3-64 of everything above (Q)

A hint is written to a temporary name and renamed, so it is whole or absent; a hint whose
checksum fails, or that claims more bytes than its segment has, is ignored (the segment is
scanned instead). A segment longer than its hint (appended to after the hint was written) is
read from the hint, then scanned from ``seg_size`` on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import xxhash

from .fileutil import write_file

__all__ = ["HintEntry", "read_hint", "write_hint"]

_MAGIC = b"R3HINT01"
_HEAD = struct.Struct("<8sQI")
_ENTRY = struct.Struct("<BHQIqd")
_CHECK = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class HintEntry:
    key: bytes
    offset: int
    length: int
    ts: int
    expires: float
    tombstone: bool


def write_hint(path: str, seg_size: int, entries: list[HintEntry], fsync: bool = True) -> None:
    """Write ``path`` atomically (temp file, optional fsync, rename)."""
    parts = [_HEAD.pack(_MAGIC, seg_size, len(entries))]
    for e in entries:
        parts.append(_ENTRY.pack(1 if e.tombstone else 0, len(e.key), e.offset, e.length, e.ts, e.expires))
        parts.append(e.key)
    body = b"".join(parts)
    body += _CHECK.pack(xxhash.xxh3_64_intdigest(body))
    write_file(path, body, fsync)


def read_hint(path: str) -> tuple[int, list[HintEntry]] | None:
    """``(seg_size, entries)``, or None when the hint is missing, torn or corrupt."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < _HEAD.size + _CHECK.size:
        return None
    body, (check,) = data[:-_CHECK.size], _CHECK.unpack_from(data, len(data) - _CHECK.size)
    if xxhash.xxh3_64_intdigest(body) != check:
        return None
    magic, seg_size, count = _HEAD.unpack_from(body, 0)
    if magic != _MAGIC:
        return None
    entries: list[HintEntry] = []
    off = _HEAD.size
    try:
        for _ in range(count):
            flags, klen, offset, length, ts, expires = _ENTRY.unpack_from(body, off)
            off += _ENTRY.size
            key = body[off:off + klen]
            off += klen
            entries.append(HintEntry(key, offset, length, ts, expires, bool(flags & 1)))
    except struct.error:
        return None
    if off != len(body):
        return None
    return seg_size, entries
