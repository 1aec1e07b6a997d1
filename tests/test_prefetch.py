"""The prefetch predictor: learns sessions, prefetches within hard budgets, never hurts a caller."""

from __future__ import annotations

import asyncio
import re

import msgpack
import pytest
from hypothesis import given, settings as hsettings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import r1mw
from r1mw.budget import Budget
from r1mw.predictor import SequenceModel
from r1mw.testing import FakeR1
from r1mw.types import Request

pytestmark = pytest.mark.anyio

# A minimal template stage for these tests (the real one is r1mw_plugins.template): it
# annotates requests exactly as the contract says and publishes render().
_SHAPES = {"analyze": "Analyze {symbol} using RSI", "risk": "Assess risk for {symbol}",
           "predict": "Predict movement for {symbol}"}
_PATTERNS = {tid: re.compile("^" + re.escape(t).replace(re.escape("{symbol}"), r"(?P<symbol>\w+)") + "$")
             for tid, t in _SHAPES.items()}


class _Templates:
    def render(self, template_id, slots):
        return _SHAPES[template_id].format(**slots)


class _TemplateStage:
    name = "tpl"

    def __init__(self, pipeline):
        pipeline.services["templates"] = _Templates()

    async def handle(self, request, call_next):
        for tid, pattern in _PATTERNS.items():
            m = pattern.match(request.question)
            if m:
                request.meta["template_id"] = tid
                request.meta["slots"] = m.groupdict()
                break
        return await call_next(request)


class _TestTemplates:
    @r1mw.hookimpl
    def r1mw_register_stages(self):
        return {"tpl": _TemplateStage}


def pipeline(**kw):
    settings = dict(stages="prefetch,tpl,exact", prefetch_min_prob=0.5, prefetch_max_inflight=4,
                    prefetch_max_per_minute=100, prefetch_token_budget=10_000)
    settings.update(kw)
    return r1mw.Pipeline(r1mw.Settings(**settings), plugins=[_TestTemplates()])


def ask(text):
    return [{"role": "system", "content": "You are an analyst."}, {"role": "user", "content": text}]


async def unstore(pipe, messages, model="r1", namespace=""):
    """Take an answer out of the cache, so that only a prefetch can bring it back."""
    assert await pipe.store.delete(r1mw.key_of(namespace, model, messages, {}))


async def teach_follow_up(llm, pipe, first, follow_up, first_model="r1"):
    """Three sessions ask ``first`` then ``follow_up`` (untemplated); the follow-up's answer is
    then taken out of the cache, so that only a prefetch can bring it back."""
    for s in range(3):
        await llm(model=first_model, messages=ask(first), cache={"session": f"u{s}"})
        await llm(model="r1", messages=ask(follow_up), cache={"session": f"u{s}"})
    await settle(pipe)
    await unstore(pipe, ask(follow_up))


async def settle(pipe, until=lambda s: True, rounds=400):
    """Let background learning and prefetch calls run (bounded; no timing asserted)."""
    for _ in range(rounds):
        await asyncio.sleep(0.005)
        stats = pipe.stage("prefetch").stats()
        if until(stats) and stats["inflight"] == 0 and not pipe.stage("prefetch")._queue:
            return stats
    return pipe.stage("prefetch").stats()


async def run_sessions(llm, tickers, session_prefix="s"):
    for i, t in enumerate(tickers):
        for shape in ("analyze", "risk", "predict"):
            await llm(model="r1", messages=ask(_SHAPES[shape].format(symbol=t)),
                      cache={"session": f"{session_prefix}{i}"})


def test_sequence_model_learns_transitions_with_slot_carry_over():
    m = SequenceModel(order=2, min_support=2)
    for t in ("AAPL", "MSFT", "TSLA"):
        m.observe(t, "t:analyze", {"symbol": t})
        m.observe(t, "t:risk", {"symbol": t})
    m.observe("new", "t:analyze", {"symbol": "NVDA"})
    best = m.predict("new")[0]
    assert best.symbol == "t:risk" and dict(best.slots) == {"symbol": "NVDA"}
    assert best.probability == pytest.approx(3 / 4 * 3 / 4)  # smoothed: 3 of 3, slot carried 3 of 3
    data = m.to_data()
    fresh = SequenceModel(order=2, min_support=2)
    fresh.load_data(data)
    fresh.observe("again", "t:analyze", {"symbol": "AMD"})
    assert dict(fresh.predict("again")[0].slots) == {"symbol": "AMD"}


def test_sequence_model_memory_is_bounded():
    m = SequenceModel(order=3, max_contexts=50, max_successors=4, max_sessions=10, max_examples=5, max_known=20)
    for i in range(2000):
        m.observe(f"s{i % 37}", f"q:{i % 101}", None, example={"messages": [], "params": {}})
        # templated requests of many users, tickers and slot names: memories and known values
        m.observe(f"s{i % 37}", "t:risk", {"symbol": f"T{i}", f"slot{i % 50}": f"v{i}"}, user=f"u{i % 23}")
        m.observe(f"s{i % 37}", "t:pos", {"position": f"{i} shares of T{i}"}, user=f"u{i % 23}")
    assert len(m) <= 50 and len(m._sessions) <= 10 and len(m._examples) <= 5
    assert len(m._users) <= 10 and len(m._known) <= 20 and len(m._usual) <= 20 and len(m._next) <= 20
    assert all(len(s.memory) <= 32 for s in m._sessions.values()) and all(len(u) <= 32 for u in m._users.values())
    assert all(len(s.counts) <= 4 for s in m._contexts.values())


async def test_a_learned_session_pattern_turns_the_next_request_into_a_hit():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await run_sessions(llm, ["AAPL", "MSFT", "TSLA"])
        await settle(pipe)
        calls = len(fake.calls)
        await llm(model="r1", messages=ask("Analyze NVDA using RSI"), cache={"session": "new"})
        stats = await settle(pipe, until=lambda s: s["issued"] >= 1)
        assert stats["issued"] >= 1
        prefetched = len(fake.calls) - calls - 1
        assert prefetched >= 1 and "Assess risk for NVDA" in [c["messages"][-1]["content"] for c in fake.calls]
        risk_calls = sum(c["messages"][-1]["content"] == "Assess risk for NVDA" for c in fake.calls)
        await llm(model="r1", messages=ask("Assess risk for NVDA"), cache={"session": "new"})
        # the analyst's question was answered by the prefetched entry: no call of its own
        assert sum(c["messages"][-1]["content"] == "Assess risk for NVDA" for c in fake.calls) == risk_calls == 1
        stats = await settle(pipe, until=lambda s: s["used"] >= 1)
        assert stats["used"] >= 1 and stats["tokens_saved"] > 0
        assert pipe.stats()["hits"] >= 1


async def test_hits_outside_sessions_skip_the_learner_unless_a_prefetch_waits_to_be_counted():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        stage = pipe.stage("prefetch")
        await llm(model="r1", messages=ask("What is a basis point?"))
        await settle(pipe)
        observed = stage.counts["observed"]
        for _ in range(5):  # hits, no session, nothing prefetched: nothing to learn or count
            await llm(model="r1", messages=ask("What is a basis point?"))
        assert (await settle(pipe))["observed"] == observed
        await run_sessions(llm, ["AAPL", "MSFT", "TSLA"])
        await llm(model="r1", messages=ask("Analyze NVDA using RSI"), cache={"session": "new"})
        await settle(pipe, until=lambda s: s["issued"] >= 1 and s["outstanding"] >= 1)
        assert stage.stats()["outstanding"] >= 1
        # Another desk tool, no session, asks the prefetched question: that prefetch was used.
        calls = len(fake.calls)
        await llm(model="r1", messages=ask("Assess risk for NVDA"))
        assert len(fake.calls) == calls
        stats = await settle(pipe, until=lambda s: s["used"] >= 1)
        assert stats["used"] == 1 and stats["tokens_saved"] > 0


