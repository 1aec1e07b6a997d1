"""Hardening: bugs found by an adversarial review of the core, each pinned by a test.

Every test here failed before its fix (see docs/design.md, "Hardening notes").
"""

from __future__ import annotations

import asyncio
import os

import pytest

import r1mw
from r1mw.errors import CacheControlError
from r1mw.keys import key_of
from r1mw.testing import FakeR1
from r1mw.tiers import DiskTier

pytestmark = pytest.mark.anyio

Q = [{"role": "user", "content": "Analyze AAPL using RSI(14) mean reversion"}]


def pipeline(**settings):
    return r1mw.Pipeline(r1mw.Settings(stages="exact", **settings))


async def _until(predicate, steps=10_000):
    """Yield to the loop until ``predicate()`` holds (a step count, not a clock)."""
    for _ in range(steps):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never reached")


# -- single-flight: a streaming leader whose caller is gone ----------------------------------

async def test_waiters_of_a_stream_whose_caller_was_cancelled_do_not_hang():
    fake = FakeR1()
    gate = asyncio.Event()

    async def slow(**kwargs):
        await gate.wait()
        return await fake(**kwargs)

    async with pipeline() as pipe:
        llm = r1mw.wrap(slow, pipe)
        leader = asyncio.ensure_future(llm(model="m", messages=Q, stream=True))
        await _until(lambda: len(pipe.singleflight) == 1)
        waiter = asyncio.ensure_future(llm(model="m", messages=Q))
        await _until(lambda: pipe.singleflight.coalesced == 1)
        leader.cancel()  # the caller leaves before the stream reaches it: nobody will read it
        with pytest.raises(asyncio.CancelledError):
            await leader
        gate.set()
        # The stream nobody reads must be abandoned, so the waiter makes its own call.
        await _until(waiter.done)
        reply = waiter.result()
        assert reply["choices"][0]["message"]["content"] == fake.answer_for(Q[0]["content"])
        assert len(pipe.singleflight) == 0
        # Later identical requests are not stuck behind the orphaned stream either.
        again = await llm(model="m", messages=Q)
        assert again["choices"][0]["message"]["content"] == fake.answer_for(Q[0]["content"])


# -- replies shared between the caller and the cache ---------------------------------------

