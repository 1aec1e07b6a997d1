"""The default codec (msgpack+zstd+dict) trains its dictionary by itself; every reader finds a
dictionary by the id in the entry; a missing or damaged dictionary is a counted miss."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

import r1mw
from r1mw.codec import Lz4Codec, decode, peek_codec
from r1mw.tiers import DiskTier, MemoryTier, TieredStore
from r1mw.zstd_dict import (AutoDictZstdCodec, DictionaryDir, dictionary_id, dictionary_stats,
                            forget_dictionaries)

pytestmark = pytest.mark.anyio

_TEXT = " ".join(m.__doc__ or "" for m in (argparse, collections, json, os, random, subprocess, asyncio)).split()


def reply(i: int, text: list[str] = _TEXT) -> r1mw.Reply:
    rng = random.Random(i)
    start = rng.randrange(len(text) - 500)
    words = text[start : start + 300 + rng.randrange(150)]
    return r1mw.Reply(id=f"r-{i}", model="deepseek-reasoner", created=1_700_000_000 + i,
                      choices=(r1mw.Choice(index=0, content=" ".join(words[:120]),
                                           reasoning_content=" ".join(words[120:]), finish_reason="stop"),),
                      usage=r1mw.Usage(40, len(words), 40 + len(words), reasoning_tokens=len(words) - 120))


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


def pipeline_settings(cache: Path, **kw) -> r1mw.Settings:
    return r1mw.Settings(stages="exact", tiers="l1,l2", cache_dir=cache, **kw)


@pytest.fixture(autouse=True)
def _fresh_dictionaries():
    # Dictionaries are held per process by id; each test starts as a new process would.
    forget_dictionaries()
    yield
    forget_dictionaries()


async def fill(pipe: r1mw.Pipeline, ids: range, text: list[str] = _TEXT) -> None:
    for i in ids:
        await pipe.store.set(key(i), r1mw.Entry(reply(i, text)))


async def test_the_default_codec_trains_a_dictionary_after_enough_entries(tmp_path):
    assert r1mw.Settings().codec == "msgpack+zstd+dict"
    async with r1mw.Pipeline(pipeline_settings(tmp_path, zstd_train_after=40)) as pipe:
        codec = pipe.store.codec
        assert isinstance(codec, AutoDictZstdCodec) and codec.dict_id == 0
        await fill(pipe, range(39))
        await pipe.store.flush()  # L2 writes are write-behind
        codec.wait_trained()
        assert codec.dict_id == 0 and codec.trainings == 0
        assert peek_codec(pipe.store.tiers[1].get_sync(key(0))) == "msgpack+zstd"  # plain zstd before
        await fill(pipe, range(39, 41))
        codec.wait_trained()
        assert codec.trainings == 1 and codec.adopted == 1 and codec.dict_id
        files = list((tmp_path / "zstd-dicts").glob("*.zdict"))
        assert [f.name for f in files] == [f"{codec.dict_id:016x}.zdict"]
        assert dictionary_id(files[0].read_bytes()) == codec.dict_id  # named for its content
        # Key 0 was written before the training (key 40 may land after it: the trainer is a
        # thread), and L2 writes are write-behind: flush before reading the file back.
        plain = len(pipe.store.tiers[1].get_sync(key(0)))
        await pipe.store.set(key(0), r1mw.Entry(reply(0)))  # same value, now with the dictionary
        await pipe.store.flush()
        blob = pipe.store.tiers[1].get_sync(key(0))
        assert peek_codec(blob) == "msgpack+zstd+dict" and len(blob) < plain
        assert peek_codec(pipe.store.tiers[1].get_sync(key(1))) == "msgpack+zstd"
        await pipe.store.tiers[0].clear()
        for i in (1, 0):  # both forms read back through L2
            found = await pipe.store.get(key(i))
            assert found is not None and found[0].reply == reply(i) and found[1] == "l2"
        l2 = pipe.stats()["tiers"]["l2"]
        assert l2["codec_stats"]["dictionary"] == f"{codec.dict_id:016x}" and l2["entry_codec"] == "msgpack+zstd+dict"
        assert l2["compression_ratio"] == codec.raw_bytes / codec.stored_bytes > 1.5


async def test_a_new_pipeline_finds_the_dictionary_by_id(tmp_path):
    async with r1mw.Pipeline(pipeline_settings(tmp_path, zstd_train_after=30)) as pipe:
        await fill(pipe, range(31))
        pipe.store.codec.wait_trained()
        await fill(pipe, range(100, 110))
        written_with = pipe.store.codec.dict_id
    forget_dictionaries()
    before = dictionary_stats()["loaded"]
    # Another codec in the reader: it has loaded no dictionary, and finds it by the entry's id.
    async with r1mw.Pipeline(pipeline_settings(tmp_path, codec="msgpack+lz4")) as pipe:
        for i in range(100, 110):
            found = await pipe.store.get(key(i))
            assert found is not None and found[0].reply == reply(i)
        assert dictionary_stats()["loaded"] == before + 1
        assert pipe.stats()["tiers"]["l2"]["corrupt"] == 0
    assert written_with


_CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import r1mw
    from test_tiers_zstd_auto import reply, key, _TEXT

    other = sorted(set(_TEXT))  # another vocabulary order: another dictionary
    async def main():
        s = r1mw.Settings(stages="exact", tiers="l1,l2", cache_dir=Path({cache!r}), zstd_train_after=4)
        async with r1mw.Pipeline(s) as pipe:
            got = []
            for i in range(100, 105):  # the parent's entries, its dictionary never loaded here
                found = await pipe.store.get(key(i))
                got.append(found is not None and found[0].reply == reply(i))
            # It starts with the parent's dictionary; its retraining is due after 4 * 8 entries.
            assert pipe.store.codec.dict_id
            for i in range(1000, 1033):
                await pipe.store.set(key(i), r1mw.Entry(reply(i, other)))
            pipe.store.codec.wait_trained()
            for i in range(2000, 2005):
                await pipe.store.set(key(i), r1mw.Entry(reply(i, other)))
            print(json.dumps({{"read": got, "dict": pipe.store.codec.dict_id,
                              "corrupt": pipe.stats()["tiers"]["l2"]["corrupt"]}}))
    asyncio.run(main())
""")


