"""Pipeline.stats() after the hot-path counters moved to (stage, tier) pairs: the names and
totals are what they were ("stage:tier", or the stage alone when it names no tier)."""

from __future__ import annotations

import pytest

import r1mw
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio


class Canned:
    """A stage answering one fixed question itself, naming no tier (as a semantic stage may)."""

    name = "canned"

    def __init__(self, pipeline):
        self.pipeline = pipeline

    async def handle(self, request, call_next):
        if request.messages[-1]["content"] == "ping":
            request.source, request.tier = "canned", None
            return r1mw.Reply(choices=(r1mw.Choice(content="pong"),), model=request.model)
        return await call_next(request)


class CannedPlugin:
    @r1mw.hookimpl
    def r1mw_register_stages(self):
        return {"canned": Canned}


async def test_hits_are_named_by_stage_and_tier_and_add_up(tmp_path):
    fake = FakeR1()
    settings = r1mw.Settings(stages="canned,exact", tiers="l1", cache_dir=str(tmp_path))
    async with r1mw.Pipeline(settings, plugins=[CannedPlugin()]) as pipe:
        llm = r1mw.wrap(fake, pipe)
        for _ in range(3):
            await llm(model="m", messages=[{"role": "user", "content": "ping"}])
        for _ in range(2):
            await llm(model="m", messages=[{"role": "user", "content": "what is RSI?"}])
        stats = pipe.stats()
    assert stats["hits_by"] == {"canned": 3, "exact:l1": 1}
    assert (stats["hits"], stats["misses"], stats["requests"]) == (4, 1, 5)
    assert stats["hit_rate"] == 4 / 5
    assert stats["latency_ms"]["hit"]["count"] == 4 and stats["latency_ms"]["miss"]["count"] == 1
    assert len(fake.calls) == 1