def _tool_reply(**kwargs):
    return {
        "id": "t-1", "object": "chat.completion", "created": 1, "model": kwargs["model"],
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_price", "arguments": '{"ticker": "AAPL"}'}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }


async def test_a_caller_mutating_tool_calls_cannot_corrupt_the_cache():
    calls = []

    async def upstream(**kwargs):
        calls.append(kwargs)
        return _tool_reply(**kwargs)

    async with pipeline() as pipe:
        llm = r1mw.wrap(upstream, pipe)
        miss = await llm(model="m", messages=Q)
        # A caller that parses the arguments in place (a common pattern) ...
        miss["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = {"ticker": "AAPL"}
        hit = await llm(model="m", messages=Q)
        assert hit["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"ticker": "AAPL"}'
        hit["choices"][0]["message"]["tool_calls"][0]["function"]["name"] = "sell_everything"
        again = await llm(model="m", messages=Q)
        assert again["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_price"
    assert len(calls) == 1


# -- per-request TTL -------------------------------------------------------------------------

@pytest.mark.parametrize("ttl", [0, -5])
async def test_ttl_zero_or_negative_stores_nothing(ttl):
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=Q, cache={"ttl": ttl})
        await llm(model="m", messages=Q)
    assert len(fake.calls) == 2  # s-maxage=0 means "do not reuse", never "keep forever"


@pytest.mark.parametrize("ttl", [float("nan"), "soon"])
async def test_a_ttl_that_is_not_a_number_is_a_clear_error(ttl):
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        with pytest.raises(ValueError, match="ttl"):
            await llm(model="m", messages=Q, cache={"ttl": ttl})
    assert fake.calls == []


async def test_an_infinite_ttl_means_no_expiry():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=Q, cache={"ttl": float("inf")})
        await llm(model="m", messages=Q)
    assert len(fake.calls) == 1


# -- replies a hit cannot reproduce, and upstream failures dressed as replies ----------------

async def test_requests_for_logprobs_are_not_served_from_a_reply_without_them():
    calls = []

    async def upstream(**kwargs):
        calls.append(kwargs)
        reply = await FakeR1()(**kwargs)
        reply["choices"][0]["logprobs"] = {"content": [{"token": "A", "logprob": -0.1, "top_logprobs": []}]}
        return reply

    async with pipeline() as pipe:
        llm = r1mw.wrap(upstream, pipe)
        first = await llm(model="m", messages=Q, logprobs=True)
        second = await llm(model="m", messages=Q, logprobs=True)
    assert first["choices"][0]["logprobs"] is not None
    assert second["choices"][0]["logprobs"] is not None  # the cache cannot replay them: no hit
    assert len(calls) == 2


@pytest.mark.parametrize("shape", ["no_choices", "finish_error", "empty_message"])
async def test_an_upstream_failure_returned_as_a_reply_is_not_cached(shape):
    calls = []

    async def upstream(**kwargs):
        calls.append(kwargs)
        reply = await FakeR1()(**kwargs)
        if shape == "no_choices":  # OpenRouter-style: HTTP 200 with an error body
            reply["choices"] = []
            reply["error"] = {"message": "provider overloaded", "code": 502}
        elif shape == "finish_error":
            reply["choices"][0]["finish_reason"] = "error"
        else:
            reply["choices"][0]["message"] = {"role": "assistant", "content": None}
        return reply

    async with pipeline() as pipe:
        llm = r1mw.wrap(upstream, pipe)
        await llm(model="m", messages=Q)
        await llm(model="m", messages=Q)
    assert len(calls) == 2


async def test_a_reply_cut_by_max_tokens_is_cached_under_its_max_tokens():
    # Decision (docs/design.md): finish_reason "length" is the upstream's answer to *this*
    # max_tokens, which is in the key; the same request asked again gets the same kind of reply.
    calls = []

    async def upstream(**kwargs):
        calls.append(kwargs)
        reply = await FakeR1()(**kwargs)
        reply["choices"][0]["finish_reason"] = "length"
        return reply

    async with pipeline() as pipe:
        llm = r1mw.wrap(upstream, pipe)
        await llm(model="m", messages=Q, max_tokens=5)
        await llm(model="m", messages=Q, max_tokens=5)
        await llm(model="m", messages=Q, max_tokens=500)
    assert len(calls) == 2


# -- keys --------------------------------------------------------------------------------------

async def test_lone_surrogates_in_a_prompt_do_not_raise():
    fake = FakeR1()
    bad = [{"role": "user", "content": "price of \ud83d AAPL"}]
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        reply = await llm(model="m", messages=bad)
    assert reply["choices"][0]["message"]["content"] == fake.answer_for(bad[0]["content"])
    k = key_of("", "m", bad, {})
    assert k != key_of("", "m", [{"role": "user", "content": "price of \\ud83d AAPL"}], {})
    assert k != key_of("", "m", [{"role": "user", "content": "price of \ud83e AAPL"}], {})
    assert k != key_of("", "m", [{"role": "user", "content": "price of \ud83d AAPL".encode("utf-8", "surrogatepass")}], {})


def test_pydantic_classes_as_response_format_are_keyed_by_their_schema():
    pydantic = pytest.importorskip("pydantic")
    A = pydantic.create_model("Out", price=(float, ...))
    B = pydantic.create_model("Out", ticker=(str, ...))
    assert repr(A) == repr(B)  # what the key used to see
    ka = key_of("", "m", Q, {"response_format": A})
    assert ka != key_of("", "m", Q, {"response_format": B})
    assert ka == key_of("", "m", Q, {"response_format": pydantic.create_model("Out", price=(float, ...))})


def test_objects_without_a_faithful_repr_are_keyed_by_content():
    class Opaque:  # a tool spec object with the default repr (an address, reusable after GC)
        def __init__(self, name):
            self.name = name

    ka = key_of("", "m", Q, {"tools": [Opaque("buy")]})
    assert ka != key_of("", "m", Q, {"tools": [Opaque("sell")]})
    assert ka == key_of("", "m", Q, {"tools": [Opaque("buy")]})


# -- lifecycle ---------------------------------------------------------------------------------

async def test_a_closed_pipeline_refuses_requests():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=Q)
    with pytest.raises(r1mw.PipelineStateError, match="closed"):
        await llm(model="m", messages=Q)
    await pipe.close()  # idempotent
    with pytest.raises(r1mw.PipelineStateError, match="closed"):
        await pipe.start()  # a closed pipeline does not start again
    with pytest.raises(r1mw.PipelineStateError):
        await llm(model="m", messages=[{"role": "user", "content": "new"}])


async def test_a_pipeline_closed_before_its_first_request_refuses_it_and_starts_nothing():
    before = set(asyncio.all_tasks())
    fake = FakeR1()
    pipe = r1mw.Pipeline(r1mw.Settings(stages="prefetch,exact"))
    llm = r1mw.wrap(fake, pipe)
    await pipe.close()  # e.g. an application shutting down before any traffic
    with pytest.raises(r1mw.PipelineStateError, match="closed"):
        await llm(model="m", messages=Q)
    with pytest.raises(r1mw.PipelineStateError, match="closed"):
        async with pipe:
            pass
    assert fake.calls == [] and pipe.store is None and pipe.stages == []
    assert {t for t in asyncio.all_tasks() if not t.done()} - before == set()


async def test_close_during_a_lazy_start_waits_for_it_then_releases_everything():
    entered, gate, stages = asyncio.Event(), asyncio.Event(), []

    class GatedStart:
        name = "gated"

        def __init__(self, pipeline):
            self.closed = False
            stages.append(self)

        async def start(self):  # a start that awaits (a model load, a server bind)
            entered.set()
            await gate.wait()

        async def close(self):
            self.closed = True

        async def handle(self, request, call_next):
            return await call_next(request)

    class Plugin:
        __name__ = "gated-start-plugin"

        @r1mw.hookimpl
        def r1mw_register_stages(self):
            return {"gated": GatedStart}

    before = set(asyncio.all_tasks())
    fake = FakeR1()
    pipe = r1mw.Pipeline(r1mw.Settings(stages="prefetch,gated,exact"), plugins=[Plugin()])
    llm = r1mw.wrap(fake, pipe)
    first = asyncio.ensure_future(llm(model="m", messages=Q))  # starts the pipeline
    await entered.wait()
    closing = asyncio.ensure_future(pipe.close())
    await _until(lambda: pipe._closed)
    assert not closing.done()  # it waits for the start in progress
    gate.set()
    await closing
    with pytest.raises(r1mw.PipelineStateError, match="closed"):
        await first
    with pytest.raises(r1mw.PipelineStateError, match="closed"):
        await llm(model="m", messages=Q)
    assert fake.calls == [] and stages[0].closed
    assert {t for t in asyncio.all_tasks() if not t.done()} - before == set()  # the prefetch worker too


class _Background:
    name = "bg"

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.task = None
        self.closed = False

    async def start(self):
        self.task = self.pipeline.spawn(asyncio.Event().wait(), name="bg-forever")

    async def close(self):
        self.closed = True

    async def handle(self, request, call_next):
        return await call_next(request)


class _Broken:
    name = "broken"

    def __init__(self, pipeline):
        pass

    async def start(self):
        raise RuntimeError("cannot start")

    async def handle(self, request, call_next):
        return await call_next(request)


class _Plugin:
    __name__ = "hardening-test-plugin"
    stages: dict = {}

    @r1mw.hookimpl
    def r1mw_register_stages(self):
        return {"bg": self.make_bg, "broken": _Broken}

    def make_bg(self, pipeline):
        stage = _Background(pipeline)
        self.stages["bg"] = stage
        return stage


async def test_a_failed_start_releases_what_it_had_started():
    plugin = _Plugin()
    pipe = r1mw.Pipeline(r1mw.Settings(stages="bg,broken,exact"), plugins=[plugin])
    with pytest.raises(r1mw.PluginError, match="'broken' .plugin 'hardening-test-plugin'. failed to start.*cannot start"):
        await pipe.start()
    bg = plugin.stages["bg"]
    await _until(bg.task.done)
    assert bg.task.cancelled() and bg.closed
    with pytest.raises(r1mw.PipelineStateError, match="failed to start.*cannot start"):
        await pipe.handle(pipe.request("m", Q, {}, {}, upstream=FakeR1()))


# -- settings ----------------------------------------------------------------------------------

def test_no_tiers_is_a_one_line_config_error():
    with pytest.raises(r1mw.ConfigError) as err:
        r1mw.Settings.from_env({"R1MW_TIERS": ""})
    assert "R1MW_TIERS" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(r1mw.ConfigError, match="R1MW_TIERS"):
        r1mw.Settings(tiers=" , ")


# -- disk tier ---------------------------------------------------------------------------------

def test_two_disk_tiers_of_one_process_on_one_directory_do_not_share_temp_names(tmp_path, monkeypatch):
    a = DiskTier(tmp_path, "l2")
    b = DiskTier(tmp_path, "l2")
    key_a, key_b = bytes([7]) + bytes(15), bytes([7]) + bytes(14) + b"\x01"  # one fan-out directory
    real_replace = os.replace
    nested = []

    def replace(src, dst):
        # `a` has written its temp file and is about to rename it: `b` writes meanwhile.
        if not nested:
            nested.append(True)
            b.set_sync(key_b, b"b's value")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    a.set_sync(key_a, b"a's value")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (a.write_errors, b.write_errors) == (0, 0)
    assert a.get_sync(key_a) == b"a's value"
    assert b.get_sync(key_b) == b"b's value"


# -- plugin manager ----------------------------------------------------------------------------

class _FailingFactory:
    __name__ = "hardening-failing-factory"

    @r1mw.hookimpl
    def r1mw_register_stages(self):
        def build(pipeline):
            raise KeyError("the stage's own bug")

        return {"fragile": build}


async def test_a_stage_factory_that_raises_is_a_plugin_error_naming_it():
    pipe = r1mw.Pipeline(r1mw.Settings(stages="exact,fragile"), plugins=[_FailingFactory()])
    with pytest.raises(r1mw.PluginError) as err:
        await pipe.start()
    message = str(err.value)
    assert "R1MW_STAGES" in message and "'fragile'" in message and "the stage's own bug" in message
    assert "\n" not in message and isinstance(err.value.__cause__, KeyError)


async def test_naming_a_built_in_module_in_r1mw_plugins_is_harmless():
    fake = FakeR1()
    async with r1mw.Pipeline(r1mw.Settings(stages="exact", plugins="r1mw_plugins.exact")) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=Q)
        await llm(model="m", messages=Q)
    assert len(fake.calls) == 1