async def test_another_process_reads_our_entries_and_we_read_its_newer_dictionary(tmp_path):
    async with r1mw.Pipeline(pipeline_settings(tmp_path, zstd_train_after=30)) as pipe:
        await fill(pipe, range(31))
        pipe.store.codec.wait_trained()
        ours = pipe.store.codec.dict_id
        await fill(pipe, range(100, 105))
        code = _CHILD.format(tests=str(Path(__file__).parent), cache=str(tmp_path))
        out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], capture_output=True,
                                      text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        child = json.loads(out.stdout.strip().splitlines()[-1])
        assert child["read"] == [True] * 5 and child["corrupt"] == 0
        assert child["dict"] and child["dict"] != ours  # the child trained its own
        other = sorted(set(_TEXT))
        for i in range(2000, 2005):  # written with a dictionary this process never had
            found = await pipe.store.get(key(i))
            assert found is not None and found[0].reply == reply(i, other)
            assert peek_codec(pipe.store.tiers[1].get_sync(key(i))) == "msgpack+zstd+dict"
        assert pipe.stats()["tiers"]["l2"]["corrupt"] == 0


@pytest.mark.parametrize("damage", ["missing", "bit-flip", "truncated", "empty"])
async def test_a_missing_or_damaged_dictionary_is_a_counted_miss(tmp_path, damage):
    async with r1mw.Pipeline(pipeline_settings(tmp_path, zstd_train_after=30)) as pipe:
        await fill(pipe, range(31))
        pipe.store.codec.wait_trained()
        await fill(pipe, range(100, 104))
        path = pipe.store.codec.dir.path(pipe.store.codec.dict_id)
    forget_dictionaries()
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "bit-flip":
        path.write_bytes(data[:500] + bytes([data[500] ^ 0x10]) + data[501:])
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    counted = dictionary_stats()
    async with r1mw.Pipeline(pipeline_settings(tmp_path, zstd_train_after=0)) as pipe:
        assert pipe.store.codec.dict_id == 0  # the damaged dictionary is not used to write either
        for i in range(100, 104):
            assert await pipe.store.get(key(i)) is None  # never an exception, never wrong data
        l2 = pipe.stats()["tiers"]["l2"]
        assert l2["corrupt"] == 4 and l2["entries"] == 31  # counted and removed
        assert not pipe.store.tiers[1].contains(key(100))
        found = await pipe.store.get(key(3))  # entries written before the dictionary: fine
        assert found is not None and found[0].reply == reply(3)
    now = dictionary_stats()
    kind = "missing" if damage == "missing" else "corrupt"
    assert now[kind] > counted[kind]


