"""Codecs and the entry envelope: how values become bytes for the tiers below RAM.

Nothing read from disk or Redis may run code, so there is no pickle anywhere: values are
msgpack (dicts, lists, str, bytes, numbers, bool, None) plus two ext types for numpy
(arrays of a plain dtype, and numpy scalars), carried as dtype string, shape and raw bytes.
Anything else raises :class:`~r1mw.UnencodableValueError` at store time.

Every encoded value is wrapped in an envelope::

    offset  size  field
    0       2     magic  b"R1"
    2       1     version (1)
    3       1     codec id (1 msgpack, 2 msgpack+lz4, 3 msgpack+zstd, 4 msgpack+zstd+dict)
    4       1     flags (bit 0: payload compressed)
    5       1     reserved (0)
    6       4     payload length, little-endian
    10      n     payload
    10+n    8     xxh3-64 of bytes [0, 10+n): header and payload

so a truncated, extended or bit-flipped entry (header included) is detected before any
byte of it is interpreted. :func:`decode` picks the codec from the envelope: a tier can
hold entries written under another ``R1MW_CODEC`` and still read them.
"""

from __future__ import annotations

import struct
import threading
from typing import Any, Callable

import lz4.frame
import msgpack
import xxhash

from .errors import CodecError, ConfigError, UnencodableValueError

__all__ = [
    "CODEC_IDS",
    "Codec",
    "HEADER",
    "Lz4Codec",
    "MsgpackCodec",
    "ZstdCodec",
    "decode",
    "pack",
    "peek_codec",
    "register_decoder",
    "unpack",
]

MAGIC = b"R1"
VERSION = 1
HEADER = struct.Struct("<2sBBBxI")  # magic, version, codec id, flags, payload length
_TRAILER = 8
_OVERHEAD = HEADER.size + _TRAILER
FLAG_COMPRESSED = 1

CODEC_IDS = {"msgpack": 1, "msgpack+lz4": 2, "msgpack+zstd": 3, "msgpack+zstd+dict": 4}

_EXT_NDARRAY = 1
_EXT_NPSCALAR = 2

_digest = xxhash.xxh3_64_intdigest
_pack_u64 = struct.Struct("<Q").pack
_unpack_u64 = struct.Struct("<Q").unpack_from


# -- msgpack with numpy ext types -------------------------------------------------------


def _default(obj: Any) -> Any:
    """msgpack's hook for types it does not know: numpy arrays and scalars, tuples-as-lists."""
    module = type(obj).__module__
    if module == "numpy":
        import numpy as np

        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise UnencodableValueError(
                    f"numpy array of dtype {obj.dtype} holds Python objects: only plain dtypes are stored")
            arr = obj if obj.flags.c_contiguous else np.ascontiguousarray(obj)
            body = msgpack.packb([arr.dtype.str, list(arr.shape), arr.tobytes()], use_bin_type=True)
            return msgpack.ExtType(_EXT_NDARRAY, body)
        if isinstance(obj, np.generic) and not obj.dtype.hasobject:
            return msgpack.ExtType(_EXT_NPSCALAR, msgpack.packb([obj.dtype.str, obj.tobytes()], use_bin_type=True))
    raise UnencodableValueError(
        f"cannot store a value of type {type(obj).__module__}.{type(obj).__qualname__}: "
        "the codec takes dict, list, tuple, str, bytes, int, float, bool, None and numpy arrays "
        "of plain dtypes (never pickle)")


def _ext_hook(code: int, data: bytes) -> Any:
    if code not in (_EXT_NDARRAY, _EXT_NPSCALAR):
        raise CodecError(f"unknown msgpack ext type {code}")
    import numpy as np

    parts = msgpack.unpackb(data, raw=False)
    dtype = np.dtype(parts[0])
    if dtype.hasobject:
        raise CodecError("stored numpy dtype holds objects")
    if code == _EXT_NPSCALAR:
        return np.frombuffer(parts[1], dtype=dtype)[0]
    # frombuffer shares the decoded bytes: the array is read-only, as cached values should be.
    return np.frombuffer(parts[2], dtype=dtype).reshape(parts[1])


