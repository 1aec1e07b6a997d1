"""A pipeline started by its first requests (r1mw.wrap without a started pipeline) starts once."""

from __future__ import annotations

import asyncio
import types

import pytest

import r1mw
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio

Q = [{"role": "user", "content": "Price target for MSFT after earnings?"}]


def slow_start_plugin():
    built = []

    class SlowStart:
        name = "slowstart"

        def __init__(self, pipeline):
            built.append(self)

        async def start(self):
            await asyncio.sleep(0.01)  # an async start: other first requests arrive meanwhile

        async def handle(self, request, call_next):
            return await call_next(request)

    plugin = types.SimpleNamespace(__name__="slowstart_plugin",
                                   r1mw_register_stages=r1mw.hookimpl(lambda: {"slowstart": SlowStart}))
    return plugin, built


async def test_concurrent_first_requests_build_the_pipeline_once():
    plugin, built = slow_start_plugin()
    fake = FakeR1(latency=0.01)
    pipe = r1mw.Pipeline(r1mw.Settings(stages="slowstart,exact"), plugins=[plugin])
    llm = r1mw.wrap(fake, pipe)  # not started: the first requests start it
    try:
        replies = await asyncio.gather(*(llm(model="m", messages=Q) for _ in range(10)))
    finally:
        await pipe.close()
    assert len(built) == 1
    assert len(fake.calls) == 1
    assert {r["choices"][0]["message"]["content"] for r in replies} == {fake.answer_for(Q[0]["content"])}
