"""r1mw switched on from a LiteLLM config: unwrapped litellm.acompletion served by r1mw.

Real litellm, no network: mock_response answers in place of the provider, and the local price
map (LITELLM_LOCAL_MODEL_COST_MAP=True, set in conftest) avoids the download at import.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from pathlib import Path

import pytest

import r1mw
from r1mw.integrations import litellm as r1mw_litellm
from r1mw.settings import FLAGS

litellm = pytest.importorskip("litellm")
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning:pydantic.*")]

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "litellm_config.yaml"
MODEL = "deepseek/deepseek-reasoner"


class ProviderCalls(CustomLogger):
    """Counts calls that reached the provider (LiteLLM's success events that were not hits)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []
        self.hits = 0

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        if kwargs.get("cache_hit"):
            self.hits += 1
        else:
            self.calls.append(kwargs["messages"][-1]["content"])


@pytest.fixture
def provider():
    counter = ProviderCalls()
    litellm.logging_callback_manager.add_litellm_callback(counter)
    yield counter
    litellm.logging_callback_manager.remove_callback_from_all_lists(counter)


@pytest.fixture
def shipped_config(monkeypatch):
    """The shipped example, read as a user would; Redis pointed at the test database."""
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", "6379")
    data = r1mw_litellm.load_config(CONFIG)
    params = data["litellm_settings"]["cache_params"]
    params["db"] = 15  # tests use db 15 and a namespace of their own
    params["namespace"] = f"r1mw-test-{uuid.uuid4().hex[:8]}"
    if "R1MW_REDIS_PREFIX" in {f.env for f in FLAGS}:  # with the redis tier installed: keys of our own
        data["r1_optimizations"]["flags"] = {"R1MW_REDIS_PREFIX": f"r1mw-test-{uuid.uuid4().hex[:8]}:"}
    return data


@pytest.fixture
async def integration(shipped_config):
    active = r1mw_litellm.enable(shipped_config)
    yield active
    store = active.pipeline.store
    for tier in store.tiers if store is not None else ():
        if tier.name == "redis":
            await tier.clear()  # only this test's prefix, never FLUSHDB
    await active.close()
    assert litellm.cache is None  # what LiteLLM had before


def user(text):
    return [{"role": "user", "content": text}]


async def _settle():
    # LiteLLM hands results to its cache and callbacks in tasks of its own.
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_second_identical_acompletion_is_served_by_r1mw(integration, provider):
    assert isinstance(litellm.cache.cache, r1mw_litellm.R1mwCacheBackend)  # no LiteLLM store in play
    q = user("Analyze AAPL using RSI(14) mean reversion")
    first = await litellm.acompletion(model=MODEL, messages=q, mock_response="Buy below 30.", temperature=0.2)
    await _settle()
    second = await litellm.acompletion(model=MODEL, messages=q, mock_response="Buy below 30.", temperature=0.2)
    await _settle()
    assert type(second) is type(first) is litellm.ModelResponse
    assert second.choices[0].message.content == first.choices[0].message.content == "Buy below 30."
    assert second._hidden_params.get("cache_hit") is True
    assert provider.calls == [q[0]["content"]] and provider.hits == 1
    stats = integration.pipeline.stats()
    assert stats["hits"] == 1 and stats["misses"] == 1
    assert list(stats["hits_by"]) == ["exact:l1"]
    assert integration.backend.stats()["served"] == 1  # the one hit came from r1mw's backend
    assert integration.backend.stats()["pending"] == 0
    # a different question, or a different answer-changing parameter, is not a hit
    await litellm.acompletion(model=MODEL, messages=q, mock_response="x", temperature=0.9)
    await litellm.acompletion(model=MODEL, messages=user("Analyze MSFT using RSI(14)"), mock_response="y")
    await _settle()
    assert len(provider.calls) == 3 and integration.pipeline.stats()["hits"] == 1


async def test_config_maps_onto_r1mw_settings(integration, shipped_config):
    s = integration.pipeline.settings
    assert s.namespace == shipped_config["litellm_settings"]["cache_params"]["namespace"]
    assert s.default_ttl == 86400
    assert s.redis_url == "redis://127.0.0.1:6379/15"
    assert s.template_cache_size == 100 and s.compression_threshold == 1000
    assert s.semantic_dedup_enabled and s.prefetch_enabled
    assert integration.pipeline.services["max_context_expansion"] == 2_000_000
    assert "exact" in s.stages and s.tiers[0] == "l1"
    # the booleans' stages run in R1MW_STAGES' default order: prefetch outside template and
    # exact, where it sees every request of a session, hits included
    assert s.stages == tuple(n for n in r1mw.Settings().stages if n in s.stages)
    assert s.stages.index("prefetch") < s.stages.index("template") < s.stages.index("exact")
    # what the config asks for but is not installed is skipped loudly, never silently
    for what in integration.config.skipped:
        kind, name = what.split(" ")
        assert name not in (s.stages if kind == "stage" else s.tiers)


async def test_the_configs_model_list_through_a_router_is_served_too(integration, provider, shipped_config,
                                                                     monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test-not-used")
    model_list = shipped_config["model_list"]
    for deployment in model_list:
        deployment["litellm_params"]["mock_response"] = "Routed."
    # LiteLLM's Router passes caching=False unless cache_responses=True (the proxy sets it when
    # litellm_settings.cache is true); r1mw honours caching=False like every other call.
    router = litellm.Router(model_list=model_list, cache_responses=True)
    q = user("Which sector leads the S&P 500 this quarter?")
    first = await router.acompletion(model="deepseek-reasoner", messages=q)
    await _settle()
    second = await router.acompletion(model="deepseek-reasoner", messages=q)
    assert first.choices[0].message.content == second.choices[0].message.content == "Routed."
    assert second._hidden_params.get("cache_hit") is True
    assert provider.calls == [q[0]["content"]]
    assert integration.pipeline.stats()["hits"] == 1


async def test_concurrent_identical_calls_reach_the_provider_once(integration, provider):
    q = user("What is the 50-day moving average of NVDA?")
    replies = await asyncio.gather(*(litellm.acompletion(model=MODEL, messages=q, mock_response="About 120.")
                                     for _ in range(10)))
    await _settle()
    assert {r.choices[0].message.content for r in replies} == {"About 120."}
    assert provider.calls == [q[0]["content"]]
    stats = integration.pipeline.stats()
    assert stats["misses"] == 1 and stats["hits"] + stats["coalesced"] == 9


async def test_caching_false_is_honoured_although_litellm_still_writes(integration, provider):
    q = user("Is TSLA overbought?")
    await litellm.acompletion(model=MODEL, messages=q, mock_response="No.", caching=False)
    await _settle()
    await litellm.acompletion(model=MODEL, messages=q, mock_response="No.")
    await _settle()
    assert provider.calls == [q[0]["content"]] * 2  # the caching=False result was not stored
    assert integration.backend.stats()["ignored_writes"] >= 1
    await litellm.acompletion(model=MODEL, messages=q, mock_response="No.")
    assert provider.calls == [q[0]["content"]] * 2  # the normal call's result was


async def test_no_store_and_no_cache_per_call(integration, provider):
    q = user("Summarize JPM liquidity")
    await litellm.acompletion(model=MODEL, messages=q, mock_response="Ample.", cache={"no-store": True})
    await _settle()
    await litellm.acompletion(model=MODEL, messages=q, mock_response="Ample.")
    await _settle()
    await litellm.acompletion(model=MODEL, messages=q, mock_response="Fresh.", cache={"no-cache": True})
    await _settle()
    latest = await litellm.acompletion(model=MODEL, messages=q, mock_response="Ample.")
    await _settle()
    assert len(provider.calls) == 3 and provider.hits == 1
    assert latest.choices[0].message.content == "Fresh."  # no-cache: fresh, and stored for the next
    assert integration.backend.stats()["pending"] == 0


async def test_s_maxage_refetches_an_entry_too_old_for_this_caller(integration, provider):
    q = user("Latest close of AMZN?")
    await litellm.acompletion(model=MODEL, messages=q, mock_response="v1")
    await _settle()
    await asyncio.sleep(0.05)
    young = await litellm.acompletion(model=MODEL, messages=q, mock_response="v2", cache={"s-maxage": 3600})
    fresh = await litellm.acompletion(model=MODEL, messages=q, mock_response="v2", cache={"s-maxage": 0.01})
    await _settle()
    latest = await litellm.acompletion(model=MODEL, messages=q, mock_response="v3")
    assert young.choices[0].message.content == "v1"  # young enough for this caller
    assert fresh.choices[0].message.content == "v2"  # too old: fetched afresh...
    assert latest.choices[0].message.content == "v2"  # ...and stored for everybody
    assert len(provider.calls) == 2 and integration.backend.stats()["too_old"] == 1


async def test_provider_errors_reach_the_caller_and_are_not_cached(integration, provider):
    q = user("Price XOM options")
    with pytest.raises(Exception) as info:
        await litellm.acompletion(model=MODEL, messages=q, mock_response=Exception("provider down"))
    assert "provider down" in str(info.value)
    await _settle()
    ok = await litellm.acompletion(model=MODEL, messages=q, mock_response="Done.")
    await _settle()
    assert ok.choices[0].message.content == "Done." and ok._hidden_params.get("cache_hit") is not True
    assert integration.backend.stats()["pending"] == 0 and integration.backend.stats()["failed"] == 1


async def test_streamed_miss_is_stored_and_hits_replay_as_streams(integration, provider):
    q = user("Explain the MACD crossover on AAPL")
    text = "A bullish crossover happens when the MACD line rises above its signal line. " * 3
    stream = await litellm.acompletion(model=MODEL, messages=q, mock_response=text, stream=True)
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream])
    await _settle()
    plain = await litellm.acompletion(model=MODEL, messages=q, mock_response=text)
    again = await litellm.acompletion(model=MODEL, messages=q, mock_response=text, stream=True)
    replayed = "".join([c.choices[0].delta.content or "" async for c in again])
    await _settle()
    assert streamed == text and plain.choices[0].message.content == text and replayed == text
    assert len(provider.calls) == 1 and integration.pipeline.stats()["hits"] == 2


