"""The foundation: exact hits, single-flight, errors, cache control, namespaces, settings."""

from __future__ import annotations

import asyncio

import pytest

import r1mw
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio

Q = [{"role": "user", "content": "Analyze AAPL using RSI(14) mean reversion"}]


def pipeline(**settings):
    return r1mw.Pipeline(r1mw.Settings(stages="exact", **settings))


async def test_miss_then_hit_returns_same_shape():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        miss = await llm(model="deepseek-reasoner", messages=Q)
        hit = await llm(model="deepseek-reasoner", messages=Q)
    assert len(fake.calls) == 1
    assert type(hit) is dict
    assert hit["choices"][0]["message"]["content"] == miss["choices"][0]["message"]["content"]
    assert hit["choices"][0]["message"]["reasoning_content"] == "Reasoning about: " + Q[0]["content"]
    assert hit["usage"]["total_tokens"] == 30
    assert pipe.stats()["hits_by"] == {"exact:l1": 1}


async def test_hundred_concurrent_identical_requests_make_one_call():
    fake = FakeR1(latency=0.05)
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        replies = await asyncio.gather(*(llm(model="m", messages=Q) for _ in range(100)))
        stats = pipe.stats()
    assert len(fake.calls) == 1
    assert {r["choices"][0]["message"]["content"] for r in replies} == {fake.answer_for(Q[0]["content"])}
    assert stats["coalesced"] == 99 and stats["misses"] == 1


async def test_upstream_error_reaches_every_waiter_and_is_not_stored():
    fake = FakeR1(latency=0.05)
    boom = ConnectionError("upstream down")
    fake.fail = boom
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        results = await asyncio.gather(*(llm(model="m", messages=Q) for _ in range(5)), return_exceptions=True)
        assert all(r is boom for r in results)
        fake.fail = None
        await llm(model="m", messages=Q)
    assert len(fake.calls) == 2  # the error was not cached


async def test_cancelling_one_waiter_does_not_cancel_the_others():
    fake = FakeR1(latency=0.05)
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        first = asyncio.ensure_future(llm(model="m", messages=Q))
        second = asyncio.ensure_future(llm(model="m", messages=Q))
        await asyncio.sleep(0.01)
        first.cancel()
        reply = await second
        assert reply["choices"][0]["message"]["content"] == fake.answer_for(Q[0]["content"])
        await llm(model="m", messages=Q)  # the leader's cancelled caller did not stop the store
    assert len(fake.calls) == 1


async def test_cache_control_no_cache_no_store_and_namespaces():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=Q, cache={"no-store": True})
        await llm(model="m", messages=Q)  # not stored before: a miss, stored now
        await llm(model="m", messages=Q, cache={"no-cache": True})  # skips the lookup
        assert len(fake.calls) == 3
        await llm(model="m", messages=Q, cache={"namespace": "desk-b"})  # another tenant
        assert len(fake.calls) == 4
        await llm(model="m", messages=Q, cache={"namespace": "desk-b"})
        await llm(model="m", messages=Q)
        assert len(fake.calls) == 4
    assert all("cache" not in call for call in fake.calls)  # popped before the upstream


async def test_key_ignores_user_and_stream_but_not_temperature():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=Q, user="alice", timeout=30)
        await llm(model="m", messages=Q, user="bob")
        assert len(fake.calls) == 1
        await llm(model="m", messages=Q, temperature=0.2)
        assert len(fake.calls) == 2
        chunks = [c async for c in await llm(model="m", messages=Q, stream=True)]
        assert len(fake.calls) == 2  # a stored plain reply serves a stream
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == fake.answer_for(Q[0]["content"])


async def test_scope_by_user_makes_each_user_a_namespace():
    fake = FakeR1()
    async with pipeline(scope_by_user=True) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=Q, user="alice")
        await llm(model="m", messages=Q, user="bob")
    assert len(fake.calls) == 2


async def test_stream_miss_passes_chunks_then_hit_replays_byte_for_byte():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        live = [c async for c in await llm(model="m", messages=Q, stream=True)]
        await asyncio.sleep(0.01)  # the store runs after the stream's end
        replay = [c async for c in await llm(model="m", messages=Q, stream=True)]
    assert len(fake.calls) == 1

    def text(chunks, field):
        return "".join(c["choices"][0]["delta"].get(field) or "" for c in chunks if c["choices"])

    for field in ("content", "reasoning_content"):
        assert text(replay, field) == text(live, field)
    assert [c["choices"][0]["finish_reason"] for c in replay if c["choices"]][-1] == "stop"


