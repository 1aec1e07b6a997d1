"""Single-flight when the call waited on gives no answer: the waiters share one new call."""

from __future__ import annotations

import asyncio

import pytest

import r1mw
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio

Q = [{"role": "user", "content": "Analyze AAPL using RSI(14)"}]


async def test_waiters_on_a_stream_its_caller_closed_early_share_one_new_call():
    async with r1mw.Pipeline(r1mw.Settings(stages="exact")) as pipe:
        fake = FakeR1(latency=0.05)
        llm = r1mw.wrap(fake, pipe)
        stream = await llm(model="m", messages=Q, stream=True)
        waiters = [asyncio.ensure_future(llm(model="m", messages=Q)) for _ in range(8)]
        while pipe.singleflight.coalesced < 8:
            await asyncio.sleep(0.001)
        async for _ in stream:
            break
        await stream.aclose()  # the streaming caller stops reading: its reply will never be whole
        replies = await asyncio.gather(*waiters)
    assert {r["choices"][0]["message"]["content"] for r in replies} == {fake.answer_for(Q[0]["content"])}
    assert len(fake.calls) == 2  # the abandoned stream, then one call for all eight waiters
    assert pipe.stats()["coalesced"] == 7