async def test_requests_in_flight_when_the_pipeline_closes_get_a_clear_error_not_a_cancellation():
    gate = asyncio.Event()
    fake = FakeR1()

    async def slow(**kwargs):
        await gate.wait()
        return await fake(**kwargs)

    pipe = pipeline()
    await pipe.start()
    llm = r1mw.wrap(slow, pipe)
    leader = asyncio.ensure_future(llm(model="m", messages=Q))
    await _until(lambda: len(pipe.singleflight) == 1)
    waiter = asyncio.ensure_future(llm(model="m", messages=Q))
    await _until(lambda: pipe.singleflight.coalesced == 1)
    await pipe.close()
    for task in (leader, waiter):
        await _until(task.done)
        assert not task.cancelled()  # nobody cancelled these callers: they must not see CancelledError
        assert isinstance(task.exception(), r1mw.PipelineStateError)


async def test_a_stream_finishing_after_close_stores_nothing_and_leaves_no_task():
    fake = FakeR1()
    before = set(asyncio.all_tasks())
    pipe = pipeline()
    await pipe.start()
    llm = r1mw.wrap(fake, pipe)
    stream = await llm(model="m", messages=Q, stream=True)
    await pipe.close()
    chunks = [c async for c in stream]  # the caller still reads what it was given
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    for _ in range(10):
        await asyncio.sleep(0)
    assert pipe.stage("exact").stored == 0
    assert {t for t in asyncio.all_tasks() if not t.done()} - before == set()


