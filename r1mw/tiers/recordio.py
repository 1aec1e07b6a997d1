"""The record frame of the cold tiers (L3 segments, L4 archive blocks) and its scanner.

One record, little-endian, checksummed end to end::

    magic   2s   b"R3"
    version B    2 (keyed); 1 (unkeyed: written before the key, still read, see below)
    flags   B    bit 0: tombstone (a delete; no value)
    klen    H    key length
    vlen    I    value length
    ts      q    write time, ns since the epoch (the newest record of a key wins)
    expires d    wall-clock expiry, 0 = never
    check   Q    xxh3-64 of the 26 bytes above + key + value; version 2 seeds it with the
                 directory's secret (:mod:`r1mw.tiers.framekey`), version 1 does not
    key, value

A reader trusts nothing it has not checked: magic, version, sane lengths, then the checksum.
A torn or flipped record is reported as bad; :func:`scan` resynchronises on the next record
that verifies, so one bad record in the middle of a segment does not hide the good ones after
it. **Resynchronising accepts version 2 only**: a value may contain the bytes of a record of
another key, and only the tier, which holds the seed, can make one that verifies. Version 1
records (caches written before the key existed) are read where a reader reaches them in
order: from the start of a segment, after a good record, or at an offset an index gave.
Those are record boundaries, never the inside of a value.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import xxhash

__all__ = ["HEADER", "MAGIC", "MAX_KEY", "Record", "ScanResult", "TOMBSTONE", "pack", "pack_tombstone", "parse",
           "scan"]

MAGIC = b"R3"
UNKEYED, KEYED = 1, 2  # versions
TOMBSTONE = 1
_PREFIX = struct.Struct("<2sBBHIqd")  # everything the checksum covers before the key
HEADER = struct.Struct("<2sBBHIqdQ")
MAX_KEY = 0xFFFF
MAX_VALUE = 1 << 31  # a record larger than this is refused (and a header claiming more is junk)
_KEYED_MAGIC = MAGIC + bytes([KEYED])  # what resynchronising looks for


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
    keyed: bool  # version 2 (False: an unkeyed version 1 record)


def pack(key: bytes, value: bytes, ts: int, expires: float = 0.0, tombstone: bool = False, *,
         seed: int | None) -> bytes:
    """One framed record, keyed with ``seed`` (None: the unkeyed version 1 of older caches,
    which tests use to make one). Raises ValueError for a key or value past the limits."""
    if len(key) > MAX_KEY or len(value) >= MAX_VALUE:
        raise ValueError("key or value too large for a record")
    version = UNKEYED if seed is None else KEYED
    prefix = _PREFIX.pack(MAGIC, version, TOMBSTONE if tombstone else 0, len(key), len(value), ts, expires)
    h = xxhash.xxh3_64(prefix, seed=seed or 0)
    h.update(key)
    h.update(value)
    return b"".join((prefix, struct.pack("<Q", h.intdigest()), key, value))


def pack_tombstone(key: bytes, ts: int, *, seed: int | None) -> bytes:
    """The record of a delete: no value, no expiry; it hides older records of ``key``."""
    return pack(key, b"", ts, 0.0, True, seed=seed)


def parse(buf: bytes | memoryview, offset: int = 0, *, seed: int, keyed_only: bool = False) -> Record | None:
    """The record starting at ``offset`` if it is whole and its checksum holds, else None.
    ``keyed_only``: accept version 2 only (where ``offset`` is a guess, not a boundary)."""
    end = len(buf)
    if offset + HEADER.size > end:
        return None
    magic, version, flags, klen, vlen, ts, expires, check = HEADER.unpack_from(buf, offset)
    if magic != MAGIC or vlen >= MAX_VALUE or not (version == KEYED or (version == UNKEYED and not keyed_only)):
        return None
    kstart = offset + HEADER.size
    vstart = kstart + klen
    rend = vstart + vlen
    if rend > end:
        return None
    h = xxhash.xxh3_64(bytes(buf[offset:offset + _PREFIX.size]), seed=seed if version == KEYED else 0)
    h.update(bytes(buf[kstart:rend]))
    if h.intdigest() != check:
        return None
    return Record(offset, rend - offset, bytes(buf[kstart:vstart]), ts, expires,
                  bool(flags & TOMBSTONE), vstart, vlen, version == KEYED)


@dataclass(slots=True)
class ScanResult:
    records: list[Record]
    good_end: int  # offset just past the last good record (a torn tail starts here)
    corrupt: int  # bad stretches skipped by resynchronising


def scan(buf: bytes | memoryview, start: int = 0, *, seed: int) -> ScanResult:
    """Every good record from ``start`` (a record boundary). A bad record is skipped by
    searching for the next keyed record that verifies; bad bytes with no such record after
    them are a torn tail (``good_end`` < ``len(buf)``)."""
    data = bytes(buf) if isinstance(buf, memoryview) else buf
    records: list[Record] = []
    corrupt = 0
    off = good_end = start
    end = len(data)
    while off < end:
        rec = parse(data, off, seed=seed)
        if rec is not None:
            records.append(rec)
            off = good_end = off + rec.length
            continue
        nxt = _resync(data, off + 1, seed)
        if nxt is None:
            break
        corrupt += 1
        off = nxt
    return ScanResult(records, good_end, corrupt)


def _resync(data: bytes, start: int, seed: int) -> int | None:
    # Only a keyed record can be trusted to start where a search lands: an unkeyed one may be
    # the inside of a value (see the module docstring).
    pos = data.find(_KEYED_MAGIC, start)
    while pos != -1:
        if parse(data, pos, seed=seed, keyed_only=True) is not None:
            return pos
        pos = data.find(_KEYED_MAGIC, pos + 1)
    return None
