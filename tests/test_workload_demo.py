"""The demo's replay: figures add up, and a broken stage shows up as false hits."""

from __future__ import annotations

import json
from typing import Any

import pytest

import r1mw
from r1mw import cli
from r1mw.demo import plan_runs
from r1mw.workload.generator import WorkloadSpec, generate
from r1mw.workload import replay as replay_module
from r1mw.workload.replay import RunConfig, replay
from r1mw.workload.simulator import LatencyModel, SimulatedR1

TINY = WorkloadSpec(requests=80, sessions=4, analysts=3, seed=2)
FAST = 1e-5  # a 60 s R1 answer takes 0.6 ms


class StaleStage:
    """Deliberately broken: after the first request, serves the previous reply to everyone."""

    name = "stale"

    def __init__(self) -> None:
        self.last: Any = None

    async def handle(self, request: r1mw.Request, call_next: r1mw.Handler) -> Any:
        if self.last is not None:
            request.source = "stale"
            return self.last
        reply = await call_next(request)
        self.last = reply
        return reply


class StalePlugin:
    name = "test-stale"

    @r1mw.hookimpl
    def r1mw_register_stages(self) -> dict[str, Any]:
        return {"stale": lambda pipeline: StaleStage()}


@pytest.mark.anyio
async def test_broken_stage_makes_false_hits(tmp_path) -> None:
    workload = generate(TINY)
    broken = await replay(workload, RunConfig("broken", ("stale",), ("l1",), (StalePlugin(),)),
                          cache_dir=tmp_path / "b", speed=FAST, concurrency=1, burst_requests=0)
    figures = broken.figures()
    distinct_after_first = len({i.question_id for i in workload.items} - {workload.sessions()[0][0].question_id})
    assert figures["false_hits"] > 0
    assert figures["false_hits"] >= distinct_after_first - 1
    assert figures["false_hit_examples"][0]["asked"] != figures["false_hit_examples"][0]["served"]
    assert figures["upstream_calls"] == 1


class RewriteStage:
    """Deliberately broken: sends every request upstream as another question (the first
    one asked), served as a miss. The judge must see those wrong answers too."""

    name = "rewrite"

    def __init__(self) -> None:
        self.first: Any = None

    async def handle(self, request: r1mw.Request, call_next: r1mw.Handler) -> Any:
        self.first = self.first or request.messages
        request.messages = self.first
        return await call_next(request)


class RewritePlugin:
    name = "test-rewrite"

    @r1mw.hookimpl
    def r1mw_register_stages(self) -> dict[str, Any]:
        return {"rewrite": lambda pipeline: RewriteStage()}


@pytest.mark.anyio
async def test_wrong_answers_on_misses_are_counted(tmp_path) -> None:
    workload = generate(TINY)
    broken = await replay(workload, RunConfig("broken", ("rewrite",), ("l1",), (RewritePlugin(),)),
                          cache_dir=tmp_path / "b", speed=FAST, concurrency=1, burst_requests=0)
    figures = broken.figures()
    first = workload.sessions()[0][0].question_id
    asked_other = sum(1 for i in workload.items if i.question_id != first)
    assert figures["hits"] == 0 and figures["false_hits"] == 0  # every request is a miss...
    assert figures["wrong_misses"] == asked_other > 0          # ...and every other question's answer is wrong
    assert figures["wrong_miss_examples"][0]["served"] == first


@pytest.mark.anyio
async def test_r1_time_of_a_miss_is_its_calls_r1_latency_not_loop_delays_scaled_up(tmp_path, monkeypatch) -> None:
    # An upstream with (almost) no latency: whatever a call measures is the event loop's
    # own delay, which must not be scaled by 1/speed into R1 time.
    sims: list[SimulatedR1] = []

    def simulator(**kwargs: Any) -> SimulatedR1:
        sims.append(SimulatedR1(latency=LatencyModel(1e-9, 0.0, 1e12, 0.0), **kwargs))
        return sims[-1]

    monkeypatch.setattr(replay_module, "SimulatedR1", simulator)
    run = await replay(generate(TINY), RunConfig("none", (), ("l1",)), cache_dir=tmp_path / "n",
                       speed=FAST, concurrency=2, stream_share=0.5, burst_requests=0)
    calls = sims[0].by_id
    misses = [o for o in run.outcomes if not o.hit]
    assert len(misses) == len(run.outcomes) and any(o.stream for o in misses)
    for o in misses:
        real = calls[o.reply_id].real_s
        # Its own call lies inside the request: R1 time = time in r1mw + the call at R1 speed.
        assert real <= o.r1_latency_s <= o.latency_s + real, o