@pytest.mark.parametrize("how", ["truncated", "error", "closed"])
async def test_an_incomplete_stream_stores_nothing(how):
    fake = FakeR1()
    boom = RuntimeError("connection reset")
    if how == "truncated":
        fake.truncate = True
    if how == "error":
        fake.fail = None
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        stream = await llm(model="m", messages=Q, stream=True)
        if how == "error":
            fake.fail = boom
            with pytest.raises(RuntimeError):
                async for _ in stream:
                    pass
        elif how == "closed":
            async for _ in stream:
                break
            await stream.aclose()
        else:
            _ = [c async for c in stream]
        await asyncio.sleep(0.01)
        fake.fail = fake.truncate = None
        await llm(model="m", messages=Q)
    assert len(fake.calls) == 2  # nothing was stored by the broken stream


def test_bad_flag_fails_with_one_line_naming_it():
    with pytest.raises(r1mw.ConfigError) as err:
        r1mw.Settings.from_env({"CACHE_L1_SIZE": "lots"})
    message = str(err.value)
    assert "CACHE_L1_SIZE" in message and "'lots'" in message and "\n" not in message
    with pytest.raises(r1mw.ConfigError, match="R1MW_STAGES"):
        r1mw.Settings.from_env({"R1MW_STAGSE": "exact"})


async def test_unknown_stage_fails_at_start():
    with pytest.raises(r1mw.ConfigError, match="R1MW_STAGES: unknown name 'nope'"):
        async with r1mw.Pipeline(r1mw.Settings(stages="exact,nope")):
            pass


def test_settings_precedence_env_over_dotenv(tmp_path):
    env_file = tmp_path / "custom.env"
    env_file.write_text("CACHE_L1_SIZE=7\nR1MW_NAMESPACE=from-file\n")
    s = r1mw.Settings.from_env({"CACHE_L1_SIZE": "9"}, dotenv=env_file)
    assert s.l1_size == 9 and s.source("l1_size") == "env"
    assert s.namespace == "from-file" and s.source("namespace") == str(env_file)


async def test_observers_get_the_events_stages_emit():
    seen = []

    class Observer:
        @r1mw.hookimpl
        def r1mw_events(self, pipeline, events):
            seen.extend(e.kind for e in events)

    async with r1mw.Pipeline(r1mw.Settings(stages="exact"), plugins=[Observer()]) as pipe:
        llm = r1mw.wrap(FakeR1(), pipe)
        await llm(model="m", messages=Q)
        await llm(model="m", messages=Q)
    assert seen.count("served") == 2 and seen.count("stored") == 1


def test_cache_control_parses_every_spelling_and_shares_one_object_per_session():
    from r1mw.types import CacheControl

    a = CacheControl.from_mapping({"session": "s1"})
    assert a == CacheControl(session="s1") and CacheControl.from_mapping({"session": "s1"}) is a  # frozen: shared
    assert CacheControl.from_mapping({"session": 7}) == CacheControl(session="7")
    assert CacheControl.from_mapping({"session": "s1", "no-store": True}) == CacheControl(no_store=True, session="s1")
    assert CacheControl.from_mapping({"no_cache": True}).no_cache
    with pytest.raises(TypeError, match="unknown keys"):
        CacheControl.from_mapping({"sesion": "s1"})
    with pytest.raises(TypeError, match="expected True or False"):
        CacheControl.from_mapping({"no-cache": "false"})


async def test_cancelled_callers_are_counted_apart_from_errors_and_raise_no_error_alert():
    # Callers giving up (asyncio.wait_for) on a healthy upstream are not upstream errors: the
    # error-rate rule reads stats()["errors"] when the metrics stage is off.
    fake, gate = FakeR1(), asyncio.Event()

    async def slow(**kwargs):
        await gate.wait()
        return await fake(**kwargs)

    settings = r1mw.Settings(stages="exact", alert_error_rate_above=0.2, alert_min_requests=5)
    async with r1mw.Pipeline(settings) as pipe:
        engine = pipe.services["alerts"]
        llm = r1mw.wrap(slow, pipe)
        t0 = engine.clock()
        callers = [asyncio.ensure_future(llm(model="m", messages=[{"role": "user", "content": f"Q{i}"}]))
                   for i in range(10)]
        while len(pipe.singleflight) < 10:  # every call in flight
            await asyncio.sleep(0)
        for caller in callers:
            caller.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        gate.set()
        for i in range(10):
            await llm(model="m", messages=[{"role": "user", "content": f"R{i}"}])
        fake.fail = ConnectionError("upstream down")
        with pytest.raises(ConnectionError):
            await llm(model="m", messages=[{"role": "user", "content": "E"}])
        fired = engine.tick(pipe, t0 + engine.window_s / 2)
        stats = pipe.stats()
    assert (stats.get("cancelled"), stats["errors"], stats["misses"]) == (10, 1, 10)
    parts = stats["hits"] + stats["coalesced"] + stats["misses"] + stats["errors"] + stats["cancelled"]
    assert stats["requests"] == parts == 21
    assert fired == []  # 1 error in 11 requests is under 0.2; with the 10 cancellations it was 11 in 21
