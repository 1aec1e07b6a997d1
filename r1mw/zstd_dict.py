"""zstd with dictionaries trained on the entries themselves, automatically (codec ``msgpack+zstd+dict``).

A single R1 reply (6.5 KB of JSON) is too short for a compressor to learn English and
markdown from it: zstd alone stores 42 % of the raw JSON. A 64 KiB dictionary trained on
other replies brings it to about 33 % (the DESIGN.md target is <= 35 %). This module makes
that the default without a manual step:

* :class:`DictionaryDir` keeps dictionaries in a directory (``<cache dir>/zstd-dicts``), each
  in a file named for its id, the xxh3-64 of its bytes (``<id as 16 hex digits>.zdict``).
  Content-addressed: a file is verified against its name when loaded, two processes that
  train the same dictionary write the same file, and an id can never name two dictionaries.
* An entry compressed with a dictionary is an envelope of codec id 4 whose payload is the
  dictionary id (8 bytes, little-endian) followed by a zstd frame. Any reader, in any
  process, loads the dictionary by that id on first use (from every directory a codec of
  this process was built with) and keeps it; so entries written by another process with a
  newer dictionary are read, not missed. An id whose file is missing or damaged raises
  :class:`~r1mw.CodecError` (the store counts a miss and removes the entry), never returns
  wrong data: the dictionary's bytes are checked against its id before use.
* :class:`AutoDictZstdCodec` compresses with plain zstd until it has seen ``train_after``
  compressible entries, then trains a dictionary on the most recent ones in a background
  thread (zstd's trainer releases the GIL: 40-300 ms on 2 cores, off the request path),
  saves it, and compresses with it from then on.

Retraining policy (bounded): the next training is due after 4 times as many entries as the
last one (50, 200, 800, ...), so a process trains O(log n) times; the second one, on the 150
entries written since the first, is what brings a small desk's day to the target. A new dictionary is
adopted only if it stores held-out recent entries at least 5 % smaller than the current one.
The directory keeps the ``keep`` (default 6) newest dictionaries; an older one is removed
when a newer one is saved, and the entries written with it become counted misses. With the
geometric schedule those entries are old (the first dictionary writes entries 50-200; with
the default ``keep`` of 6 the seventh comes at write 204,800: far beyond L2's
``CACHE_L2_SIZE`` and L3's ``CACHE_L3_SIZE``). A process that starts where
a dictionary exists uses the newest one and does not train until its own schedule says so;
one whose training comes due takes a dictionary another process saved meanwhile (the first
one always, a newer one if it does as well on recent entries), so processes sharing the
directory converge on the same dictionaries.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

import xxhash

from .codec import CODEC_IDS, FLAG_COMPRESSED, Codec, _seal, register_decoder
from .errors import CodecError, ConfigError

__all__ = ["AutoDictZstdCodec", "DictionaryDir", "dictionary_id", "dictionary_stats", "forget_dictionaries"]

log = logging.getLogger("r1mw.zstd_dict")

SUFFIX = ".zdict"
_ID = struct.Struct("<Q")
_unpack_id = _ID.unpack_from
_RETRAIN_FACTOR = 4
_MIN_GAIN = 0.05  # a new dictionary must save 5 % on held-out entries to replace the current one
_RESAVE_EVERY = 1024  # writes between checks that the dictionary in use is still on disk

try:
    import zstandard
except ImportError:  # checked when a codec is built
    zstandard = None  # type: ignore[assignment]  # optional: callers test for None


def _require() -> Any:
    if zstandard is None:
        raise ConfigError("R1MW_CODEC='msgpack+zstd+dict' needs the zstandard package: pip install zstandard")
    return zstandard


def dictionary_id(data: bytes) -> int:
    """The id a dictionary is stored and referenced under: xxh3-64 of its bytes."""
    return xxhash.xxh3_64_intdigest(data)


# -- dictionaries known to this process, by id ------------------------------------------------

_lock = threading.Lock()
_dicts: dict[int, Any] = {}  # id -> zstandard.ZstdCompressionDict (immutable, shared)
_dirs: list[Path] = []  # every directory a codec of this process was built with
_local = threading.local()  # per-thread decompressors: zstd contexts are not thread-safe
_counters = {"loaded": 0, "missing": 0, "corrupt": 0}


def dictionary_stats() -> dict[str, int]:
    """Process-wide counts: dictionaries loaded from disk, lookups of a missing or damaged one."""
    return dict(_counters, known=len(_dicts))


def forget_dictionaries() -> None:
    """Drop the dictionaries this process holds in memory (they are loaded again by id from
    their files on next use): after removing dictionary files by hand, and in tests."""
    with _lock:
        _dicts.clear()
    _local.d = {}


def _add_dir(directory: Path) -> None:
    with _lock:
        if directory not in _dirs:
            _dirs.append(directory)


def _remember(dict_id: int, data: bytes) -> Any:
    zdict = zstandard.ZstdCompressionDict(data)
    with _lock:
        return _dicts.setdefault(dict_id, zdict)


def _find(dict_id: int) -> Any | None:
    """The dictionary of ``dict_id``: known, or loaded from a directory and verified."""
    zdict = _dicts.get(dict_id)
    if zdict is not None:
        return zdict
    name = f"{dict_id:016x}{SUFFIX}"
    damaged = False
    for directory in list(_dirs):
        try:
            data = (directory / name).read_bytes()
        except OSError:
            continue
        if dictionary_id(data) != dict_id:
            damaged = True
            log.warning("zstd dictionary %s is damaged (content does not match its id)", directory / name)
            continue
        _counters["loaded"] += 1
        return _remember(dict_id, data)
    _counters["corrupt" if damaged else "missing"] += 1
    return None


def _decompressor(dict_id: int) -> Any:
    cache = getattr(_local, "d", None)
    if cache is None:
        cache = _local.d = {}
    dctx = cache.get(dict_id)
    if dctx is None:
        zdict = _find(dict_id)
        if zdict is None:
            raise CodecError(f"zstd dictionary {dict_id:016x} not found (missing or damaged)")
        dctx = cache[dict_id] = zstandard.ZstdDecompressor(dict_data=zdict)
    return dctx


def _decompress(payload: memoryview) -> bytes:
    if len(payload) < _ID.size:
        raise CodecError("dictionary-compressed payload too short")
    dict_id = _unpack_id(payload)[0]
    try:  # the hit path: this thread has used the dictionary before
        dctx = _local.d[dict_id]
    except (AttributeError, KeyError):
        dctx = _decompressor(dict_id)
    return dctx.decompress(payload[8:])


register_decoder(CODEC_IDS["msgpack+zstd+dict"], _decompress)


# -- the directory ----------------------------------------------------------------------------


class DictionaryDir:
    """Content-addressed dictionary files in ``directory`` (created on first save)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        _add_dir(self.directory)

    def path(self, dict_id: int) -> Path:
        return self.directory / f"{dict_id:016x}{SUFFIX}"

    def save(self, data: bytes) -> int:
        """Write a dictionary atomically (temp file, rename); return its id."""
        dict_id = dictionary_id(data)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path(dict_id))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _remember(dict_id, data)
        return dict_id

    def ids(self) -> list[int]:
        """Ids of the dictionary files, newest first (by modification time)."""
        found: list[tuple[float, int]] = []
        try:
            with os.scandir(self.directory) as it:
                for f in it:
                    if f.name.endswith(SUFFIX) and len(f.name) == 16 + len(SUFFIX):
                        try:
                            found.append((f.stat().st_mtime, int(f.name[:16], 16)))
                        except (OSError, ValueError):
                            continue
        except OSError:
            return []
        return [i for _, i in sorted(found, reverse=True)]

    def newest(self) -> tuple[int, Any] | None:
        """The newest readable dictionary (id, zstd dictionary), or None."""
        for dict_id in self.ids():
            zdict = _find(dict_id)
            if zdict is not None:
                return dict_id, zdict
        return None

    def prune(self, keep: int, protect: int) -> list[int]:
        """Remove all but the ``keep`` newest dictionaries (never ``protect``); return the removed ids."""
        removed = []
        for dict_id in [i for i in self.ids() if i != protect][max(0, keep - 1):]:
            try:
                self.path(dict_id).unlink()
                removed.append(dict_id)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove old zstd dictionary %s: %s", self.path(dict_id), exc)
        return removed