async def test_hits_on_entries_another_process_stored_teach_what_a_prefetch_may_cost(tmp_path):
    # A hit's cost is learnt from the hit only where this process never saw it miss: here
    # every request of the second pipeline is a hit, and its one prediction needs an estimate.
    fake = FakeR1()
    async with pipeline(cache_dir=str(tmp_path), tiers="l1,l2") as a:
        llm = r1mw.wrap(fake, a)
        for t in ("AAPL", "MSFT", "TSLA"):
            for shape in ("analyze", "risk"):
                await llm(model="r1", messages=ask(_SHAPES[shape].format(symbol=t)))
        await llm(model="r1", messages=ask("Analyze AMD using RSI"))
    (tmp_path / "prefetch" / "model.msgpack").unlink()  # what a's learner kept is not b's
    async with pipeline(cache_dir=str(tmp_path), tiers="l1,l2") as b:
        llm = r1mw.wrap(fake, b)
        calls = len(fake.calls)
        for i, t in enumerate(("AAPL", "MSFT", "TSLA")):
            for shape in ("analyze", "risk"):
                await llm(model="r1", messages=ask(_SHAPES[shape].format(symbol=t)), cache={"session": f"b{i}"})
        await llm(model="r1", messages=ask("Analyze AMD using RSI"), cache={"session": "new"})
        assert len(fake.calls) == calls  # every one a hit
        stats = await settle(b, until=lambda s: s["issued"] >= 1)
        assert stats["issued"] == 1 and stats["no_estimate"] == 0
        assert fake.calls[-1]["messages"][-1]["content"] == "Assess risk for AMD"


async def test_a_miss_s_follow_up_is_prefetched_while_r1_is_still_answering_the_miss():
    # Learnt after its answer, a question's follow-up was prefetched only once R1 had answered
    # (seconds to minutes): half the prefetches used were still in flight when asked for.
    fake = FakeR1()
    answering = asyncio.Event()

    async def upstream(**kwargs):
        if kwargs["messages"][-1]["content"] == "Analyze AMD using RSI":
            await answering.wait()  # R1 thinking
        return await fake(**kwargs)

    async with pipeline() as pipe:
        llm = r1mw.wrap(upstream, pipe)
        await run_sessions(llm, ["AAPL", "MSFT", "TSLA"])
        await settle(pipe)
        asked = asyncio.create_task(llm(model="r1", messages=ask("Analyze AMD using RSI"), cache={"session": "z"}))
        stats = await settle(pipe, until=lambda s: s["issued"] >= 1)
        assert not asked.done() and stats["issued"] == 1
        assert fake.calls[-1]["messages"][-1]["content"] == "Assess risk for AMD"
        answering.set()
        await asked
        await llm(model="r1", messages=ask("Assess risk for AMD"), cache={"session": "z"})
        stats = await settle(pipe, until=lambda s: s["used"] >= 1)
    asked_risk = [c for c in fake.calls if c["messages"][-1]["content"] == "Assess risk for AMD"]
    assert len(asked_risk) == 1 and stats["used"] == 1 and stats["observed"] == 3 * 3 + 2
    # the miss was learnt once, when it went upstream, and its cost when its answer came
    assert pipe.stage("prefetch")._cost["t:analyze"] == 30


async def test_a_real_request_waits_for_its_prefetch_in_flight():
    fake = FakeR1()
    slow = False

    async def upstream(**kwargs):
        if slow and kwargs["messages"][-1]["content"].startswith("Assess risk"):
            await asyncio.sleep(0.2)  # the prefetched call takes a while
        return await fake(**kwargs)

    async with pipeline() as pipe:
        llm = r1mw.wrap(upstream, pipe)
        await run_sessions(llm, ["AAPL", "MSFT", "TSLA"])
        await settle(pipe)
        slow = True
        await llm(model="r1", messages=ask("Analyze AMD using RSI"), cache={"session": "z"})
        for _ in range(100):  # wait until the prefetch call is in flight
            await asyncio.sleep(0.005)
            if pipe.stage("prefetch").budget.inflight:
                break
        assert pipe.stage("prefetch").budget.inflight >= 1
        risk_calls = lambda: sum(c["messages"][-1]["content"] == "Assess risk for AMD" for c in fake.calls)
        reply = await llm(model="r1", messages=ask("Assess risk for AMD"), cache={"session": "z"})
        assert reply["choices"][0]["message"]["content"] == fake.answer_for("Assess risk for AMD")
        assert risk_calls() == 1  # single-flight across the prefetch and the real request
        stats = await settle(pipe, until=lambda s: s["used"] >= 1)
        assert stats["used"] >= 1 and pipe.stats()["coalesced"] >= 1


async def test_a_prediction_the_cache_already_answers_uses_none_of_the_budget():
    fake = FakeR1()
    async with pipeline(prefetch_max_per_minute=1) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await run_sessions(llm, ["AAPL", "MSFT", "TSLA"])
        await settle(pipe)
        # The desk goes over tickers it asked about: every prediction is in the cache already.
        for i, t in enumerate(["AAPL", "MSFT", "TSLA"]):
            await llm(model="r1", messages=ask(_SHAPES["analyze"].format(symbol=t)), cache={"session": f"again{i}"})
        stats = await settle(pipe, until=lambda s: s["already_cached"] >= 3)
        assert stats["already_cached"] >= 3 and stats["issued"] == 0
        calls = len(fake.calls)
        await llm(model="r1", messages=ask(_SHAPES["analyze"].format(symbol="AMD")), cache={"session": "new"})
        stats = await settle(pipe, until=lambda s: s["issued"] >= 1)
        # The one call a minute allows went to the prediction that needed the upstream.
        assert stats["issued"] == 1 and stats["refused"]["rate"] == 0
        assert [c["messages"][-1]["content"] for c in fake.calls[calls:]] == ["Analyze AMD using RSI", "Assess risk for AMD"]


class _Hold:
    """A stage below exact that holds prefetches (inside their single-flight) until released."""

    name = "hold"
    gate: asyncio.Event | None = None

    def __init__(self, pipeline):
        pass

    async def handle(self, request, call_next):
        if request.meta.get("prefetch") and _Hold.gate is not None:
            await _Hold.gate.wait()
        return await call_next(request)


class _HoldPlugin:
    @r1mw.hookimpl
    def r1mw_register_stages(self):
        return {"hold": _Hold}


async def test_a_real_request_waiting_on_a_prefetch_its_budget_refuses_makes_its_own_call():
    fake = FakeR1()
    settings = r1mw.Settings(stages="prefetch,tpl,exact,hold", prefetch_min_prob=0.5, prefetch_max_inflight=0,
                             prefetch_max_per_minute=100, prefetch_token_budget=10_000)
    _Hold.gate = asyncio.Event()
    async with r1mw.Pipeline(settings, plugins=[_TestTemplates(), _HoldPlugin()]) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await run_sessions(llm, ["AAPL", "MSFT", "TSLA"])
        await settle(pipe)
        await llm(model="r1", messages=ask("Analyze AMD using RSI"), cache={"session": "z"})
        # The prefetch of "Assess risk for AMD" leads its flight and is held below exact...
        await settle(pipe, until=lambda s: len(pipe.singleflight) == 1, rounds=100)
        assert len(pipe.singleflight) == 1
        coalesced = pipe.singleflight.coalesced
        asked = [asyncio.ensure_future(llm(model="r1", messages=ask("Assess risk for AMD"), cache={"session": f"z{i}"}))
                 for i in range(5)]
        while pipe.singleflight.coalesced < coalesced + 5:  # ...five real requests join it...
            await asyncio.sleep(0.001)
        _Hold.gate.set()  # ...then the prefetch reaches the upstream, whose budget refuses it.
        replies = await asyncio.gather(*asked)
    _Hold.gate = None
    assert {r["choices"][0]["message"]["content"] for r in replies} == {fake.answer_for("Assess risk for AMD")}
    # One of them makes the call, the others wait on it: one call, not one each.
    assert sum(c["messages"][-1]["content"] == "Assess risk for AMD" for c in fake.calls) == 1
    assert pipe.stage("prefetch").budget.refused["inflight"] >= 1


