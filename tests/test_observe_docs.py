"""docs/metrics.md, docs/grafana-dashboard.json and docs/prometheus-alerts.yml stay in sync
with what the collector exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import r1mw
from r1mw.observe.prometheus import exposition, registry_for
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio

DOCS = Path(__file__).resolve().parent.parent / "docs"


async def exported_names() -> tuple[set[str], set[str]]:
    """(family names, sample names) of a live exposition."""
    async with r1mw.Pipeline(r1mw.Settings(stages="metrics,exact", alert_hit_rate_below=0.5)) as pipe:
        await r1mw.wrap(FakeR1(), pipe)(model="m", messages=[{"role": "user", "content": "q"}])
        text = exposition(registry_for(pipe, pipe.services["metrics"]))[0].decode()
    families, samples = set(), set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        name = name.removesuffix("_total")
        families.add(name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(kind, ("",))
        samples.update(name + s for s in suffixes)
    return families, samples


async def test_every_exported_metric_is_documented():
    families, samples = await exported_names()
    doc = (DOCS / "metrics.md").read_text()
    for name in families:
        documented = name in doc or f"{name}_total" in doc
        assert documented, f"{name} is exported but not described in docs/metrics.md"
    assert len(families) >= 20


async def test_dashboard_and_alert_rules_use_only_exported_metrics():
    _, samples = await exported_names()
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(dashboard["panels"]) >= 10 and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    rules = yaml.safe_load((DOCS / "prometheus-alerts.yml").read_text())["groups"][0]["rules"]
    assert all({"alert", "expr", "labels", "annotations"} <= set(r) for r in rules)
    exprs += [r["expr"] for r in rules]
    used = {name for e in exprs for name in re.findall(r"\br1mw_[a-z_]+", e)}
    assert used and used <= samples, sorted(used - samples)
    # every in-process rule has its PromQL twin
    names = {r["alert"] for r in rules}
    assert {"R1mwHitRateLow", "R1mwLatencyP99High", "R1mwUpstreamErrorRateHigh", "R1mwDiskTierFull",
            "R1mwRedisDown"} <= names
