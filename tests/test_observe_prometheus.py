"""The metrics endpoint serves valid Prometheus text, started and stopped with the pipeline."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given, settings as hsettings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

import r1mw
from r1mw import CacheControl
from r1mw.observe import promtext
from r1mw.observe.prometheus import exposition, registry_for
from r1mw.observe.recorder import OTHER, REQ, MetricsRecorder
from r1mw.observe.prices import DEFAULT_PRICES
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_get(port: int, path: str = "/metrics") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict, family: str, sample: str, **labels) -> float:
    found = [s.value for s in fams[family].samples
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family, sample, labels, found)
    return found[0]


async def test_endpoint_serves_valid_prometheus_text_matching_the_run():
    port = free_port()
    fake = FakeR1()
    q = [{"role": "user", "content": "Analyze AAPL"}]
    async with r1mw.Pipeline(r1mw.Settings(stages="metrics,exact", metrics_port=port)) as pipe:
        llm = r1mw.wrap(fake, pipe)
        for _ in range(4):
            await llm(model="deepseek-reasoner", messages=q)
        fake.fail = RuntimeError("boom")
        with pytest.raises(RuntimeError):
            await llm(model="deepseek-reasoner", messages=[{"role": "user", "content": "other"}])
        status, text = await http_get(port)
        assert pipe.stage("metrics").url == f"http://127.0.0.1:{port}/metrics"
        missing, _ = await http_get(port, "/nope")
    assert status == 200 and missing == 404
    fams = families(text)  # parses: valid exposition text
    assert fams["r1mw_requests"].type == "counter"
    assert value(fams, "r1mw_requests", "r1mw_requests_total", outcome="hit", stage="exact", tier="l1") == 3
    assert value(fams, "r1mw_requests", "r1mw_requests_total", outcome="miss") == 1
    assert value(fams, "r1mw_requests", "r1mw_requests_total", outcome="error") == 1
    hist = fams["r1mw_request_duration_seconds"]
    assert hist.type == "histogram"
    assert value(fams, "r1mw_request_duration_seconds", "r1mw_request_duration_seconds_count",
                 outcome="hit", stage="exact", tier="l1") == 3
    assert value(fams, "r1mw_request_duration_seconds", "r1mw_request_duration_seconds_bucket",
                 outcome="hit", stage="exact", tier="l1", le="+Inf") == 3
    r1 = DEFAULT_PRICES["deepseek-reasoner"]
    assert value(fams, "r1mw_tokens_saved", "r1mw_tokens_saved_total", model="deepseek-reasoner", kind="completion") == 60
    assert value(fams, "r1mw_cost_saved_usd", "r1mw_cost_saved_usd_total", model="deepseek-reasoner") == pytest.approx(
        3 * (10 * r1.input + 20 * r1.output) / 1e6)
    assert value(fams, "r1mw_tier_entries", "r1mw_tier_entries", tier="l1") == 1
    assert value(fams, "r1mw_tier_bytes", "r1mw_tier_bytes", tier="l1") > 0
    assert value(fams, "r1mw_namespace_requests", "r1mw_namespace_requests_total", namespace="") == 5
    assert value(fams, "r1mw_stage_ready", "r1mw_stage_ready", stage="exact") == 1
    # every metric name follows the conventions
    for name in fams:
        assert name.startswith("r1mw_")
    # our own small parser (used by `r1mw top`) reads the same samples
    mine = promtext.parse(text)
    assert mine.total("r1mw_requests_total") == 5
    assert mine.total("r1mw_request_duration_seconds_bucket", outcome="hit", le="+Inf") == 3
    # stopped with the pipeline
    with pytest.raises(OSError):
        await http_get(port)


async def test_label_cardinality_is_bounded_in_the_exposition():
    port = free_port()
    fake = FakeR1()
    async with r1mw.Pipeline(r1mw.Settings(stages="metrics,exact", metrics_port=port, metrics_top_n=3)) as pipe:
        llm = r1mw.wrap(fake, pipe)
        for i in range(12):
            await llm(model="m", messages=[{"role": "user", "content": f"q{i}"}], cache={"namespace": f"ns{i}"})
        _, text = await http_get(port)
    fams = families(text)
    labels = {s.labels["namespace"] for s in fams["r1mw_namespace_requests"].samples}
    assert len(labels) == 4 and "other" in labels
    assert sum(s.value for s in fams["r1mw_namespace_requests"].samples) == 12


async def test_a_namespace_named_other_is_not_a_second_other_series():
    port = free_port()
    async with r1mw.Pipeline(r1mw.Settings(stages="metrics,exact", metrics_port=port, metrics_top_n=3)) as pipe:
        llm = r1mw.wrap(FakeR1(), pipe)
        for ns in ("a", "a", "other", "b", "c", "d"):
            await llm(model="m", messages=[{"role": "user", "content": "q"}], cache={"namespace": ns})
        _, text = await http_get(port)
    samples = families(text)["r1mw_namespace_requests"].samples
    labels = [s.labels["namespace"] for s in samples]
    assert len(labels) == len(set(labels)), labels  # one series per label set, or Prometheus drops samples
    assert sum(s.value for s in samples) == 6


async def test_port_in_use_fails_at_start_with_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(r1mw.ConfigError, match=f"R1MW_METRICS_PORT={port} is invalid: cannot listen"):
            async with r1mw.Pipeline(r1mw.Settings(stages="metrics,exact", metrics_port=port)):
                pass


def test_promtext_parser_reads_escapes_and_infinities():
    text = '# HELP x y\nx_total{a="q\\"uote",b="back\\\\slash"} 3\nx_bucket{le="+Inf"} +Inf\nplain 1e3\n'
    m = promtext.parse(text)
    assert m.get("x_total")[0].labels == {"a": 'q"uote', "b": "back\\slash"}
    assert m.total("plain") == 1000.0
    with pytest.raises(ValueError):
        promtext.parse("x{a=\"1\" 3")


async def test_metrics_port_without_prometheus_client_is_a_config_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if the extra were not installed
    with pytest.raises(r1mw.ConfigError, match="R1MW_METRICS_PORT.*r1mw\\[prometheus\\]"):
        async with r1mw.Pipeline(r1mw.Settings(stages="metrics,exact", metrics_port=free_port())):
            pass
    # recording itself needs no prometheus_client
    async with r1mw.Pipeline(r1mw.Settings(stages="metrics,exact")) as pipe:
        await r1mw.wrap(FakeR1(), pipe)(model="m", messages=[{"role": "user", "content": "q"}])
        assert pipe.services["metrics"].by_outcome()["miss"] == 1


async def test_metrics_port_without_the_metrics_stage_warns(caplog):
    async with r1mw.Pipeline(r1mw.Settings(stages="exact", metrics_port=free_port())):
        pass
    assert "need the `metrics` stage" in caplog.text


async def test_scope_by_user_exports_the_base_namespace_never_a_user_id():
    # R1MW_SCOPE_BY_USER makes each user a namespace "<namespace>\x00user:<id>" for the cache;
    # the label is the base namespace (no NUL byte, no user id reaching the monitoring system).
    settings = r1mw.Settings(stages="metrics,exact", tiers="l1", scope_by_user=True, namespace="default")
    async with r1mw.Pipeline(settings) as pipe:
        llm = r1mw.wrap(FakeR1(), pipe)
        for user in ("alice", "bob", "alice"):
            await llm(model="deepseek-reasoner", messages=[{"role": "user", "content": "q"}], user=user,
                      cache={"namespace": "desk"})
        await llm(model="deepseek-reasoner", messages=[{"role": "user", "content": "q"}], user="carol")
        rec = pipe.stage("metrics").recorder
        body, _ = exposition(registry_for(pipe, rec))
        snapshot = rec.snapshot()
    text = body.decode()
    assert "\x00" not in text and not any(u in text for u in ("alice", "bob", "carol"))
    fams = families(text)
    assert value(fams, "r1mw_namespace_requests", "r1mw_namespace_requests_total", namespace="desk") == 3
    assert value(fams, "r1mw_namespace_hits", "r1mw_namespace_hits_total", namespace="desk") == 1
    assert value(fams, "r1mw_namespace_requests", "r1mw_namespace_requests_total", namespace="default") == 1
    assert {row["label"] for row in snapshot["namespaces"]} == {"desk", "default"}  # the report's too


@given(namespace=st.text(min_size=1).filter(lambda ns: "\x00" not in ns and ns != OTHER),
       user=st.text(min_size=1))
@hsettings(max_examples=100, deadline=None)
def test_a_user_scoped_namespace_is_counted_under_its_base_namespace(namespace, user):
    pipe = r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1", scope_by_user=True))
    request = pipe.request("m", [{"role": "user", "content": "q"}], {}, {"user": user},
                           control=CacheControl(namespace=namespace))
    assert request.namespace != namespace  # the cache scopes it by user
    rec = MetricsRecorder()
    rec.record(request, None, 0.001)
    rec.record_error(request, 0.001)
    assert [(label, row[REQ]) for label, row in rec.namespaces.export()] == [(namespace, 2)]
