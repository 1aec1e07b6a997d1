"""The exact stage over l1,l2: hits from either tier, promotion, restart, faults, stats."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import given, settings, strategies as st

import r1mw
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio


def q(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Analyze ticker T{i} with RSI(14)"}]


def pipeline(tmp_path, **kw):
    kw.setdefault("l1_size", 2)
    return r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1,l2", cache_dir=tmp_path / "cache", **kw))


async def test_hits_come_from_l1_then_l2_and_are_promoted(tmp_path):
    fake = FakeR1()
    async with pipeline(tmp_path) as pipe:
        llm = r1mw.wrap(fake, pipe)
        for i in range(5):
            await llm(model="deepseek-reasoner", messages=q(i))
        await pipe.store.flush()  # disk writes are write-behind: let them land (misses no longer wait)
        hit = await llm(model="deepseek-reasoner", messages=q(4))  # newest: in l1
        old = await llm(model="deepseek-reasoner", messages=q(0))  # evicted from l1: from l2
        again = await llm(model="deepseek-reasoner", messages=q(0))  # promoted
        await pipe.store.flush()  # disk writes are write-behind
        stats = pipe.stats()
    assert len(fake.calls) == 5
    assert hit["choices"][0]["message"]["content"] == fake.answer_for(q(4)[0]["content"])
    assert old["choices"][0]["message"]["content"] == fake.answer_for(q(0)[0]["content"])
    assert old == again and type(old) is dict
    assert stats["hits_by"] == {"exact:l1": 2, "exact:l2": 1}
    tiers = stats["tiers"]
    assert [k for k in tiers if k != "promotions"] == ["l1", "l2"]
    assert tiers["l1"]["promotions"] == 1 and tiers["l1"]["entries"] <= 2
    assert tiers["l2"]["entries"] == 5 and tiers["l2"]["hits"] == 1 and tiers["l2"]["bytes"] > 0
    for field in ("misses", "evictions", "corrupt", "demotions", "latency_us"):
        assert field in tiers["l1"] and field in tiers["l2"]


async def test_a_new_pipeline_on_the_same_cache_dir_hits_from_l2(tmp_path):
    fake = FakeR1()
    async with pipeline(tmp_path) as pipe:
        llm = r1mw.wrap(fake, pipe)
        first = await llm(model="deepseek-reasoner", messages=q(1))
    async with pipeline(tmp_path) as pipe:
        llm = r1mw.wrap(fake, pipe)
        again = await llm(model="deepseek-reasoner", messages=q(1))
        chunks = [c async for c in await llm(model="deepseek-reasoner", messages=q(1), stream=True)]
        stats = pipe.stats()
    assert len(fake.calls) == 1
    assert again["choices"][0]["message"] == first["choices"][0]["message"]
    assert again["id"] == first["id"]
    assert all(again["usage"][k] == v for k, v in first["usage"].items())  # hits add the zero details
    assert stats["hits_by"] == {"exact:l2": 1, "exact:l1": 1}
    text = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert text == first["choices"][0]["message"]["reasoning_content"]


async def test_a_corrupt_l2_entry_is_a_miss_and_the_call_goes_upstream(tmp_path):
    fake = FakeR1()
    async with pipeline(tmp_path) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=q(1))
    l2 = tmp_path / "cache" / "l2"
    (path,) = [os.path.join(d, f) for d, _, fs in os.walk(l2) for f in fs]
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    async with pipeline(tmp_path) as pipe:
        llm = r1mw.wrap(fake, pipe)
        reply = await llm(model="m", messages=q(1))
        stats = pipe.stats()
    assert len(fake.calls) == 2
    assert reply["choices"][0]["message"]["content"] == fake.answer_for(q(1)[0]["content"])
    assert stats["tiers"]["l2"]["corrupt"] == 1


async def test_ttl_expires_in_every_tier(tmp_path):
    fake = FakeR1()
    async with pipeline(tmp_path) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=q(1), cache={"ttl": 0.05})
        await llm(model="m", messages=q(1))
        assert len(fake.calls) == 1
        await asyncio.sleep(0.1)
        await llm(model="m", messages=q(1))
    assert len(fake.calls) == 2


async def test_context_style_values_round_trip_through_l2(tmp_path):
    np = pytest.importorskip("numpy")
    async with pipeline(tmp_path, l1_size=1) as pipe:
        store = pipe.store
        vec = np.arange(8, dtype=np.float32)
        await store.set(b"k" * 16, r1mw.Entry({"vec": vec, "raw": b"\x00\x01"}))
        await store.set(b"j" * 16, r1mw.Entry({"other": 1}))  # pushes the first out of l1
        entry, tier = await store.get(b"k" * 16)
        assert tier == "l2" and np.array_equal(entry.value["vec"], vec) and entry.value["raw"] == b"\x00\x01"
        with pytest.raises(r1mw.UnencodableValueError):
            await store.set(b"x" * 16, r1mw.Entry({"bad": object()}))


async def test_unknown_codec_fails_at_start(tmp_path):
    with pytest.raises(r1mw.ConfigError, match="R1MW_CODEC: unknown name 'snappy'"):
        async with r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1,l2", codec="snappy",
                                               cache_dir=tmp_path)):
            pass


class _BadMeta:
    """A stage that leaves an unencodable value in store_meta (a buggy plugin)."""

    name = "badmeta"

    async def handle(self, request, call_next):
        request.meta["store_meta"] = {"oops": {1, 2}}
        return await call_next(request)


class _BadMetaPlugin:
    __name__ = "badmeta-plugin"

    @r1mw.hookimpl
    def r1mw_register_stages(self):
        return {"badmeta": lambda pipeline: _BadMeta()}


async def test_a_reply_the_codec_refuses_is_served_not_stored(tmp_path, caplog):
    fake = FakeR1()
    settings = r1mw.Settings(stages="badmeta,exact", tiers="l1,l2", cache_dir=tmp_path / "cache")
    async with r1mw.Pipeline(settings, plugins=[_BadMetaPlugin()]) as pipe:
        llm = r1mw.wrap(fake, pipe)
        first = await llm(model="m", messages=q(1))
        second = await llm(model="m", messages=q(1))
        stats = pipe.stats()
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    assert len(fake.calls) == 2  # nothing was stored, nothing was raised
    assert stats["stages"]["exact"]["store_errors"] == 2
    assert "cannot store a value of type builtins.set" in caplog.text


async def test_write_behind_is_invisible_to_readers_and_flushed_at_close(tmp_path):
    fake = FakeR1()
    async with pipeline(tmp_path, l1_size=1) as pipe:
        llm = r1mw.wrap(fake, pipe)
        for i in range(4):  # L1 holds one: the others are found in flight or in L2
            await llm(model="deepseek-reasoner", messages=q(i))
        for i in range(4):
            await llm(model="deepseek-reasoner", messages=q(i))
        assert len(fake.calls) == 4
    async with pipeline(tmp_path) as pipe:  # close flushed every write
        llm = r1mw.wrap(fake, pipe)
        for i in range(4):
            await llm(model="deepseek-reasoner", messages=q(i))
        assert pipe.stats()["hits_by"] == {"exact:l2": 4}
    assert len(fake.calls) == 4


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=40))
def test_nothing_written_behind_is_lost_on_the_way_down(asks):
    """Any sequence of requests over l1,l2,l3 (tiny warm tiers: constant demotion while writes
    land behind): one upstream call per distinct question, every answer the right one."""
    import tempfile

    async def run() -> FakeR1:
        fake = FakeR1()
        with tempfile.TemporaryDirectory() as tmp:
            settings_ = r1mw.Settings(stages="exact", tiers="l1,l2,l3", cache_dir=tmp, l1_size=1, l2_size=2,
                                      l3_size=1000, l3_inline_reads=True)
            async with r1mw.Pipeline(settings_) as pipe:
                llm = r1mw.wrap(fake, pipe)
                for i in asks:
                    reply = await llm(model="deepseek-reasoner", messages=q(i))
                    assert reply["choices"][0]["message"]["content"] == fake.answer_for(q(i)[0]["content"])
        return fake

    fake = asyncio.run(run())
    assert len(fake.calls) == len(set(asks))
