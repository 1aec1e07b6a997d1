"""The real litellm.acompletion with mock_response= (no network): hits are LiteLLM's own types."""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before the import: no price-map fetch

import litellm  # noqa: E402
import pytest  # noqa: E402
from litellm import ModelResponse, ModelResponseStream  # noqa: E402

import r1mw  # noqa: E402

pytestmark = pytest.mark.anyio

MODEL = "deepseek/deepseek-reasoner"
Q = [{"role": "user", "content": "Summarize the MACD crossover on TSLA daily."}]
R1 = {"id": "r1-lite", "object": "chat.completion", "created": 1_700_000_000, "model": MODEL,
      "choices": [{"index": 0, "finish_reason": "stop", "message": {
          "role": "assistant", "content": "A bullish crossover: MACD crossed above its signal line.",
          "reasoning_content": "MACD minus signal went from negative to positive; that is bullish."}}],
      "usage": {"prompt_tokens": 11, "completion_tokens": 33, "total_tokens": 44,
                "completion_tokens_details": {"reasoning_tokens": 17}}}


def pipeline() -> r1mw.Pipeline:
    return r1mw.Pipeline(r1mw.Settings(stages="exact"))


def joined(chunks, field):
    return "".join(getattr(c.choices[0].delta, field, None) or "" for c in chunks if c.choices)


async def settle():
    for _ in range(3):
        await asyncio.sleep(0)


async def test_wrap_picks_the_litellm_adapter():
    acompletion = r1mw.wrap(litellm.acompletion, pipeline())
    assert acompletion.__r1mw_pipeline__ is not None and acompletion.__wrapped__ is litellm.acompletion


async def test_miss_and_hit_are_model_responses_with_reasoning():
    async with pipeline() as pipe:
        acompletion = r1mw.wrap(litellm.acompletion, pipe)
        miss = await acompletion(model=MODEL, messages=Q, mock_response=R1)
        hit = await acompletion(model=MODEL, messages=Q, mock_response=R1)
        stats = pipe.stats()
    assert type(miss) is ModelResponse and type(hit) is ModelResponse
    assert stats["misses"] == 1 and stats["hits"] == 1
    m, h = miss.choices[0], hit.choices[0]
    assert h.message.content == m.message.content == R1["choices"][0]["message"]["content"]
    assert h.message.reasoning_content == m.message.reasoning_content
    assert h.message.reasoning_content == R1["choices"][0]["message"]["reasoning_content"]
    assert h.finish_reason == m.finish_reason == "stop"
    assert (hit.usage.prompt_tokens, hit.usage.completion_tokens, hit.usage.total_tokens) == (11, 33, 44)
    assert hit.usage.completion_tokens_details.reasoning_tokens == 17
    assert hit._hidden_params.get("cache_hit") is True  # as LiteLLM marks its own cache hits
    assert not miss._hidden_params.get("cache_hit")


async def test_a_string_mock_miss_then_hit_is_the_same_reply():
    async with pipeline() as pipe:
        acompletion = r1mw.wrap(litellm.acompletion, pipe)
        miss = await acompletion(model=MODEL, messages=Q, mock_response="Bullish.")
        hit = await acompletion(model=MODEL, messages=Q, mock_response="Bullish.")
    assert hit.id == miss.id  # LiteLLM makes a fresh id per call: the hit made none
    assert hit.choices[0].message.content == "Bullish."


async def test_positional_arguments():
    async with pipeline() as pipe:
        acompletion = r1mw.wrap(litellm.acompletion, pipe)
        miss = await acompletion(MODEL, Q, mock_response=R1)
        hit = await acompletion(MODEL, messages=Q, mock_response=R1)
        assert pipe.stats()["hits"] == 1
    assert type(hit) is ModelResponse and hit.choices[0].message.content == miss.choices[0].message.content
    with pytest.raises(TypeError, match="messages"):
        await r1mw.wrap(litellm.acompletion, pipe)(MODEL, Q, messages=Q)


async def test_stream_miss_then_hit_in_litellm_chunks():
    async with pipeline() as pipe:
        acompletion = r1mw.wrap(litellm.acompletion, pipe)
        mock = ModelResponse(**R1)  # LiteLLM streams it with reasoning_content
        live = [c async for c in await acompletion(model=MODEL, messages=Q, mock_response=mock, stream=True)]
        await settle()
        replay = [c async for c in await acompletion(model=MODEL, messages=Q, mock_response=mock, stream=True)]
        plain = await acompletion(model=MODEL, messages=Q, mock_response=mock)
        stats = pipe.stats()
    assert stats["misses"] == 1 and stats["hits"] == 2
    assert all(type(c) is ModelResponseStream for c in live + replay)
    for field in ("content", "reasoning_content"):
        assert joined(replay, field) == joined(live, field) == R1["choices"][0]["message"][field]
    assert replay[-1].choices[0].finish_reason == "stop"
    assert type(plain) is ModelResponse and plain.choices[0].message.reasoning_content == joined(live, "reasoning_content")


