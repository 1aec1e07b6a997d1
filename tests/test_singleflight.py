"""Single-flight when the call waited on gives no answer: the waiters share one new call."""

from __future__ import annotations

import asyncio

import pytest
from anyio import fail_after as anyio_fail_after

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


async def test_a_stream_its_caller_broke_out_of_but_kept_holds_waiters_only_until_it_stalls():
    # `break` out of `async for` does not close the SDK's stream while the caller keeps it:
    # without a stall deadline every identical request would wait for it forever.
    import httpx
    import openai

    from r1mw.testing import R1Peer

    peer = R1Peer()
    client = openai.AsyncOpenAI(api_key="test", base_url="http://r1.test/v1", max_retries=0,
                                http_client=httpx.AsyncClient(transport=peer.transport()))
    settings = r1mw.Settings(stages="exact", stream_stall_timeout_s=0.2)
    async with r1mw.Pipeline(settings) as pipe:
        cached = r1mw.wrap(client, pipe)
        kept = await cached.chat.completions.create(model="deepseek-reasoner", messages=Q, stream=True)
        async for _ in kept:
            break  # the caller stops reading and keeps `kept`
        waiters = [asyncio.ensure_future(cached.chat.completions.create(model="deepseek-reasoner", messages=Q))
                   for _ in range(4)]
        with anyio_fail_after(30):  # a hang guard, not a timing assertion
            replies = await asyncio.gather(*waiters)
        again = await cached.chat.completions.create(model="deepseek-reasoner", messages=Q)
    assert {r.choices[0].message.content for r in replies} == {peer.answer_for(Q[0]["content"])}
    assert len(peer.calls) == 2  # the kept stream, then one call for the four waiters
    assert pipe.stats()["stream_stalls"] == 4
    assert again.choices[0].message.content == peer.answer_for(Q[0]["content"])  # stored by the new call
    assert len(peer.calls) == 2
    assert kept is not None


async def test_a_slow_stream_that_keeps_moving_is_still_shared_with_its_waiters():
    # The deadline runs from the last chunk, not from the start: a stream longer than the
    # stall timeout but never idle that long serves its waiters.
    fake = FakeR1()
    ticks = 0

    async def slow(**kwargs):
        nonlocal ticks
        reply = await fake(**kwargs)
        if not kwargs.get("stream"):
            return reply

        async def paced():
            nonlocal ticks
            async for chunk in reply:
                await asyncio.sleep(0.06)
                ticks += 1
                yield chunk
        return paced()

    settings = r1mw.Settings(stages="exact", stream_stall_timeout_s=0.3)
    async with r1mw.Pipeline(settings) as pipe:
        llm = r1mw.wrap(slow, pipe)
        stream = await llm(model="m", messages=Q, stream=True)
        waiter = asyncio.ensure_future(llm(model="m", messages=Q))
        while pipe.singleflight.coalesced < 1:
            await asyncio.sleep(0.001)
        async for _ in stream:
            pass
        reply = await waiter
    assert ticks * 0.06 > 0.3  # the stream lasted longer than the stall timeout
    assert reply["choices"][0]["message"]["content"].strip() == fake.answer_for(Q[0]["content"])  # as streamed
    assert len(fake.calls) == 1
    assert pipe.singleflight.stalled == 0



async def test_a_waiter_cancelled_as_the_stream_it_waits_on_ends_is_cancelled():
    # The waiter bounded its wait with asyncio.wait_for, which before Python 3.12 returns the
    # awaited outcome when the cancel arrives in the loop turn it ends in: the caller's cancel
    # (its deadline, a client gone) was lost and it got the reply anyway (found in the Redis
    # tier by the chaos soak, which used the same call).
    from r1mw.singleflight import SingleFlight

    async def chunks():
        yield {}

    stream = r1mw.StreamedReply(chunks(), lambda chunk: ([], None, {}))
    waiter = asyncio.ensure_future(SingleFlight()._stream_result(stream))
    for _ in range(3):
        await asyncio.sleep(0)  # the waiter waits on the stream's result
    stream._future.set_result(r1mw.Reply(choices=(r1mw.Choice(content="done"),)))  # the stream ends...
    await asyncio.sleep(0)  # one loop turn: the stream's result is in, not yet its waiter's wake-up
    assert waiter.cancel()  # ...as its waiter is cancelled: still pending, so it must end cancelled
    with pytest.raises(asyncio.CancelledError):
        await waiter