async def test_a_failing_prefetch_passes_its_error_to_no_real_request_waiting_on_it():
    # The prefetch runs on the client of the request that triggered it; a real request that
    # waits on it (single-flight) must get its own answer, not that client's error.
    good, broken = FakeR1(), FakeR1()
    settings = r1mw.Settings(stages="prefetch,tpl,exact,hold", prefetch_min_prob=0.5,
                             prefetch_max_per_minute=100, prefetch_token_budget=10_000)
    _Hold.gate = asyncio.Event()
    async with r1mw.Pipeline(settings, plugins=[_TestTemplates(), _HoldPlugin()]) as pipe:
        await run_sessions(r1mw.wrap(good, pipe), ["AAPL", "MSFT", "TSLA"])
        await settle(pipe)
        await r1mw.wrap(broken, pipe)(model="r1", messages=ask("Analyze AMD using RSI"), cache={"session": "z"})
        broken.fail = PermissionError("401: this analyst's key was revoked")
        await settle(pipe, until=lambda s: len(pipe.singleflight) == 1, rounds=100)
        coalesced = pipe.singleflight.coalesced
        asked = [asyncio.ensure_future(r1mw.wrap(good, pipe)(model="r1", messages=ask("Assess risk for AMD"),
                                                             cache={"session": f"b{i}"})) for i in range(3)]
        while pipe.singleflight.coalesced < coalesced + 3:
            await asyncio.sleep(0.001)
        _Hold.gate.set()
        replies = await asyncio.gather(*asked)
        stats = pipe.stage("prefetch").stats()
    _Hold.gate = None
    assert {r["choices"][0]["message"]["content"] for r in replies} == {good.answer_for("Assess risk for AMD")}
    assert sum(c["messages"][-1]["content"] == "Assess risk for AMD" for c in good.calls) == 1
    assert stats["errors"] == 1


async def test_untemplated_sequences_are_learned_too():
    fake = FakeR1()
    first, follow_up = "What moved the market today?", "Summarize the Fed minutes"
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await teach_follow_up(llm, pipe, first, follow_up)
        await llm(model="r1", messages=ask(first), cache={"session": "u9"})
        stats = await settle(pipe, until=lambda s: s["issued"] >= 1)
        assert stats["issued"] == 1
        calls = len(fake.calls)
        await llm(model="r1", messages=ask(follow_up), cache={"session": "u9"})
        assert len(fake.calls) == calls
        assert (await settle(pipe, until=lambda s: s["used"] >= 1))["used"] == 1


async def test_a_failing_upstream_during_prefetch_affects_no_caller():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await run_sessions(llm, ["AAPL", "MSFT", "TSLA"])
        await settle(pipe)
        original = fake.__call__

        async def flaky(**kwargs):
            if kwargs["messages"][-1]["content"].startswith("Assess risk for NVDA"):
                raise ConnectionError("upstream down")
            return await original(**kwargs)

        llm = r1mw.wrap(flaky, pipe)
        reply = await llm(model="r1", messages=ask("Analyze NVDA using RSI"), cache={"session": "n"})
        assert reply["choices"][0]["message"]["content"] == fake.answer_for("Analyze NVDA using RSI")
        stats = await settle(pipe, until=lambda s: s["errors"] >= 1)
        assert stats["errors"] >= 1 and pipe.stats()["errors"] == 0


async def test_shutdown_with_prefetches_in_flight_leaves_nothing_running_or_half_stored():
    fake = FakeR1()
    before = set(asyncio.all_tasks())
    pipe = pipeline()
    await pipe.start()
    llm = r1mw.wrap(fake, pipe)
    await run_sessions(llm, ["AAPL", "MSFT", "TSLA"])
    await settle(pipe)
    original = fake.__call__

    async def slow_risk(**kwargs):  # the prefetched question will still be running at close
        if kwargs["messages"][-1]["content"] == "Assess risk for NVDA":
            await asyncio.sleep(30)
        return await original(**kwargs)

    llm = r1mw.wrap(slow_risk, pipe)
    await llm(model="r1", messages=ask("Analyze NVDA using RSI"), cache={"session": "q"})
    for _ in range(200):
        await asyncio.sleep(0.005)
        if pipe.stage("prefetch").budget.inflight:
            break
    assert pipe.stage("prefetch").budget.inflight >= 1
    stored_before = pipe.stage("exact").stored
    await pipe.close()
    assert set(asyncio.all_tasks()) - before == set()
    assert pipe.stage("exact").stored == stored_before  # the cancelled call stored nothing


async def test_the_model_persists_across_restarts():
    fake = FakeR1()
    async with pipeline() as pipe:
        await run_sessions(r1mw.wrap(fake, pipe), ["AAPL", "MSFT", "TSLA"])
        await settle(pipe)
    async with pipeline() as pipe:  # same cache dir (the test's), fresh process state
        llm = r1mw.wrap(fake, pipe)
        await llm(model="r1", messages=ask("Analyze AMD using RSI"), cache={"session": "after"})
        stats = await settle(pipe, until=lambda s: s["issued"] >= 1)
        assert stats["issued"] >= 1


async def test_off_when_its_flag_is_off():
    async with pipeline(prefetch_enabled=False) as pipe:
        assert pipe.stage("prefetch") is None and [s.name for s in pipe.stages] == ["tpl", "exact"]


class BudgetMachine(RuleBasedStateMachine):
    """Random traffic against the budget: no limit is ever exceeded."""

    def __init__(self):
        super().__init__()
        self.now = 0.0
        self.budget = Budget(max_inflight=3, max_per_minute=5, tokens_per_hour=5000, clock=lambda: self.now)
        self.grants = []
        self.starts = []
        self.spent = []

    @rule(estimate=st.integers(1, 3000))
    def acquire(self, estimate):
        grant = self.budget.try_acquire(estimate)
        if grant is not None:
            self.grants.append(grant)
            self.starts.append(self.now)

    @rule(data=st.data())
    def release(self, data):
        if self.grants:
            grant = self.grants.pop(data.draw(st.integers(0, len(self.grants) - 1)))
            spent = data.draw(st.integers(0, grant.reserved))  # a reply costs at most its reservation
            self.budget.release(grant, spent)
            self.spent.append((self.now, spent))

    @rule(seconds=st.floats(0, 900))
    def wait(self, seconds):
        self.now += seconds

    @invariant()
    def limits_hold(self):
        assert len(self.grants) <= 3
        assert sum(1 for t in self.starts if t > self.now - 60) <= 5
        reserved = sum(g.reserved for g in self.grants)
        assert sum(s for t, s in self.spent if t > self.now - 3600) + reserved <= 5000


TestBudget = BudgetMachine.TestCase
TestBudget.settings = hsettings(max_examples=60, stateful_step_count=40, deadline=None)


@hsettings(max_examples=15, deadline=None)
@given(traffic=st.lists(st.tuples(st.sampled_from(["AAPL", "MSFT", "NVDA", "AMD", "TSLA"]),
                                  st.sampled_from(list(_SHAPES)), st.integers(0, 3)), min_size=5, max_size=40))
async def test_prefetch_never_exceeds_its_budgets_on_random_traffic(traffic):
    fake = FakeR1()
    inflight = peak = 0
    original = fake.__call__

    async def counting(**kwargs):
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            return await original(**kwargs)
        finally:
            inflight -= 1

    async with pipeline(prefetch_max_inflight=1, prefetch_max_per_minute=3, prefetch_token_budget=90) as pipe:
        llm = r1mw.wrap(counting, pipe)
        for symbol, shape, session in traffic:
            await llm(model="r1", messages=ask(_SHAPES[shape].format(symbol=symbol)), cache={"session": str(session)})
            await asyncio.sleep(0)
        stats = await settle(pipe)
    assert stats["issued"] <= 3  # per minute
    assert stats["tokens_spent"] <= 90  # each FakeR1 reply costs 30 tokens


# anyio's plugin runs the hypothesis-driven coroutine test on the asyncio backend.
test_prefetch_never_exceeds_its_budgets_on_random_traffic = pytest.mark.anyio(
    test_prefetch_never_exceeds_its_budgets_on_random_traffic)


def bundled_settings():
    from r1mw.templating import BUNDLED

    # two slots carried 3 times of 3: (3/4) ** 3 = 0.42 with the smoothing
    return r1mw.Settings(stages="prefetch,template,exact", templates=BUNDLED, prefetch_min_prob=0.4,
                         prefetch_max_inflight=4, prefetch_max_per_minute=100, prefetch_token_budget=10_000)