async def test_a_plain_miss_serves_a_stream():
    async with pipeline() as pipe:
        acompletion = r1mw.wrap(litellm.acompletion, pipe)
        await acompletion(model=MODEL, messages=Q, mock_response=R1)
        stream = await acompletion(model=MODEL, messages=Q, mock_response=R1, stream=True)
        async with stream:
            replay = [c async for c in stream]
    assert joined(replay, "content") == R1["choices"][0]["message"]["content"]
    assert joined(replay, "reasoning_content") == R1["choices"][0]["message"]["reasoning_content"]


async def test_litellm_errors_pass_through_and_are_not_cached():
    error = litellm.RateLimitError(message="slow down", llm_provider="deepseek", model=MODEL)
    async with pipeline() as pipe:
        acompletion = r1mw.wrap(litellm.acompletion, pipe)
        for _ in range(2):
            with pytest.raises(litellm.RateLimitError):
                await acompletion(model=MODEL, messages=Q, mock_response=error)
        stats = pipe.stats()
    assert stats["errors"] == 2 and stats["hits"] == 0 and stats["tiers"]["l1"]["entries"] == 0


def test_the_synchronous_completion_is_refused_at_wrap_time():
    with pytest.raises(TypeError, match="needs litellm.acompletion"):
        r1mw.wrap(litellm.completion, pipeline())


async def test_a_hit_has_a_usage_even_when_its_stream_had_none():
    async with pipeline() as pipe:
        acompletion = r1mw.wrap(litellm.acompletion, pipe)
        _ = [c async for c in await acompletion(model=MODEL, messages=Q, mock_response="Bullish.", stream=True)]
        await settle()
        key = r1mw.key_of("", MODEL, Q, {"mock_response": "Bullish."})
        assert pipe.store.get_nowait(key).reply.usage is None  # none streamed
        hit = await acompletion(model=MODEL, messages=Q, mock_response="Bullish.")
    assert pipe.stats()["hits"] == 1 and type(hit) is ModelResponse
    assert (hit.usage.prompt_tokens, hit.usage.completion_tokens, hit.usage.total_tokens) == (0, 0, 0)


@pytest.mark.parametrize("stored_from", ["plain", "stream"])
async def test_completion_cost_works_on_a_hit_as_on_litellms_own_cache_hits(stored_from):
    async with pipeline() as pipe:
        acompletion = r1mw.wrap(litellm.acompletion, pipe)
        if stored_from == "stream":
            _ = [c async for c in await acompletion(model=MODEL, messages=Q, mock_response=R1, stream=True)]
            await settle()
        else:
            miss = await acompletion(model=MODEL, messages=Q, mock_response=R1)
            assert litellm.completion_cost(miss) > 0
        hit = await acompletion(model=MODEL, messages=Q, mock_response=R1)
    assert pipe.stats()["hits"] == 1
    assert hit._hidden_params == {"custom_llm_provider": "deepseek", "response_cost": 0.0, "cache_hit": True}
    assert litellm.completion_cost(hit) >= 0  # priced from the hit's own usage, as LiteLLM's hits are


async def test_caching_false_is_neither_served_from_nor_stored_in_the_cache():
    # LiteLLM's per-call switch: a call made with caching=False must reach the provider.
    fresh = {**R1, "choices": [{**R1["choices"][0], "message": {**R1["choices"][0]["message"], "content": "Fresh."}}]}
    async with pipeline() as pipe:
        acompletion = r1mw.wrap(litellm.acompletion, pipe)
        await acompletion(model=MODEL, messages=Q, mock_response=R1)
        # (mock_response is keyed: the same mock keeps the key, the calls below pass it unchanged)
        uncached = await acompletion(model=MODEL, messages=Q, mock_response=R1, caching=False)
        other = [{"role": "user", "content": "And on NVDA?"}]
        await acompletion(model=MODEL, messages=other, mock_response=fresh, caching=False)
        again = await acompletion(model=MODEL, messages=other, mock_response=fresh)
        stats = pipe.stats()
    assert not uncached._hidden_params.get("cache_hit")
    assert not again._hidden_params.get("cache_hit")  # the caching=False call stored nothing
    assert stats["hits"] == 0 and stats["misses"] == 4


async def test_s_maxage_is_the_oldest_entry_the_caller_accepts_not_a_ttl():
    # LiteLLM's cache={"s-maxage": n}: "only a cached reply at most n seconds old".
    async with pipeline() as pipe:
        acompletion = r1mw.wrap(litellm.acompletion, pipe)
        first = await acompletion(model=MODEL, messages=Q, mock_response="v1")
        refetched = await acompletion(model=MODEL, messages=Q, mock_response="v1", cache={"s-maxage": 0})
        young = await acompletion(model=MODEL, messages=Q, mock_response="v1", cache={"s-maxage": 3600})
        plain = await acompletion(model=MODEL, messages=Q, mock_response="v1")
        stats = pipe.stats()
    assert not refetched._hidden_params.get("cache_hit") and refetched.id != first.id
    assert young._hidden_params.get("cache_hit") and young.id == refetched.id  # the refetch replaced it
    assert plain.id == refetched.id  # and s-maxage set no lifetime on it
    assert stats["misses"] == 2 and stats["hits"] == 2
