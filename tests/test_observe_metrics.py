"""The metrics stage counts exactly what a scripted run did; prices; bounded labels."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings as hsettings, strategies as st

import r1mw
from r1mw.observe.prices import DEFAULT_PRICES, Price, PriceTable
from r1mw.observe.recorder import BUCKETS, COST, HITS, OTHER, REQ, LabelTable, quantile
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio

R1 = DEFAULT_PRICES["deepseek-reasoner"]
HIT_COST = (10 * R1.input + 20 * R1.output) / 1e6  # FakeR1 replies: 10 prompt + 20 completion tokens


class Tagger:
    """Plays the template / prefetch stages' part: annotates requests like they do."""

    name = "tagger"

    async def handle(self, request, call_next):
        words = request.question.split()
        request.meta["template_id"] = words[0].lower()
        request.meta["slots"] = {"symbol": words[-1]}
        reply = await call_next(request)
        if words[-1] == "PREFETCHED" and request.hit:
            request.meta["prefetch_hit"] = True
        return reply


class TaggerPlugin:
    __name__ = "test-tagger"

    @r1mw.hookimpl
    def r1mw_register_stages(self):
        return {"tagger": lambda pipeline: Tagger()}


def msgs(text):
    return [{"role": "user", "content": text}]


def pipeline(**kw):
    # RAM only: hypothesis runs many examples in one test's cache dir, a disk tier would carry over.
    kw.setdefault("tiers", "l1")
    return r1mw.Pipeline(r1mw.Settings(stages="metrics,tagger,exact", **kw), plugins=[TaggerPlugin()])


async def test_counters_match_a_scripted_run_exactly():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        # 3 distinct questions: 3 misses; then 5 repeats: 5 L1 hits.
        for q in ("Analyze AAPL", "Analyze NVDA", "Risk MSFT"):
            await llm(model="deepseek-reasoner", messages=msgs(q))
        for q in ("Analyze AAPL", "Analyze AAPL", "Analyze NVDA", "Risk MSFT", "Risk MSFT"):
            await llm(model="deepseek-reasoner", messages=msgs(q))
        # 10 concurrent identical requests: 1 miss, 9 coalesced.
        fake.latency = 0.02
        await asyncio.gather(*(llm(model="deepseek-reasoner", messages=msgs("Analyze TSLA")) for _ in range(10)))
        fake.latency = 0.0
        # 2 upstream errors.
        fake.fail = ConnectionError("down")
        for q in ("Risk AMD", "Risk INTC"):
            with pytest.raises(ConnectionError):
                await llm(model="deepseek-reasoner", messages=msgs(q))
        fake.fail = None
        # a prefetch hit (an entry another request stored; the prefetch stage's flag), other namespace.
        await llm(model="deepseek-chat", messages=msgs("Watch PREFETCHED"), cache={"namespace": "desk-b"})
        await llm(model="deepseek-chat", messages=msgs("Watch PREFETCHED"), cache={"namespace": "desk-b"})
        rec = pipe.services["metrics"]
        core = pipe.stats()

    outcomes = rec.by_outcome()
    assert outcomes == {"hit": 5, "prefetch_hit": 1, "coalesced": 9, "miss": 5, "error": 2, "cancelled": 0}
    series = {key: s.count for key, s in rec.items()}
    assert series == {("hit", "exact", "l1"): 5, ("prefetch_hit", "exact", "l1"): 1,
                      ("coalesced", "inflight", "none"): 9, ("miss", "upstream", "none"): 5,
                      ("error", "upstream", "none"): 2}
    # every series' buckets add up to its count
    assert all(sum(s.buckets) == s.count for _, s in rec.items())
    # the core agrees where it counts the same thing
    assert core["misses"] == 5 and core["coalesced"] == 9 and core["hits"] == 6 and core["errors"] == 2
    # tokens and cost: 5 exact hits + 9 coalesced of deepseek-reasoner, 1 prefetch hit of deepseek-chat
    savings = rec.savings()
    assert savings["prompt_tokens"] == 15 * 10 and savings["completion_tokens"] == 15 * 20
    chat = DEFAULT_PRICES["deepseek-chat"]
    assert savings["cost_usd"] == pytest.approx(14 * HIT_COST + (10 * chat.input + 20 * chat.output) / 1e6)
    models = dict(rec.models.top(10))
    assert models["deepseek-reasoner"][HITS] == 14 and models["deepseek-chat"][HITS] == 1
    # per template: analyze = 2 misses + 3 hits + 10 TSLA (1 miss, 9 coalesced); risk = 1 miss + 2 hits + 2 errors
    templates = dict(rec.templates.top(10))
    assert templates["analyze"][REQ] == 15 and templates["analyze"][HITS] == 12
    assert templates["risk"][REQ] == 5 and templates["risk"][HITS] == 2
    assert templates["watch"][REQ] == 2 and templates["watch"][HITS] == 1
    assert templates["analyze"][COST] == pytest.approx(12 * HIT_COST)
    namespaces = dict(rec.namespaces.top(10))
    assert namespaces[""][REQ] == 20 and namespaces["desk-b"][REQ] == 2 and namespaces["desk-b"][HITS] == 1
    slots = {(t, name, value): n for t, name, value, n in rec.top_slots(50)}
    assert slots[("analyze", "symbol", "AAPL")] == 3 and slots[("analyze", "symbol", "TSLA")] == 10
    assert slots[("risk", "symbol", "AMD")] == 1


