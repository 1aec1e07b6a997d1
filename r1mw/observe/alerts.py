"""Alert rules over a sliding window, evaluated in the background; fire and clear.

::

    engine = AlertEngine.from_settings(settings)      # None when no rule is set
    engine.observe(sample_pipeline(pipeline, now))    # every R1MW_ALERT_INTERVAL_S
    for alert in engine.evaluate(now):                # transitions only
        pipeline.notify("r1mw_alert", alert=alert)   # each observer on its own

A :class:`Sample` holds cumulative counters at one instant; a rule looks at the difference
between the newest sample and the newest one at least ``window_s`` old (or the oldest one
kept, while the process is younger than the window). Rate and latency rules say nothing
(and clear) below ``min_requests`` requests in the window: three misses at start-up are no
incident. The clock is injected, so tests drive evaluation without sleeping.

Each alert delivered is a plain dict: ``name``, ``state`` (``firing`` / ``resolved``),
``value``, ``threshold``, ``message``, ``at`` (unix time).
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .tierstats import tier_up
from .recorder import BUCKETS, quantile

if TYPE_CHECKING:
    from ..pipeline import Pipeline
    from ..settings import Settings

__all__ = ["AlertEngine", "CoreLatency", "Rule", "Sample", "Window", "sample_pipeline"]

log = logging.getLogger("r1mw.alerts")


@dataclass(frozen=True, slots=True)
class Sample:
    """Cumulative figures at one instant. ``latency`` is the per-bucket (non-cumulative)
    latency histogram of served requests, on :data:`r1mw.observe.recorder.BUCKETS`."""

    at: float
    served: int = 0
    hits: int = 0
    errors: int = 0
    latency: tuple[int, ...] = ()
    p99_ms: float | None = None  # used when a sample has no histogram (a Sample made by hand)
    tiers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Window:
    """What happened between two samples (``tiers`` is the newest state)."""

    seconds: float
    served: int
    hits: int
    errors: int
    latency: tuple[int, ...]
    p99_ms: float | None
    tiers: Mapping[str, Any]

    @property
    def requests(self) -> int:
        return self.served + self.errors

    def p99(self) -> float | None:
        if self.latency:
            running, cumulative = 0, []
            for n in self.latency:
                running += n
                cumulative.append(running)
            q = quantile(0.99, cumulative)
            return None if q is None else q * 1000.0
        return self.p99_ms


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: ``measure(window, min_requests)`` -> (value, detail) or None when it has
    nothing to say; it fires while ``value`` is past ``threshold`` (above, or below)."""

    name: str
    threshold: float
    measure: Callable[[Window, int], tuple[float, str] | None]
    below: bool = False
    unit: str = ""

    def breached(self, value: float) -> bool:
        return value < self.threshold if self.below else value > self.threshold


def _hit_rate(w: Window, min_requests: int) -> tuple[float, str] | None:
    if w.served < min_requests:
        return None
    return w.hits / w.served, f"{w.hits} of {w.served} requests served from cache"


def _p99(w: Window, min_requests: int) -> tuple[float, str] | None:
    if w.served < min_requests:
        return None
    p99 = w.p99()
    return None if p99 is None else (p99, f"over {w.served} requests")


def _error_rate(w: Window, min_requests: int) -> tuple[float, str] | None:
    if w.requests < min_requests:
        return None
    return w.errors / w.requests, f"{w.errors} of {w.requests} requests ended in an upstream error"


def _disk_full(w: Window, _min: int) -> tuple[float, str] | None:
    worst: tuple[float, str] | None = None
    for i, (name, stats) in enumerate(w.tiers.items()):
        if i == 0 or not isinstance(stats, Mapping):  # the first tier is RAM
            continue
        used, budget = stats.get("bytes"), stats.get("max_bytes")
        if isinstance(used, (int, float)) and isinstance(budget, (int, float)) and budget > 0:
            pct = 100.0 * used / budget
            if worst is None or pct > worst[0]:
                worst = (pct, f"tier {name} holds {int(used)} of {int(budget)} bytes")
    return worst


def _redis_down(w: Window, _min: int) -> tuple[float, str] | None:
    down = [name for name, stats in w.tiers.items() if isinstance(stats, Mapping) and tier_up(stats) is False]
    return float(len(down)), ("unreachable: " + ", ".join(down)) if down else "every tier reachable"


