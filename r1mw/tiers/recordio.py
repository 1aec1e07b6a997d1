"""The record frame of the cold tiers (L3 segments, L4 archive blocks) and its scanner.

One record, little-endian, checksummed end to end::

    magic   2s   b"R3"
    version B    1
    flags   B    bit 0: tombstone (a delete; no value)
    klen    H    key length
    vlen    I    value length
    ts      q    write time, ns since the epoch (the newest record of a key wins)
    expires d    wall-clock expiry, 0 = never
    check   Q    xxh3-64 of the 26 bytes above + key + value
    key, value

A reader trusts nothing it has not checked: magic, version, sane lengths, then the checksum.
A torn or flipped record is reported as bad; :func:`scan` resynchronises on the next magic so
one bad record in the middle of a segment does not hide the good ones after it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
import xxhash

__all__ = ["HEADER", "MAGIC", "MAX_KEY", "Record", "ScanResult", "TOMBSTONE", "pack", "pack_tombstone", "parse",
           "scan"]

MAGIC = b"R3"
VERSION = 1
TOMBSTONE = 1
_PREFIX = struct.Struct("<2sBBHIqd")  # everything the checksum covers before the key
HEADER = struct.Struct("<2sBBHIqdQ")
MAX_KEY = 0xFFFF
MAX_VALUE = 1 << 31  # a record larger than this is refused (and a header claiming more is junk)


@dataclass(frozen=True, slots=True)
class Record:
    """A record found in a buffer: where it starts, how long it is, and its header fields."""

    offset: int
    length: int
    key: bytes
    ts: int
    expires: float
    tombstone: bool
    value_start: int
    value_len: int


def pack(key: bytes, value: bytes, ts: int, expires: float = 0.0, tombstone: bool = False) -> bytes:
    """One framed record. Raises ValueError for a key or value past the frame's limits."""
    if len(key) > MAX_KEY or len(value) >= MAX_VALUE:
        raise ValueError("key or value too large for a record")
    prefix = _PREFIX.pack(MAGIC, VERSION, TOMBSTONE if tombstone else 0, len(key), len(value), ts, expires)
    h = xxhash.xxh3_64(prefix)
    h.update(key)
    h.update(value)
    return b"".join((prefix, struct.pack("<Q", h.intdigest()), key, value))


def pack_tombstone(key: bytes, ts: int) -> bytes:
    """The record of a delete: no value, no expiry; it hides older records of ``key``."""
    return pack(key, b"", ts, 0.0, True)


def parse(buf: bytes | memoryview, offset: int = 0) -> Record | None:
    """The record starting at ``offset`` if it is whole and its checksum holds, else None."""
    end = len(buf)
    if offset + HEADER.size > end:
        return None
    magic, version, flags, klen, vlen, ts, expires, check = HEADER.unpack_from(buf, offset)
    if magic != MAGIC or version != VERSION or vlen >= MAX_VALUE:
        return None
    kstart = offset + HEADER.size
    vstart = kstart + klen
    rend = vstart + vlen
    if rend > end:
        return None
    h = xxhash.xxh3_64(bytes(buf[offset:offset + _PREFIX.size]))
    h.update(bytes(buf[kstart:rend]))
    if h.intdigest() != check:
        return None
    return Record(offset, rend - offset, bytes(buf[kstart:vstart]), ts, expires,
                  bool(flags & TOMBSTONE), vstart, vlen)


@dataclass(slots=True)
class ScanResult:
    records: list[Record]
    good_end: int  # offset just past the last good record (a torn tail starts here)
    corrupt: int  # bad stretches skipped by resynchronising


def scan(buf: bytes | memoryview, start: int = 0) -> ScanResult:
    """Every good record from ``start``. A bad record is skipped by searching for the next
    magic that starts a good record; bad bytes with no good record after them are a torn tail
    (``good_end`` < ``len(buf)``)."""
    data = bytes(buf) if isinstance(buf, memoryview) else buf
    records: list[Record] = []
    corrupt = 0
    off = good_end = start
    end = len(data)
    while off < end:
        rec = parse(data, off)
        if rec is not None:
            records.append(rec)
            off = good_end = off + rec.length
            continue
        nxt = _resync(data, off + 1)
        if nxt is None:
            break
        corrupt += 1
        off = nxt
    return ScanResult(records, good_end, corrupt)


def _resync(data: bytes, start: int) -> int | None:
    pos = data.find(MAGIC, start)
    while pos != -1:
        if parse(data, pos) is not None:
            return pos
        pos = data.find(MAGIC, pos + 1)
    return None

