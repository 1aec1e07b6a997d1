"""``r1mw report SNAPSHOT --out report.html``: a self-contained HTML report from metrics snapshots.

No network is needed to view it: the charts are inline SVG generated here, the style is
inline, and the only script is a few inline lines that mark the page as rendered (used by
the headless-browser test). Charts:

* hit rate over time (per snapshot interval),
* latency distribution per path (hit by stage/tier, miss, coalesced, prefetch hit, error),
* savings over time (cumulative USD and tokens),
* top templates and top slot values,
* hour-of-day usage pattern (requests per UTC hour).

Snapshots are cumulative per process run; a run is recognised by its ``started`` time, so
a restart (counters back at zero) never shows up as negative traffic, and the interleaved
lines of several processes sharing one file are not taken for one restart after another.
A run whose first lines were trimmed away (``prev_ts`` set on its first line in the file)
starts from that line as a baseline: the traffic before it is in the totals (they come from
each run's last line) but in no interval of the hit-rate and hour-of-day charts.
"""

from __future__ import annotations

import argparse
import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import R1mwError
from .charts import bar_chart, line_chart
from .recorder import BUCKETS, quantile
from .snapshots import read_snapshots

__all__ = ["Analysis", "add_parser", "analyse", "render_html", "write_report"]

_HITS = ("hit", "prefetch_hit", "coalesced")


@dataclass
class Analysis:
    """What the report shows, computed from a list of snapshots."""

    first: float = 0.0
    last: float = 0.0
    runs: int = 0
    requests: int = 0
    hits: int = 0
    served: int = 0
    errors: int = 0
    hit_rate: list[tuple[float, float]] = field(default_factory=list)
    savings_usd: list[tuple[float, float]] = field(default_factory=list)
    savings_tokens: list[tuple[float, float]] = field(default_factory=list)
    latency: dict[str, list[int]] = field(default_factory=dict)  # path -> per-bucket counts
    templates: dict[str, list[float]] = field(default_factory=dict)  # id -> [requests, hits, cost]
    slots: dict[str, int] = field(default_factory=dict)  # "template: slot=value" -> count
    hours: list[int] = field(default_factory=lambda: [0] * 24)
    cost_usd: float = 0.0
    tokens: int = 0
    alerts: list[str] = field(default_factory=list)
    tiers: dict[str, dict[str, Any]] = field(default_factory=dict)


def _counts(snap: dict[str, Any]) -> tuple[int, int, int]:
    o = snap.get("outcomes", {})
    hits = sum(int(o.get(k, 0)) for k in _HITS)
    return hits, hits + int(o.get("miss", 0)), int(o.get("error", 0))


def _baseline_only(snap: dict[str, Any]) -> bool:
    """Whether a run's first line in the file was not its first snapshot (``prev_ts`` names a
    line the file no longer holds). Lines of older writers have no ``prev_ts``: taken, as they
    always were, for the run's first interval."""
    return snap.get("prev_ts") is not None


def _path(series: dict[str, Any]) -> str:
    if series.get("outcome") in ("hit", "prefetch_hit"):
        return f"{series['outcome']} {series.get('stage')}/{series.get('tier')}"
    return str(series.get("outcome"))