@pytest.mark.anyio
async def test_exact_cache_replay_adds_up(tmp_path) -> None:
    workload = generate(TINY)
    seen: list[Any] = []
    result = await replay(workload, RunConfig("exact", ("exact",), ("l1",)), cache_dir=tmp_path / "e",
                          speed=FAST, concurrency=3, stream_share=0.2, burst_requests=30, on_done=seen.append)
    f = result.figures()
    assert len(seen) == len(workload.items) == f["requests"]
    assert f["false_hits"] == 0 and f["errors"] == 0
    # Every request that was not a hit made exactly one upstream call (no prefetch here).
    assert f["upstream_calls"] == f["requests"] - f["hits"]
    # Distinct texts bound the misses of an exact cache from below.
    assert f["upstream_calls"] >= len({(i.system, i.text) for i in workload.items}) - f["coalesced"]
    assert 0 < f["hit_rate"] < 1
    assert f["tokens_billed"] > 0 and f["cost_usd"] > 0
    assert f["stored_tier"] == "l1" and f["stored_bytes"] > 0 and f["raw_bytes"] > 0
    assert f["burst"]["requests"] == 30 and f["burst"]["hit_rate"] == 1.0
    assert any(o.stream for o in result.outcomes)
    # R1 time: a miss waited on the upstream, so it is projected far above what was measured.
    miss = next(o for o in result.outcomes if not o.hit)
    assert miss.r1_latency_s > miss.latency_s * 10


@pytest.mark.anyio
async def test_no_cache_run_calls_upstream_every_time(tmp_path) -> None:
    workload = generate(WorkloadSpec(requests=30, sessions=2, analysts=2, seed=1))
    result = await replay(workload, RunConfig("none", (), ("l1",)), cache_dir=tmp_path / "n",
                          speed=FAST, concurrency=2, burst_requests=0)
    f = result.figures()
    assert f["hits"] == 0 and f["upstream_calls"] == 30 and f["stored_bytes"] in (0, None)


@pytest.mark.anyio
async def test_upstream_errors_are_counted_not_cached(tmp_path) -> None:
    workload = generate(WorkloadSpec(requests=40, sessions=2, analysts=2, seed=1))
    result = await replay(workload, RunConfig("exact", ("exact",), ("l1",)), cache_dir=tmp_path / "x",
                          speed=FAST, concurrency=2, error_rate=0.3, burst_requests=0)
    f = result.figures()
    assert f["errors"] > 0
    assert f["upstream_errors"] >= f["errors"] - f["coalesced"]
    assert f["false_hits"] == 0


def test_plan_runs_uses_what_is_registered() -> None:
    configs, notes = plan_runs()
    assert [c.name for c in configs] == ["none", "exact", "r1mw"]
    full = configs[2]
    assert "exact" in full.stages and full.tiers[0] == "l1"
    assert configs[1].stages == ("exact",)
    with pytest.raises(r1mw.ConfigError):
        plan_runs(stages=["no-such-stage"])
    with pytest.raises(r1mw.ConfigError):
        plan_runs(["bogus"])


def test_demo_command_prints_the_table(tmp_path, capsys) -> None:
    out = tmp_path / "demo.json"
    code = cli.main(["demo", "--requests", "60", "--sessions", "3", "--analysts", "2", "--speed", "0.00001",
                     "--no-progress", "--burst-requests", "20", "--json", str(out),
                     "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    text = capsys.readouterr().out
    for label in ("hit rate", "response time", "stored bytes vs raw", "throughput", "false hits",
                  "upstream calls", "tokens / cost saved", "no cache", "exact cache", "r1mw"):
        assert label in text
    report = json.loads(out.read_text())
    assert set(report["runs"]) == {"none", "exact", "r1mw"}
    assert report["runs"]["none"]["upstream_calls"] == 60
    assert report["runs"]["exact"]["false_hits"] == 0


def test_demo_refuses_bad_flags(capsys) -> None:
    assert cli.main(["demo", "--speed", "0", "--no-progress"]) == 2
    assert "--speed" in capsys.readouterr().err
    assert cli.main(["demo", "--repeat-share", "0.9", "--oneoff-share", "0.5", "--no-progress"]) == 2


@pytest.mark.anyio
async def test_replay_against_an_openai_compatible_endpoint(tmp_path) -> None:
    """The --upstream path: the real OpenAI SDK, only the HTTP peer is faked."""
    import httpx
    from openai import AsyncOpenAI

    from r1mw.workload.simulator import SimulatedR1
    from r1mw.workload.truth import Catalog

    cat, texts = Catalog.load(), SimulatedR1(speed=0)
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        qid = cat.identify_messages(body["messages"])
        calls.append(qid)
        reasoning, answer, r_tok, a_tok = texts.texts_for(qid)
        return httpx.Response(200, json={
            "id": f"chatcmpl-{len(calls)}", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer, "reasoning_content": reasoning}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": r_tok + a_tok, "total_tokens": 30 + r_tok + a_tok}})

    client = AsyncOpenAI(base_url="http://r1.test/v1", api_key="test",
                         http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    workload = generate(WorkloadSpec(requests=40, sessions=2, analysts=2, seed=5))
    result = await replay(workload, RunConfig("exact", ("exact",), ("l1",)), cache_dir=tmp_path / "o",
                          speed=1.0, think_scale=0, concurrency=1, upstream=client, burst_requests=0)
    f = result.figures()
    assert f["upstream_calls"] == len(calls) == f["requests"] - f["hits"]
    assert f["hits"] > 0 and f["false_hits"] == 0 and f["unverified_hits"] == 0
    assert f["tokens_billed"] > 0
    # every hit was judged: its reply came from a call made for the same question
    assert all(o.served_id == o.question_id for o in result.outcomes)