async def analysis_then(llm, prediction, namespace=""):
    """Three sessions: analysis of a ticker, then ``prediction`` (a format of the ticker)."""
    for i, ticker in enumerate(["AAPL", "MSFT", "TSLA"]):
        await llm(model="r1", messages=ask(f"Analyze {ticker} using RSI(14) mean reversion"),
                  cache={"session": f"t{i}", "namespace": namespace})
        await llm(model="r1", messages=ask(prediction.format(ticker)), cache={"session": f"t{i}", "namespace": namespace})


@pytest.mark.parametrize("namespace", ["", "desk-a"])
async def test_with_the_real_template_stage_the_next_templated_request_is_prefetched(namespace):
    fake = FakeR1()
    async with r1mw.Pipeline(bundled_settings()) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await analysis_then(llm, "Predict movement for {} over the next trading day", namespace)
        await settle(pipe)
        await llm(model="r1", messages=ask("Analyze NVDA using RSI(14) mean reversion"),
                  cache={"session": "t9", "namespace": namespace})
        stats = await settle(pipe, until=lambda s: s["issued"] >= 1)
        assert stats["issued"] == 1
        calls = len(fake.calls)
        # a reworded form of the predicted request: the template stage gives it the same key
        reply = await llm(model="r1", messages=ask("Forecast NVDA's price movement over the next trading day"),
                          cache={"session": "t9", "namespace": namespace})
        assert len(fake.calls) == calls
        assert "NVDA" in reply["choices"][0]["message"]["content"]
        assert (await settle(pipe, until=lambda s: s["used"] >= 1))["used"] == 1


async def test_a_prefetch_asks_in_the_desk_s_words_not_in_canonical_form():
    # The template stage keys "the next 14 days" by its canonical value ("next 2 weeks"); the
    # prefetch renders a predicted request with the values as the desk wrote them, so the
    # upstream is asked what the analyst would have asked (the workload's judge found a
    # prefetch that asked "over today" answer a later "over today's session").
    fake = FakeR1()
    settings = bundled_settings()
    async with r1mw.Pipeline(settings) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await analysis_then(llm, "Where do you expect {} to move over the next 14 days?")
        await settle(pipe)
        await llm(model="r1", messages=ask("Analyze NVDA using RSI(14) mean reversion"), cache={"session": "t9"})
        await settle(pipe, until=lambda s: s["issued"] >= 1)
        asked = fake.calls[-1]["messages"][-1]["content"]
        assert asked == "Predict movement for NVDA over the next 14 days"  # the main form, the desk's words
        calls = len(fake.calls)
        await llm(model="r1", messages=ask("Forecast NVDA's price movement over the next two weeks"), cache={"session": "t9"})
        assert len(fake.calls) == calls
    async with r1mw.Pipeline(settings) as pipe:  # restarted: the desk's words were kept with the model
        llm = r1mw.wrap(fake, pipe)
        await llm(model="r1", messages=ask("Analyze AMD using RSI(14) mean reversion"), cache={"session": "t10"})
        await settle(pipe, until=lambda s: s["issued"] >= 1)
        assert fake.calls[-1]["messages"][-1]["content"] == "Predict movement for AMD over the next 14 days"


async def test_a_prefetch_never_carries_another_namespace_s_request():
    # Hardening: transitions are learned across namespaces (template ids are shared), but an
    # untemplated request remembered in one namespace must never be re-issued in another,
    # under that other tenant's identity and key, nor stored in its cache.
    fake = FakeR1()
    secret = "Hedge our desk's private 1M-share position before the close"
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        for s in range(3):
            await llm(model="r1", messages=ask("Analyze AAPL using RSI"), user="alice",
                      cache={"namespace": "desk-a", "session": f"a{s}"})
            await llm(model="r1", messages=ask(secret), user="alice",
                      cache={"namespace": "desk-a", "session": f"a{s}"})
        await settle(pipe)
        await unstore(pipe, ask(secret), namespace="desk-a")
        await llm(model="r1", messages=ask("Analyze NVDA using RSI"), user="bob",
                  cache={"namespace": "desk-b", "session": "b0"})
        await settle(pipe, until=lambda s: s["observed"] >= 7)
        # Within desk-a the same pattern is still prefetched (the guard is not a switch-off).
        await llm(model="r1", messages=ask("Analyze MSFT using RSI"), user="alice",
                  cache={"namespace": "desk-a", "session": "a9"})
        stats = await settle(pipe, until=lambda s: s["issued"] >= 1)
    leaked = [c for c in fake.calls if c["messages"][-1]["content"] == secret and c.get("user") == "bob"]
    assert leaked == []
    assert stats["issued"] >= 1
    assert [c.get("user") for c in fake.calls if c["messages"][-1]["content"] == secret][-1] == "alice"


async def test_a_prefetch_sends_what_was_asked_not_what_the_caller_s_dicts_hold_now():
    # Hardening: remembered requests kept references to the caller's message dicts. A caller
    # reusing a dict for its next question made the prefetch send a question nobody asked (and,
    # mutated between the key and the upstream call, store a reply under another question's key).
    fake = FakeR1()
    sent = []

    async def upstream(**kwargs):
        sent.append(kwargs["messages"][-1]["content"])  # what went out, at the time it went out
        return await fake(**kwargs)

    first, follow_up = "What moved the market today?", "Summarize the Fed minutes"
    async with pipeline() as pipe:
        llm = r1mw.wrap(upstream, pipe)
        reused = {"role": "user", "content": follow_up}
        for s in range(3):
            await llm(model="r1", messages=ask(first), cache={"session": f"u{s}"})
            await llm(model="r1", messages=[ask("")[0], reused], cache={"session": f"u{s}"})
        await settle(pipe)
        await unstore(pipe, [ask("")[0], reused])
        reused["content"] = "Wire $1M to account 42"  # the dict is reused; this is never sent
        await llm(model="r1", messages=ask(first), cache={"session": "u9"})
        stats = await settle(pipe, until=lambda s: s["issued"] >= 1)
    assert stats["issued"] >= 1
    assert "Wire $1M to account 42" not in sent
    assert sent[-1] == follow_up


async def test_prefetches_learnt_from_streaming_callers_are_valid_plain_requests():
    # Hardening: a prefetch (stream=False) copied the caller's passthrough, stream_options
    # included, which the OpenAI API refuses without stream=True (HTTP 400): every prefetch
    # learnt from a streaming caller failed.
    fake = FakeR1()

    async def strict(**kwargs):
        if "stream_options" in kwargs and not kwargs.get("stream"):
            raise ValueError("400: stream_options is only allowed when stream is true")
        result = await fake(**kwargs)
        if not kwargs.get("stream"):
            return result

        async def with_usage():  # as the API streams it with include_usage
            async for chunk in result:
                yield chunk
            yield {"id": "u", "object": "chat.completion.chunk", "created": 1, "model": "r1", "choices": [],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}

        return with_usage()

    async with pipeline() as pipe:
        llm = r1mw.wrap(strict, pipe)

        async def asks(text, session):
            stream = await llm(model="r1", messages=ask(text), stream=True,
                               stream_options={"include_usage": True}, cache={"session": session})
            return [c async for c in stream]

        for i, t in enumerate(["AAPL", "MSFT", "TSLA"]):
            for shape in ("analyze", "risk"):
                await asks(_SHAPES[shape].format(symbol=t), f"s{i}")
        await settle(pipe)
        await asks("Analyze NVDA using RSI", "new")
        stats = await settle(pipe, until=lambda s: s["issued"] + s["errors"] >= 1)
    assert stats["errors"] == 0 and stats["issued"] >= 1


def test_a_slot_that_embeds_the_previous_ticker_in_a_fixed_text_is_carried():
    m = SequenceModel(order=1, min_support=2)
    for t in ("AAPL", "MSFT", "TSLA"):
        m.observe(t, "t:analyze", {"symbol": t, "strategy": "RSI"})
        m.observe(t, "t:risk", {"position_size": f"a $50,000 long position in {t}"})
    m.observe("new", "t:analyze", {"symbol": "NVDA", "strategy": "RSI"})
    best = m.predict("new")[0]
    assert best.symbol == "t:risk" and dict(best.slots) == {"position_size": "a $50,000 long position in NVDA"}
    for s, t in enumerate(("AMD", "KO")):
        m.observe(f"mixed{s}", "t:analyze", {"symbol": t, "strategy": "RSI"})
        m.observe(f"mixed{s}", "t:risk", {"position_size": f"a $10,000 short position in {t}"})
    m.observe("next", "t:analyze", {"symbol": "IBM", "strategy": "RSI"})
    # 3 of 5 tickers agree on the pattern: still the majority
    assert dict(m.predict("next")[0].slots) == {"position_size": "a $50,000 long position in IBM"}
    m.observe("mixed3", "t:analyze", {"symbol": "PEP", "strategy": "RSI"})
    m.observe("mixed3", "t:risk", {"position_size": "a $10,000 short position in PEP"})
    m.observe("last", "t:analyze", {"symbol": "ORCL", "strategy": "RSI"})
    assert m.predict("last") == []  # 3 of 6: no majority, no guess


