"""The codec: round trips, numpy, refusals, and every damaged envelope detected."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import r1mw
from r1mw.codec import Lz4Codec, MsgpackCodec, ZstdCodec, decode, pack, peek_codec
from r1mw.types import Choice, Reply, Usage

try:
    import zstandard  # noqa: F401
except ImportError:  # optional extra r1mw[zstd]
    zstandard = None
CODECS = [MsgpackCodec(100), Lz4Codec(100)] + ([ZstdCodec(100)] if zstandard else [])
needs_zstd = pytest.mark.skipif(zstandard is None, reason="zstandard not installed (pip install 'r1mw[zstd]')")
IDS = [c.name for c in CODECS]

plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=300) | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


def reply(text: str = "The answer. " * 200) -> Reply:
    return Reply(id="r-1", model="deepseek-reasoner", created=1_700_000_000,
                 choices=(Choice(index=0, content=text, reasoning_content="Thinking... " * 300,
                                 finish_reason="stop"),),
                 usage=Usage(10, 20, 30, reasoning_tokens=12))


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@settings(max_examples=60, deadline=None)
@given(value=plain)
def test_round_trip_of_plain_values(codec, value):
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
def test_entry_with_reply_round_trips_and_big_payloads_compress(codec):
    entry = r1mw.Entry(reply(), 123.5, {"question": "q", "slots": {"ticker": "AAPL"}})
    data = codec.encode(entry.to_wire())
    back = r1mw.Entry.from_wire(decode(data))
    assert back == entry
    assert peek_codec(data) == codec.name
    if codec.name != "msgpack":
        assert len(data) < len(pack(entry.to_wire())) / 2


def test_numpy_arrays_and_scalars_round_trip_bytes_safe():
    codec = Lz4Codec(10)
    value = {"vec": np.linspace(0, 1, 64, dtype=np.float32), "ids": np.arange(12, dtype=np.int64).reshape(3, 4),
             "f16": np.ones((2, 2), dtype=np.float16), "fortran": np.asfortranarray(np.eye(3)),
             "scalar": np.float32(2.5), "f64": np.float64(0.5), "raw": b"\x00\xff\x80", "empty": np.zeros((0, 3))}
    back = codec.decode(codec.encode(value))
    for name in ("vec", "ids", "f16", "fortran", "empty"):
        assert back[name].dtype == value[name].dtype and back[name].shape == value[name].shape
        assert np.array_equal(back[name], value[name])
    assert back["scalar"] == 2.5 and isinstance(back["scalar"], np.float32)
    assert back["f64"] == 0.5  # np.float64 is a Python float: it comes back as one
    assert back["raw"] == b"\x00\xff\x80"
    assert not back["vec"].flags.writeable  # cached values are shared: read-only


@pytest.mark.parametrize("bad", [{1, 2}, object(), np.array([object()]), {"x": complex(1, 2)},
                                 np.array(["a", None], dtype=object)])
def test_unencodable_values_raise_a_clear_error(bad):
    with pytest.raises(r1mw.UnencodableValueError, match="cannot store|plain dtypes"):
        Lz4Codec().encode({"value": bad})
    assert issubclass(r1mw.UnencodableValueError, TypeError)


def test_every_truncation_and_bit_flip_is_detected():
    data = Lz4Codec(100).encode(r1mw.Entry(reply("Short answer " * 20)).to_wire())
    for n in range(len(data)):
        with pytest.raises(r1mw.CodecError):
            decode(data[:n])
    with pytest.raises(r1mw.CodecError):
        decode(data + b"\x00")
    for i in range(len(data)):
        for bit in (0, 3, 7):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            with pytest.raises(r1mw.CodecError):
                decode(bytes(flipped))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_decodes_and_never_raises_anything_else(blob):
    with pytest.raises(r1mw.CodecError):
        decode(blob)


def test_unknown_ext_type_in_a_valid_envelope_is_refused():
    import msgpack

    from r1mw.codec import _seal

    payload = msgpack.packb(msgpack.ExtType(42, b"code"), use_bin_type=True)
    with pytest.raises(r1mw.CodecError, match="ext type 42"):
        decode(_seal(1, 0, payload))
    # an object dtype smuggled into a valid envelope is refused too
    obj = msgpack.packb(msgpack.ExtType(1, msgpack.packb(["|O", [1], b"\x00" * 8])), use_bin_type=True)
    with pytest.raises(r1mw.CodecError):
        decode(_seal(1, 0, obj))


@needs_zstd
def test_zstd_dictionary_shrinks_replies_and_a_foreign_dictionary_is_a_codec_error():
    samples = [pack(r1mw.Entry(reply(f"Answer number {i} about the RSI of AAPL. " * 30)).to_wire())
               for i in range(200)]
    dictionary = ZstdCodec.train(samples, 4096)
    plain_codec, dict_codec = ZstdCodec(100), ZstdCodec(100, dictionary=dictionary)
    value = r1mw.Entry(reply("Answer number 999 about the RSI of MSFT. " * 30)).to_wire()
    assert len(dict_codec.encode(value)) < len(plain_codec.encode(value))
    data = dict_codec.encode(value)
    assert dict_codec.decode(data) == value
    ZstdCodec(100)  # another codec built later: both dictionaries stay readable
    assert decode(data) == value and decode(plain_codec.encode(value)) == value
    ZstdCodec._dicts.pop(dict_codec.dict_id)  # as in a process that never loaded it
    ZstdCodec._local.d = {}
    with pytest.raises(r1mw.CodecError, match="dictionary"):
        decode(data)


@needs_zstd
def test_zstd_entries_encode_and_decode_from_several_threads_at_once(tmp_path):
    # Two pipelines on their own loops, or a tier's worker thread beside the event loop,
    # use one process's codecs at once; zstd contexts shared between threads crashed the
    # process or decoded another value.
    import random
    import threading

    from r1mw.zstd_dict import AutoDictZstdCodec, DictionaryDir

    rng = random.Random(1)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    values = [{"n": i, "text": " ".join(rng.choice(words) for _ in range(600 + 50 * i))} for i in range(8)]
    dictionary = ZstdCodec.train([pack(v) for v in values] * 20, 4096)
    plain = ZstdCodec(threshold=100)
    trained = ZstdCodec(threshold=100, dictionary=dictionary)
    DictionaryDir(tmp_path / "dicts").save(dictionary)
    shared = AutoDictZstdCodec(tmp_path / "dicts", threshold=100, train_after=0)
    assert shared.dict_id != 0
    codecs = (plain, trained, shared)
    failures: list[str] = []

    def worker(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(200):
            codec, i = r.choice(codecs), r.randrange(len(values))
            try:
                if decode(codec.encode(values[i])) != values[i]:
                    failures.append(f"{codec.name}: another value")
            except Exception as exc:
                failures.append(f"{codec.name}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