def analyse(snapshots: Sequence[dict[str, Any]]) -> Analysis:
    if not snapshots:
        raise R1mwError("the snapshot file holds no metrics snapshot yet")
    a = Analysis(first=snapshots[0]["ts"], last=snapshots[-1]["ts"])
    # Several processes (workers started with the same R1MW_METRICS_SNAPSHOT) append to one
    # file, their lines interleaved: each snapshot is compared with the previous one of its
    # own run, never with the line just above it (another process's cumulative counters).
    latest: dict[tuple[Any, int], dict[str, Any]] = {}  # run -> its newest snapshot so far
    restarts: dict[Any, int] = {}  # started -> runs seen with it (lines without `started` share None)
    usd = tokens = 0.0  # cumulative savings, summed over runs
    for snap in snapshots:
        started = snap.get("started")
        run = (started, restarts.get(started, 0))
        prev = latest.get(run)
        if prev is not None and _counts(snap)[1] < _counts(prev)[1]:  # counters back at zero: a restart
            restarts[started] = run[1] + 1
            run, prev = (started, run[1] + 1), None
        if prev is None and _baseline_only(snap):
            # The run's earlier lines were trimmed away: this line's counters hold everything
            # since the process started (days, maybe), not one interval. It is the base the
            # run's next line is compared with; its savings still count toward the cumulative
            # chart (it ends at the total the summary shows).
            latest[run] = snap
            savings = snap.get("savings", {})
            usd += savings.get("cost_usd", 0.0)
            tokens += savings.get("tokens", 0)
            a.savings_usd.append((snap["ts"], usd))
            a.savings_tokens.append((snap["ts"], tokens))
            continue
        if prev is None:
            hits, served, errors = _counts(snap)
            was = {}
        else:
            h1, s1, e1 = _counts(snap)
            h0, s0, e0 = _counts(prev)
            hits, served, errors = h1 - h0, s1 - s0, e1 - e0
            was = prev.get("savings", {})
        latest[run] = snap
        if served > 0:
            a.hit_rate.append((snap["ts"], hits / served))
        hour = time.gmtime(snap["ts"]).tm_hour
        a.hours[hour] += served + errors
        savings = snap.get("savings", {})
        usd += savings.get("cost_usd", 0.0) - was.get("cost_usd", 0.0)
        tokens += savings.get("tokens", 0) - was.get("tokens", 0)
        a.savings_usd.append((snap["ts"], usd))
        a.savings_tokens.append((snap["ts"], tokens))
    ends = list(latest.values())  # the last snapshot of each run
    a.runs = len(ends)
    for end in ends:
        hits, served, errors = _counts(end)
        a.hits += hits
        a.served += served
        a.errors += errors
        a.cost_usd += end.get("savings", {}).get("cost_usd", 0.0)
        a.tokens += int(end.get("savings", {}).get("tokens", 0))
        for series in end.get("series", []):
            acc = a.latency.setdefault(_path(series), [0] * (len(BUCKETS) + 1))
            for i, n in enumerate(series.get("buckets", [])[: len(acc)]):
                acc[i] += int(n)
        for row in end.get("templates", []):
            t = a.templates.setdefault(str(row["label"]), [0, 0, 0.0])
            t[0] += row.get("requests", 0)
            t[1] += row.get("hits", 0)
            t[2] += row.get("cost_usd", 0.0)
        for row in end.get("slots", []):
            key = f"{row['template']}: {row['slot']}={row['value']}"
            a.slots[key] = a.slots.get(key, 0) + int(row.get("count", 0))
    a.requests = a.served + a.errors
    a.alerts = list(snapshots[-1].get("alerts_firing", []))
    a.tiers = dict(snapshots[-1].get("tiers", {}))
    return a


def _pct(v: float) -> str:
    return f"{v:.0%}"


def _usd(v: float) -> str:
    return f"${v:,.4f}" if v < 10 else f"${v:,.2f}"


def _bucket_label(i: int) -> str:
    if i >= len(BUCKETS):
        return "inf"
    b = BUCKETS[i]
    return f"{b * 1e6:g}us" if b < 1e-3 else (f"{b * 1e3:g}ms" if b < 1 else f"{b:g}s")