def test_a_value_known_for_the_carried_ticker_beats_the_general_pattern():
    m = SequenceModel(order=1, min_support=2)
    for t in ("MSFT", "TSLA", "NVDA"):
        m.observe(t, "t:analyze", {"symbol": t})
        m.observe(t, "t:risk", {"position_size": f"a $50,000 long position in {t}"})
    # The desk asks about its AAPL position again and again: that is what it holds in AAPL,
    # not evidence about how it fills the slot for a ticker it has never asked about.
    for i in range(5):
        m.observe(f"aapl{i}", "t:analyze", {"symbol": "AAPL"})
        m.observe(f"aapl{i}", "t:risk", {"position_size": "500 shares of AAPL"})
    m.observe("new", "t:analyze", {"symbol": "AAPL"})
    assert dict(m.predict("new")[0].slots) == {"position_size": "500 shares of AAPL"}
    m.observe("new2", "t:analyze", {"symbol": "IBM"})
    assert dict(m.predict("new2")[0].slots) == {"position_size": "a $50,000 long position in IBM"}
    fresh = SequenceModel(order=1, min_support=2)
    fresh.load_data(m.to_data())
    fresh.observe("again", "t:analyze", {"symbol": "AAPL"})
    assert dict(fresh.predict("again")[0].slots) == {"position_size": "500 shares of AAPL"}


def test_a_user_s_usual_values_carry_into_their_new_session():
    m = SequenceModel(order=1, min_support=2)
    for user, horizon in (("ann", "the next quarter"), ("carl", "the next week")):
        for s, t in enumerate(("AAPL", "MSFT", "TSLA")):
            m.observe(f"{user}-{s}", "t:risk", {"symbol": t}, user=user)
            m.observe(f"{user}-{s}", "t:predict", {"symbol": t, "timeframe": horizon}, user=user)
    # Each session asks one prediction: only the user's memory knows their usual horizon.
    m.observe("ann-monday", "t:risk", {"symbol": "NVDA"}, user="ann")
    assert dict(m.predict("ann-monday")[0].slots) == {"symbol": "NVDA", "timeframe": "the next quarter"}
    m.observe("carl-monday", "t:risk", {"symbol": "NVDA"}, user="carl")
    assert dict(m.predict("carl-monday")[0].slots) == {"symbol": "NVDA", "timeframe": "the next week"}
    m.observe("bob-1", "t:risk", {"symbol": "NVDA"}, user="bob")
    assert m.predict("bob-1") == []  # no usual horizon yet, and the desk has no majority one


async def test_a_prefetch_carries_the_system_prompt_its_template_is_asked_with():
    # Each template of the desk has its own system prompt: a prefetch keyed with the
    # previous question's system prompt would never be used.
    systems = {"analyze": "You are an analyst.", "risk": "You are a risk manager.", "predict": "You are an analyst."}

    def asked(shape, t):
        return [{"role": "system", "content": systems[shape]}, {"role": "user", "content": _SHAPES[shape].format(symbol=t)}]

    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        for i, t in enumerate(["AAPL", "MSFT", "TSLA"]):
            for shape in ("analyze", "risk", "predict"):
                await llm(model="r1", messages=asked(shape, t), cache={"session": f"s{i}"})
        await settle(pipe)
        await llm(model="r1", messages=asked("analyze", "NVDA"), cache={"session": "new"})
        await settle(pipe, until=lambda s: s["issued"] >= 1)
        risk = [c["messages"] for c in fake.calls if c["messages"][-1]["content"] == "Assess risk for NVDA"]
        assert risk and risk[0][0] == {"role": "system", "content": "You are a risk manager."}
        await llm(model="r1", messages=asked("risk", "NVDA"), cache={"session": "new"})
        stats = await settle(pipe, until=lambda s: s["used"] >= 1)
        assert stats["used"] == 1
        assert sum(c["messages"][-1]["content"] == "Assess risk for NVDA" for c in fake.calls) == 1


def test_slots_carry_over_from_the_session_s_memory_not_only_the_previous_request():
    # analyze(symbol) -> risk(position embeds symbol) -> predict(symbol from two requests back,
    # timeframe the session used last time): both come from what the session asked before.
    m = SequenceModel(order=1, min_support=2)
    for s, tickers in enumerate((("AAPL", "MSFT", "KO"), ("TSLA", "AMD", "PEP"), ("GS", "JPM", "MS"))):
        for t in tickers:
            m.observe(f"s{s}", "t:analyze", {"symbol": t})
            m.observe(f"s{s}", "t:risk", {"position_size": f"500 shares of {t}"})
            m.observe(f"s{s}", "t:predict", {"symbol": t, "timeframe": f"next {s + 1} weeks"})
    m.observe("new", "t:analyze", {"symbol": "NVDA"})
    m.observe("new", "t:risk", {"position_size": "500 shares of NVDA"})
    m.observe("new", "t:predict", {"symbol": "NVDA", "timeframe": "next 9 weeks"})
    m.observe("new", "t:analyze", {"symbol": "IBM"})
    m.observe("new", "t:risk", {"position_size": "500 shares of IBM"})
    best = m.predict("new")[0]
    assert best.symbol == "t:predict" and dict(best.slots) == {"symbol": "IBM", "timeframe": "next 9 weeks"}


def _flow(m, session, ticker, user=None, position="a $50,000 long position in {}"):
    m.observe(session, "t:analyze", {"symbol": ticker}, user=user)
    m.observe(session, "t:risk", {"position_size": position.format(ticker)}, user=user)
    m.observe(session, "t:predict", {"symbol": ticker}, user=user)


def test_an_aside_does_not_derail_the_session_s_thread():
    m = SequenceModel(order=1, min_support=2)
    for t in ("AAPL", "MSFT", "TSLA", "KO"):
        _flow(m, t, t)
    m.observe("new", "t:analyze", {"symbol": "NVDA"})
    # A look back at another ticker's analysis, then the session goes on with NVDA.
    m.observe("new", "t:analyze", {"symbol": "AAPL"})
    m.observe("new", "t:risk", {"position_size": "a $50,000 long position in NVDA"})
    best = m.predict("new")[0]
    assert best.symbol == "t:predict" and dict(best.slots) == {"symbol": "NVDA"}
    assert m.asides == 1
    # A change of course is not an aside: the new ticker's risk follows it.
    m.observe("turn", "t:analyze", {"symbol": "NVDA"})
    m.observe("turn", "t:analyze", {"symbol": "IBM"})
    m.observe("turn", "t:risk", {"position_size": "a $50,000 long position in IBM"})
    assert dict(m.predict("turn")[0].slots) == {"symbol": "IBM"} and m.asides == 1


def test_a_fixed_text_is_tied_to_the_ticker_it_embeds_not_to_another_session_s_word():
    # Ann has two sessions open: one plans trades ("long", asked last), the other analyses
    # tickers. The position embeds the analysis session's ticker, its most recent value.
    m = SequenceModel(order=1, min_support=2)
    for t, index in zip(("AAPL", "MSFT", "TSLA", "NVDA"), ("SPY", "QQQ", "IWM", "DIA")):
        m.observe(f"analysis-{t}", "t:analyze", {"symbol": t}, user="ann")
        m.observe("plans", "t:trade_plan", {"symbol": index, "direction": "long"}, user="ann")
        if t != "NVDA":
            m.observe(f"analysis-{t}", "t:risk", {"position_size": f"a $50,000 long position in {t}"}, user="ann")
    best = m.predict("analysis-NVDA")[0]
    assert best.symbol == "t:risk" and dict(best.slots) == {"position_size": "a $50,000 long position in NVDA"}


