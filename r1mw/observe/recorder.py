"""The in-process metrics recorder: what the metrics stage counts per request.

No dependency on prometheus_client: recording is a handful of dict and list operations
(about 0.5 us, see docs/benchmarks.md "Metrics stage cost"); exposition formats (Prometheus,
JSON snapshots, alert windows) read these plain structures when asked, never per request.

What one request records:

* one latency observation in the histogram series of its outcome, keyed
  ``(outcome, stage, tier)``: ``hit`` (stage and tier that answered), ``prefetch_hit``
  (answered by an entry a prefetch brought in), ``coalesced`` (waited on an identical call
  in flight), ``miss`` (an upstream call of its own), ``error`` (an exception reached the
  caller), ``cancelled``;
* on a hit (coalesced included): the reply's tokens served from cache and what they would
  have cost, per model;
* per template id and per namespace: requests, hits, tokens, cost saved (bounded labels; the
  namespace without the user scope of R1MW_SCOPE_BY_USER: no user id is exported);
* per template slot value: how often it was asked (bounded).

Label cardinality is bounded by :class:`LabelTable`: at most ``track`` distinct values are
counted individually, the rest under ``"other"``; exporters show the top ``export_n``.

The per-label rows and slot counts are kept per cache entry first: the model, namespace,
template and slots of one entry key never change, so a request adds to its entry's pending
row (one dict lookup) and the rows are updated from those when anything reads them (the
``models``, ``templates``, ``namespaces``, ``slots`` properties) or when 4,096 entries are
pending. That is a third of what counting each request into four tables cost on a hit.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, Iterator

from ..types import Reply, Request
from .prices import PriceTable

__all__ = ["BUCKETS", "LabelTable", "MetricsRecorder", "OTHER", "Series", "namespace_label"]

# Latency histogram bounds in seconds: from an L1 hit (~10 us) to a long R1 reasoning call.
BUCKETS: tuple[float, ...] = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)
OTHER = "other"
OUTCOMES = ("hit", "prefetch_hit", "coalesced", "miss", "error", "cancelled")
HIT_OUTCOMES = frozenset({"hit", "prefetch_hit", "coalesced"})

# Stage/tier labels of outcomes no stage answered (Prometheus prefers a fixed label set).
_MISS = ("miss", "upstream", "none")
_COALESCED = ("coalesced", "inflight", "none")
_PREFETCH_COALESCED = ("prefetch_hit", "inflight", "none")
_ERROR = ("error", "upstream", "none")
_CANCELLED = ("cancelled", "upstream", "none")

# Row layout of per-label tables: requests, hits, prompt tokens, completion tokens, cost (USD).
REQ, HITS, PROMPT, COMPLETION, COST = range(5)
_WIDTH = 5
_PENDING_MAX = 4096  # entries counted per entry before their rows are updated


class Series:
    """One histogram series: count, sum of seconds, per-bucket (non-cumulative) counts."""

    __slots__ = ("count", "total", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for n in self.buckets:
            running += n
            out.append(running)
        return out


class LabelTable:
    """Bounded per-label rows of counters.

    Recording: the first ``track`` distinct values get their own row, later ones share the
    ``other`` row (O(1), no eviction, so every row only grows).

    Exporting (:meth:`export`): the top ``export_n`` rows by requests, chosen while there is
    room and kept from then on (a series must not vanish). What a row had already shown
    inside ``other`` at an earlier scrape stays in ``other`` (its exported series starts
    from there), so every exported counter is monotonic and the rows add up to the total.
    """

    __slots__ = ("rows", "other", "track", "export_n", "_baseline", "_in_other")

    def __init__(self, track: int = 1000, export_n: int = 20) -> None:
        self.rows: dict[str, list[float]] = {}
        self.other: list[float] = [0] * _WIDTH
        self.track = max(1, track)
        self.export_n = max(0, export_n)
        self._baseline: dict[str, list[float]] = {}  # exported label -> what stays in other
        self._in_other: dict[str, list[float]] = {}  # label -> its counts shown in other so far

    def row(self, label: str) -> list[float]:
        row = self.rows.get(label)
        if row is None:
            # A value spelled like the overflow row (a namespace called "other") is counted in
            # it: a row of its own would be exported as a second series with the same labels.
            if len(self.rows) >= self.track or label == OTHER:
                return self.other
            row = self.rows[label] = [0] * _WIDTH
        return row

    def export(self) -> list[tuple[str, list[float]]]:
        """``[(label, row)]``: the exported labels, then ``("other", row)`` (if non-zero)."""
        baseline = self._baseline
        if len(baseline) < self.export_n and len(baseline) < len(self.rows):
            candidates = sorted((r[REQ], label) for label, r in self.rows.items() if label not in baseline)
            for _, label in reversed(candidates[-(self.export_n - len(baseline)):]):
                counted = self._in_other.pop(label, None)
                baseline[label] = counted or [0] * _WIDTH
        out = []
        other = list(self.other)
        for label, row in self.rows.items():
            base = baseline.get(label)
            if base is None:
                _add(other, row)
                if any(row):
                    self._in_other[label] = list(row)
            else:
                out.append((label, [v - b for v, b in zip(row, base)]))
                _add(other, base)
        out.sort()
        if any(other):
            out.append((OTHER, other))
        return out

    def top(self, n: int) -> list[tuple[str, list[float]]]:
        """The ``n`` rows with most requests (for reports), then ``other`` with the rest."""
        ordered = sorted(self.rows.items(), key=lambda item: -item[1][REQ])
        out = [(label, list(row)) for label, row in ordered[:n]]
        other = list(self.other)
        for _, row in ordered[n:]:
            _add(other, row)
        if any(other):
            out.append((OTHER, other))
        return out


def namespace_label(namespace: str) -> str:
    """The namespace as counted and exported: without the ``\x00user:<id>`` scope that
    R1MW_SCOPE_BY_USER appends (Pipeline.request). A user id is personal data and has no place
    in a monitoring system's labels (a hash would still single one user out), a NUL byte is no
    label text, and one row per user would fill the label table: every user of a namespace
    is counted in its row."""
    return namespace.partition("\x00")[0]


def _add(into: list[float], row: Any) -> None:
    for i, v in enumerate(row):
        into[i] += v


class MetricsRecorder:
    """Counts per request what the core does not: see the module docstring."""

    def __init__(self, prices: PriceTable | None = None, *, top_n: int = 20, track: int = 1000,
                 slot_values: int = 2000) -> None:
        self.prices = prices if prices is not None else PriceTable()
        self.series: dict[tuple[str, str, str], Series] = {}
        self._models = LabelTable(track=200, export_n=top_n)
        self._templates = LabelTable(track=track, export_n=top_n)
        self._namespaces = LabelTable(track=track, export_n=top_n)
        self._slots: dict[tuple[str, str, str], int] = {}
        self._slots_other = 0
        self._slot_cap = slot_values
        # (entry key, template id) -> [requests, hits, hits with usage, prompt tokens,
        # completion tokens, cost, model, namespace, template id, slots]
        self._pending: dict[tuple[bytes, str | None], list[Any]] = {}
        self.started = time.time()
        self._price = self.prices.price
        self._last_usage: Any = None  # the last cost computed (a hot entry is hit again and again)
        self._last_price: Any = None
        self._last_cost = 0.0

    # -- the hot path ----------------------------------------------------------------------
    def record(self, request: Request, reply: Any, elapsed: float) -> None:
        """Record one served request (``reply`` is a Reply or a StreamedReply)."""
        source = request.source
        meta = request.meta
        if source != "upstream":
            key = ("prefetch_hit" if meta.get("prefetch_hit") else "hit", source, request.tier or "none")
            hit = True
        elif request.coalesced:
            key = _PREFETCH_COALESCED if meta.get("prefetch_hit") else _COALESCED
            hit = True
        else:
            key = _MISS
            hit = False
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        series.count += 1
        series.total += elapsed
        series.buckets[bisect_left(BUCKETS, elapsed)] += 1

        prompt = completion = 0
        cost = 0.0
        with_usage = 0
        if hit and type(reply) is Reply and reply.usage is not None:
            usage = reply.usage
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
            price = self._price(request.model)
            if usage is self._last_usage and price is self._last_price:
                cost = self._last_cost  # the same entry hit again: same usage, same price
            else:
                cost = price.cost(usage)
                self._last_usage, self._last_price, self._last_cost = usage, price, cost
            with_usage = 1
        template = meta.get("template_id")
        entry = request.key
        # The entry's template can change (a mined template annotates keys stored before it).
        if entry is not None:
            pk = (entry, template)
            row = self._pending.get(pk)
        else:
            row = None
        if row is None:
            row = [0, 0, 0, 0, 0, 0.0, request.model, namespace_label(request.namespace), template,
                   meta.get("slots") or None]
            if entry is not None:
                if len(self._pending) >= _PENDING_MAX:
                    self._fold()
                self._pending[pk] = row
        row[0] += 1
        if hit:
            row[1] += 1
            if with_usage:
                row[2] += 1
                row[3] += prompt
                row[4] += completion
                row[5] += cost
        if entry is None:  # no entry key (no exact stage in the chain): counted by itself, now
            self._fold_row(row)

    def _fold(self) -> None:
        """Add the pending per-entry counts to the label tables and slot counts."""
        pending, self._pending = self._pending, {}
        for row in pending.values():
            self._fold_row(row)

    def _fold_row(self, row: list[Any]) -> None:
        n, hits, with_usage, prompt, completion, cost, model, namespace, template, slots = row
        if with_usage:
            _add(self._models.row(model), (with_usage, with_usage, prompt, completion, cost))
        counts = (n, hits, prompt, completion, cost)
        _add(self._namespaces.row(namespace), counts)
        if template is not None:
            _add(self._templates.row(template), counts)
            if slots:
                self._record_slots(template, slots, n)

    def _record_slots(self, template: str, slots: Any, n: int = 1) -> None:
        table = self._slots
        for name, value in slots.items():
            k = (template, name, value if type(value) is str else str(value))
            have = table.get(k)
            if have is not None:
                table[k] = have + n
            elif len(table) < self._slot_cap:
                table[k] = n
            else:
                self._slots_other += n

    # -- the label tables, up to date when read ------------------------------------------------
    @property
    def models(self) -> LabelTable:
        self._fold()
        return self._models

    @property
    def templates(self) -> LabelTable:
        self._fold()
        return self._templates

    @property
    def namespaces(self) -> LabelTable:
        self._fold()
        return self._namespaces

    @property
    def slots(self) -> dict[tuple[str, str, str], int]:
        self._fold()
        return self._slots

    @property
    def slots_other(self) -> int:
        self._fold()
        return self._slots_other

    def record_error(self, request: Request, elapsed: float, cancelled: bool = False) -> None:
        """Record a request that ended with an exception (the caller got it)."""
        key = _CANCELLED if cancelled else _ERROR
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        series.count += 1
        series.total += elapsed
        series.buckets[bisect_left(BUCKETS, elapsed)] += 1
        self._namespaces.row(namespace_label(request.namespace))[REQ] += 1
        template = request.meta.get("template_id")
        if template is not None:
            self._templates.row(template)[REQ] += 1
            slots = request.meta.get("slots")
            if slots:
                self._record_slots(template, slots)

    # -- reading ----------------------------------------------------------------------------
    def items(self) -> Iterator[tuple[tuple[str, str, str], Series]]:
        """Histogram series, sorted by labels (a copy: safe while requests keep coming)."""
        return iter(sorted(self.series.items()))

    def by_outcome(self) -> dict[str, int]:
        out = dict.fromkeys(OUTCOMES, 0)
        for (outcome, _, _), series in list(self.series.items()):
            out[outcome] = out.get(outcome, 0) + series.count
        return out

    def merged(self, outcomes: frozenset[str] | None = None) -> Series:
        """One histogram over the outcomes given (default: every served one, no errors)."""
        keep = outcomes if outcomes is not None else HIT_OUTCOMES | {"miss"}
        merged = Series()
        for (outcome, _, _), series in list(self.series.items()):
            if outcome in keep:
                merged.count += series.count
                merged.total += series.total
                for i, n in enumerate(series.buckets):
                    merged.buckets[i] += n
        return merged

    def savings(self) -> dict[str, float]:
        prompt = completion = cost = 0.0
        for _, row in self.models.top(10**9):
            prompt += row[PROMPT]
            completion += row[COMPLETION]
            cost += row[COST]
        return {"prompt_tokens": int(prompt), "completion_tokens": int(completion),
                "tokens": int(prompt + completion), "cost_usd": cost}

    def top_slots(self, n: int = 20) -> list[tuple[str, str, str, int]]:
        ordered = sorted(self.slots.items(), key=lambda item: -item[1])[:n]
        return [(t, name, value, count) for (t, name, value), count in ordered]

    def snapshot(self, top: int = 20) -> dict[str, Any]:
        """A plain JSON-able dict of every cumulative figure (what R1MW_METRICS_SNAPSHOT keeps)."""

        def rows(table: LabelTable) -> list[dict[str, Any]]:
            return [{"label": label, "requests": int(r[REQ]), "hits": int(r[HITS]),
                     "tokens": int(r[PROMPT] + r[COMPLETION]), "cost_usd": round(r[COST], 9)}
                    for label, r in table.top(top)]

        return {
            "ts": time.time(),
            "started": self.started,
            "outcomes": self.by_outcome(),
            "series": [{"outcome": o, "stage": s, "tier": t, "count": v.count, "sum": v.total,
                        "buckets": list(v.buckets)} for (o, s, t), v in self.items()],
            "buckets": list(BUCKETS),
            "savings": self.savings(),
            "models": rows(self.models),
            "templates": rows(self.templates),
            "namespaces": rows(self.namespaces),
            "slots": [{"template": t, "slot": s, "value": v, "count": c} for t, s, v, c in self.top_slots(top)],
        }


def quantile(q: float, cumulative: list[int], bounds: tuple[float, ...] = BUCKETS) -> float | None:
    """Estimate a quantile from cumulative bucket counts (Prometheus' histogram_quantile:
    linear inside the bucket; the +Inf bucket answers with the highest finite bound)."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    i = bisect_left(cumulative, rank)
    if i >= len(bounds):
        return bounds[-1]
    lower = bounds[i - 1] if i > 0 else 0.0
    below = cumulative[i - 1] if i > 0 else 0
    inside = cumulative[i] - below
    if inside <= 0:
        return bounds[i]
    return lower + (bounds[i] - lower) * (rank - below) / inside


