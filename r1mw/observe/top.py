"""``r1mw top``: a live terminal dashboard of a running r1mw process, from its metrics endpoint.

::

    r1mw top --url http://127.0.0.1:9464/metrics      # refreshes every --interval seconds
    r1mw top --once                                   # one frame (scripts, tests)

Shows requests and requests/s, hit rate by stage and tier, latency p50/p99 per outcome,
tokens and USD saved, template and namespace leaders, tiers, and the alerts firing. When
the endpoint cannot be reached it prints one line saying so (exit code 1).
"""

from __future__ import annotations

import argparse
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from .promtext import Metrics, parse
from .recorder import HIT_OUTCOMES, quantile

__all__ = ["Frame", "add_parser", "fetch", "frame_of", "render"]

DEFAULT_URL = "http://127.0.0.1:9464/metrics"


class EndpointError(Exception):
    """The metrics endpoint could not be read."""


def fetch(url: str, timeout: float = 2.0) -> Metrics:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (the user's URL)
            body = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        raise EndpointError(f"r1mw top: {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EndpointError(f"r1mw top: cannot reach the metrics endpoint {url} ({reason}); "
                            "is the process running with R1MW_METRICS_PORT set?") from None
    try:
        metrics = parse(body)
    except ValueError as exc:
        raise EndpointError(f"r1mw top: {url} did not serve Prometheus text ({exc})") from None
    if "r1mw_requests_total" not in metrics and "r1mw_start_time_seconds" not in metrics:
        raise EndpointError(f"r1mw top: {url} serves no r1mw metrics (is it an r1mw process?)")
    return metrics


@dataclass(frozen=True, slots=True)
class Frame:
    """What one dashboard frame shows, computed from one (or two) scrapes."""

    requests: float
    rate: float  # requests/s: between two scrapes, or the average since start
    hit_rate: float | None
    by_source: list[tuple[str, str, str, float]]  # outcome, stage, tier, requests
    latency: list[tuple[str, float, float | None, float | None]]  # path, count, p50 ms, p99 ms
    tokens_saved: float
    cost_saved: float
    templates: list[tuple[str, float, float]]  # template, requests, hits
    tiers: list[tuple[str, float, float, float | None]]  # tier, entries, bytes, compression ratio
    alerts: list[str]
    uptime_s: float


def frame_of(now: Metrics, before: Metrics | None = None, elapsed: float = 0.0, at: float | None = None) -> Frame:
    at = time.time() if at is None else at
    requests = now.total("r1mw_requests_total")
    started = now.total("r1mw_start_time_seconds")
    uptime = max(0.0, at - started) if started else 0.0
    if before is not None and elapsed > 0:
        rate = max(0.0, requests - before.total("r1mw_requests_total")) / elapsed
    else:
        rate = requests / uptime if uptime > 0 else 0.0
    by_source = sorted(((s.labels.get("outcome", ""), s.labels.get("stage", ""), s.labels.get("tier", ""), s.value)
                        for s in now.get("r1mw_requests_total")), key=lambda r: -r[3])
    served = sum(r[3] for r in by_source if r[0] not in ("error", "cancelled"))
    hits = sum(r[3] for r in by_source if r[0] in HIT_OUTCOMES)
    latency: list[tuple[str, float, float | None, float | None]] = []
    paths: dict[str, list[tuple[float, float]]] = {}
    for s in now.get("r1mw_request_duration_seconds_bucket"):
        path = s.labels.get("outcome", "")
        if s.labels.get("outcome") == "hit":
            path = f"hit {s.labels.get('stage', '')}/{s.labels.get('tier', '')}"
        le = float(s.labels.get("le", "inf").replace("+Inf", "inf"))
        paths.setdefault(path, []).append((le, s.value))
    merged: dict[str, dict[float, float]] = {}
    for path, buckets in paths.items():
        acc = merged.setdefault(path, {})
        for le, v in buckets:
            acc[le] = acc.get(le, 0.0) + v
    for path, acc in sorted(merged.items()):
        bounds = sorted(acc)
        cumulative = [int(acc[b]) for b in bounds]
        finite = tuple(b for b in bounds if b != float("inf"))
        p50 = quantile(0.5, cumulative, finite)
        p99 = quantile(0.99, cumulative, finite)
        latency.append((path, cumulative[-1] if cumulative else 0,
                        None if p50 is None else p50 * 1000, None if p99 is None else p99 * 1000))
    templates = []
    hits_by_t = {s.labels.get("template"): s.value for s in now.get("r1mw_template_hits_total")}
    for s in sorted(now.get("r1mw_template_requests_total"), key=lambda s: -s.value)[:8]:
        label = s.labels.get("template", "")
        templates.append((label, s.value, hits_by_t.get(label, 0.0)))
    tiers = []
    bytes_by = {s.labels.get("tier"): s.value for s in now.get("r1mw_tier_bytes")}
    ratio_by = {s.labels.get("tier"): s.value for s in now.get("r1mw_tier_compression_ratio")}
    for s in now.get("r1mw_tier_entries"):
        tier = s.labels.get("tier", "")
        tiers.append((tier, s.value, bytes_by.get(tier, 0.0), ratio_by.get(tier)))
    alerts = sorted(s.labels.get("alertname", "") for s in now.get("r1mw_alerts_firing") if s.value > 0)
    return Frame(requests=requests, rate=rate, hit_rate=hits / served if served else None, by_source=by_source,
                 latency=latency, tokens_saved=now.total("r1mw_tokens_saved_total"),
                 cost_saved=now.total("r1mw_cost_saved_usd_total"), templates=templates, tiers=tiers,
                 alerts=alerts, uptime_s=uptime)


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} us" if v < 1 else f"{v:.1f} ms"