async def test_retraining_adopts_a_better_dictionary_and_keeps_a_bounded_number(tmp_path):
    other = sorted(set(_TEXT))
    codec = AutoDictZstdCodec(tmp_path / "d", 200, train_after=20, keep=2, samples=60)
    store = TieredStore([MemoryTier("l1", max_entries=10_000), DiskTier(tmp_path / "l2", max_entries=10_000)],
                        codec)
    ids = []
    for generation, words in enumerate((_TEXT, other, _TEXT[::-1])):
        # due at 20 entries, then 4x: 80, 320
        start = [0, 20, 80][generation]
        stop = [20, 80, 320][generation]
        for i in range(start, stop):
            await store.set(key(i), r1mw.Entry(reply(i, words)))
        codec.wait_trained()
        ids.append(codec.dict_id)
    assert codec.trainings == 3 and codec.adopted == 3 and len(set(ids)) == 3
    assert codec.stats()["next_training_at"] == 320 * 4
    assert sorted(DictionaryDir(tmp_path / "d").ids()) == sorted(ids[1:])  # keep=2: the oldest went
    # As a new process sees it: entries of the kept dictionaries (and of plain zstd) read back,
    # those of the removed one are counted misses.
    await store.tiers[0].clear()
    forget_dictionaries()
    for i in (5, 200, 319):
        found = await store.get(key(i))
        assert found is not None and found[0].reply == reply(i, (_TEXT, other, _TEXT[::-1])[(i >= 20) + (i >= 80)])
    assert await store.get(key(25)) is None
    assert store.stats()["l2"]["corrupt"] == 1


async def test_a_retrained_dictionary_that_does_not_pay_is_not_adopted(tmp_path):
    codec = AutoDictZstdCodec(tmp_path / "d", 200, train_after=60, samples=60)
    for i in range(240):  # trainings due at 60 and 240, each on the 60 entries before
        codec.encode(r1mw.Entry(reply(i % 60)).to_wire())  # the same 60 replies again and again
        codec.wait_trained()
    assert codec.trainings == 2 and codec.adopted == 1  # same text again: under 5 % better
    assert len(DictionaryDir(tmp_path / "d").ids()) == 1


def test_training_failure_keeps_plain_zstd(tmp_path):
    codec = AutoDictZstdCodec(tmp_path / "d", 100, train_after=4, samples=20)
    rng = random.Random(5)
    values = [{"b": rng.randbytes(150)} for _ in range(5)]  # too few, too small: zstd refuses
    for value in values[:4]:
        codec.encode(value)
    codec.wait_trained()
    assert codec.train_failures == 1 and codec.dict_id == 0
    assert not list((tmp_path / "d").glob("*.zdict"))
    assert [decode(codec.encode(v)) for v in values] == values


async def test_a_tier_with_its_own_codec_gets_entries_reencoded(tmp_path):
    codec = AutoDictZstdCodec(tmp_path / "d", 200, train_after=20)
    l2 = DiskTier(tmp_path / "l2", "l2", max_entries=5)
    l3 = DiskTier(tmp_path / "l3", "l3", max_entries=100)
    l3.entry_codec = Lz4Codec(200)  # e.g. a tier shared with machines that do not have our dictionaries
    store = TieredStore([MemoryTier("l1", max_entries=2), l2, l3], codec)
    for i in range(21):
        await store.set(key(i), r1mw.Entry(reply(i)))
    codec.wait_trained()
    for i in range(21, 40):
        await store.set(key(i), r1mw.Entry(reply(i)))
    await store.flush()  # written behind
    assert peek_codec(l2.get_sync(key(39))) == "msgpack+zstd+dict"
    demoted = [i for i in range(21, 34) if l3.get_sync(key(i)) is not None]
    assert demoted and all(peek_codec(l3.get_sync(key(i))) == "msgpack+lz4" for i in demoted)
    stats = store.stats()
    assert stats["l3"]["entry_codec"] == "msgpack+lz4" and stats["l2"]["entry_codec"] == "msgpack+zstd+dict"
    for i in range(40):
        found = await store.get(key(i))
        assert found is not None and found[0].reply == reply(i)


