"""Prefetch on the bundled session workload: hit rate with and without, and the waste.

    python benchmarks/prefetch.py [--requests 1200] [--seed 7]

Replays the same seeded workload (analysts' sessions: analysis -> risk -> prediction per
ticker) twice against the simulated R1, with the default stages minus/plus `prefetch`, on
fresh caches, and prints the hit rate of each, the prefetch stage's figures (issued, used,
wasted share, tokens spent vs saved) and false hits (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile

from r1mw import Settings
from r1mw.templating import BUNDLED
from r1mw.workload.generator import WorkloadSpec, generate
from r1mw.workload.replay import RunConfig, replay


async def main(args: argparse.Namespace) -> None:
    workload = generate(WorkloadSpec(requests=args.requests, seed=args.seed))
    stages = tuple(s for s in Settings().stages if s != "prefetch")
    with_prefetch = ("metrics", "prefetch", *[s for s in stages if s != "metrics"])
    extra = {"templates": str(BUNDLED), "prefetch_min_prob": args.min_prob,
             "prefetch_max_per_minute": 10_000, "prefetch_token_budget": 10**9}
    rows = []
    for name, chain in (("without prefetch", stages), ("with prefetch", with_prefetch)):
        with tempfile.TemporaryDirectory(prefix="r1mw-prefetch-bench-") as tmp:
            result = await replay(workload, RunConfig(name, chain, ("l1", "l2"), (), extra), cache_dir=tmp,
                                  speed=args.speed, concurrency=args.concurrency)
        figures = result.figures()
        rows.append((name, figures, result.stats["stages"].get("prefetch", {})))
    print(f"workload: {args.requests} requests, seed {args.seed}, speed {args.speed}, "
          f"{args.concurrency} analysts at once, R1MW_PREFETCH_MIN_PROB={args.min_prob}")
    for name, figures, p in rows:
        line = f"{name:18} hit rate {figures['hit_rate']:6.1%}  false hits {figures['false_hits']}"
        if p:
            waste = 1 - p["used"] / p["issued"] if p["issued"] else 0.0
            line += (f"  | prefetch issued {p['issued']}, used {p['used']}, unused {p['issued'] - p['used']}"
                     f" ({waste:.0%} of issued), tokens spent {p['tokens_spent']:,} / saved {p['tokens_saved']:,}")
        print(line)
    gain = rows[1][1]["hit_rate"] - rows[0][1]["hit_rate"]
    print(f"hit-rate gain from prefetch: {gain * 100:+.1f} points")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--speed", type=float, default=0.002, help="latency scale of the simulated R1")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--min-prob", type=float, default=0.5)
    asyncio.run(main(parser.parse_args()))