# -- the codec -----------------------------------------------------------------------------------


class AutoDictZstdCodec(Codec):
    """msgpack, then zstd with a dictionary trained on the entries it encodes (see the module doc).

    ``train_after``: compressible entries to see before the first training (0 = never train;
    a dictionary already in ``directory`` is still used). ``dict_size``: bytes per dictionary.
    ``keep``: dictionaries kept in the directory. ``samples``: recent entries trained on.
    Before a dictionary exists, payloads are plain zstd frames (codec id 3).
    """

    name = "msgpack+zstd+dict"
    codec_id = CODEC_IDS["msgpack+zstd+dict"]

    # Level 6, not zstd's default 3: an entry is compressed once, when an R1 call of seconds
    # ends, and read many times (decompression speed does not depend on the level). Measured
    # (benchmarks/tiers.py default): 34.0 % -> 31.7 % of the raw JSON; compressing a 5 KB
    # reply takes 56 us instead of 18 (on the miss's path), the L2 hit is unchanged, and the
    # dictionary training (a background thread) takes longer. Level 9: 0.5 points more for
    # twice the compression time.
    def __init__(self, directory: str | os.PathLike[str], threshold: int = 1000, *, level: int = 6,
                 train_after: int = 50, dict_size: int = 64 * 1024, keep: int = 6, samples: int = 400) -> None:
        super().__init__(threshold)
        _require()
        from .codec import ZstdCodec  # registers the plain zstd decoder (codec id 3)

        self._plain = ZstdCodec(threshold, level=level)
        self.dir = DictionaryDir(directory)
        self.level = level
        self.train_after = train_after
        self.dict_size = dict_size
        self.keep = max(1, keep)
        self._sample_cap = max(20, samples)
        self._samples: deque[bytes] = deque(maxlen=self._sample_cap)
        self._seen = 0  # compressible entries encoded by this codec
        self._next = train_after if train_after > 0 else 0
        self._thread: threading.Thread | None = None
        self.trainings = self.adopted = self.train_failures = 0
        self.raw_bytes = self.stored_bytes = 0  # msgpack in, envelopes out
        # (dictionary id, its compressors, the dictionary), swapped as one object by the
        # training thread. One compressor per thread (a threading.local): zstd contexts are
        # not thread-safe, and two pipelines, or a tier's worker thread, may encode at once.
        self._active: tuple[int, Any, Any] | None = None
        found = self.dir.newest()
        if found is not None:
            self._use(*found)
            self._next = train_after * _RETRAIN_FACTOR if train_after > 0 else 0

    def _use(self, dict_id: int, zdict: Any) -> None:
        self._active = (dict_id, threading.local(), zdict)  # one assignment: encode sees all or nothing

    @property
    def dict_id(self) -> int:
        """Id of the dictionary new entries are compressed with (0: none yet)."""
        active = self._active
        return active[0] if active is not None else 0

    # -- encoding -----------------------------------------------------------------------------
    def encode_raw(self, raw: bytes) -> bytes:
        """Envelope of msgpack bytes ``raw`` (``encode(value)`` packs, then calls this)."""
        out = self._encode(raw)
        self.raw_bytes += len(raw)
        self.stored_bytes += len(out)
        return out

    def _encode(self, raw: bytes) -> bytes:
        if len(raw) <= self.threshold:
            return _seal(self.codec_id, 0, raw)
        self._seen += 1
        if self._next:
            self._sample(raw)
        active = self._active
        if active is None:
            return self._plain.encode_raw(raw)
        dict_id, mine, zdict = active
        if self._seen % _RESAVE_EVERY == 0:
            self._check_saved(dict_id, zdict)
        try:
            cctx = mine.c
        except AttributeError:
            cctx = mine.c = zstandard.ZstdCompressor(level=self.level, dict_data=zdict, write_content_size=True,
                                                     write_checksum=False, write_dict_id=False)
        packed = _ID.pack(dict_id) + cctx.compress(raw)
        if len(packed) >= len(raw):
            return _seal(self.codec_id, 0, raw)
        return _seal(self.codec_id, FLAG_COMPRESSED, packed)

    def _sample(self, raw: bytes) -> None:
        # Keep the most recent entries only in the window before a training is due.
        if self._seen > self._next - self._sample_cap:
            self._samples.append(raw)
        if self._seen >= self._next and self._thread is None:
            samples = list(self._samples)
            self._samples.clear()
            self._next = self._seen * _RETRAIN_FACTOR
            self._start_training(samples)

    def _start_training(self, samples: list[bytes]) -> None:
        self._thread = threading.Thread(target=self._train, args=(samples,), name="r1mw-zstd-train", daemon=True)
        self._thread.start()

    def train_on(self, samples: list[bytes]) -> bool:
        """Train on msgpack ``samples`` in the background now, if no dictionary exists yet,
        training is on (``train_after`` > 0) and none is running; return whether it started.
        The codecs plugin calls it at start-up with entries already in L2, so that processes
        too short-lived to write ``train_after`` entries each still get a dictionary."""
        if self.dict_id or not self.train_after or self._thread is not None or len(samples) < 20:
            return False
        self._next = max(self._next, self.train_after * _RETRAIN_FACTOR)
        self._start_training(samples[-self._sample_cap:])
        return True

    def _check_saved(self, dict_id: int, zdict: Any) -> None:
        # Another process may have pruned the dictionary this one still writes with.
        path = self.dir.path(dict_id)
        if not path.exists():
            try:
                self.dir.save(zdict.as_bytes())
                log.info("zstd: dictionary %016x was removed while in use here: written again", dict_id)
            except OSError as exc:
                log.warning("cannot restore zstd dictionary %s: %s", path, exc)

    # -- training (background thread) --------------------------------------------------------------
    def _train(self, samples: list[bytes]) -> None:
        try:
            active = self._active
            newest = self.dir.newest()
            if active is None and newest is not None:
                # Processes sharing the directory: the first to train sets the dictionary for
                # all that have none yet (one file instead of one per process).
                self._use(*newest)
                self.adopted += 1
                log.info("zstd: using dictionary %016x trained by another process", newest[0])
                return
            held_out = samples[::8]
            train = [s for i, s in enumerate(samples) if i % 8] or samples

            def stored(zdict: Any) -> int:
                # A fresh compressor: the codec's are in use on other threads.
                c = zstandard.ZstdCompressor(level=self.level, dict_data=zdict, write_dict_id=False)
                return sum(len(c.compress(s)) for s in held_out)

            current = stored(active[2]) if active is not None else 0
            if active is not None and newest is not None and newest[0] != active[0] \
                    and stored(newest[1]) <= current:
                # Another process retrained since: its dictionary does as well here, so the
                # fleet converges on it instead of each process adding its own.
                self._use(*newest)
                self.adopted += 1
                log.info("zstd: switched to dictionary %016x trained by another process", newest[0])
                return
            self.trainings += 1
            # Few samples train a small dictionary well and a big one badly (zstd's rule of
            # thumb: samples of 10-100x the dictionary's size).
            size = min(self.dict_size, max(1024, sum(map(len, train)) // 16))
            # zstandard's stub wants an invariant list[bytes | bytearray | memoryview]; it only reads it.
            data = zstandard.train_dictionary(size, train, level=self.level).as_bytes()  # type: ignore[arg-type]
            if active is not None:
                new_size = stored(zstandard.ZstdCompressionDict(data))
                if new_size > current * (1 - _MIN_GAIN):
                    log.info("zstd: retrained dictionary saves %.1f %%: kept %016x",
                             100 * (1 - new_size / max(1, current)), active[0])
                    return
            dict_id = self.dir.save(data)
            self.dir.prune(self.keep, protect=dict_id)
            self._use(dict_id, _dicts[dict_id])
            self.adopted += 1
            log.info("zstd: trained dictionary %016x (%d bytes) on %d entries", dict_id, len(data), len(train))
        except Exception as exc:  # too few or too uniform samples, disk full: plain zstd goes on
            self.train_failures += 1
            log.warning("zstd: dictionary training failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._thread = None

    def wait_trained(self, timeout: float | None = None) -> None:
        """Wait for a training in progress (tests, benchmarks)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """Dictionary in use, training counts, msgpack/stored bytes ratio of what it wrote,
        and the process-wide dictionary lookups (``loaded``, ``missing``, ``corrupt``)."""
        return {"codec": self.name, "dictionary": f"{self.dict_id:016x}" if self.dict_id else None,
                "seen": self._seen, "next_training_at": self._next, "trainings": self.trainings,
                "adopted": self.adopted, "train_failures": self.train_failures,
                "compression_ratio": self.raw_bytes / self.stored_bytes if self.stored_bytes else None,
                **dictionary_stats()}