def pack(value: Any) -> bytes:
    """msgpack bytes of ``value``; UnencodableValueError for what the codec refuses."""
    try:
        return msgpack.packb(value, default=_default, use_bin_type=True, strict_types=False)
    except UnencodableValueError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnencodableValueError(f"cannot store value: {exc}") from None


def unpack(data: bytes | memoryview) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CodecError(f"bad msgpack payload: {type(exc).__name__}: {exc}") from None


# -- the envelope ---------------------------------------------------------------------------


def _seal(codec_id: int, flags: int, payload: bytes) -> bytes:
    body = HEADER.pack(MAGIC, VERSION, codec_id, flags, len(payload)) + payload
    return body + _pack_u64(_digest(body))


def _open(data: bytes | memoryview) -> tuple[int, int, memoryview]:
    """Check the envelope; return (codec id, flags, payload view). CodecError on any fault."""
    view = memoryview(data)
    n = len(view)
    if n < _OVERHEAD:
        raise CodecError(f"entry too short ({n} bytes)")
    magic, version, codec_id, flags, length = HEADER.unpack_from(view)
    if magic != MAGIC:
        raise CodecError("not an r1mw entry (bad magic)")
    if version != VERSION:
        raise CodecError(f"entry version {version} is not supported (expected {VERSION})")
    if length != n - _OVERHEAD:
        raise CodecError(f"entry length mismatch: header says {length}, have {n - _OVERHEAD} (truncated?)")
    if _unpack_u64(view, n - _TRAILER)[0] != _digest(view[: n - _TRAILER]):
        raise CodecError("entry checksum mismatch (corrupt)")
    return codec_id, flags, view[HEADER.size : n - _TRAILER]


def peek_codec(data: bytes) -> str | None:
    """Name of the codec an envelope was written with (None if unknown); no checksum check."""
    if len(data) < HEADER.size or data[:2] != MAGIC:
        return None
    codec_id = data[3]
    return next((name for name, i in CODEC_IDS.items() if i == codec_id), None)


_DECOMPRESSORS: dict[int, Callable[[memoryview], bytes]] = {}


def register_decoder(codec_id: int, decompress: Callable[[memoryview], bytes]) -> None:
    """Let :func:`decode` read payloads of ``codec_id`` (a codec with state, e.g. a zstd
    dictionary, registers its decompressor when built)."""
    _DECOMPRESSORS[codec_id] = decompress


def decode(data: bytes | memoryview) -> Any:
    """Decode any envelope, whatever codec wrote it. Raises CodecError on any fault."""
    codec_id, flags, payload = _open(data)
    if flags & FLAG_COMPRESSED:
        decompress = _DECOMPRESSORS.get(codec_id)
        if decompress is None:
            raise CodecError(f"no decoder for codec id {codec_id} (plugin not loaded?)")
        try:
            raw: bytes | memoryview = decompress(payload)
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError(f"cannot decompress entry: {type(exc).__name__}: {exc}") from None
    else:
        raw = payload
    return unpack(raw)


def _lz4_decompress(payload: memoryview) -> bytes:
    return lz4.frame.decompress(payload)


register_decoder(CODEC_IDS["msgpack+lz4"], _lz4_decompress)


# -- codecs ---------------------------------------------------------------------------------


class Codec:
    """Base of the built-in codecs: msgpack, compressed above ``threshold`` bytes."""

    name = "msgpack"
    codec_id = CODEC_IDS["msgpack"]

    def __init__(self, threshold: int = 1000) -> None:
        self.threshold = threshold

    def compress(self, raw: bytes) -> bytes | None:
        """Compressed payload, or None to store ``raw`` as it is."""
        return None

    def encode(self, value: Any) -> bytes:
        return self.encode_raw(pack(value))

    def encode_raw(self, raw: bytes) -> bytes:
        """Envelope of msgpack bytes ``raw`` (compressed above the threshold)."""
        if len(raw) > self.threshold:
            packed = self.compress(raw)
            if packed is not None and len(packed) < len(raw):
                return _seal(self.codec_id, FLAG_COMPRESSED, packed)
        return _seal(self.codec_id, 0, raw)

    def decode(self, data: bytes | memoryview) -> Any:
        return decode(data)

    def __repr__(self) -> str:
        return f"<codec {self.name} threshold={self.threshold}>"