class AlertEngine:
    """Keeps samples over the window, evaluates the rules, remembers which fire."""

    def __init__(self, rules: Sequence[Rule], *, window_s: float = 300.0, min_requests: int = 20,
                 clock: Callable[[], float] = time.time) -> None:
        self.rules = list(rules)
        self.window_s = window_s
        self.min_requests = min_requests
        self.clock = clock
        self._samples: deque[Sample] = deque()
        self._firing: dict[str, bool] = {rule.name: False for rule in self.rules}
        self.evaluations = 0

    @classmethod
    def from_settings(cls, settings: "Settings", *, clock: Callable[[], float] = time.time) -> "AlertEngine | None":
        """The rules the settings switch on; None when there is none."""
        s = settings
        rules: list[Rule] = []
        if s.alert_hit_rate_below is not None:
            rules.append(Rule("hit_rate_low", s.alert_hit_rate_below, _hit_rate, below=True))
        if s.alert_p99_ms_above is not None:
            rules.append(Rule("latency_p99_high", s.alert_p99_ms_above, _p99, unit="ms"))
        if s.alert_error_rate_above is not None:
            rules.append(Rule("upstream_error_rate_high", s.alert_error_rate_above, _error_rate))
        if s.alert_disk_full_pct is not None:
            rules.append(Rule("disk_tier_full", s.alert_disk_full_pct, _disk_full, unit="%"))
        if s.alert_redis_down:
            rules.append(Rule("redis_down", 0.0, _redis_down))
        if not rules:
            return None
        return cls(rules, window_s=s.alert_window_s, min_requests=s.alert_min_requests, clock=clock)

    def observe(self, sample: Sample) -> None:
        samples = self._samples
        samples.append(sample)
        # Keep exactly one sample at or before the window's start: the base to subtract.
        start = sample.at - self.window_s
        while len(samples) >= 2 and samples[1].at <= start:
            samples.popleft()

    def window(self) -> Window | None:
        if not self._samples:
            return None
        new, old = self._samples[-1], self._samples[0]
        if len(self._samples) == 1:
            old = Sample(at=new.at)  # a single sample: everything since the counters started
        latency = tuple(a - b for a, b in zip(new.latency, old.latency)) if old.latency else new.latency
        return Window(seconds=new.at - old.at, served=new.served - old.served, hits=new.hits - old.hits,
                      errors=new.errors - old.errors, latency=latency, p99_ms=new.p99_ms, tiers=new.tiers)

    def evaluate(self, now: float | None = None) -> list[dict[str, Any]]:
        """Evaluate every rule on the current window; return the alerts that changed state."""
        at = self.clock() if now is None else now
        window = self.window()
        self.evaluations += 1
        changed = []
        for rule in self.rules:
            measured = rule.measure(window, self.min_requests) if window is not None else None
            firing = measured is not None and rule.breached(measured[0])
            if firing == self._firing[rule.name]:
                continue
            self._firing[rule.name] = firing
            value, detail = measured if measured is not None else (None, "no data in the window")
            side = "below" if rule.below else "above"
            shown = "n/a" if value is None else f"{value:.4g}{rule.unit}"
            message = (f"{rule.name}: {shown} is {side} {rule.threshold:g}{rule.unit} ({detail})" if firing
                       else f"{rule.name} resolved: {shown} ({detail})")
            changed.append({"name": rule.name, "state": "firing" if firing else "resolved", "value": value,
                            "threshold": rule.threshold, "message": message, "at": at,
                            "window_s": self.window_s})
        return changed

    def states(self) -> dict[str, bool]:
        """``{rule name: firing}``."""
        return dict(self._firing)

    @property
    def firing(self) -> list[str]:
        return [name for name, on in self._firing.items() if on]

    def tick(self, pipeline: "Pipeline", now: float | None = None) -> list[dict[str, Any]]:
        """Sample the pipeline, evaluate, deliver each change through the ``r1mw_alert`` hook."""
        at = self.clock() if now is None else now
        self.observe(sample_pipeline(pipeline, at))
        changed = self.evaluate(at)
        for alert in changed:
            # Each observer on its own: one that raises must not swallow this alert for the others.
            pipeline.notify("r1mw_alert", alert=alert)
        return changed


class CoreLatency:
    """A cumulative latency histogram of a pipeline without the ``metrics`` stage, made from
    the core's recent latencies when sampled (the core keeps no histogram: none on the
    request path).

    The core keeps the newest latencies of hits and misses, not a window's: its p99 stays
    high for as long as a slow spell is among them, and the p99 rule never resolved. So each
    sample adds to this histogram the latencies that arrived since the previous one (the core
    counts them), and two samples subtract to the window's, like the recorder's histogram.
    When more arrived than the core keeps (10,000 of each kind per alert interval), only the
    newest are counted: the window's p99 is then estimated from its end.
    """

    __slots__ = ("buckets", "_seen")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)
        self._seen: dict[str, int] = {}

    def update(self, pipeline: "Pipeline") -> tuple[int, ...]:
        """Add the latencies recorded since the last update; the cumulative histogram."""
        for kind, count in pipeline.latency_counts().items():
            new = count - self._seen.get(kind, 0)
            self._seen[kind] = count
            for seconds in pipeline.recent_latencies(kind, new):
                self.buckets[bisect_left(BUCKETS, seconds)] += 1
        return tuple(self.buckets)


def sample_pipeline(pipeline: "Pipeline", at: float) -> Sample:
    """The pipeline's cumulative figures now: from the metrics recorder when the ``metrics``
    stage runs, else from the core counters and a :class:`CoreLatency` kept per pipeline (in
    ``pipeline.services``: every sampler of one pipeline adds to one cumulative histogram)."""
    tiers = pipeline.store.stats() if pipeline.store is not None else {}
    tiers = {k: v for k, v in tiers.items() if isinstance(v, Mapping)}
    recorder = pipeline.services.get("metrics")
    if recorder is not None:
        outcomes = recorder.by_outcome()
        hits = outcomes["hit"] + outcomes["prefetch_hit"] + outcomes["coalesced"]
        return Sample(at=at, served=hits + outcomes["miss"], hits=hits, errors=outcomes["error"],
                      latency=tuple(recorder.merged().buckets), tiers=tiers)
    stats = pipeline.stats()
    hits = stats["hits"] + stats["coalesced"]
    core = pipeline.services.get(_CORE_LATENCY)
    if core is None:
        core = pipeline.services[_CORE_LATENCY] = CoreLatency()
    return Sample(at=at, served=hits + stats["misses"], hits=hits, errors=stats["errors"],
                  latency=core.update(pipeline), tiers=tiers)


_CORE_LATENCY = "core_latency"