# -- round trips over random replies ------------------------------------------------------------

_trained: dict[str, AutoDictZstdCodec] = {}


def _codec_with_dictionary(directory: Path) -> AutoDictZstdCodec:
    codec = AutoDictZstdCodec(directory, 100, train_after=30)
    for i in range(30):
        codec.encode(r1mw.Entry(reply(i)).to_wire())
    codec.wait_trained()
    assert codec.dict_id
    return codec


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=3000)
replies = st.builds(
    lambda rid, content, reasoning, words, created, finish, tokens: r1mw.Reply(
        id=rid, model="deepseek-reasoner", created=created,
        choices=(r1mw.Choice(index=0, content=content + " ".join(words),
                             reasoning_content=(reasoning + " ".join(words[::-1])) or None,
                             finish_reason=finish),),
        usage=r1mw.Usage(tokens, tokens * 2, tokens * 3, reasoning_tokens=tokens)),
    st.text(max_size=40), texts, texts, st.lists(st.sampled_from(_TEXT), max_size=600),
    st.integers(0, 2**40), st.sampled_from(["stop", "length", None]), st.integers(0, 10**6))


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=replies, meta=st.dictionaries(st.text(max_size=8), st.text(max_size=50), max_size=3),
       expires=st.floats(0, 2e9))
def test_random_replies_round_trip_with_and_without_a_dictionary(tmp_path_factory, value, meta, expires):
    if "codec" not in _trained:
        _trained["codec"] = _codec_with_dictionary(tmp_path_factory.mktemp("dicts"))
    plain = AutoDictZstdCodec(tmp_path_factory.getbasetemp() / "none", 100, train_after=0)
    entry = r1mw.Entry(value, expires, meta, 1_700_000_000.5)
    for codec in (_trained["codec"], plain):
        blob = codec.encode(entry.to_wire())
        assert r1mw.Entry.from_wire(decode(blob)) == entry
        assert r1mw.Entry.from_wire(codec.decode(blob)) == entry


async def test_short_lived_processes_get_a_dictionary_from_what_l2_holds(tmp_path):
    # Each process writes fewer entries than R1MW_ZSTD_TRAIN_AFTER; together they pass it.
    for run in range(3):
        async with r1mw.Pipeline(pipeline_settings(tmp_path, zstd_train_after=40)) as pipe:
            assert pipe.store.codec.dict_id == 0
            await fill(pipe, range(run * 15, run * 15 + 15))
    async with r1mw.Pipeline(pipeline_settings(tmp_path, zstd_train_after=40)) as pipe:
        pipe.store.codec.wait_trained()  # started at start-up on the 45 entries in L2
        assert pipe.store.codec.dict_id and pipe.store.codec.trainings == 1
        await fill(pipe, range(100, 102))
        await pipe.store.flush()  # L2 writes are write-behind
        assert peek_codec(pipe.store.tiers[1].get_sync(key(101))) == "msgpack+zstd+dict"
    async with r1mw.Pipeline(pipeline_settings(tmp_path, zstd_train_after=40)) as pipe:
        assert pipe.store.codec.dict_id and pipe.store.codec.trainings == 0  # found, not retrained


def test_a_dictionary_removed_while_in_use_is_written_again(tmp_path):
    trainer = AutoDictZstdCodec(tmp_path / "d", 100, train_after=30)
    for i in range(30):
        trainer.encode(r1mw.Entry(reply(i)).to_wire())
    trainer.wait_trained()
    codec = AutoDictZstdCodec(tmp_path / "d", 100, train_after=0)  # uses it, never retrains
    assert codec.dict_id == trainer.dict_id
    path = codec.dir.path(codec.dict_id)
    path.unlink()  # e.g. pruned by another process that trained 4 newer ones
    blobs = [codec.encode({"n": i, "text": " ".join(_TEXT[i : i + 40])}) for i in range(1024)]
    assert path.is_file() and dictionary_id(path.read_bytes()) == codec.dict_id
    forget_dictionaries()  # as another process would: load by id from the file
    assert [decode(b)["n"] for b in blobs[-3:]] == [1021, 1022, 1023]