class MsgpackCodec(Codec):
    """Plain msgpack in an envelope: fastest, largest."""


class Lz4Codec(Codec):
    """msgpack, then an lz4 frame above ``threshold`` bytes (about 1 us to decompress 4 KB)."""

    name = "msgpack+lz4"
    codec_id = CODEC_IDS["msgpack+lz4"]

    def compress(self, raw: bytes) -> bytes:
        return lz4.frame.compress(raw, compression_level=0, content_checksum=False, store_size=False)


class ZstdCodec(Codec):
    """msgpack, then zstd above ``threshold`` bytes, optionally with a trained dictionary.

    Uses ``zstandard`` (a core dependency). Frames carry the
    dictionary id; every dictionary a codec was built with in this process stays readable,
    and a frame whose dictionary is unknown is a CodecError (a miss), never misread.
    zstd contexts are not thread-safe (two threads in one context crash the process or
    misdecode), so each thread gets its own compressor and decompressors.
    """

    name = "msgpack+zstd"
    codec_id = CODEC_IDS["msgpack+zstd"]
    _dicts: dict[int, Any] = {0: None}  # dictionary id (0 = none) -> ZstdCompressionDict (immutable)
    _local = threading.local()  # .d: this thread's decompressors by dictionary id

    def __init__(self, threshold: int = 1000, level: int = 3, dictionary: bytes | None = None) -> None:
        super().__init__(threshold)
        try:
            import zstandard
        except ImportError:
            raise ConfigError("R1MW_CODEC='msgpack+zstd' needs the zstandard package: "
                              "pip install zstandard (a dependency of r1mw)") from None
        self._zstd = zstandard
        self._zdict = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
        self.level = level
        self.dictionary = dictionary
        self.dict_id = self._zdict.dict_id() if self._zdict is not None else 0
        self._compressors = threading.local()  # .c: this thread's compressor
        if self._zdict is not None:
            ZstdCodec._dicts.setdefault(self.dict_id, self._zdict)
        register_decoder(self.codec_id, ZstdCodec._decompress)

    def compress(self, raw: bytes) -> bytes:
        try:
            c = self._compressors.c
        except AttributeError:
            c = self._compressors.c = self._zstd.ZstdCompressor(
                level=self.level, dict_data=self._zdict, write_content_size=True,
                write_checksum=False, write_dict_id=True)
        return c.compress(raw)

    @staticmethod
    def _decompress(payload: memoryview) -> bytes:
        import zstandard

        dict_id = zstandard.get_frame_parameters(payload).dict_id
        mine = getattr(ZstdCodec._local, "d", None)
        if mine is None:
            mine = ZstdCodec._local.d = {}
        decompressor = mine.get(dict_id)
        if decompressor is None:
            if dict_id not in ZstdCodec._dicts:
                raise CodecError(f"zstd dictionary {dict_id} is not loaded (R1MW_ZSTD_DICT)")
            decompressor = mine[dict_id] = zstandard.ZstdDecompressor(dict_data=ZstdCodec._dicts[dict_id])
        return decompressor.decompress(payload)

    @staticmethod
    def train(samples: list[bytes], size: int = 65536) -> bytes:
        """A zstd dictionary trained on msgpack samples (e.g. ``pack(entry.to_wire())``)."""
        import zstandard

        # zstandard's stub wants an invariant list[bytes | bytearray | memoryview]; it only reads it.
        return zstandard.train_dictionary(size, samples).as_bytes()  # type: ignore[arg-type]