async def test_cancelled_request_is_counted_as_cancelled_not_error():
    fake = FakeR1(latency=1.0)
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        task = asyncio.ensure_future(llm(model="m", messages=msgs("Analyze SLOW")))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pipe.services["metrics"].by_outcome()["cancelled"] == 1
        assert pipe.services["metrics"].by_outcome()["error"] == 0


async def test_streamed_miss_and_replayed_hit_are_recorded():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        stream = await llm(model="deepseek-reasoner", messages=msgs("Analyze AAPL"), stream=True)
        async for _ in stream:
            pass
        await asyncio.sleep(0.01)  # the store runs when the stream completes
        stream = await llm(model="deepseek-reasoner", messages=msgs("Analyze AAPL"), stream=True)
        async for _ in stream:
            pass
        rec = pipe.services["metrics"]
        assert rec.by_outcome()["miss"] == 1 and rec.by_outcome()["hit"] == 1
        # FakeR1's stream sends no usage chunk: nothing to count as tokens saved
        assert rec.savings()["tokens"] == 0
        assert {k for k, _ in rec.items()} == {("hit", "exact", "l1"), ("miss", "upstream", "none")}


def test_price_table_defaults_overrides_and_matching():
    table = PriceTable({"my-model": {"input": 1.0, "output": 2.0}})
    usage = r1mw.Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, total_tokens=2_000_000)
    assert table.cost("deepseek-reasoner", usage) == pytest.approx(0.55 + 2.19)
    assert table.cost("deepseek/deepseek-reasoner", usage) == pytest.approx(0.55 + 2.19)  # LiteLLM's spelling
    assert table.cost("deepseek-reasoner-0528", usage) == pytest.approx(0.55 + 2.19)
    assert table.cost("my-model", usage) == pytest.approx(3.0)
    assert table.cost("unknown", usage) == 0.0 and not table.known("unknown")
    # the provider's own prompt cache: cached prompt tokens at the cache-hit price
    cached = r1mw.Usage(prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=1_000_000)
    assert table.cost("deepseek-reasoner", cached) == pytest.approx(0.14)
    assert Price(1.0, 1.0).cost(cached) == pytest.approx(1.0)


def test_price_override_from_env_and_bad_prices_are_config_errors():
    s = r1mw.Settings.from_env({"R1MW_PRICES": '{"deepseek-reasoner": {"input": 0.28, "output": 0.42}}'}, dotenv=None)
    assert PriceTable(s.prices).price("deepseek-reasoner") == Price(0.28, 0.42)
    for bad in ({"m": {"input": 1}}, {"m": {"input": "x", "output": 1}}, {"m": {"input": -1, "output": 1}},
                {"m": 3}, {"m": {"input": 1, "output": 1, "typo": 2}}):
        with pytest.raises(r1mw.ConfigError, match="R1MW_PRICES"):
            PriceTable(bad)
    with pytest.raises(r1mw.ConfigError, match="R1MW_PRICES"):
        r1mw.Settings.from_env({"R1MW_PRICES": "not json"}, dotenv=None)


async def test_bad_price_override_fails_at_pipeline_start():
    with pytest.raises(r1mw.ConfigError, match="R1MW_PRICES"):
        async with r1mw.Pipeline(r1mw.Settings(stages="metrics,exact", prices={"m": {"input": 1}})):
            pass


def test_label_table_is_bounded():
    table = LabelTable(track=3, export_n=2)
    for label in ["a", "b", "c", "d", "e", "a"]:
        table.row(label)[REQ] += 1
    assert set(table.rows) == {"a", "b", "c"}
    assert table.other[REQ] == 2
    exported = dict(table.export())
    assert set(exported) == {"a", "b", OTHER} or set(exported) == {"a", "c", OTHER}
    assert sum(r[REQ] for r in exported.values()) == 6


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.booleans()), max_size=120),
       st.integers(1, 6), st.integers(0, 4))
def test_exported_label_counters_only_grow_and_add_up(events, track, export_n):
    table = LabelTable(track=track, export_n=export_n)
    seen: dict[str, float] = {}
    for i, (label, scrape) in enumerate(events):
        table.row(label)[REQ] += 1
        if scrape:
            exported = dict(table.export())
            assert sum(r[REQ] for r in exported.values()) == i + 1
            assert len(exported) <= export_n + 1
            for name, row in exported.items():
                assert row[REQ] >= seen.get(name, 0)  # a counter never goes down
                seen[name] = row[REQ]
            assert set(seen) <= set(exported)  # an exported series never vanishes


