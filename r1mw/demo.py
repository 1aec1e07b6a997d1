"""``r1mw demo``: a trading desk's day through r1mw, against a simulated DeepSeek-R1.

The bundled workload (:mod:`r1mw.workload.generator`) is replayed three times, each on a
fresh cache: with no cache, with a plain exact cache (the exact stage alone, in RAM) and
with r1mw's full pipeline (every stage and tier the installed plugins register, among
those the design names; the disk tiers in a temporary directory or ``--cache-dir``). The
table shows the four promised figures (hit rate, response time, stored size, throughput),
false hits, upstream calls and tokens/cost saved. No network, no server.

``--upstream URL --model NAME`` replays against a real OpenAI-compatible endpoint instead
(API key from ``OPENAI_API_KEY``, or ``DEEPSEEK_API_KEY``); that costs real tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from .cli import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, SHARE, HelpFormatter, check_numbers
from .errors import ConfigError
from .settings import Settings
from .workload.generator import MODEL, Workload, add_arguments, generate, spec_from_args
from .workload.replay import DEFAULT_PRICES, RunConfig, RunResult, available, replay

__all__ = ["FULL_STAGES", "FULL_TIERS", "add_parser", "plan_runs", "render_table", "run_demo"]

# The full pipeline of the design, outermost first, and the RAM + disk tiers.
FULL_STAGES = ("metrics", "prefetch", "template", "exact", "semantic")
FULL_TIERS = ("l1", "l2")
RUN_NAMES = ("none", "exact", "r1mw")
_TITLES = {"none": "no cache", "exact": "exact cache", "r1mw": "r1mw"}


def plan_runs(names: Sequence[str] = RUN_NAMES, *, stages: Sequence[str] | None = None,
              tiers: Sequence[str] | None = None, plugins: Sequence[Any] = ()) -> tuple[list[RunConfig], list[str]]:
    """The configurations to replay and notes on what was left out.

    r1mw's run uses ``stages``/``tiers`` when given (each must be registered), else the
    embedded defaults (``Settings()``) restricted to what the installed plugins register;
    while those defaults are the foundation's bare ``exact``/``l1``, the design's full lists
    (:data:`FULL_STAGES`, :data:`FULL_TIERS`) stand in for them.
    """
    have_stages, have_tiers = available(plugins)
    notes: list[str] = []
    if stages is not None:
        missing = [s for s in stages if s not in have_stages]
        if missing:
            raise ConfigError(f"--stages: {', '.join(missing)} not registered; available: {', '.join(sorted(have_stages))}")
        full_stages = tuple(stages)
    else:
        wanted = _wanted_stages()
        full_stages = tuple(s for s in wanted if s in have_stages)
        left = [s for s in wanted if s not in have_stages]
        if left:
            notes.append(f"stages not installed yet, left out: {', '.join(left)}")
    if tiers is not None:
        missing = [t for t in tiers if t not in have_tiers]
        if missing:
            raise ConfigError(f"--tiers: {', '.join(missing)} not registered; available: {', '.join(sorted(have_tiers))}")
        full_tiers = tuple(tiers)
    else:
        wanted = _wanted_tiers()
        full_tiers = tuple(t for t in wanted if t in have_tiers) or ("l1",)
        left = [t for t in wanted if t not in have_tiers]
        if left:
            notes.append(f"tiers not installed yet, left out: {', '.join(left)}")
    configs = []
    for name in names:
        if name == "none":
            configs.append(RunConfig("none", (), ("l1",), tuple(plugins)))
        elif name == "exact":
            configs.append(RunConfig("exact", ("exact",), ("l1",), tuple(plugins)))
        elif name == "r1mw":
            # The desk's own templates: the template stage gets the bundled set, as a team
            # would point R1MW_TEMPLATES at theirs.
            extra = {"templates": str(bundled_templates())} if "template" in full_stages else {}
            configs.append(RunConfig("r1mw", full_stages, full_tiers, tuple(plugins), extra))
        else:
            raise ConfigError(f"--runs: unknown run {name!r}; allowed: {', '.join(RUN_NAMES)}")
    return configs, notes


def _wanted_stages() -> tuple[str, ...]:
    # The embedded defaults when they name a pipeline; the design's full list while the
    # defaults are still the foundation's bare exact stage.
    default = Settings().stages
    return default if set(default) - {"exact"} else FULL_STAGES


def _wanted_tiers() -> tuple[str, ...]:
    default = Settings().tiers
    return default if len(default) > 1 else FULL_TIERS


def bundled_templates() -> Path:
    """Path of the bundled trading templates (the workload's catalog)."""
    return Path(str(resources.files("r1mw").joinpath("data/trading_templates.json")))


# -- the table ---------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:,.1f} s"
    if value >= 10:
        return f"{value:,.0f} ms"
    if value >= 0.1:
        return f"{value:.2f} ms"
    return f"{value * 1000:.0f} us"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _rows(figs: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    names = list(figs)
    base = figs.get("none")

    def row(label: str, fn: Any) -> tuple[str, list[str]]:
        return label, [fn(figs[n]) for n in names]

    def saved(f: dict[str, Any]) -> str:
        if base is None or f is base:
            return "-"
        tok = base["tokens_billed"] - f["tokens_billed"]
        usd = base["cost_usd"] - f["cost_usd"]
        share = tok / base["tokens_billed"] if base["tokens_billed"] else 0.0
        return f"{tok:,} ({share:.0%}) / ${usd:,.2f}"

    def stored(f: dict[str, Any]) -> str:
        if not f["stored_bytes"] or f["stored_vs_raw"] is None:
            return "-"
        return f"{f['stored_vs_raw']:.0%} ({f['stored_bytes'] / 1e6:.1f} MB in {f['stored_tier']})"

    def false_hits(f: dict[str, Any]) -> str:
        # A wrong answer on a miss is no false hit, but it is wrong all the same: shown, never hidden.
        out = f"{f['false_hits']}"
        if f.get("wrong_misses"):
            out += f" (+{f['wrong_misses']} wrong on misses)"
        if f["unverified_hits"]:
            out += f" (+{f['unverified_hits']} unverified)"
        return out

    def burst(f: dict[str, Any]) -> str:
        b = f.get("burst") or {}
        if not b:
            return "-"
        return f"{b['rps_r1']:,.1f} ({b['hit_rate']:.0%} hits)"

    return [
        row("hit rate", lambda f: _pct(f["hit_rate"])),
        row("response time, cache hits p50 / p99", lambda f: f"{_ms(f['hit_ms']['p50'])} / {_ms(f['hit_ms']['p99'])}"
            if f["hit_ms"]["p50"] is not None else "-"),
        row("response time, all p50 / p99 (R1 time)",
            lambda f: f"{_ms(f['all_ms_r1']['p50'])} / {_ms(f['all_ms_r1']['p99'])}"),
        row("response time, mean (R1 time)", lambda f: _ms(f["all_ms_r1"]["mean"])),
        row("stored bytes vs raw JSON", stored),
        row("throughput, req/s (R1 time)", burst),
        row("false hits", false_hits),
        row("upstream calls", lambda f: f"{f['upstream_calls']:,}"),
        row("tokens billed / cost", lambda f: f"{f['tokens_billed']:,} / ${f['cost_usd']:,.2f}"),
        row("tokens / cost saved vs no cache", saved),
        row("errors passed to callers", lambda f: f"{f['errors']}"),
        row("replay wall time", lambda f: f"{f['wall_s']:.1f} s"),
    ]


def render_table(report: dict[str, Any]) -> Any:
    """The rich table of a demo report."""
    from rich.table import Table

    figs = report["runs"]
    w = report["workload"]
    table = Table(title=f"r1mw demo: {w['requests']:,} requests, {w['distinct_questions']} distinct questions "
                        f"(at most {w['ceiling_hit_rate']:.1%} answerable from cache without prefetch)")
    table.add_column("figure")
    for name in figs:
        table.add_column(_TITLES.get(name, name), justify="right")
    for label, cells in _rows(figs):
        table.add_row(label, *cells)
    return table


def _notes(report: dict[str, Any]) -> list[str]:
    out = []
    for name, f in report["runs"].items():
        if name != "none":
            out.append(f"{_TITLES.get(name, name)}: stages {', '.join(f['stages']) or '(none)'}; "
                       f"tiers {', '.join(f['tiers'])}; hits by {f['hits_by']}"
                       + ("; templates: the bundled trading set" if f.get("settings", {}).get("templates") else ""))
    out.extend(report.get("notes", []))
    sim = report.get("upstream", {})
    if sim.get("simulated"):
        out.append(f"upstream: simulated R1 at speed {sim['speed']:g} (a {sim['example_real_s']:.0f} s answer takes "
                   f"{sim['example_real_s'] * sim['speed'] * 1000:.0f} ms); R1 time = waits on upstream as their "
                   f"share of the call's R1 latency, time in r1mw as measured; throughput = the same requests again from "
                   f"{report['burst_clients']} clients")
    return out


# -- running ------------------------------------------------------------------------------------


async def run_demo(workload: Workload, configs: Sequence[RunConfig], *, cache_root: Path, speed: float,
                   concurrency: int, think_scale: float, stream_share: float, error_rate: float,
                   upstream: Any = None, model: str = MODEL, burst_clients: int = 64, burst_requests: int = 2000,
                   prices: tuple[float, float] = DEFAULT_PRICES, progress: bool = True,
                   notes: Sequence[str] = ()) -> dict[str, Any]:
    """Replay ``workload`` once per config; the report as a plain dict."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results: dict[str, RunResult] = {}
    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("hits {task.fields[hits]:>5}  false {task.fields[false]}"), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        for config in configs:
            task = bar.add_task(_TITLES.get(config.name, config.name), total=len(workload.items), hits=0, false=0)
            counts = {"hits": 0, "false": 0}

            def done(out: Any, task: Any = task, counts: dict[str, int] = counts) -> None:
                counts["hits"] += out.hit
                counts["false"] += out.wrong  # false hits and wrong answers on misses alike
                bar.update(task, advance=1, hits=counts["hits"], false=counts["false"])

            results[config.name] = await replay(
                workload, config, cache_dir=cache_root / config.name, speed=speed, concurrency=concurrency,
                think_scale=think_scale, stream_share=stream_share, error_rate=error_rate,
                seed=workload.spec.seed, upstream=upstream, model=model, burst_clients=burst_clients,
                burst_requests=min(burst_requests, len(workload.items)), prices=prices, on_done=done)
    from .workload.simulator import LatencyModel

    lat = LatencyModel()
    return {
        "workload": {**workload.summary(), "spec": asdict(workload.spec)},
        "runs": {name: r.figures() for name, r in results.items()},
        "stats": {name: _plain(r.stats) for name, r in results.items()},
        "upstream": {"simulated": upstream is None, "speed": speed, "model": model,
                     "example_real_s": lat.ttft_median_s + 2000 / lat.tokens_per_s},
        "burst_clients": burst_clients,
        "notes": list(notes),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def _plain(value: Any) -> Any:
    # Pipeline.stats() is plain data by contract; keep only JSON-able leaves to be safe.
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _real_upstream(url: str) -> Any:
    try:
        from openai import AsyncOpenAI
    except ImportError:
        raise ConfigError("--upstream needs the openai package: pip install 'r1mw[openai]'") from None
    key = os.environ.get("OPENAI_API_KEY") or os.environ.get("DEEPSEEK_API_KEY")
    if not key:
        raise ConfigError("--upstream: set OPENAI_API_KEY (or DEEPSEEK_API_KEY) in the environment")
    return AsyncOpenAI(base_url=url, api_key=key)


def command(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        spec = spec_from_args(args)
    except ValueError as exc:
        raise ConfigError(f"workload flags: {exc}") from None
    check_numbers(args, {"speed": POSITIVE, "concurrency": AT_LEAST_ONE, "think_scale": NON_NEGATIVE,
                         "stream_share": SHARE, "error_rate": SHARE, "burst_clients": AT_LEAST_ONE,
                         "burst_requests": NON_NEGATIVE, "price_in": NON_NEGATIVE, "price_out": NON_NEGATIVE})
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip()) if args.stages is not None else None
    tiers = tuple(t.strip() for t in args.tiers.split(",") if t.strip()) if args.tiers is not None else None
    configs, notes = plan_runs(names, stages=stages, tiers=tiers)
    upstream = None
    speed = args.speed
    if args.upstream:
        upstream = _real_upstream(args.upstream)
        speed = 1.0
    t0 = time.perf_counter()
    workload = generate(spec)
    summary = workload.summary()
    console.print(f"[bold]workload[/]: {summary['requests']:,} requests in {spec.sessions} sessions of "
                  f"{spec.analysts} analysts over {spec.hours:g} h; {summary['distinct_questions']} distinct "
                  f"questions, {summary['kinds']} (seed {spec.seed})")
    for config in configs:
        console.print(f"[bold]{_TITLES.get(config.name, config.name)}[/]: stages "
                      f"{', '.join(config.stages) or '(none)'}; tiers {', '.join(config.tiers)}")
    for note in notes:
        console.print(f"[yellow]note[/]: {note}")
    with tempfile.TemporaryDirectory(prefix="r1mw-demo-") as tmp:
        root = Path(args.cache_dir) if args.cache_dir else Path(tmp)
        report = asyncio.run(run_demo(
            workload, configs, cache_root=root, speed=speed, concurrency=args.concurrency,
            think_scale=args.think_scale, stream_share=args.stream_share, error_rate=args.error_rate,
            upstream=upstream, model=args.model, burst_clients=args.burst_clients,
            burst_requests=args.burst_requests, prices=(args.price_in, args.price_out),
            progress=not args.no_progress, notes=notes))
    report["elapsed_s"] = time.perf_counter() - t0
    console.print(render_table(report))
    for line in _notes(report):
        console.print(f"  {line}", highlight=False)
    console.print(f"  total time {report['elapsed_s']:.1f} s", highlight=False)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        console.print(f"  figures written to {args.json}", highlight=False)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="replay a trading desk's day through r1mw against a simulated R1",
                       description=__doc__.split("\n\n")[0].replace("``", ""),
                       formatter_class=HelpFormatter)
    p.add_argument("--speed", type=float, default=0.0005,
                   help="scale of the simulated R1 latencies (0.001: a 60 s answer takes 60 ms)")
    p.add_argument("--concurrency", type=int, default=12, help="analysts working at once")
    p.add_argument("--think-scale", type=float, default=1.0,
                   help="scale of the analysts' reading time between requests (times --speed)")
    p.add_argument("--stream-share", type=float, default=0.1, help="share of requests sent with stream=True")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of simulated upstream calls that fail")
    p.add_argument("--runs", default=",".join(RUN_NAMES), help="configurations to replay: none, exact, r1mw")
    p.add_argument("--stages", default=None, help="r1mw run's stages (default: every registered stage of "
                   + ",".join(FULL_STAGES) + ")")
    p.add_argument("--tiers", default=None, help="r1mw run's tiers (default: the registered ones of "
                   + ",".join(FULL_TIERS) + ")")
    p.add_argument("--cache-dir", default=None, help="root of the runs' cache directories (default: a temporary one)")
    p.add_argument("--burst-clients", type=int, default=64, help="clients of the throughput burst")
    p.add_argument("--burst-requests", type=int, default=2000, help="requests of the throughput burst (0 = none)")
    p.add_argument("--price-in", type=float, default=DEFAULT_PRICES[0], help="USD per million input tokens")
    p.add_argument("--price-out", type=float, default=DEFAULT_PRICES[1], help="USD per million output tokens")
    p.add_argument("--upstream", default=None, metavar="URL",
                   help="a real OpenAI-compatible endpoint instead of the simulator (key from OPENAI_API_KEY)")
    p.add_argument("--model", default=MODEL, help="model name sent upstream")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_arguments(p)
    p.set_defaults(func=command)