def render_html(a: Analysis, *, title: str = "r1mw report") -> str:
    charts: list[tuple[str, str]] = []
    charts.append(("Hit rate over time", line_chart(
        "Hit rate per snapshot interval (UTC)", [("hit rate", a.hit_rate)], y_fmt=_pct, ymax=1.0)))
    labels = [_bucket_label(i) for i in range(len(BUCKETS) + 1)]
    dist = []
    rows = []
    for path, counts in sorted(a.latency.items(), key=lambda kv: -sum(kv[1])):
        total = sum(counts)
        if not total:
            continue
        dist.append((path, [(float(i), n / total) for i, n in enumerate(counts)]))
        cumulative, running = [], 0
        for n in counts:
            running += n
            cumulative.append(running)
        p50, p99 = quantile(0.5, cumulative), quantile(0.99, cumulative)
        rows.append((path, total, p50, p99))
    charts.append(("Latency distribution per path", line_chart(
        "Share of requests per latency bucket, per path", dist, y_fmt=_pct, x_labels=labels)))
    charts.append(("Savings over time", line_chart(
        "Cumulative USD saved (UTC)", [("USD saved", a.savings_usd)], y_fmt=_usd)))
    top_t = sorted(a.templates.items(), key=lambda kv: -kv[1][0])[:15]
    charts.append(("Top templates", bar_chart(
        "Requests per template id", [t for t, _ in top_t], [v[0] for _, v in top_t], horizontal=True,
        y_fmt=lambda v: f"{v:,.0f}",
        notes=[f"({v[1] / v[0]:.0%} hits, {_usd(v[2])} saved)" if v[0] else "" for _, v in top_t])))
    top_s = sorted(a.slots.items(), key=lambda kv: -kv[1])[:15]
    charts.append(("Top slot values", bar_chart(
        "Requests per template slot value", [s for s, _ in top_s], [float(n) for _, n in top_s], horizontal=True,
        y_fmt=lambda v: f"{v:,.0f}")))
    charts.append(("Hour-of-day usage", bar_chart(
        "Requests per hour of day (UTC)", [f"{h:02d}" for h in range(24)], [float(n) for n in a.hours],
        y_fmt=lambda v: f"{v:,.0f}")))

    e = html.escape
    span = f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(a.first))} - {time.strftime('%Y-%m-%d %H:%M', time.gmtime(a.last))} UTC"
    hit_rate = a.hits / a.served if a.served else 0.0
    summary = [("requests", f"{a.requests:,}"), ("hit rate", f"{hit_rate:.1%}"), ("errors", f"{a.errors:,}"),
               ("tokens saved", f"{a.tokens:,}"), ("USD saved", _usd(a.cost_usd)), ("process runs", str(a.runs)),
               ("alerts firing at the end", ", ".join(a.alerts) or "none")]
    cards = "".join(f'<div class="card"><div class="k">{e(k)}</div><div class="v">{e(v)}</div></div>' for k, v in summary)
    lat_rows = "".join(
        f"<tr><td>{e(p)}</td><td>{n:,}</td><td>{'-' if p50 is None else f'{p50 * 1000:.3f}'}</td>"
        f"<td>{'-' if p99 is None else f'{p99 * 1000:.3f}'}</td></tr>" for p, n, p50, p99 in rows)
    tier_rows = "".join(
        f"<tr><td>{e(name)}</td><td>{e(str(s.get('entries', '-')))}</td><td>{e(str(s.get('bytes', '-')))}</td>"
        f"<td>{e(str(s.get('max_bytes', '-')))}</td></tr>" for name, s in a.tiers.items())
    sections = "".join(f'<section><h2>{e(name)}</h2>{svg}</section>' for name, svg in charts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#111;background:#fafafa}}
h1{{font-size:22px}} h2{{font-size:16px;margin:18px 0 6px}}
.cards{{display:flex;flex-wrap:wrap;gap:10px}} .card{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px}}
.k{{font-size:12px;color:#555}} .v{{font-size:18px;font-weight:600}}
section{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;margin:12px 0}}
svg .t{{font-size:13px;font-weight:600}} svg .a{{font-size:11px;fill:#444}} svg .g{{stroke:#eee}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}} td:first-child{{text-align:left}}
</style>
<script>window.addEventListener("error", function (ev) {{ document.documentElement.setAttribute("data-errors", String(ev.message)); }});</script>
</head>
<body data-charts="0">
<h1>{e(title)}</h1><p>{e(span)}, {len(a.hit_rate)} intervals with traffic</p>
<div class="cards">{cards}</div>
{sections}
<section><h2>Latency per path (ms)</h2><table><tr><th>path</th><th>requests</th><th>p50</th><th>p99</th></tr>{lat_rows}</table></section>
<section><h2>Tiers at the last snapshot</h2><table><tr><th>tier</th><th>entries</th><th>bytes</th><th>max bytes</th></tr>{tier_rows}</table></section>
<script>
document.body.setAttribute("data-charts", String(document.querySelectorAll("svg.chart").length));
</script>
</body></html>
"""


def write_report(snapshot_path: str | Path, out: str | Path, *, title: str = "r1mw report") -> Analysis:
    analysis = analyse(read_snapshots(snapshot_path))
    Path(out).write_text(render_html(analysis, title=title), encoding="utf-8")
    return analysis


def _main(args: argparse.Namespace) -> int:
    analysis = write_report(args.snapshot, args.out, title=args.title)
    print(f"r1mw report: {analysis.requests:,} requests over {analysis.runs} run(s) -> {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="write a self-contained HTML report from a metrics snapshot file")
    p.add_argument("snapshot", help="the R1MW_METRICS_SNAPSHOT file (JSON lines)")
    p.add_argument("--out", default="r1mw-report.html", help="HTML file to write (default r1mw-report.html)")
    p.add_argument("--title", default="r1mw report", help="report title")
    p.set_defaults(func=_main)