def test_a_second_codec_takes_the_dictionary_another_trained_meanwhile(tmp_path):
    first = AutoDictZstdCodec(tmp_path / "d", 100, train_after=30)
    second = AutoDictZstdCodec(tmp_path / "d", 100, train_after=30)  # started before any dictionary
    for i in range(30):
        first.encode(r1mw.Entry(reply(i)).to_wire())
    first.wait_trained()
    for i in range(30):
        second.encode(r1mw.Entry(reply(i + 500)).to_wire())
    second.wait_trained()
    assert second.dict_id == first.dict_id and second.trainings == 0
    assert len(DictionaryDir(tmp_path / "d").ids()) == 1


def test_a_retraining_takes_another_process_newer_dictionary_when_it_does_as_well(tmp_path):
    first = AutoDictZstdCodec(tmp_path / "d", 100, train_after=30)
    for i in range(30):
        first.encode(r1mw.Entry(reply(i)).to_wire())
    first.wait_trained()
    second = AutoDictZstdCodec(tmp_path / "d", 100, train_after=4)  # starts with first's; retrains at 32
    other = sorted(set(_TEXT))
    for i in range(32):
        second.encode(r1mw.Entry(reply(i, other)).to_wire())
    second.wait_trained()
    assert second.dict_id != first.dict_id and second.trainings == 1
    # first's retraining (due at 240) finds second's dictionary: better on these entries, taken.
    for i in range(210):
        first.encode(r1mw.Entry(reply(1000 + i, other)).to_wire())
    first.wait_trained()
    assert first.dict_id == second.dict_id and first.trainings == 1
    assert len(DictionaryDir(tmp_path / "d").ids()) == 2


def test_damaged_dictionary_entries_are_codec_errors(tmp_path):
    from r1mw.codec import FLAG_COMPRESSED, _seal

    codec = _codec_with_dictionary(tmp_path / "d")
    data = codec.encode(r1mw.Entry(reply(7)).to_wire())
    assert peek_codec(data) == "msgpack+zstd+dict"
    for n in range(0, len(data), 7):
        with pytest.raises(r1mw.CodecError):
            decode(data[:n])
    for i in range(0, len(data), 3):
        flipped = bytearray(data)
        flipped[i] ^= 0x20
        with pytest.raises(r1mw.CodecError):
            decode(bytes(flipped))
    # Valid envelopes around a bad payload: too short, garbage frame, unknown dictionary id.
    for payload in (b"\x01\x02", codec.dict_id.to_bytes(8, "little") + b"not a zstd frame",
                    (12345).to_bytes(8, "little") + data[10 + 8 : -8]):
        with pytest.raises(r1mw.CodecError):
            decode(_seal(4, FLAG_COMPRESSED, payload))


async def test_the_redis_tier_gets_entries_without_a_dictionary(tmp_path):
    # Redis is shared with machines that do not have this one's dictionary directory.
    url = os.environ.get("R1MW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    redis = pytest.importorskip("redis.asyncio")
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and Redis is missing: {exc}")
        pytest.skip(f"no Redis at {url}: {exc}")
    finally:
        await client.aclose()
    prefix = f"r1mwtest:zstd-auto:{os.getpid()}:"
    s = pipeline_settings(tmp_path, zstd_train_after=30).replace(tiers="l1,l2,redis", redis_url=url,
                                                                  redis_prefix=prefix)
    async with r1mw.Pipeline(s) as pipe:
        try:
            await fill(pipe, range(31))
            pipe.store.codec.wait_trained()
            await fill(pipe, range(100, 102))
            await pipe.store.flush()  # written behind
            l2, shared = pipe.store.tiers[1], pipe.store.tiers[2]
            assert peek_codec(l2.get_sync(key(101))) == "msgpack+zstd+dict"
            assert peek_codec(await shared.get(key(101))) == "msgpack+zstd"
            assert pipe.stats()["tiers"]["redis"]["entry_codec"] == "msgpack+zstd"
            await pipe.store.tiers[0].clear()
            await l2.delete(key(101))
            found = await pipe.store.get(key(101))
            assert found is not None and found[1] == "redis" and found[0].reply == reply(101)
        finally:
            await pipe.store.tiers[2].clear()