def render(frame: Frame, url: str) -> Any:
    """A rich renderable of one frame."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    hit = "-" if frame.hit_rate is None else f"{frame.hit_rate:.1%}"
    head = Text.assemble(
        ("requests ", "bold"), f"{frame.requests:,.0f}   ", ("req/s ", "bold"), f"{frame.rate:,.1f}   ",
        ("hit rate ", "bold"), (hit, "green" if frame.hit_rate and frame.hit_rate >= 0.5 else "yellow"), "   ",
        ("saved ", "bold"), f"{frame.tokens_saved:,.0f} tokens, ${frame.cost_saved:,.4f}   ",
        ("uptime ", "bold"), f"{frame.uptime_s:,.0f} s")
    sources = Table(title="served by", expand=True)
    for col in ("outcome", "stage", "tier", "requests", "share"):
        sources.add_column(col, justify="right" if col in ("requests", "share") else "left")
    total = sum(r[3] for r in frame.by_source) or 1
    for outcome, stage, tier, n in frame.by_source:
        sources.add_row(outcome, stage, tier, f"{n:,.0f}", f"{n / total:.1%}")
    latency = Table(title="latency", expand=True)
    for col in ("path", "count", "p50", "p99"):
        latency.add_column(col, justify="left" if col == "path" else "right")
    for path, count, p50, p99 in frame.latency:
        latency.add_row(path, f"{count:,.0f}", _ms(p50), _ms(p99))
    parts: list[Any] = [head, sources, latency]
    if frame.templates:
        t = Table(title="templates", expand=True)
        for col in ("template", "requests", "hit rate"):
            t.add_column(col, justify="left" if col == "template" else "right")
        for name, n, h in frame.templates:
            t.add_row(name, f"{n:,.0f}", f"{h / n:.1%}" if n else "-")
        parts.append(t)
    if frame.tiers:
        t = Table(title="tiers", expand=True)
        for col in ("tier", "entries", "bytes", "compression"):
            t.add_column(col, justify="left" if col == "tier" else "right")
        for name, entries, nbytes, ratio in frame.tiers:
            t.add_row(name, f"{entries:,.0f}", f"{nbytes:,.0f}", "-" if ratio is None else f"{ratio:.2f}x")
        parts.append(t)
    alerts = Text("alerts: none firing", style="green") if not frame.alerts else \
        Text("alerts FIRING: " + ", ".join(frame.alerts), style="bold red")
    parts.append(alerts)
    return Panel(Group(*parts), title=f"r1mw top - {url}", subtitle=time.strftime("%H:%M:%S"))


def run(url: str, *, once: bool = False, interval: float = 2.0, timeout: float = 2.0, console: Any = None) -> int:
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    try:
        current = fetch(url, timeout)
    except EndpointError as exc:
        console.print(str(exc), highlight=False, markup=False, soft_wrap=True)
        return 1
    if once:
        console.print(render(frame_of(current), url))
        return 0
    last_at = time.monotonic()
    previous: Metrics | None = None
    elapsed = 0.0
    with Live(render(frame_of(current), url), console=console, refresh_per_second=4, screen=False) as live:
        while True:
            time.sleep(interval)
            previous = current
            try:
                current = fetch(url, timeout)
            except EndpointError as exc:
                live.update(_error_text(str(exc)))
                continue
            now = time.monotonic()
            elapsed, last_at = now - last_at, now
            live.update(render(frame_of(current, previous, elapsed), url))


def _error_text(message: str) -> Any:
    from rich.text import Text

    return Text(message, style="bold red")


def _main(args: argparse.Namespace) -> int:
    return run(args.url, once=args.once, interval=args.interval, timeout=args.timeout)


def _seconds(raw: str) -> float:
    """A number of seconds > 0: time.sleep(-1) raised a traceback, 0 scraped in a busy loop,
    and a timeout of 0 said the endpoint could not be reached."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"{raw!r} is invalid: expected a number of seconds > 0")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("top", help="live dashboard of a running r1mw process (from its metrics endpoint)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"metrics endpoint (default {DEFAULT_URL})")
    p.add_argument("--interval", type=_seconds, default=2.0, help="seconds between refreshes (default 2)")
    p.add_argument("--timeout", type=_seconds, default=2.0, help="seconds to wait for the endpoint (default 2)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(func=_main)
