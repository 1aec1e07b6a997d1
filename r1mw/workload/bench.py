"""``r1mw bench``: micro benchmarks and a load test, as a table and as JSON.

Micro benchmarks, each on what the installed plugins register:

* hot path: an exact hit in RAM through the whole pipeline (every stage on), and through
  the exact stage alone; p50/p99 per call and hits/s in one loop;
* each registered tier: ``set`` and ``get`` of real-shaped R1 replies;
* semantic search with 10k and 100k stored entries (when the semantic stage is registered);
* overhead on a miss: every stage on, against a zero-latency upstream, minus the upstream
  called directly;
* template matching (when the template stage is registered).

Load test: 1,000 concurrent clients for a bounded time against the simulated R1 upstream,
every stage on: throughput, p99, errors and peak RSS. Speed lives here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from ..adapters import wrap
from ..cli import AT_LEAST_ONE, POSITIVE, HelpFormatter, check_numbers
from ..pipeline import Pipeline
from ..settings import Settings
from ..tiers import Entry
from ..types import Choice, Reply, Usage
from .generator import MODEL, WorkloadSpec, generate
from .replay import available, percentile
from .simulator import SimulatedR1

__all__ = ["add_parser", "run_bench"]

def _row(name: str, samples: Sequence[float], *, ops: int | None = None, wall: float | None = None,
         note: str = "") -> dict[str, Any]:
    """A result row: latencies in microseconds, throughput in operations per second."""
    row: dict[str, Any] = {"name": name, "n": len(samples), "note": note}
    if samples:
        row["p50_us"] = percentile(samples, 0.5) * 1e6  # type: ignore[operator]
        row["p99_us"] = percentile(samples, 0.99) * 1e6  # type: ignore[operator]
    if ops is not None and wall:
        row["ops_per_s"] = ops / wall
    return row


def _zero_upstream() -> Callable[..., Awaitable[dict[str, Any]]]:
    """An upstream that answers at once with a small reply naming the question."""

    async def upstream(**kwargs: Any) -> dict[str, Any]:
        question = kwargs["messages"][-1]["content"]
        return {"id": "zero", "object": "chat.completion", "created": 0, "model": kwargs["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"Answer to: {question}",
                                         "reasoning_content": "Short reasoning."}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}

    return upstream


def _ask(text: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}]}


async def _timed(fn: Callable[[], Awaitable[Any]], n: int) -> tuple[list[float], float]:
    samples = []
    clock = time.perf_counter
    t_start = clock()
    for _ in range(n):
        t0 = clock()
        await fn()
        samples.append(clock() - t0)
    return samples, clock() - t_start


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        from ..demo import _wanted_stages, _wanted_tiers

        # The same pipeline as the demo's r1mw run: the defaults, as far as they are installed.
        stages, tiers = available()
        wanted_stages, wanted_tiers = _wanted_stages(), _wanted_tiers()
        self.stages = tuple(s for s in wanted_stages if s in stages)
        self.tiers = tuple(t for t in wanted_tiers if t in tiers) or ("l1",)
        self.all_tiers = sorted(tiers)
        self.registered = set(stages)
        missing = [s for s in wanted_stages if s not in stages] + [t for t in wanted_tiers if t not in tiers]
        if missing:
            self.notes.append(f"not installed yet, left out: {', '.join(missing)}")

    def settings(self, name: str, **kw: Any) -> Settings:
        base = {"stages": self.stages, "tiers": self.tiers, "cache_dir": str(self.root / name)}
        base.update(kw)
        return Settings(**base)

    async def run(self, only: set[str] | None) -> None:
        # The load test before the semantic one: its peak RSS must not be the 100k index's.
        steps = [("hot", self.hot_path), ("tiers", self.tier_ops), ("miss", self.miss_overhead),
                 ("templates", self.templates), ("load", self.load_test), ("semantic", self.semantic)]
        for name, step in steps:
            if only and name not in only:
                continue
            try:
                await step()
            except Exception as exc:  # one broken benchmark must not hide the others
                self.rows.append({"name": name, "n": 0, "note": f"failed: {type(exc).__name__}: {exc}"})

    # -- hot path --------------------------------------------------------------------------
    async def hot_path(self) -> None:
        n = self.args.n
        for label, stages in (("all stages", self.stages), ("exact stage alone", ("exact",))):
            async with Pipeline(self.settings(f"hot-{len(stages)}", stages=stages)) as pipe:
                await pipe.wait_ready()
                llm = wrap(_zero_upstream(), pipe, returns=dict)
                kw = _ask("Analyze AAPL using RSI(14) mean reversion")
                await llm(**kw)
                await llm(**kw)
                samples, wall = await _timed(lambda: llm(**kw), n)
                self.rows.append(_row(f"exact hit in RAM, {label} ({','.join(stages)})", samples, ops=n, wall=wall,
                                      note="wrap() of an async callable, one process, warm"))

    # -- tiers -------------------------------------------------------------------------------
    async def tier_ops(self) -> None:
        sim = SimulatedR1(speed=0)
        replies = []
        for i in range(64):
            reasoning, answer, r_tok, a_tok = sim.texts_for(f"bench/{i}")
            replies.append(Reply(choices=(Choice(content=answer, reasoning_content=reasoning),), model=MODEL,
                                 id=f"r{i}", created=1, usage=Usage(20, r_tok + a_tok, 20 + r_tok + a_tok, r_tok)))
        n = min(self.args.n, 5000)
        redis_url = os.environ.get("R1MW_REDIS_URL", "")
        for name in self.all_tiers:
            if name == "redis" and not redis_url:
                self.notes.append("tier redis: set R1MW_REDIS_URL to benchmark it (it writes to that Redis)")
                continue
            try:
                pipe = Pipeline(self.settings(f"tier-{name}", stages=(), tiers=(name,), redis_url=redis_url,
                                              l1_size=max(n, 1000), l2_size=max(n, 10_000)))
                await pipe.start()
            except Exception as exc:
                self.rows.append({"name": f"tier {name}", "n": 0, "note": f"not built: {type(exc).__name__}: {exc}"})
                continue
            try:
                await self._one_tier(pipe, name, replies, n)
            finally:
                await pipe.close()

    async def _one_tier(self, pipe: Pipeline, name: str, replies: Sequence[Reply], n: int) -> None:
        store = pipe.store
        assert store is not None
        tier = store.tiers[0]
        keys = [i.to_bytes(16, "big") for i in range(n)]
        entries = [Entry(replies[i % len(replies)]) for i in range(n)]
        # A tier takes decoded entries (RAM) or bytes encoded by the store's codec.
        takes_entries = getattr(tier, "takes", "entry" if hasattr(tier, "get_nowait") else "bytes") == "entry"
        codec = getattr(store, "codec", None)
        if takes_entries:
            values: list[Any] = entries
        elif codec is not None:
            values = [codec.encode(e.to_wire()) for e in entries[: len(replies)]]
            values = [values[i % len(values)] for i in range(n)]
        else:
            self.notes.append(f"tier {name}: takes bytes but the store has no codec")
            return
        it = iter(range(n))
        set_s, set_wall = await _timed(lambda: tier.set(keys[(i := next(it))], values[i]), n)
        it = iter(range(n))
        get_s, get_wall = await _timed(lambda: tier.get(keys[next(it)]), n)
        found = sum([await tier.get(k) is not None for k in keys[:100]])
        raw = sum(len(json.dumps(r.to_wire())) for r in replies) / len(replies)
        size = tier.stats().get("bytes")
        per = f"; {size / n:,.0f} B/entry stored vs {raw:,.0f} B raw JSON" if size else ""
        kind = "decoded entries" if takes_entries else "encoded bytes"
        self.rows.append(_row(f"tier {name}: set", set_s, ops=n, wall=set_wall,
                              note=f"{kind} of real-shaped R1 replies{per}"))
        self.rows.append(_row(f"tier {name}: get (hit)", get_s, ops=n, wall=get_wall,
                              note=f"{kind}; {found}/100 found after set"))
        if not takes_entries:
            it = iter(range(n))
            via_s, via_wall = await _timed(lambda: store.get(keys[next(it)]), n)
            self.rows.append(_row(f"tier {name}: get through the store (decoded)", via_s, ops=n, wall=via_wall,
                                  note="what a hit in this tier costs the exact stage, before promotion"))

    # -- miss overhead ----------------------------------------------------------------------------
    async def miss_overhead(self) -> None:
        n = min(self.args.n, 3000)
        upstream = _zero_upstream()
        it = iter(range(10 * n))
        direct, _ = await _timed(lambda: upstream(**_ask(f"Assess risk for {next(it) + 1} shares of AAPL")), n)
        async with Pipeline(self.settings("miss", l1_size=max(2 * n, 1000))) as pipe:
            await pipe.wait_ready()
            llm = wrap(upstream, pipe, returns=dict)
            it2 = iter(range(10 * n))
            through, wall = await _timed(lambda: llm(**_ask(f"Assess risk for {next(it2) + 1} shares of MSFT")), n)
            stats = pipe.stats()
        d50 = percentile(direct, 0.5) or 0.0
        row = _row(f"miss overhead, all stages ({','.join(self.stages)})", [s - d50 for s in through], ops=n, wall=wall,
                   note=f"zero-latency upstream; minus the direct call (p50 {d50 * 1e6:.1f} us); "
                        f"{stats['misses']} misses, {stats['hits']} hits")
        self.rows.append(row)

    # -- templates ------------------------------------------------------------------------------------
    async def templates(self) -> None:
        if "template" not in self.registered:
            self.notes.append("template matching: the template stage is not installed")
            return
        from ..demo import bundled_templates

        settings = self.settings("templates", stages=("template", "exact"), templates=str(bundled_templates()))
        async with Pipeline(settings) as pipe:
            await pipe.wait_ready()
            registry = pipe.services.get("templates")
            if registry is None or not hasattr(registry, "match"):
                self.notes.append("template matching: no services['templates'].match")
                return
            texts = [i.text for i in generate(WorkloadSpec(requests=2000, seed=1)).items]
            it = iter(texts * (1 + self.args.n // len(texts)))

            async def one() -> Any:
                return registry.match(next(it))

            samples, wall = await _timed(one, min(self.args.n, 20_000))
            count = getattr(registry, "__len__", lambda: "?")()
            self.rows.append(_row(f"template match ({count} templates)", samples, ops=len(samples), wall=wall,
                                  note="bundled workload texts (templated, reworded, one-off)"))

    # -- semantic ---------------------------------------------------------------------------------------
    async def semantic(self) -> None:
        if "semantic" not in self.registered:
            self.notes.append("semantic search: the semantic stage is not installed")
            return
        for size in self.args.semantic_sizes:
            stages = ("exact", "semantic")
            settings = self.settings(f"semantic-{size}", stages=stages, tiers=("l1",), l1_size=size + 1000,
                                     l1_max_bytes=0)
            async with Pipeline(settings) as pipe:
                await pipe.wait_ready()
                llm = wrap(_zero_upstream(), pipe, returns=dict)
                t0 = time.perf_counter()
                sem = asyncio.Semaphore(64)

                async def fill(i: int) -> None:
                    async with sem:
                        await llm(**_ask(f"Assess risk for {i + 1} shares of {_TICKERS[i % len(_TICKERS)]}"))

                await asyncio.gather(*(fill(i) for i in range(size)))
                fill_s = time.perf_counter() - t0
                before = pipe.stats()["hits_by"].get("semantic", 0)
                it = iter(range(10 * size))

                async def query() -> Any:
                    # Same question, other spacing and end punctuation: an exact miss, a
                    # semantic hit when the stage and its guards agree.
                    i = next(it) * 7919 % size
                    return await llm(**_ask(f"assess  risk for {i + 1} shares of {_TICKERS[i % len(_TICKERS)]}!"))

                samples, wall = await _timed(query, min(self.args.n, 2000))
                stats = pipe.stats()
                hits = sum(v for k, v in stats["hits_by"].items() if k.startswith("semantic")) - before
                self.rows.append(_row(f"semantic lookup, {size:,} entries", samples, ops=len(samples), wall=wall,
                                      note=f"stored questions with other spacing and end punctuation: {hits}/{len(samples)} semantic hits; "
                                           f"fill {fill_s:.1f} s"))

    # -- load test ----------------------------------------------------------------------------------------
    async def load_test(self) -> None:
        clients, seconds = self.args.clients, self.args.seconds
        workload = generate(WorkloadSpec(requests=4000, seed=11))
        items = workload.items
        sim = SimulatedR1(speed=self.args.speed, seed=11)
        async with Pipeline(self.settings("load")) as pipe:
            await pipe.wait_ready()
            llm = wrap(sim, pipe, returns=dict)
            latencies: list[float] = []
            errors: dict[str, int] = {}
            deadline = time.perf_counter() + seconds
            counter = iter(range(10**9))

            async def client() -> None:
                while time.perf_counter() < deadline:
                    item = items[next(counter) % len(items)]
                    t0 = time.perf_counter()
                    try:
                        await llm(**item.kwargs())
                    except Exception as exc:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                        continue
                    latencies.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            wall = time.perf_counter() - t0
            stats = pipe.stats()
        # Peak of the whole process so far (getrusage cannot be reset): the load test runs
        # before the semantic benchmark for that reason.
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        row = _row(f"load: {clients:,} clients for {seconds:g} s, all stages", latencies, ops=len(latencies), wall=wall,
                   note=f"simulated R1 at speed {self.args.speed:g}; hit rate {stats['hit_rate']:.1%}; "
                        f"upstream calls {len(sim.calls):,}; errors {sum(errors.values())}; peak RSS {rss_mb:,.0f} MB")
        row.update({"errors": sum(errors.values()), "error_types": errors, "peak_rss_mb": rss_mb,
                    "hit_rate": stats["hit_rate"], "upstream_calls": len(sim.calls)})
        self.rows.append(row)


_TICKERS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "AMD", "JPM", "XOM")


def render(rows: Sequence[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="r1mw bench")
    for column, justify in (("benchmark", "left"), ("p50", "right"), ("p99", "right"), ("ops/s", "right"),
                            ("notes", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(r["name"], _us(r.get("p50_us")), _us(r.get("p99_us")),
                      f"{r['ops_per_s']:,.0f}" if r.get("ops_per_s") else "-", r.get("note", ""))
    return table


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:,.0f} ms"
    if value >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.1f} us"


async def run_bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    bench = Bench(args, root)
    only = set(args.only.split(",")) if args.only else None
    await bench.run(only)
    return {"rows": bench.rows, "notes": bench.notes, "stages": list(bench.stages), "tiers": list(bench.tiers),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}


def command(args: argparse.Namespace) -> int:
    from rich.console import Console

    check_numbers(args, {"n": AT_LEAST_ONE, "clients": AT_LEAST_ONE, "seconds": POSITIVE, "speed": POSITIVE})
    console = Console(width=None if sys.stdout.isatty() else 180)
    with tempfile.TemporaryDirectory(prefix="r1mw-bench-") as tmp:
        report = asyncio.run(run_bench(args, Path(tmp)))
    console.print(render(report["rows"]))
    console.print(f"  stages {', '.join(report['stages'])}; tiers {', '.join(report['tiers'])}", highlight=False)
    for note in report["notes"]:
        console.print(f"  note: {note}", highlight=False)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        console.print(f"  figures written to {args.json}", highlight=False)
    return 0


STEPS = ("hot", "tiers", "miss", "templates", "semantic", "load")


def _steps(raw: str) -> str:
    """``--only`` names: a misspelt one ran nothing and printed an empty table, exit 0."""
    unknown = [name for name in raw.split(",") if name.strip() not in STEPS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown benchmark {', '.join(map(repr, unknown))}; "
                                         f"allowed: {','.join(STEPS)}")
    return ",".join(name.strip() for name in raw.split(","))


def _sizes(raw: str) -> list[int]:
    try:
        sizes = [int(s.replace("_", "").replace(",", "")) for s in raw.split("/") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("sizes like 10000/100000") from None
    if any(n < 1 for n in sizes):  # an index of no entries has nothing to search
        raise argparse.ArgumentTypeError(f"{raw!r} is invalid: expected sizes >= 1 like 10000/100000")
    return sizes


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="micro benchmarks and a load test (table, or --json)",
                       description=__doc__.split("\n\n")[0].replace("``", ""),
                       formatter_class=HelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="iterations of each micro benchmark")
    p.add_argument("--semantic-sizes", type=_sizes, default=[10_000, 100_000],
                   help="stored entries for the semantic search benchmark, '/'-separated")
    p.add_argument("--clients", type=int, default=1000, help="concurrent clients of the load test")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the load test")
    p.add_argument("--speed", type=float, default=0.001, help="latency scale of the simulated R1 in the load test")
    p.add_argument("--only", type=_steps, default=None, help=f"comma-separated, of {','.join(STEPS)} (default: all)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    p.set_defaults(func=command)