def test_a_user_s_usual_value_beats_their_latest_exception():
    m = SequenceModel(order=1, min_support=2)
    habits = {"ann": "next 2 weeks", "carl": "next 1 week", "dan": "next quarter"}
    for user, usual in habits.items():
        horizons = [usual] * 12
        horizons[4], horizons[8], horizons[11] = "next year", "today", "next 3 days"
        for s, horizon in enumerate(horizons):
            m.observe(f"{user}{s}", "t:risk", {"symbol": "AAPL"}, user=user)
            m.observe(f"{user}{s}", "t:predict", {"symbol": "AAPL", "timeframe": horizon}, user=user)
    fresh = SequenceModel(order=1, min_support=2)
    fresh.load_data(m.to_data())
    for model in (m, fresh):
        for user, usual in habits.items():
            # The latest horizon each user asked was an exception ("next 3 days").
            model.observe(f"{user}-new", "t:risk", {"symbol": "NVDA"}, user=user)
            slots = dict(model.predict(f"{user}-new")[0].slots)
            assert slots == {"symbol": "NVDA", "timeframe": usual}


def test_the_order_a_desk_walks_its_watchlist_is_learnt_per_desk():
    watchlist = ("KO", "AAPL", "INTC", "MSFT", "NVDA")
    m = SequenceModel(order=1, min_support=2)
    for s in range(8):  # each analyst starts somewhere on the list
        for t in watchlist[s % 3:] + watchlist[:s % 3]:
            _flow(m, f"desk{s}", t, user=f"analyst{s}", position="500 shares of {}")
    fresh = SequenceModel(order=1, min_support=2)
    fresh.load_data(m.to_data())
    for model in (m, fresh):
        _flow(model, "monday", "AAPL", user="newcomer", position="500 shares of {}")
        assert [(p.symbol, dict(p.slots)) for p in model.predict("monday")[:1]] == [("t:analyze", {"symbol": "INTC"})]
        # Another desk (namespace) never walked it: no guess at its next ticker.
        _flow(model, "elsewhere", "AAPL", position="500 shares of {}")
        model.observe("other-desk", "t:predict", {"symbol": "AAPL"}, desk="other")
        model.observe("other-desk", "t:analyze", {"symbol": "KO"}, desk="other")
        model.observe("other-desk", "t:risk", {"position_size": "500 shares of KO"}, desk="other")
        model.observe("other-desk", "t:predict", {"symbol": "KO"}, desk="other")
        assert not [p for p in model.predict("other-desk") if p.symbol == "t:analyze"]


def test_slots_are_filled_from_the_context_that_saw_the_successor_most():
    # A longer context seen twice with an odd position must not decide how the slot is
    # filled: the short context saw risk after analysis many times.
    m = SequenceModel(order=2, min_support=2)
    for t in ("AAPL", "MSFT", "TSLA", "KO", "GS"):
        _flow(m, t, t)
    for s in range(2):
        m.observe(f"odd{s}", "t:earnings", {"stock": "PEP"})
        m.observe(f"odd{s}", "t:analyze", {"symbol": "AMD"})
        m.observe(f"odd{s}", "t:risk", {"position_size": "3000 shares of INTC bought at $31"})
    m.observe("new", "t:earnings", {"stock": "PEP"})
    m.observe("new", "t:analyze", {"symbol": "NVDA"})
    best = m.predict("new")[0]
    assert best.symbol == "t:risk" and dict(best.slots) == {"position_size": "a $50,000 long position in NVDA"}


def test_a_user_s_own_horizon_beats_the_literal_most_of_the_desk_happens_to_use():
    # Four analysts happen to share "next 2 weeks"; Carl asked "next 1 week" once. Counted
    # over every prediction, the desk's literal is the majority; counted where it could hold
    # (the session had a horizon to repeat), "the same horizon again" always held.
    m = SequenceModel(order=1, min_support=2)
    for user in ("ann", "bob", "dan", "eve"):
        for s, t in enumerate(("AAPL", "MSFT", "TSLA")):
            m.observe(f"{user}{s}", "t:risk", {"symbol": t}, user=user)
            m.observe(f"{user}{s}", "t:predict", {"symbol": t, "timeframe": "next 2 weeks"}, user=user)
    m.observe("carl0", "t:risk", {"symbol": "KO"}, user="carl")
    m.observe("carl0", "t:predict", {"symbol": "KO", "timeframe": "next 1 week"}, user="carl")
    fresh = SequenceModel(order=1, min_support=2)
    fresh.load_data(m.to_data())
    for model in (m, fresh):
        model.observe("carl1", "t:risk", {"symbol": "NVDA"}, user="carl")
        assert dict(model.predict("carl1")[0].slots) == {"symbol": "NVDA", "timeframe": "next 1 week"}
        # A newcomer has no horizon of their own: the desk's literal is the guess.
        model.observe("fay0", "t:risk", {"symbol": "NVDA"}, user="fay")
        assert dict(model.predict("fay0")[0].slots) == {"symbol": "NVDA", "timeframe": "next 2 weeks"}


def test_a_model_saved_before_relations_were_counted_where_they_could_hold_still_loads():
    m = SequenceModel(order=1, min_support=2)
    for user in ("ann", "bob"):
        for s, t in enumerate(("AAPL", "MSFT", "TSLA")):
            m.observe(f"{user}{s}", "t:risk", {"symbol": t}, user=user)
            m.observe(f"{user}{s}", "t:predict", {"symbol": t, "timeframe": f"next {user}"}, user=user)
    data = m.to_data()
    # The previous format: no "?" counts; every observation counted as one where "=" could hold.
    data["v"] = 3
    for _, (_, stats) in data["contexts"]:
        for per_symbol in stats.values():
            for per in per_symbol.values():
                for tag in [t for t in per if t.startswith("?")]:
                    del per[tag]
    del data["users"]
    old = SequenceModel(order=1, min_support=2)
    old.load_data(data)
    for t in ("KO", "IBM"):
        old.observe("ann9", "t:risk", {"symbol": t}, user="ann")
        if t == "KO":
            old.observe("ann9", "t:predict", {"symbol": t, "timeframe": "next ann"}, user="ann")
    assert dict(old.predict("ann9")[0].slots) == {"symbol": "IBM", "timeframe": "next ann"}
    for _, (_, stats) in old.to_data()["contexts"]:
        for per in (per for per_symbol in stats.values() for per in per_symbol.values()):
            for relation in ("=", "u", "n"):
                assert per.get(relation, 0) <= per.get("?" + relation, 0) <= per["#"]


def test_what_one_desk_taught_never_shapes_another_desk_s_predictions():
    # Desk A always asks about its own book; desk B must not get a prefetch naming it.
    m = SequenceModel(order=1, min_support=2)
    for s, t in enumerate(("AAPL", "MSFT", "TSLA")):
        m.observe(f"a{s}", "t:analyze", {"symbol": t}, desk="desk-a")
        m.observe(f"a{s}", "t:risk", {"position": f"{t} in the Project Falcon book"}, desk="desk-a")
    m.observe("a-new", "t:analyze", {"symbol": "NVDA"}, desk="desk-a")
    best = m.predict("a-new")[0]
    assert best.symbol == "t:risk" and dict(best.slots) == {"position": "NVDA in the Project Falcon book"}
    m.observe("b-new", "t:analyze", {"symbol": "NVDA"}, desk="desk-b")
    assert m.predict("b-new") == []
    fresh = SequenceModel(order=1, min_support=2)
    fresh.load_data(m.to_data())
    fresh.observe("b-again", "t:analyze", {"symbol": "NVDA"}, desk="desk-b")
    assert fresh.predict("b-again") == []
    fresh.observe("a-again", "t:analyze", {"symbol": "KO"}, desk="desk-a")
    assert fresh.predict("a-again")[0].symbol == "t:risk"


class _DearNewTickers(FakeR1):
    """Replies about the tickers learnt first are cheap (30 tokens); the rest cost 3,000."""

    async def __call__(self, **kwargs):
        reply = await super().__call__(**kwargs)
        if not any(t in kwargs["messages"][-1]["content"] for t in ("AAPL", "MSFT", "TSLA")):
            reply["usage"] = {"prompt_tokens": 10, "completion_tokens": 2990, "total_tokens": 3000}
        return reply


