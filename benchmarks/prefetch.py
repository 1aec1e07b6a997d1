"""Prefetch on the bundled session workload: hit rate with and without, the waste, the ceilings.

    python benchmarks/prefetch.py [--requests 1200] [--seed 7] [--zipf 2.2 1.0] [--min-prob 0.3]
                                  [--think-scale 1.0]
                                  [--days-before 1 [--expired]]

For each ticker popularity (``--zipf``: 2.2 is the demo's desk, which keeps asking about a few
tickers; 1.0 a broad watchlist), replays the same seeded workload (analysts' sessions:
analysis -> risk -> prediction per ticker) twice against the simulated R1, with the default
stages minus/plus ``prefetch``, on fresh caches and a fresh model (or, with ``--days-before N``,
after N earlier days of the same desk in the same cache directory: warm caches, and a model
that was saved at each close and loaded at each start), and prints:

* the hit rate of each and the gain, and the mean wait per request in R1 time (the simulated
  upstream's latencies scaled back; a prefetch still in flight when its question comes
  saves only the part of the wait it has already done);
* two ceilings for the gain: *clairvoyant* (every first occurrence of a question that is
  not the first request of its session: a predictor that knew the future), and *flow* (the
  first occurrences that are the next step of the session's analysis -> risk -> prediction
  flow for the same ticker: what a sequence model can hope to learn; which ticker comes next,
  chart follow-ups and side questions are drawn at random by the generator);
* the prefetch stage's figures: issued (upstream calls), used (a later request hit it),
  unused share of issued, tokens spent vs saved, and false hits (must be 0);
* the gain of a reference predictor that knows the generator's probabilities
  (``prefetch_offline.py``): the most a model learnt from the traffic can hope for.

Hours of simulated time run in seconds, so the per-minute and per-hour budgets are lifted
here (their enforcement is tested in tests/test_prefetch.py); in-flight stays at its default.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

from r1mw import Settings
from r1mw.templating import BUNDLED
from r1mw.workload.generator import Item, Workload, generate
from r1mw.workload.replay import RunConfig, replay

from prefetch_offline import days, oracle as reference  # noqa: E402 (benchmarks/ is the script's own folder)

_FLOW_STEPS = {("analyze_strategy", "assess_risk"), ("assess_risk", "predict_movement")}


def ceilings(workload: Workload, asked_before: set[str] | None = None) -> tuple[float, float]:
    """(clairvoyant, flow) ceilings of the prefetch gain, as shares of all requests
    (questions of ``asked_before``, earlier days', are in the cache already)."""
    seen: set[str] = set(asked_before or ())
    last: dict[str, Item] = {}
    clairvoyant = flow = 0
    for item in sorted(workload.items, key=lambda i: i.t):
        prev = last.get(item.session)
        if item.question_id not in seen and prev is not None:
            clairvoyant += 1
            if (prev.template_id, item.template_id) in _FLOW_STEPS and item.kind == "flow":
                flow += 1
        seen.add(item.question_id)
        last[item.session] = item
    n = len(workload.items)
    return clairvoyant / n, flow / n


async def one(args: argparse.Namespace, zipf: float) -> None:
    stages = tuple(s for s in Settings().stages if s != "prefetch")
    with_prefetch = ("metrics", "prefetch", *[s for s in stages if s != "metrics"])
    extra = {"templates": str(BUNDLED), "prefetch_min_prob": args.min_prob,
             "prefetch_max_per_minute": 10_000, "prefetch_token_budget": 10**9}
    # The same desk (its analysts' habits) on other days (other requests).
    spec, specs_before = days(args.requests, args.seed, zipf, args.days_before)
    workload = generate(spec)
    earlier = [generate(before) for before in specs_before]
    rows = []
    for name, chain in (("without prefetch", stages), ("with prefetch", with_prefetch)):
        with tempfile.TemporaryDirectory(prefix="r1mw-prefetch-bench-") as tmp:
            config = RunConfig(name, chain, ("l1", "l2"), (), extra)
            before_dir = Path(tmp) / "earlier" if args.expired else Path(tmp)
            for before in earlier:
                await replay(before, config, cache_dir=str(before_dir), speed=args.speed,
                             concurrency=args.concurrency)
            model = before_dir / "prefetch" / "model.msgpack"
            if args.expired and model.exists():  # yesterday's answers are stale; what was learnt is not
                (Path(tmp) / "prefetch").mkdir()
                shutil.copy(model, Path(tmp) / "prefetch" / "model.msgpack")
            result = await replay(workload, config, cache_dir=tmp, speed=args.speed, concurrency=args.concurrency,
                                  think_scale=args.think_scale)
        rows.append((name, result.figures(), result.stats["stages"].get("prefetch", {})))
    cached_before = set() if args.expired else {i.question_id for day in earlier for i in day.items}
    clairvoyant, flow = ceilings(workload, cached_before)
    after = ""
    if args.days_before:
        after = (f" after {args.days_before} earlier day(s) of the same desk: "
                 + ("their answers expired, the model kept" if args.expired else "the same cache and model"))
    print(f"\nzipf {zipf}{after}: {args.requests} requests, seed {args.seed}, speed {args.speed}, "
          f"{args.concurrency} analysts at once, R1MW_PREFETCH_MIN_PROB={args.min_prob}")
    for name, figures, p in rows:
        line = (f"  {name:18} hit rate {figures['hit_rate']:6.1%}  false hits {figures['false_hits']}"
                f"  mean wait {figures['all_ms_r1']['mean'] / 1000:5.1f} s (R1 time)")
        if p:
            unused = p["issued"] - p["used"]
            waste = unused / p["issued"] if p["issued"] else 0.0
            line += (f"  | issued {p['issued']}, used {p['used']} ({p['used_in_flight']} in flight), unused {unused} ({waste:.0%} of issued),"
                     f" tokens spent {p['tokens_spent']:,} / saved {p['tokens_saved']:,},"
                     f" refused {sum(p['refused'].values())}, already cached {p['already_cached']}")
        print(line)
    gain = rows[1][1]["hit_rate"] - rows[0][1]["hit_rate"]
    print(f"  gain {gain * 100:+.1f} points; ceilings: flow {flow * 100:.1f} points "
          f"(gain = {gain / flow:.0%} of it), clairvoyant {clairvoyant * 100:.1f} points")
    # What a predictor knowing the generator's probabilities gains (offline, flow steps only):
    # the most a sequence model learnt from this traffic can hope for (prefetch_offline.py).
    n, issued, halves = reference(spec, args.min_prob, specs_before, args.expired)
    print(f"  reference predictor (offline): {sum(halves) / n * 100:+.1f} points, "
          f"{(issued - sum(halves)) / max(1, issued):.0%} unused (gain = {gain / max(sum(halves) / n, 1e-9):.0%} of it)")


async def main(args: argparse.Namespace) -> None:
    for zipf in args.zipf:
        await one(args, zipf)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--speed", type=float, default=0.002, help="latency scale of the simulated R1")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--think-scale", type=float, default=1.0,
                        help="analysts' reading time between questions (0: a script chaining its questions)")
    parser.add_argument("--min-prob", type=float, default=Settings().prefetch_min_prob)
    parser.add_argument("--days-before", type=int, default=0,
                        help="replay this many earlier days (other seeds) into the same cache dir first: "
                             "the cache and the persisted prefetch model start warm")
    parser.add_argument("--expired", action="store_true",
                        help="with --days-before: the earlier days' answers have expired (a TTL of a day: market "
                             "analyses go stale); the cache starts cold, the prefetch model it learnt is kept")
    parser.add_argument("--zipf", type=float, nargs="+", default=[2.2, 1.0],
                        help="ticker popularity exponents to run (2.2: the demo's desk; 1.0: a broad watchlist)")
    asyncio.run(main(parser.parse_args()))
