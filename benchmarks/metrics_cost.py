"""What the metrics stage costs per request (target: <= 5 us). Prints figures; asserts nothing.

    python benchmarks/metrics_cost.py [--n 20000] [--repeats 5]

Two measurements:

1. ``MetricsRecorder.record`` alone, per call, for the request kinds it distinguishes
   (an L1 hit with usage, template id and two slots; a plain miss; a hit without template).
2. An exact L1 hit through the whole pipeline (``r1mw.wrap`` over an async callable), with
   ``R1MW_STAGES=exact`` and with ``metrics,exact``: the difference is the stage's cost per
   request, including its extra coroutine hop. Runs alternate, and the median of each is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import r1mw
from r1mw.observe.recorder import MetricsRecorder
from r1mw.testing import FakeR1


def bench_recorder(n: int) -> dict[str, float]:
    rec = MetricsRecorder()
    reply = r1mw.Reply(choices=(r1mw.Choice(content="x"),), usage=r1mw.Usage(120, 900, 1020))
    # Keyed, as the exact stage leaves every request it saw (the recorder counts per entry).
    hit = r1mw.Request(model="deepseek-reasoner", messages=[], source="exact", tier="l1", key=b"k1" * 8,
                       meta={"template_id": "analyze", "slots": {"symbol": "AAPL", "interval": "5m"}})
    plain_hit = r1mw.Request(model="deepseek-reasoner", messages=[], source="exact", tier="l1", key=b"k2" * 8)
    miss = r1mw.Request(model="deepseek-reasoner", messages=[], key=b"k3" * 8)
    out = {}
    for label, request in (("hit + template + 2 slots", hit), ("hit, no template", plain_hit), ("miss", miss)):
        record = rec.record
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                record(request, reply, 1.2e-5)
            best = min(best, (time.perf_counter() - t0) / n)
        out[label] = best * 1e6
    return out


async def per_hit(stages: str, n: int) -> float:
    async with r1mw.Pipeline(r1mw.Settings(stages=stages)) as pipe:
        llm = r1mw.wrap(FakeR1(), pipe)
        messages = [{"role": "user", "content": "Analyze AAPL using RSI(14) mean reversion"}]
        await llm(model="deepseek-reasoner", messages=messages)
        for _ in range(1000):  # warm
            await llm(model="deepseek-reasoner", messages=messages)
        t0 = time.perf_counter()
        for _ in range(n):
            await llm(model="deepseek-reasoner", messages=messages)
        return (time.perf_counter() - t0) / n * 1e6


async def bench_pipeline(n: int, repeats: int) -> tuple[float, float]:
    base, with_metrics = [], []
    for _ in range(repeats):
        base.append(await per_hit("exact", n))
        with_metrics.append(await per_hit("metrics,exact", n))
    return statistics.median(base), statistics.median(with_metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPython {sys.version.split()[0]}, n={args.n}, repeats={args.repeats}")
    print("MetricsRecorder.record alone (best of 5, us per call):")
    for label, us in bench_recorder(args.n).items():
        print(f"  {label:28s} {us:6.2f} us")
    base, metrics = asyncio.run(bench_pipeline(args.n, args.repeats))
    print("exact L1 hit through the pipeline, wrap(async callable) (median of runs, us per request):")
    print(f"  stages=exact                 {base:6.2f} us")
    print(f"  stages=metrics,exact         {metrics:6.2f} us")
    print(f"  metrics stage cost           {metrics - base:6.2f} us per request (target <= 5 us)")


if __name__ == "__main__":
    main()
