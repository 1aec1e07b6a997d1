"""The simulated R1 upstream: replies name their question, latency scales, errors pass through."""

from __future__ import annotations

import asyncio

import pytest

import r1mw
from r1mw.workload import simulator as simmod
from r1mw.workload.simulator import LatencyModel, SimulatedR1, SimulatedUpstreamError, served_question_id
from r1mw.workload.truth import Catalog

pytestmark = pytest.mark.anyio

CAT = Catalog.load()
Q = "Analyze NVDA using a Bollinger Band breakout"
SAME = "please use a bollinger band breakout to analyze Nvidia (NVDA)"
OTHER = "Analyze AMD using a Bollinger Band breakout"


def ask(text: str, **extra: object) -> dict:
    return {"model": "deepseek-reasoner", "messages": [{"role": "user", "content": text}], **extra}


async def test_reply_names_its_question_and_depends_only_on_it() -> None:
    sim = SimulatedR1(speed=0)
    a = await sim(**ask(Q))
    b = await sim(**ask(SAME))
    c = await sim(**ask(OTHER))
    assert served_question_id(a) == CAT.identify(Q) == served_question_id(b)
    assert served_question_id(c) == CAT.identify(OTHER) != served_question_id(a)
    msg_a, msg_b = a["choices"][0]["message"], b["choices"][0]["message"]
    assert (msg_a["content"], msg_a["reasoning_content"]) == (msg_b["content"], msg_b["reasoning_content"])
    assert a["id"] != b["id"]
    assert c["choices"][0]["message"]["content"] != msg_a["content"]


async def test_reply_is_r1_shaped() -> None:
    sim = SimulatedR1(speed=0)
    reply = await sim(**ask(Q))
    usage = reply["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 800 <= reasoning <= 3500
    assert 120 <= usage["completion_tokens"] - reasoning <= 900
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    message = reply["choices"][0]["message"]
    # about 1.3 tokens a word
    assert 0.5 < len(message["reasoning_content"].split()) * 1.3 / reasoning < 1.5
    assert reply["choices"][0]["finish_reason"] == "stop"
    totals = sim.totals()
    assert totals["calls"] == 1 and totals["completion_tokens"] == usage["completion_tokens"]


async def test_latency_is_scaled_by_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(simmod.asyncio, "sleep", fake_sleep)
    model = LatencyModel(ttft_median_s=2.0, tokens_per_s=25.0)
    for speed in (1.0, 0.01):
        slept.clear()
        sim = SimulatedR1(speed=speed, latency=model, seed=5)
        await sim(**ask(Q))
        call = sim.calls[-1]
        assert slept == [pytest.approx(call.real_s * speed)]
        # a real R1 answer of ~1-4k tokens at 25 tok/s takes tens of seconds
        assert call.real_s > call.completion_tokens / 25.0 * 0.3


async def test_latency_model_distribution() -> None:
    import random

    rng = random.Random(1)
    model = LatencyModel()
    samples = [model.sample(rng, 2000) for _ in range(500)]
    ttfts = sorted(s[0] for s in samples)
    totals = sorted(s[1] for s in samples)
    assert 1.5 < ttfts[250] < 6.0            # median time to first token: seconds
    assert 40 < totals[250] < 120            # a 2,000-token reply: about a minute
    assert all(t > f for f, t in samples)


async def test_stream_reassembles_to_the_reply() -> None:
    sim = SimulatedR1(speed=0)
    plain = await sim(**ask(Q))
    stream = await sim(**ask(Q, stream=True, stream_options={"include_usage": True}))
    content, reasoning, usage, finish = [], [], None, None
    async for chunk in stream:
        for choice in chunk["choices"]:
            content.append(choice["delta"].get("content") or "")
            reasoning.append(choice["delta"].get("reasoning_content") or "")
            finish = choice["finish_reason"] or finish
        usage = chunk.get("usage") or usage
    message = plain["choices"][0]["message"]
    assert "".join(content) == message["content"]
    assert "".join(reasoning) == message["reasoning_content"]
    assert finish == "stop" and usage == plain["usage"]
    assert served_question_id("".join(content)) == CAT.identify(Q)
    assert sim.calls[-1].stream and sim.calls[-1].error is None


async def test_streamed_miss_is_stored_and_replayed_through_r1mw() -> None:
    sim = SimulatedR1(speed=0)
    async with r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1")) as pipe:
        llm = r1mw.wrap(sim, pipe, returns=dict)
        first = await llm(**ask(Q, stream=True))
        text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in first if c["choices"]])
        for _ in range(50):  # the store runs when the stream has ended
            if pipe.stats()["stages"]["exact"]["stored"]:
                break
            await asyncio.sleep(0)
        again = await llm(**ask(Q))
    assert len(sim.calls) == 1
    assert served_question_id(again) == served_question_id(text) == CAT.identify(Q)


async def test_injected_errors_reach_the_caller_and_are_not_cached() -> None:
    sim = SimulatedR1(speed=0, error_rate=1.0)
    with pytest.raises(SimulatedUpstreamError):
        await sim(**ask(Q))
    sim = SimulatedR1(speed=0)
    sim.fail_next(1)
    async with r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1")) as pipe:
        llm = r1mw.wrap(sim, pipe, returns=dict)
        with pytest.raises(SimulatedUpstreamError):
            await llm(**ask(Q))
        reply = await llm(**ask(Q))
    assert served_question_id(reply) == CAT.identify(Q)
    assert [c.error for c in sim.calls] == ["SimulatedUpstreamError", None]
    assert sim.totals()["errors"] == 1


async def test_served_question_id_reads_every_shape() -> None:
    sim = SimulatedR1(speed=0)
    reply = await sim(**ask(Q))
    from r1mw.adapters.shapes import reply_of_dict

    assert served_question_id(reply_of_dict(reply)) == CAT.identify(Q)
    assert served_question_id("no id here") is None
    assert served_question_id({"choices": []}) is None


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        SimulatedR1(speed=-1)
    with pytest.raises(ValueError):
        SimulatedR1(error_rate=2)
    with pytest.raises(TypeError):
        await SimulatedR1(speed=0)(model="m")
