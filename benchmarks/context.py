"""Context cache: get/set latency of a 1 MB context value per tier, and its stored size.

The value is what a context builder returns (examples/context_retrieval.py): about 768 KB of
real English/markdown text (the long descriptions of the installed packages, joined as the
sections of one context) plus a float32 embedding array of 1024 x 64 (256 KB), in a dict
with a few small fields. For each tier configuration:

* ``set``: ``await pipe.context_cache.set(key, value)`` with a new key each time
  (validation + normalization, codec encode, write to every tier the store writes);
* ``get``: ``await pipe.context_cache.get(key)`` on a stored key: an L1 hit returns the
  decoded object; with ``R1MW_TIERS=l2`` alone every get reads, checks and decodes the file;
* ``get after restart``: a new pipeline on the same directory with ``l1,l2``: the first get
  of each key comes from L2 (and promotes it), as after a process restart;
* ``@cached hit``: a decorated function's L1 hit, argument binding and key hash included.

Stored size is the L2 file bytes per entry (envelope + msgpack + lz4 above
COMPRESSION_THRESHOLD) against the raw bytes (text UTF-8 + array). Run::

    python benchmarks/context.py [--n 40] [--redis redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import sys
import tempfile
import time
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import numpy as np

import r1mw

MB = 1 << 20


def real_text(size: int) -> str:
    """``size`` characters of prose/markdown written by people (package READMEs)."""
    parts: list[str] = []
    total = 0
    for dist in sorted(distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        body = dist.read_text("METADATA") or ""
        _, _, text = body.partition("\n\n")
        paras = [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) > 80]
        if len(paras) < 6:
            continue
        section = f"## {dist.metadata['Name']}\n" + "\n\n".join(paras)
        parts.append(section)
        total += len(section) + 2
        if total >= size:
            break
    text = "\n\n".join(parts)
    if len(text) < size:  # a small environment: repeat what there is
        text = (text + "\n\n") * (size // max(1, len(text)) + 1)
    return text[:size]


def context_value(text: str, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((1024, 64)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return {"query": f"query {seed}", "context": text, "embedding": emb,
            "chunk_ids": [f"doc/{i // 8}/{i % 8}" for i in range(256)], "tokens": len(text) // 4}


def pct(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] * 1e6
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6
    return f"p50 {p50:9.1f} us   p99 {p99:9.1f} us"


async def timed(coro_factory: Any, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await coro_factory(i)
        out.append(time.perf_counter() - t0)
    return out


async def bench(tiers: str, directory: Path, values: list[dict[str, Any]], n: int,
                extra: dict[str, Any]) -> dict[str, Any]:
    settings = r1mw.Settings(stages="exact", tiers=tiers, cache_dir=str(directory), l1_max_bytes="2GB",
                             **extra)
    result: dict[str, Any] = {"tiers": tiers}
    async with r1mw.Pipeline(settings) as pipe:
        ctx = pipe.context_cache
        result["set"] = await timed(lambda i: ctx.set(("ctx", i), values[i % len(values)]), n)
        result["get"] = await timed(lambda i: ctx.get(("ctx", i)), n)
        got = await ctx.get(("ctx", 0))
        assert got["context"] == values[0]["context"] and got["embedding"].tobytes() == values[0]["embedding"].tobytes()
        tier_stats = pipe.stats()["tiers"]
        disk = [t for t in tiers.split(",") if t != "l1" and isinstance(tier_stats.get(t), dict)
                and "bytes" in tier_stats[t]]
        if disk:
            result["stored"] = tier_stats[disk[0]]["bytes"] / max(1, tier_stats[disk[0]]["entries"])
            result["stored_in"] = disk[0]
    return result


async def restart_get(directory: Path, n: int) -> list[float]:
    settings = r1mw.Settings(stages="exact", tiers="l1,l2", cache_dir=str(directory), l1_max_bytes="2GB")
    async with r1mw.Pipeline(settings) as pipe:
        ctx = pipe.context_cache
        samples = await timed(lambda i: ctx.get(("ctx", i)), n)
        assert pipe.stats()["context"]["hits_by_tier"] == {"l2": n}
    return samples


async def decorated_hit(n: int) -> list[float]:
    async with r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1")) as pipe:
        @r1mw.cached(pipeline=pipe)
        async def build_context(query: str, budget_tokens: int = 2000, docs: int = 2) -> dict[str, Any]:
            return {"query": query, "context": "x" * 1000}

        await build_context("liquidity risk at JPM")
        return await timed(lambda i: build_context("liquidity risk at JPM"), n)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40, help="keys per tier (each ~1 MB)")
    parser.add_argument("--redis", default="", help="Redis URL for the redis tier, if one is registered")
    args = parser.parse_args()
    text = real_text(768 * 1024)
    values = [context_value(text, seed) for seed in range(4)]
    raw = len(text.encode()) + values[0]["embedding"].nbytes
    print(f"value: {len(text.encode()) / 1024:.0f} KB text + {values[0]['embedding'].nbytes / 1024:.0f} KB "
          f"float32 array + small fields = {raw / MB:.2f} MB raw; n = {args.n} per tier")
    print(f"python {sys.version.split()[0]}")

    probe = r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1"))
    await probe.start()
    registered = sorted(probe.registry("tiers"))
    await probe.close()
    configs: list[tuple[str, dict[str, Any]]] = [("l1", {}), ("l2", {}), ("l1,l2", {})]
    for name in registered:
        if name in ("l1", "l2"):
            continue
        if name == "redis":
            if args.redis:
                configs.append(("redis", {"redis_url": args.redis}))
            continue
        configs.append((name, {}))

    rows = []
    with tempfile.TemporaryDirectory(prefix="r1mw-bench-context-") as tmp:
        for tiers, extra in configs:
            directory = Path(tmp) / tiers.replace(",", "_")
            try:
                rows.append(await bench(tiers, directory, values, args.n, extra))
            except Exception as exc:  # a tier that cannot run here (no server): say so
                print(f"tiers={tiers}: skipped ({type(exc).__name__}: {exc})")
        restart = await restart_get(Path(tmp) / "l1_l2", args.n)
        shutil.rmtree(Path(tmp) / "l1_l2", ignore_errors=True)
    hit = await decorated_hit(2000)

    print()
    for row in rows:
        print(f"tiers={row['tiers']:<6} set  {pct(row['set'])}")
        print(f"tiers={row['tiers']:<6} get  {pct(row['get'])}")
        if "stored" in row:
            print(f"tiers={row['tiers']:<6} stored {row['stored'] / MB:.3f} MB per entry in {row['stored_in']} "
                  f"({100 * row['stored'] / raw:.0f} % of raw)")
    print(f"l1,l2 restart: first get from l2  {pct(restart)}")
    print(f"@cached L1 hit (small value)       {pct(hit)}   mean {statistics.fmean(hit) * 1e6:.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