def test_quantile_from_buckets():
    # 100 observations: 50 in (0, 1e-5], 49 in (1e-5, 2.5e-5], 1 in (2.5e-5, 5e-5]
    cumulative = [50, 99, 100] + [100] * (len(BUCKETS) - 2)
    assert quantile(0.5, cumulative) == pytest.approx(1e-5)
    assert 1e-5 < quantile(0.99, cumulative) <= 2.5e-5
    assert quantile(0.5, [0] * (len(BUCKETS) + 1)) is None


@hsettings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=30))
def test_counters_match_a_model_of_any_sequential_run(ops):
    """Against a model: a question is a hit once a successful call stored it, else a miss
    (or an error when the upstream fails); tokens and cost are counted on hits only."""

    async def run():
        fake = FakeR1()
        async with pipeline() as pipe:
            llm = r1mw.wrap(fake, pipe)
            for question, fail in ops:
                fake.fail = ConnectionError("down") if fail else None
                try:
                    await llm(model="deepseek-reasoner", messages=msgs(f"Analyze Q{question}"))
                except ConnectionError:
                    pass
            return pipe.services["metrics"]

    rec = asyncio.run(run())
    stored: set[int] = set()
    expected = {"hit": 0, "miss": 0, "error": 0}
    for question, fail in ops:
        if question in stored:
            expected["hit"] += 1
        elif fail:
            expected["error"] += 1
        else:
            expected["miss"] += 1
            stored.add(question)
    outcomes = rec.by_outcome()
    assert {k: outcomes[k] for k in expected} == expected
    assert outcomes["coalesced"] == outcomes["prefetch_hit"] == outcomes["cancelled"] == 0
    assert rec.savings()["tokens"] == 30 * expected["hit"]
    assert rec.savings()["cost_usd"] == pytest.approx(HIT_COST * expected["hit"])
    assert dict(rec.templates.top(5))["analyze"][REQ] == len(ops)


@hsettings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 7), st.booleans(), st.booleans(), st.booleans(), st.booleans()),
                    max_size=60),
       pending_max=st.sampled_from([2, 4096]))
def test_rows_counted_per_entry_then_folded_equal_counting_each_request(ops, pending_max):
    # The recorder counts a request into its entry's pending row and updates the label rows
    # when they are read or when too many entries are pending; whatever the order of reads,
    # the rows must equal counting every request into every table at once.
    import r1mw.observe.recorder as recorder_module
    from r1mw.observe.recorder import MetricsRecorder

    saved, recorder_module._PENDING_MAX = recorder_module._PENDING_MAX, pending_max
    try:
        _check_folded_rows(ops, MetricsRecorder(PriceTable()))
    finally:
        recorder_module._PENDING_MAX = saved


def _check_folded_rows(ops, rec):
    from r1mw.types import Choice, Reply, Request, Usage

    reply = Reply(id="r", model="deepseek-reasoner", created=0,
                  choices=(Choice(index=0, content="x", finish_reason="stop"),), usage=Usage(10, 20, 30))
    expected: dict[tuple[str, str], list[float]] = {}
    slots_expected: dict[tuple[str, str, str], int] = {}

    def add(table, label, n, hit, tokens, model):
        row = expected.setdefault((table, label), [0, 0, 0, 0, 0.0])
        row[0] += n
        row[1] += hit
        if tokens:
            row[2] += 10
            row[3] += 20
            row[4] += PriceTable().price(model).cost(Usage(10, 20, 30))

    for entry, hit, with_usage, keyless, read in ops:
        model = "deepseek-reasoner" if entry % 2 else "deepseek-chat"
        namespace, template = f"ns{entry % 3}", (f"t{entry % 4}" if entry < 6 else None)
        slots = {"symbol": f"S{entry}"} if template else None
        request = Request(model, [], {}, {}, False, r1mw.CacheControl(), namespace, None, None)
        request.key = None if keyless else b"entry-%d" % entry
        request.source = "exact" if hit else "upstream"
        request.tier = "l1" if hit else None
        if template:
            request.meta.update(template_id=template, slots=dict(slots))
        rec.record(request, reply if with_usage else Reply(id="r", model=model, created=0, choices=reply.choices),
                   1e-5)
        tokens = hit and with_usage
        if tokens:
            add("model", model, 1, 1, True, model)
        add("namespace", namespace, 1, hit, tokens, model)
        if template:
            add("template", template, 1, hit, tokens, model)
            k = (template, "symbol", slots["symbol"])
            slots_expected[k] = slots_expected.get(k, 0) + 1
        if read:  # a scrape in the middle: folds what is pending
            rec.namespaces.top(100)

    def rows(table, label_table):
        return {(table, label): row for label, row in label_table.top(100) if label != OTHER}

    got = {**rows("model", rec.models), **rows("namespace", rec.namespaces), **rows("template", rec.templates)}
    assert got.keys() == expected.keys()
    for k, row in expected.items():
        assert got[k][:4] == row[:4] and got[k][4] == pytest.approx(row[4])
    assert rec.slots == slots_expected and rec.slots_other == 0