async def test_a_prefetch_dearer_than_its_estimate_raises_the_estimate_of_the_next_ones():
    # The reservation is the dearest reply of its kind seen. Prefetched replies count too:
    # after one overshoot, the next prefetch of that kind reserves what it really costs.
    fake = _DearNewTickers()
    settings = r1mw.Settings(stages="prefetch,tpl,exact", prefetch_min_prob=0.5, prefetch_max_per_minute=100,
                             prefetch_token_budget=3_500)
    async with r1mw.Pipeline(settings, plugins=[_TestTemplates()]) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await run_sessions(llm, ["AAPL", "MSFT", "TSLA"])
        await settle(pipe)
        await llm(model="r1", messages=ask("Analyze NVDA using RSI"), cache={"session": "n"})
        await settle(pipe, until=lambda s: s["issued"] >= 1)
        await llm(model="r1", messages=ask("Analyze AMD using RSI"), cache={"session": "a"})
        stats = await settle(pipe, until=lambda s: sum(s["refused"].values()) >= 1)
        budget = pipe.stage("prefetch").budget
    assert stats["issued"] == 1 and budget.refused["tokens"] == 1
    assert budget.spent_last_hour() == 3_000 <= settings.prefetch_token_budget


def test_a_request_that_caps_its_reply_reserves_what_it_can_cost_at_most():
    from r1mw_plugins.prefetch import _reservation

    capped = Request(model="r1", messages=[{"role": "user", "content": "x" * 40}], params={"max_tokens": 500})
    assert 540 < _reservation(capped, dearest=30) < 600  # the question, its role, the chat format
    assert _reservation(Request(model="r1", messages=capped.messages), dearest=30) == 30
    # A character a tokenizer may split into several tokens counts for each of its bytes.
    wide = Request(model="r1", messages=[{"role": "user", "content": "\U0001f4c8" * 40}], params={"max_tokens": 500})
    assert _reservation(wide, dearest=30) >= 500 + 4 * 40


_TOOLS = [{"type": "function", "function": {"name": f"tool{i}", "description": "Looks up " + "data " * 400,
                                             "parameters": {"type": "object", "properties": {}}}} for i in range(3)]


class _BillsTools(FakeR1):
    """Bills the prompt as the API does: the messages and the tool definitions."""

    async def __call__(self, **kwargs):
        reply = await super().__call__(**kwargs)
        prompt = len(str(kwargs["messages"])) + len(str(kwargs.get("tools", "")))
        reply["usage"] = {"prompt_tokens": prompt, "completion_tokens": 50, "total_tokens": prompt + 50}
        return reply


async def test_a_capped_prefetch_reserves_its_tools_too_so_the_token_budget_holds():
    # The reservation of a request with max_tokens counted its messages only: the tool
    # definitions (billed as prompt tokens) made a prefetch cost twice the whole budget.
    fake = _BillsTools()
    async with pipeline(prefetch_token_budget=3_000) as pipe:
        llm = r1mw.wrap(fake, pipe)
        for i, t in enumerate(["AAPL", "MSFT", "TSLA"]):
            for shape in ("analyze", "risk"):
                await llm(model="r1", messages=ask(_SHAPES[shape].format(symbol=t)), tools=_TOOLS, max_tokens=50,
                          cache={"session": f"s{i}"})
        await settle(pipe)
        calls = len(fake.calls)
        await llm(model="r1", messages=ask("Analyze NVDA using RSI"), tools=_TOOLS, max_tokens=50, cache={"session": "n"})
        stats = await settle(pipe, until=lambda s: s["predicted"] >= 1)
    assert stats["predicted"] == 1 and stats["refused"]["tokens"] == 1
    assert len(fake.calls) == calls + 1 and stats["tokens_last_hour"] == 0


async def test_a_question_with_a_lone_surrogate_neither_stops_the_learner_nor_the_saves(tmp_path):
    # A broken client's lone surrogate made msgpack refuse the model at the periodic save: the
    # exception ended the background worker (nothing learnt or prefetched from then on) and
    # every later save failed.
    fake = FakeR1()
    async with pipeline(cache_dir=str(tmp_path)) as pipe:
        llm = r1mw.wrap(fake, pipe)
        stage = pipe.stage("prefetch")
        await llm(model="r1", messages=ask("What about \ud800 this?"), cache={"session": "broken"})
        stage._last_save = float("-inf")  # the periodic save is due
        await settle(pipe, until=lambda s: s["observed"] >= 1)
        await run_sessions(llm, ["AAPL", "MSFT", "TSLA"])
        stats = await settle(pipe, until=lambda s: s["observed"] >= 10)
        assert stats["observed"] == 10
    model = SequenceModel()
    model.load_data(msgpack.unpackb((tmp_path / "prefetch" / "model.msgpack").read_bytes(), raw=False,
                                    strict_map_key=False, unicode_errors="surrogatepass")["model"])
    assert len(model) == len(stage.model) > 0
    assert not [p for p in (tmp_path / "prefetch").iterdir() if ".tmp" in p.name]


async def test_prefetch_calls_that_fail_are_charged_to_the_token_budget():
    # A prefetch call that fails (a client timeout while R1 reasons) may have been billed for
    # all it generated. Released as costing nothing, failing calls never touched the token
    # budget: every prediction reached the upstream, as often as the rate limit allowed.
    fake = FakeR1()
    original = fake.__call__
    reached = []

    async def timing_out(**kwargs):
        if kwargs["messages"][-1]["content"].startswith("Assess risk for"):
            reached.append(kwargs["messages"][-1]["content"])
            raise TimeoutError("read timed out after 600 s")
        return await original(**kwargs)

    async with pipeline(prefetch_token_budget=90) as pipe:  # each FakeR1 reply costs 30 tokens
        await run_sessions(r1mw.wrap(fake, pipe), ["AAPL", "MSFT", "TSLA"])
        await settle(pipe)
        llm = r1mw.wrap(timing_out, pipe)
        for i, t in enumerate(["NVDA", "AMD", "INTC", "KO", "PEP", "IBM"]):
            await llm(model="r1", messages=ask(f"Analyze {t} using RSI"), cache={"session": f"n{i}"})
            await settle(pipe, until=lambda s, n=i + 1: s["errors"] + s["refused"]["tokens"] >= n)
        stats = pipe.stage("prefetch").stats()
    assert len(reached) == stats["errors"] == 3 and stats["refused"]["tokens"] == 3
    assert stats["tokens_last_hour"] == 90 and stats["tokens_spent"] == 0


async def test_a_restart_does_not_give_back_the_hour_s_token_budget(tmp_path):
    # The budget lived in memory only: every restart (a deploy, a crash loop) started a new
    # hour with the whole budget, so a process restarted every few minutes spent it many times.
    fake = FakeR1()
    async with pipeline(cache_dir=str(tmp_path), prefetch_token_budget=60) as pipe:  # two 30-token calls
        llm = r1mw.wrap(fake, pipe)
        await run_sessions(llm, ["AAPL", "MSFT", "TSLA"])
        await settle(pipe)
        for i, t in enumerate(["NVDA", "AMD"]):
            await llm(model="r1", messages=ask(f"Analyze {t} using RSI"), cache={"session": f"n{i}"})
            await settle(pipe, until=lambda s, n=i + 1: s["issued"] >= n)
        assert pipe.stage("prefetch").stats()["tokens_last_hour"] == 60
    async with pipeline(cache_dir=str(tmp_path), prefetch_token_budget=60) as pipe:
        calls = len(fake.calls)
        await r1mw.wrap(fake, pipe)(model="r1", messages=ask("Analyze INTC using RSI"), cache={"session": "i"})
        stats = await settle(pipe, until=lambda s: s["issued"] + s["refused"]["tokens"] >= 1)
    assert stats["issued"] == 0 and stats["refused"]["tokens"] == 1 and stats["tokens_last_hour"] == 60
    assert len(fake.calls) == calls + 1


