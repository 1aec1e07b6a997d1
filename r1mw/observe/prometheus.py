"""Prometheus exposition: a custom ``prometheus_client`` collector read at scrape time.

Nothing here runs per request: :class:`R1mwCollector` turns the recorder's plain counters,
``pipeline.stats()["tiers"]`` and the alert engine's state into metric families when
Prometheus scrapes. Needs the optional extra ``prometheus`` (``pip install r1mw[prometheus]``).

Names follow Prometheus conventions: ``r1mw_`` prefix, base units (seconds, bytes, USD),
``_total`` on counters. docs/metrics.md describes each one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from ..errors import ConfigError
from .recorder import BUCKETS, COMPLETION, COST, HITS, PROMPT, REQ, LabelTable, MetricsRecorder
from .tierstats import compression_ratio, tier_up

if TYPE_CHECKING:
    from ..pipeline import Pipeline

__all__ = ["R1mwCollector", "exposition", "registry_for"]


def _require() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(
            "R1MW_METRICS_PORT is set but prometheus_client is not installed: "
            "expected `pip install 'r1mw[prometheus]'` or R1MW_METRICS_PORT=0"
        ) from None
    return prometheus_client


class R1mwCollector:
    """Collects r1mw's metrics from a pipeline (and its metrics recorder, if any)."""

    def __init__(self, pipeline: "Pipeline", recorder: MetricsRecorder) -> None:
        self.pipeline = pipeline
        self.recorder = recorder

    def describe(self) -> list[Any]:
        return []  # unchecked collector: names are only known at collect time

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        rec = self.recorder
        requests = CounterMetricFamily("r1mw_requests", "Requests served, by outcome and by the stage and tier that answered.",
                                       labels=("outcome", "stage", "tier"))
        duration = HistogramMetricFamily("r1mw_request_duration_seconds",
                                         "Time from the call into r1mw to its reply (a streamed miss: until the stream starts).",
                                         labels=("outcome", "stage", "tier"))
        for (outcome, stage, tier), series in rec.items():
            labels = [outcome, stage, tier]
            requests.add_metric(labels, series.count)
            cumulative = series.cumulative()
            buckets = [(_bound(b), c) for b, c in zip(BUCKETS, cumulative)]
            buckets.append(("+Inf", cumulative[-1]))
            duration.add_metric(labels, buckets, series.total)
        yield requests
        yield duration

        tokens = CounterMetricFamily("r1mw_tokens_saved", "Tokens of replies served from cache (no upstream call of their own).",
                                     labels=("model", "kind"))
        cost = CounterMetricFamily("r1mw_cost_saved_usd", "What the replies served from cache would have cost upstream, in USD.",
                                   labels=("model",))
        for model, row in rec.models.export():
            tokens.add_metric([model, "prompt"], row[PROMPT])
            tokens.add_metric([model, "completion"], row[COMPLETION])
            cost.add_metric([model], row[COST])
        yield tokens
        yield cost

        yield from _label_families("template", "Template id (top N, the rest as other)", rec.templates)
        yield from _label_families("namespace", "Namespace (top N, the rest as other)", rec.namespaces)

        yield from self._tiers(GaugeMetricFamily, CounterMetricFamily)

        pipe = self.pipeline
        ready = GaugeMetricFamily("r1mw_stage_ready", "1 when the stage is ready (lazily loaded parts loaded).", labels=("stage",))
        for built in pipe.stages:
            ready.add_metric([built.name], 1.0 if getattr(built, "ready", True) else 0.0)
        yield ready
        alerts = GaugeMetricFamily("r1mw_alerts_firing", "1 while the r1mw alert rule fires.", labels=("alertname",))
        engine = pipe.services.get("alerts")
        if engine is not None:
            for name, firing in engine.states().items():
                alerts.add_metric([name], 1.0 if firing else 0.0)
        yield alerts
        dropped = CounterMetricFamily("r1mw_events_dropped", "Events dropped because observers fell behind.")
        dropped.add_metric([], pipe.events.dropped)
        yield dropped
        yield GaugeMetricFamily("r1mw_start_time_seconds", "Unix time the metrics recorder started.", value=rec.started)

    def _tiers(self, gauge: Any, counter: Any) -> Iterator[Any]:
        store = self.pipeline.store
        tiers = store.stats() if store is not None else {}
        families = {
            "entries": gauge("r1mw_tier_entries", "Entries held by the tier.", labels=("tier",)),
            "bytes": gauge("r1mw_tier_bytes", "Bytes held by the tier (as stored: after compression).", labels=("tier",)),
            "max_bytes": gauge("r1mw_tier_max_bytes", "Byte budget of the tier (0 = unbounded).", labels=("tier",)),
            "ratio": gauge("r1mw_tier_compression_ratio", "Raw bytes / stored bytes of the tier's entries.", labels=("tier",)),
            "hits": counter("r1mw_tier_hits", "Lookups the tier answered.", labels=("tier",)),
            "misses": counter("r1mw_tier_misses", "Lookups the tier did not answer.", labels=("tier",)),
            "evictions": counter("r1mw_tier_evictions", "Entries the tier evicted.", labels=("tier",)),
            "up": gauge("r1mw_tier_up", "0 while the tier cannot be reached (Redis down, breaker open).", labels=("tier",)),
        }
        for name, stats in tiers.items():
            if not isinstance(stats, dict):
                continue
            for key in ("entries", "bytes", "max_bytes", "hits", "misses", "evictions"):
                value = stats.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    families[key].add_metric([name], value)
            ratio = compression_ratio(stats)
            if ratio is not None:
                families["ratio"].add_metric([name], ratio)
            up = tier_up(stats)
            if up is not None:
                families["up"].add_metric([name], 1.0 if up else 0.0)
        yield from families.values()


def _bound(b: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(b)


def _label_families(label: str, what: str, table: LabelTable) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily

    requests = CounterMetricFamily(f"r1mw_{label}_requests", f"Requests per {what}.", labels=(label,))
    hits = CounterMetricFamily(f"r1mw_{label}_hits", f"Requests served from cache per {what}.", labels=(label,))
    tokens = CounterMetricFamily(f"r1mw_{label}_tokens_saved", f"Tokens served from cache per {what}.", labels=(label,))
    cost = CounterMetricFamily(f"r1mw_{label}_cost_saved_usd", f"USD saved per {what}.", labels=(label,))
    for value, row in table.export():
        requests.add_metric([value], row[REQ])
        hits.add_metric([value], row[HITS])
        tokens.add_metric([value], row[PROMPT] + row[COMPLETION])
        cost.add_metric([value], row[COST])
    yield from (requests, hits, tokens, cost)


def registry_for(pipeline: "Pipeline", recorder: MetricsRecorder) -> Any:
    """A fresh CollectorRegistry holding only r1mw's collector (no global state)."""
    prometheus_client = _require()
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(R1mwCollector(pipeline, recorder))
    return registry


def exposition(registry: Any) -> tuple[bytes, str]:
    """(body, content type) of the Prometheus text format for ``registry``."""
    prometheus_client = _require()
    return prometheus_client.generate_latest(registry), prometheus_client.CONTENT_TYPE_LATEST