async def test_a_cancelled_call_does_not_hold_up_identical_calls(integration, provider):
    q = user("Backtest a momentum strategy on SPY")
    leader = asyncio.ensure_future(litellm.acompletion(model=MODEL, messages=q, mock_response="slow", mock_delay=0.5))
    await asyncio.sleep(0.05)  # the leader is at the provider now
    follower = asyncio.ensure_future(litellm.acompletion(model=MODEL, messages=q, mock_response="own call"))
    await asyncio.sleep(0.05)  # the follower waits on the leader in r1mw's single-flight
    leader.cancel()
    # wait_for only guards against a hang (the follower would otherwise wait pending_timeout)
    reply = await asyncio.wait_for(follower, 10)
    await _settle()
    assert leader.cancelled()
    assert reply.choices[0].message.content == "own call"
    assert provider.calls == [q[0]["content"]]  # only the follower's call completed
    assert integration.backend.stats()["pending"] == 0


@pytest.mark.parametrize("how", ["aclose", "async_with", "dropped"])
async def test_a_stream_abandoned_before_its_end_does_not_hold_up_identical_calls(integration, provider, how):
    q = user("Explain the MACD crossover on MSFT")
    text = "A bullish crossover happens when the MACD line rises above its signal line. " * 5
    stream = await litellm.acompletion(model=MODEL, messages=q, mock_response=text, stream=True)
    if how == "async_with":
        async with stream:
            async for _ in stream:
                break
    else:
        async for _ in stream:
            break
        if how == "aclose":
            await stream.aclose()
        else:
            del stream
            gc.collect()
    # wait_for only guards against a hang (without the fix: pending_timeout, 600 s)
    reply = await asyncio.wait_for(litellm.acompletion(model=MODEL, messages=q, mock_response=text), 10)
    await _settle()
    assert reply.choices[0].message.content == text and reply._hidden_params.get("cache_hit") is not True
    assert integration.backend.stats()["pending"] == 0
    again = await litellm.acompletion(model=MODEL, messages=q, mock_response="not asked")
    assert again._hidden_params.get("cache_hit") is True and again.choices[0].message.content == text
    assert provider.calls == [q[0]["content"]]  # only the plain call completed (and was stored)


