"""The cold tiers under the real TieredStore and exact stage: demotion L1 -> L2 -> L3 -> L4,
hits from every tier, restart, a corrupt L3 record that is a miss, not an error, and a power cut
that never brings back a value stored over."""

from __future__ import annotations

from typing import Any

import pytest
from tier_faults import PowerCut, flip_byte

import r1mw
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio


def q(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Summarize the Q{i % 4 + 1} earnings call of T{i}"}]


N = 12  # questions: enough for L1 (2), L2 (3) and L3 (4) to overflow down to L4


async def ask_all(llm: Any) -> list[Any]:
    """Ask the N questions in order; the replies."""
    return [await llm(model="deepseek-reasoner", messages=q(i)) for i in range(N)]


def assert_right_answers(fake: FakeR1, replies: list[Any]) -> None:
    for i, reply in enumerate(replies):
        assert reply["choices"][0]["message"]["content"] == fake.answer_for(q(i)[0]["content"])


def pipeline(tmp_path, **kw):
    kw.setdefault("l1_size", 2)
    kw.setdefault("l2_size", 3)
    kw.setdefault("l3_size", 4)
    return r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1,l2,l3,l4", cache_dir=tmp_path / "cache",
                                       l3_inline_reads=True, **kw))


async def test_evictions_move_down_to_l4_and_every_entry_stays_reachable(tmp_path):
    fake = FakeR1()
    async with pipeline(tmp_path) as pipe:
        llm = r1mw.wrap(fake, pipe)
        first = await ask_all(llm)
        tiers = pipe.stats()["tiers"]
        assert tiers["l3"]["demotions"] > 0 and tiers["l4"]["demotions"] > 0
        assert tiers["l3"]["entries"] <= 4 and tiers["l2"]["entries"] <= 3
        again = await ask_all(llm)
        stats = pipe.stats()
    assert len(fake.calls) == 12  # nothing was lost on the way down
    assert [a["choices"][0]["message"] for a in again] == [f["choices"][0]["message"] for f in first]
    assert stats["hits_by"].get("exact:l3", 0) + stats["hits_by"].get("exact:l4", 0) > 0


async def test_a_new_pipeline_finds_what_the_cold_tiers_kept(tmp_path):
    fake = FakeR1()
    async with pipeline(tmp_path) as pipe:
        await ask_all(r1mw.wrap(fake, pipe))
    async with pipeline(tmp_path) as pipe:
        assert_right_answers(fake, await ask_all(r1mw.wrap(fake, pipe)))
        stats = pipe.stats()
    assert len(fake.calls) == 12
    assert {"exact:l2", "exact:l3", "exact:l4"} & set(stats["hits_by"])


async def test_a_corrupt_l3_record_is_a_miss_and_the_call_goes_upstream(tmp_path):
    fake = FakeR1()
    async with pipeline(tmp_path) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await ask_all(llm)
        l3 = pipe.store.tiers[2]
        damaged = 0
        for key, loc in list(l3._index.items()):
            flip_byte(l3._data_path(loc.seg), loc.offset + loc.length - 1, 0xFF)
            damaged += 1
        assert damaged
        assert_right_answers(fake, await ask_all(llm))
        stats = pipe.stats()
    assert 12 < len(fake.calls) <= 12 + damaged  # only what was damaged went upstream again
    assert stats["tiers"]["l3"]["corrupt"] >= 1 and stats["errors"] == 0


@pytest.mark.parametrize("below", ["l3", "l4"])
async def test_after_a_power_cut_a_value_stored_over_does_not_come_back(tmp_path, below):
    from r1mw.codec import Lz4Codec
    from r1mw.tiers import DiskTier, MemoryTier, TieredStore
    from r1mw.tiers.archive import ArchiveTier
    from r1mw.tiers.entry import Entry
    from r1mw.tiers.segment import SegmentTier

    def build() -> TieredStore:
        return TieredStore([MemoryTier("l1", 1), DiskTier(tmp_path / "l2", "l2", max_entries=1),
                            SegmentTier(tmp_path / "l3", max_entries=1, inline_reads=True),
                            ArchiveTier(tmp_path / "l4")], codec=Lz4Codec())

    key = b"K" * 16
    power = PowerCut()
    with power.recording():
        store = build()
        l3, l4 = store.tiers[2], store.tiers[3]
        await store.set(key, Entry({"answer": "v1"}))
        await store.set(b"X" * 16, Entry({"answer": "x"}))  # K: L2 -> L3
        if below == "l4":
            await store.set(b"Y" * 16, Entry({"answer": "y"}))  # K: L3 -> L4
            await l4.flush()
        tier = l3 if below == "l3" else l4
        assert tier.exists_sync(key)
        with tier._lock:
            tier._roll()  # sealed and fsynced: K's v1 is durable there
        await store.set(key, Entry({"answer": "v2"}))
        durable = power.snapshot()  # the power goes
        await store.close()
    PowerCut.cut(tmp_path, durable)
    store = build()
    try:
        got = await store.get(key)
        assert got is None or got[0].value == {"answer": "v2"}  # never v1, stored over
    finally:
        await store.close()