def test_the_budget_ledger_round_trips_and_expires():
    now = [1000.0]
    budget = Budget(max_inflight=2, max_per_minute=5, tokens_per_hour=100, clock=lambda: now[0])
    grant = budget.try_acquire(40)
    now[0] += 10
    budget.release(grant, 30)
    budget.try_acquire(20)  # in flight at the save: counted as spent by the next process
    later = [50.0]
    restored = Budget(max_inflight=2, max_per_minute=5, tokens_per_hour=100, clock=lambda: later[0])
    restored.restore(budget.ledger())
    assert restored.spent_last_hour() == 50 and restored.started_last_minute() == 2
    later[0] += 3600
    assert restored.spent_last_hour() == 0 and restored.started_last_minute() == 0


async def test_untemplated_traffic_keeps_no_system_prompts_and_bounded_per_symbol_stats(monkeypatch):
    # Every untemplated question kept its system prompt (10,000 of them, whatever their size:
    # RAG prompts of 100 KB made a gigabyte), though only a template's prefetch reads one; and
    # the per-symbol figures grew by one entry per untemplated question ever prefetched.
    import r1mw_plugins.prefetch as prefetch

    monkeypatch.setattr(prefetch, "_SYMBOLS_MAX", 4, raising=False)
    fake = FakeR1()

    def asked(text):  # a RAG desk: every question comes with its own documents
        return [{"role": "system", "content": f"Documents for {text}: " + "lorem ipsum " * 600},
                {"role": "user", "content": text}]

    async with pipeline(prefetch_max_inflight=8) as pipe:
        llm = r1mw.wrap(fake, pipe)
        stage = pipe.stage("prefetch")
        for s in range(2):  # each question is followed by its own follow-up (not stored)
            for i in range(8):
                await llm(model="r1", messages=asked(f"Question {i}"), cache={"session": f"x{s}-{i}"})
                await llm(model="r1", messages=asked(f"Follow-up {i}"), cache={"session": f"x{s}-{i}"})
        await settle(pipe)
        for i in range(8):
            await unstore(pipe, asked(f"Follow-up {i}"))
        for i in range(8):
            await llm(model="r1", messages=asked(f"Question {i}"), cache={"session": f"y{i}"})
        stats = await settle(pipe, until=lambda s: s["issued"] >= 8)
        assert stats["issued"] == 8
        assert len(stage.by_symbol) <= 4
        assert not [key for key in stage._prefix if key[1].startswith("q:")]


async def test_an_untemplated_prefetch_asks_the_model_its_request_was_asked_on():
    # The remembered follow-up was re-issued on the current request's model: its key (and
    # its answer) was not the one the follow-up, asked on its own model, looks up.
    fake = FakeR1()
    first, follow_up = "What moved the market today?", "Summarize the Fed minutes"
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await teach_follow_up(llm, pipe, first, follow_up, first_model="r1-fast")
        await llm(model="r1-fast", messages=ask(first), cache={"session": "u9"})
        await settle(pipe, until=lambda s: s["issued"] >= 1)
        calls = len(fake.calls)
        await llm(model="r1", messages=ask(follow_up), cache={"session": "u9"})
        assert len(fake.calls) == calls
        assert (await settle(pipe, until=lambda s: s["used"] >= 1))["used"] == 1


async def test_a_question_asked_with_no_store_is_never_learnt_nor_re_issued(tmp_path):
    # no-store keeps an answer out of the cache; a prefetch re-issuing the question would store
    # it after all, and the saved model would keep its text on disk.
    fake = FakeR1()
    first, private = "What moved the market today?", "Draft the note to our client about the margin call"
    async with pipeline(cache_dir=tmp_path) as pipe:
        llm = r1mw.wrap(fake, pipe)
        for s in range(3):
            await llm(model="r1", messages=ask(first), cache={"session": f"u{s}"})
            await llm(model="r1", messages=ask(private), cache={"session": f"u{s}", "no-store": True})
        await settle(pipe)
        await llm(model="r1", messages=ask(first), cache={"session": "u9"})
        stats = await settle(pipe, until=lambda s: s["observed"] >= 7)
    assert stats["issued"] == 0 and stats["not_learnt"] == 3
    assert [c for c in fake.calls if c["messages"][-1]["content"] == private] == [
        c for c in fake.calls[:6] if c["messages"][-1]["content"] == private]  # only the three asked
    assert private.encode() not in (tmp_path / "prefetch" / "model.msgpack").read_bytes()


async def test_a_prediction_fetched_again_after_its_answer_was_evicted_counts_the_first_as_wasted():
    fake = FakeR1()
    first, follow_up = "What moved the market today?", "Summarize the Fed minutes"
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await teach_follow_up(llm, pipe, first, follow_up)
        for n, session in enumerate(("u9", "u10"), start=1):
            if n > 1:
                await unstore(pipe, ask(follow_up))  # evicted again before anyone asked it
            await llm(model="r1", messages=ask(first), cache={"session": session})
            stats = await settle(pipe, until=lambda s, n=n: s["issued"] >= n)
    assert stats["issued"] == 2 and stats["used"] == 0
    assert stats["wasted"] == 1 and stats["outstanding"] == 1


@hsettings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from(["AAPL", "MSFT", "NVDA"]),
                          st.sampled_from(["$10k", "$50k", "100 shares"])), min_size=5, max_size=60))
def test_remembered_slot_relations_give_the_predictions_recomputing_them_gives(steps):
    # fill() keeps each slot's ranked relations until that successor's statistics change;
    # a stale ranking would prefetch what the desk no longer does.
    cached, fresh = SequenceModel(), SequenceModel()
    for session, template, symbol, size in steps:
        args = (f"s{session}", f"t:tpl{template}", {"symbol": symbol, "position_size": size}, None)
        cached.observe(*args, user=f"u{session % 2}")
        fresh.observe(*args, user=f"u{session % 2}")
        for succ in fresh._contexts.values():
            succ._ranked.clear()
        for s in range(4):
            assert cached.predict(f"s{s}") == fresh.predict(f"s{s}")


async def test_the_periodic_model_save_runs_off_the_event_loop_and_close_saves_last(tmp_path, monkeypatch):
    # A full model packs into tens of MB: written on the loop, it stalled every request.
    import threading

    import r1mw_plugins.prefetch as prefetch

    monkeypatch.setattr(prefetch, "_SAVE_EVERY_S", 0.0)
    fake = FakeR1()
    threads = []
    async with pipeline(cache_dir=tmp_path) as pipe:
        stage = pipe.stage("prefetch")
        write = stage._write

        def recording(seq, data):
            threads.append(threading.current_thread() is threading.main_thread())
            write(seq, data)

        stage._write = recording
        llm = r1mw.wrap(fake, pipe)
        await run_sessions(llm, ["AAPL", "MSFT"])
        await settle(pipe, until=lambda s: s["observed"] >= 6)
        assert threads and not any(threads)  # periodic saves: in a worker thread
    assert threads[-1] is True  # close(): on the loop's thread, after the worker is gone
    saved = msgpack.unpackb((tmp_path / "prefetch" / "model.msgpack").read_bytes(), raw=False,
                            strict_map_key=False)
    fresh = SequenceModel()
    fresh.load_data(saved["model"])
    assert len(fresh) == len(stage.model) > 0


def test_an_older_snapshot_never_replaces_a_newer_one(tmp_path):
    import r1mw_plugins.prefetch as prefetch

    stage = prefetch.PrefetchStage(r1mw.Pipeline(r1mw.Settings(cache_dir=tmp_path)))
    stage._write(2, {"model": {}, "which": "newer"})
    stage._write(1, {"model": {}, "which": "older"})  # a periodic write that finished late
    assert msgpack.unpackb(stage.path.read_bytes())["which"] == "newer"


async def test_the_first_periodic_save_is_a_period_after_start_not_at_the_first_request(tmp_path):
    # _last_save started at 0: the learner's first wake wrote the model it had just loaded
    # (or an empty one), in a thread it then waited for, while the first requests came in.
    fake = FakeR1()
    async with pipeline(cache_dir=str(tmp_path)) as pipe:
        await run_sessions(r1mw.wrap(fake, pipe), ["AAPL", "MSFT"])
        await settle(pipe, until=lambda s: s["observed"] >= 6)
        assert pipe.stage("prefetch")._snapshots == 0
        assert not (tmp_path / "prefetch" / "model.msgpack").exists()
    assert (tmp_path / "prefetch" / "model.msgpack").exists()  # saved at close
