"""``r1mw demo``: a scripted trading workload through the pipeline against a simulated R1.

First version (issue 2): templated requests, repeated, against an upstream with a fixed
latency; prints hits, misses, latency and upstream calls saved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from importlib import resources
from typing import Any

from .adapters import wrap
from .pipeline import Pipeline
from .settings import Settings


def _prompts(n: int, seed: int) -> list[str]:
    data = json.loads(resources.files("r1mw").joinpath("data/trading_templates.json").read_text())
    rng = random.Random(seed)
    symbols = ["AAPL", "NVDA", "MSFT", "TSLA", "SPY"]
    base = []
    for t in data["templates"][:4]:
        text = t["template"]
        for sym in symbols:
            base.append(text.replace("{symbol}", sym).replace("{strategy}", "RSI(14) mean reversion")
                        .replace("{position_size}", f"a $50,000 long position in {sym}")
                        .replace("{timeframe}", "the next trading day").replace("{chart_interval}", "5-minute"))
    return [rng.choice(base) for _ in range(n)]


async def _run(args: argparse.Namespace) -> None:
    calls = 0

    async def r1(**kwargs: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(args.latency)
        q = kwargs["messages"][-1]["content"]
        return {"id": f"sim-{calls}", "created": int(time.time()), "model": kwargs["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "reasoning_content": "Let me think. " * 50, "content": f"Answer to: {q}"}}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 700, "total_tokens": 740}}

    prompts = _prompts(args.requests, args.seed)
    async with Pipeline(Settings.from_env()) as pipe:
        llm = wrap(r1, pipe)
        t0 = time.perf_counter()
        for p in prompts:
            await llm(model="deepseek-reasoner", messages=[{"role": "user", "content": p}])
        wall = time.perf_counter() - t0
        s = pipe.stats()
    print(f"requests {len(prompts)}  hits {s['hits']}  misses {s['misses']}  hit rate {s['hit_rate']:.1%}")
    print(f"upstream calls {calls} (saved {len(prompts) - calls})  wall {wall:.2f}s")
    print(f"hit latency p50 {s['latency_ms']['hit'].get('p50', 0):.3f} ms  "
          f"miss latency p50 {s['latency_ms']['miss'].get('p50', 0):.1f} ms")


def command(args: argparse.Namespace) -> int:
    asyncio.run(_run(args))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the bundled trading workload against a simulated R1")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--latency", type=float, default=0.02, help="simulated upstream latency (s)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=command)