async def test_a_stream_closed_after_its_last_chunk_but_before_its_end_is_waited_for_briefly(
        integration, provider, monkeypatch):
    # Its finish chunk was handed out, so LiteLLM may be about to report the result (it closes
    # the stream itself at the end); if it does not, identical calls wait _GRACE, not 600 s.
    monkeypatch.setattr(r1mw_litellm, "_GRACE", 0.05)
    q = user("Explain the MACD crossover on AMD")
    stream = await litellm.acompletion(model=MODEL, messages=q, mock_response="Bullish.", stream=True)
    while not (await stream.__anext__()).choices[0].finish_reason:
        pass
    await stream.aclose()  # before the StopAsyncIteration that ends the stream
    reply = await asyncio.wait_for(litellm.acompletion(model=MODEL, messages=q, mock_response="Bullish."), 10)
    await _settle()
    assert reply.choices[0].message.content == "Bullish." and reply._hidden_params.get("cache_hit") is not True
    assert integration.backend.stats()["pending"] == 0 and integration.backend.stats()["timeouts"] == 1


async def test_sync_completion_still_works_uncached(integration):
    q = user("Define beta in one line")
    replies = [litellm.completion(model=MODEL, messages=q, mock_response="Sensitivity to the market.")
               for _ in range(2)]
    assert [r.choices[0].message.content for r in replies] == ["Sensitivity to the market."] * 2
    assert all(r._hidden_params.get("cache_hit") is not True for r in replies)
    assert integration.backend.stats()["lookups"] == 0


