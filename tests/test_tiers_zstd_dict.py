"""`r1mw zstd-dict` trains a dictionary on L2's entries; msgpack+zstd then uses it and still
reads what was stored before."""

from __future__ import annotations

import argparse
import collections
import json
import os
import random

import pytest

import r1mw
from r1mw.cli import main
from r1mw.codec import peek_codec

pytest.importorskip("zstandard")
pytestmark = pytest.mark.anyio

_TEXT = " ".join(m.__doc__ or "" for m in (argparse, collections, json, os, random, pytest)).split()


def reply(i: int) -> r1mw.Reply:
    rng = random.Random(i)
    start = rng.randrange(len(_TEXT) - 400)
    words = _TEXT[start : start + 300 + rng.randrange(100)]
    return r1mw.Reply(id=f"r-{i}", model="deepseek-reasoner", created=1_700_000_000 + i,
                      choices=(r1mw.Choice(index=0, content=" ".join(words[:120]),
                                           reasoning_content=" ".join(words[120:]), finish_reason="stop"),))


def settings(tmp_path, codec):
    return r1mw.Settings(stages="exact", tiers="l1,l2", codec=codec, cache_dir=tmp_path / "cache")


async def test_train_then_use_the_dictionary(tmp_path, monkeypatch, capsys):
    async with r1mw.Pipeline(settings(tmp_path, "msgpack+lz4")) as pipe:
        for i in range(60):
            await pipe.store.set(i.to_bytes(16, "big"), r1mw.Entry(reply(i)))
    monkeypatch.setenv("R1MW_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["zstd-dict", "--size", "8192"]) == 0
    assert "trained" in capsys.readouterr().out
    assert (tmp_path / "cache" / "zstd.dict").is_file()
    seeded = list((tmp_path / "cache" / "zstd-dicts").glob("*.zdict"))
    assert len(seeded) == 1
    async with r1mw.Pipeline(settings(tmp_path, "msgpack+zstd+dict")) as pipe:  # the default codec takes it
        assert f"{pipe.store.codec.dict_id:016x}.zdict" == seeded[0].name
    async with r1mw.Pipeline(settings(tmp_path, "msgpack+zstd")) as pipe:
        old = await pipe.store.get((5).to_bytes(16, "big"))  # written with lz4
        assert old is not None and old[0].reply == reply(5)
        await pipe.store.set(b"n" * 16, r1mw.Entry(reply(99)))
        l2 = pipe.store.tiers[1]
        assert peek_codec(await l2.get(b"n" * 16)) == "msgpack+zstd"
        await pipe.store.tiers[0].clear()
        assert (await pipe.store.get(b"n" * 16))[0].reply == reply(99)


def test_too_few_entries_to_train(tmp_path, monkeypatch, capsys):
    (tmp_path / "cache" / "l2").mkdir(parents=True)
    monkeypatch.setenv("R1MW_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["zstd-dict"]) == 1
    assert "need at least 20" in capsys.readouterr().out


async def test_a_missing_dictionary_file_fails_at_start(tmp_path):
    s = settings(tmp_path, "msgpack+zstd").replace(zstd_dict=str(tmp_path / "nope.dict"))
    with pytest.raises(r1mw.ConfigError, match="R1MW_ZSTD_DICT"):
        async with r1mw.Pipeline(s):
            pass


async def test_a_fresh_process_trains_on_an_l2_the_default_codec_wrote(tmp_path):
    # The command runs in a process that built no codec: it must still read zstd frames and
    # entries of trained dictionaries (it read none: "only 0 readable entries").
    import subprocess
    import sys

    s = settings(tmp_path, "msgpack+zstd+dict").replace(zstd_train_after=30)
    async with r1mw.Pipeline(s) as pipe:
        for i in range(60):
            await pipe.store.set(i.to_bytes(16, "big"), r1mw.Entry(reply(i)))
        l2 = pipe.store.tiers[1]
        codecs = collections.Counter([peek_codec(await l2.get(i.to_bytes(16, "big"))) for i in range(60)])
    assert set(codecs) <= {"msgpack+zstd", "msgpack+zstd+dict"} and codecs["msgpack+zstd"] >= 20, codecs
    env = {**os.environ, "R1MW_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "r1mw", "zstd-dict", "--size", "8192"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on 60 entries" in done.stdout