def test_a_dotenv_line_naming_a_flag_that_cannot_be_parsed_is_a_config_error(tmp_path):
    env = tmp_path / "quirky.env"
    # python-dotenv skips this line with a warning: the namespace would silently be "".
    env.write_text('CACHE_L1_SIZE=5\nexport SOMETHING_ELSE\nR1MW_NAMESPACE="desk-a\n')
    with pytest.raises(r1mw.ConfigError) as err:
        r1mw.Settings.from_env({}, dotenv=env)
    assert "R1MW_NAMESPACE" in str(err.value) and "line 3" in str(err.value) and "\n" not in str(err.value)
    env.write_text('CACHE_L1_SIZE=5\nnot a line of ours\nR1MW_NAMESPACE="desk-a"  # quoted\n')
    settings = r1mw.Settings.from_env({}, dotenv=env)  # foreign junk is not our business
    assert (settings.l1_size, settings.namespace) == (5, "desk-a")


def test_a_dotenv_file_that_is_not_utf8_is_a_config_error(tmp_path):
    env = tmp_path / "latin1.env"
    env.write_bytes(b"R1MW_NAMESPACE=d\xe9sk\n")
    with pytest.raises(r1mw.ConfigError, match="latin1.env"):
        r1mw.Settings.from_env({}, dotenv=env)