async def test_cache_false_in_the_config_does_not_switch_on(shipped_config):
    shipped_config["litellm_settings"]["cache"] = False
    assert r1mw_litellm.enable(shipped_config) is None
    assert litellm.cache is None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["r1_optimizations"].update(semantic_dedupe=True), r"r1_optimizations\.semantic_dedupe: unknown key"),
        (lambda c: c["r1_optimizations"].update(flags={"R1MW_NOPE": 1}), r"flags\.R1MW_NOPE: not an r1mw flag"),
        (lambda c: c["r1_optimizations"].update(flags={"R1MW_L2_FSYNC": "always"}), r"R1MW_L2_FSYNC='always'"),
        (lambda c: c["r1_optimizations"].update(template_cache="maybe"), r"template_cache='maybe'"),
        (lambda c: c["r1_optimizations"].update(max_context_expansion="lots"), r"max_context_expansion='lots'"),
        (lambda c: c["litellm_settings"]["cache_params"].update(type="s3"), r"type='s3' is not served"),
        (lambda c: c["litellm_settings"]["cache_params"].update(s3_bucket_name="b"), r"cache_params\.s3_bucket_name"),
        (lambda c: c["litellm_settings"]["cache_params"].update(host="os.environ/NO_SUCH_VAR"), r"NO_SUCH_VAR is not set"),
        (lambda c: c["litellm_settings"]["cache_params"].update(ttl=-5), r"R1MW_DEFAULT_TTL=-5"),
        (lambda c: c["litellm_settings"]["cache_params"].update(port="six"), r"cache_params\.port='six' is invalid"),
        # the key in the file and the list as a flag would spell it, not a Python list
        (lambda c: c["r1_optimizations"].update(tiers=["l2", "l1"]), r"r1_optimizations\.tiers: R1MW_TIERS='l2,l1'"),
    ],
)
def test_config_errors_are_one_clear_line(shipped_config, change, message):
    change(shipped_config)
    with pytest.raises(r1mw.ConfigError, match=message) as info:
        r1mw_litellm.settings_from_config(shipped_config)
    assert "\n" not in str(info.value)
    assert litellm.cache is None


def test_a_config_without_cache_type_or_stages_keeps_the_environment(monkeypatch):
    monkeypatch.setenv("R1MW_TIERS", "l1,l2")
    monkeypatch.setenv("R1MW_STAGES", "exact")
    settings, parsed = r1mw_litellm.settings_from_config(
        {"litellm_settings": {"cache": True, "cache_params": {"namespace": "desk"}},
         "r1_optimizations": {"l1_size": 50}})
    assert settings.tiers == ("l1", "l2") and settings.stages == ("exact",)
    assert settings.namespace == "desk" and settings.l1_size == 50 and parsed.skipped == []
    local, _ = r1mw_litellm.settings_from_config({"litellm_settings": {"cache": True, "cache_params": {"type": "local"}}})
    assert local.tiers == ("l1",)


def test_config_file_errors(tmp_path):
    with pytest.raises(r1mw.ConfigError, match="cannot be read"):
        r1mw_litellm.load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(r1mw.ConfigError, match="mapping at the top level"):
        r1mw_litellm.load_config(bad)