# -- RAM tier byte bound -----------------------------------------------------------------------

def test_the_ram_byte_budget_counts_tool_calls_and_meta():
    from r1mw.tiers import Entry, MemoryTier

    tier = MemoryTier("l1", max_entries=1000, max_bytes=20_000)
    big_args = "x" * 5_000
    for i in range(20):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": big_args}}
        reply = r1mw.Reply(choices=(r1mw.Choice(content=None, tool_calls=(call,), finish_reason="tool_calls"),))
        tier.set_nowait(bytes([i]) * 16, Entry(reply, meta={"question": "y" * 1_000}))
    held = len(tier)
    assert held * 6_000 <= 20_000  # what really sits in RAM stays within the budget


async def test_a_stream_chunk_r1mw_cannot_read_still_reaches_the_caller_and_nothing_is_stored():
    fake = FakeR1()

    async def odd(**kwargs):
        result = await fake(**kwargs)

        async def chunks():
            async for chunk in result:
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content") == "Answer ":
                    chunk["choices"][0]["index"] = "first"  # a provider quirk r1mw cannot normalize
                yield chunk

        return chunks()

    async with pipeline() as pipe:
        llm = r1mw.wrap(odd, pipe)
        chunks = [c async for c in await llm(model="m", messages=Q, stream=True)]
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"  # the whole stream arrived
        for _ in range(10):
            await asyncio.sleep(0)
        assert pipe.stage("exact").stored == 0
        assert pipe.stats()["errors"] == 0


async def test_a_request_r1mw_cannot_key_goes_upstream_uncached():
    class Unprintable:  # a parameter value whose repr fails (a library object mid-teardown...)
        def __repr__(self):
            raise RuntimeError("no repr")

    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        for _ in range(2):
            reply = await llm(model="m", messages=Q, extra_body={"opaque": Unprintable()})
            assert reply["choices"][0]["message"]["content"] == fake.answer_for(Q[0]["content"])
        assert pipe.stage("exact").stats()["unkeyable"] == 2
    assert len(fake.calls) == 2


@pytest.mark.parametrize("value", ["false", "no", 2])
async def test_a_cache_switch_that_is_not_a_boolean_is_a_clear_error(value):
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        with pytest.raises(TypeError, match="no-store"):
            await llm(model="m", messages=Q, cache={"no-store": value})  # bool("false") was True
        await llm(model="m", messages=Q, cache={"no-store": 0, "no-cache": False})
        await llm(model="m", messages=Q)
    assert len(fake.calls) == 1


@pytest.mark.parametrize("cache, builtin, named", [
    ({"ttl": "abc"}, ValueError, "'ttl'"),
    ({"ttl": float("nan")}, ValueError, "'ttl'"),
    ({"ttl": [1]}, ValueError, "'ttl'"),
    ({"no-cache": "yes"}, TypeError, "'no-cache'"),
    ({"bogus": 1, 2: 3}, TypeError, "'bogus'"),
    ("no-cache", TypeError, "'no-cache'"),
])
async def test_a_bad_cache_value_is_an_r1mw_error_saying_what_is_allowed(cache, builtin, named):
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        with pytest.raises(CacheControlError) as err:
            await llm(model="m", messages=Q, cache=cache)
    assert isinstance(err.value, r1mw.R1mwError) and isinstance(err.value, builtin)  # old except clauses hold
    message = str(err.value)
    assert named in message and ("expected" in message or "allowed" in message)
    assert "\n" not in message and fake.calls == []
