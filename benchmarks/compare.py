"""r1mw side by side with LiteLLM's cache, GPTCache and RedisVL on the same workload.

Every cache sees the same requests of the bundled trading workload, in the same order, one
client, in the same process; misses are answered by the simulated R1 (zero latency), whose
answers name their question, so a false hit (a reply served for another question) is seen.

* r1mw: the full pipeline the installed plugins register, and the exact stage alone;
* LiteLLM 1.x caching through ``litellm.acompletion(..., mock_response=...)``: ``type='local'``,
  ``type='redis'`` against 127.0.0.1:6379 (db 15, a namespace of its own, removed after);
  ``redis-semantic`` needs Redis with the search module (checked with MODULE LIST);
* GPTCache through ``gptcache.adapter.api`` get/put (its OpenAI adapter predates openai 1.0):
  exact (map) and similarity (sqlite + faiss, default evaluation and threshold) with the same
  model2vec embedder r1mw uses;
* RedisVL's SemanticCache, only when the Redis search module is there.

Run in a virtual environment of its own (``make compare``, or ``pip install -e '.[compare]'``):

    python benchmarks/compare.py --requests 1000 [--json out.json]

Prints a markdown table: hit rate, false hits, hit latency p50/p99 and its ratio to r1mw's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

import numpy as np  # noqa: E402

from r1mw.demo import plan_runs  # noqa: E402
from r1mw.workload.generator import Item, WorkloadSpec, generate  # noqa: E402
from r1mw.workload.replay import percentile, replay  # noqa: E402
from r1mw.workload.simulator import SimulatedR1, served_question_id  # noqa: E402

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 15


class Result:
    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        self.false_hits = 0
        self.requests = 0
        self.hit_latency: list[float] = []
        self.note = ""
        self.skipped: str | None = None

    def add(self, item: Item, hit: bool, served: str | None, latency: float) -> None:
        self.requests += 1
        if hit:
            self.hits += 1
            self.hit_latency.append(latency)
            if served != item.question_id:
                self.false_hits += 1

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "requests": self.requests, "hits": self.hits,
                "hit_rate": self.hits / self.requests if self.requests else None,
                "false_hits": self.false_hits,
                "false_share_of_hits": self.false_hits / self.hits if self.hits else None,
                "hit_p50_us": _us(percentile(self.hit_latency, 0.5)),
                "hit_p99_us": _us(percentile(self.hit_latency, 0.99)), "note": self.note, "skipped": self.skipped}


def _us(v: float | None) -> float | None:
    return None if v is None else v * 1e6


# -- the same embedder for every semantic cache ------------------------------------------------


class Model2VecEmbedding:
    """The offline model2vec model r1mw uses, in GPTCache's embedding shape."""

    def __init__(self) -> None:
        from model2vec import StaticModel

        path = os.path.join(os.path.dirname(importlib.util.find_spec("static_model").origin), "model")  # type: ignore[arg-type,union-attr]
        self.model = StaticModel.from_pretrained(path)
        self.dimension = int(self.model.encode(["probe"]).shape[1])

    def to_embeddings(self, data: Any, **_: Any) -> np.ndarray:
        vec = self.model.encode([str(data)])[0].astype("float32")
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm else vec


# -- the systems ---------------------------------------------------------------------------------


async def run_r1mw(items: list[Item], workload: Any, name: str, which: str, root: Path) -> Result:
    configs, notes = plan_runs([which])
    res = Result(name)
    out = await replay(workload, configs[0], cache_dir=root / name, speed=1e-9, think_scale=0,
                       burst_requests=0, in_order=True)
    for item, o in zip(items, out.outcomes):
        res.add(item, o.hit, o.served_id, o.latency_s)
    res.note = f"stages {','.join(configs[0].stages) or '-'}; tiers {','.join(configs[0].tiers)}"
    if notes:
        res.note += "; " + "; ".join(notes)
    return res


async def run_litellm(items: list[Item], sim: SimulatedR1, kind: str) -> Result:
    import litellm
    from litellm.caching.caching import Cache

    litellm.suppress_debug_info = True  # else one "Provider List" banner per mocked call
    res = Result(f"LiteLLM cache type='{kind}'")
    namespace = f"r1mw-compare-{os.getpid()}"
    if kind == "local":
        litellm.cache = Cache(type="local")
        res.note = "defaults: in-memory, 200 entries at most, TTL 600 s"
    elif kind == "redis":
        litellm.cache = Cache(type="redis", host=REDIS_HOST, port=str(REDIS_PORT), namespace=namespace, db=REDIS_DB)
    else:
        raise ValueError(kind)
    try:
        for item in items:
            reasoning, answer, *_ = sim.texts_for(item.question_id)
            t0 = time.perf_counter()
            resp = await litellm.acompletion(model="deepseek/deepseek-reasoner", messages=item.messages,
                                             mock_response=answer, caching=True)
            dt = time.perf_counter() - t0
            hit = bool((getattr(resp, "_hidden_params", None) or {}).get("cache_hit"))
            res.add(item, hit, served_question_id(resp.choices[0].message.content or ""), dt)
    finally:
        litellm.cache = None
        if kind == "redis":
            import redis

            r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
            keys = list(r.scan_iter(match=f"{namespace}*"))
            if keys:
                r.delete(*keys)
    return res


def run_gptcache(items: list[Item], sim: SimulatedR1, similar: bool, root: Path,
                 embedding: Model2VecEmbedding | None) -> Result:
    from gptcache import Cache
    from gptcache.adapter.api import get, init_similar_cache, put
    from gptcache.manager import manager_factory
    from gptcache.processor.pre import get_prompt

    cache = Cache()
    # GPTCache flushes its files at interpreter exit: keep them out of the temporary directory.
    root = Path(tempfile.mkdtemp(prefix="r1mw-compare-gptcache-"))
    if similar:
        assert embedding is not None
        res = Result("GPTCache similarity (sqlite+faiss, model2vec)")
        data_dir = str(root / "gptcache-similar")
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        init_similar_cache(data_dir=data_dir, cache_obj=cache, embedding=embedding,  # type: ignore[arg-type]
                           data_manager=manager_factory("sqlite,faiss", data_dir=data_dir,
                                                        vector_params={"dimension": embedding.dimension}))
        res.note = "defaults: SearchDistanceEvaluation, similarity_threshold 0.8"
    else:
        res = Result("GPTCache exact (map)")
        (root / "gptcache-map").mkdir(parents=True, exist_ok=True)
        cache.init(pre_embedding_func=get_prompt,
                   data_manager=manager_factory("map", data_dir=str(root / "gptcache-map"), max_size=100_000))
    for item in items:
        t0 = time.perf_counter()
        answer = get(item.text, cache_obj=cache)
        dt = time.perf_counter() - t0
        if answer is None:
            answer = sim.texts_for(item.question_id)[1]
            put(item.text, answer, cache_obj=cache)
            res.add(item, False, None, dt)
        else:
            res.add(item, True, served_question_id(str(answer)), dt)
    return res


def run_redisvl(items: list[Item], sim: SimulatedR1, embedding: Model2VecEmbedding) -> Result:
    from redisvl.extensions.cache.llm import SemanticCache
    from redisvl.utils.vectorize import CustomTextVectorizer

    res = Result("RedisVL SemanticCache (model2vec)")
    vectorizer = CustomTextVectorizer(embed=lambda text: embedding.to_embeddings(text).tolist())
    cache = SemanticCache(name=f"r1mw-compare-{os.getpid()}", redis_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
                          vectorizer=vectorizer)
    try:
        for item in items:
            t0 = time.perf_counter()
            found = cache.check(prompt=item.text)
            dt = time.perf_counter() - t0
            if found:
                res.add(item, True, served_question_id(found[0]["response"]), dt)
            else:
                cache.store(prompt=item.text, response=sim.texts_for(item.question_id)[1])
                res.add(item, False, None, dt)
    finally:
        cache.delete()
    res.note = "defaults (distance_threshold 0.1)"
    return res


def redis_search_available() -> tuple[bool, str]:
    try:
        import redis

        modules = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=1).module_list()
    except Exception as exc:
        return False, f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({type(exc).__name__})"
    names = {(m.get(b"name") or m.get("name") or b"").decode() if isinstance(m.get(b"name") or m.get("name"), bytes)
             else str(m.get("name")) for m in modules}
    if names & {"search", "ft", "searchlight"}:
        return True, "search module loaded"
    return False, f"the local Redis has no search module (MODULE LIST: {sorted(names) or 'empty'})"


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in ("r1mw", "litellm", "gptcache", "faiss-cpu", "redisvl", "redis", "model2vec", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def markdown(rows: list[dict[str, Any]], base: dict[str, Any]) -> str:
    lines = ["| cache | hit rate | false hits (share of hits) | hit p50 | hit p99 | hit p50 vs r1mw | notes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if r["skipped"]:
            lines.append(f"| {r['name']} | - | - | - | - | - | skipped: {r['skipped']} |")
            continue
        ratio = (f"{r['hit_p50_us'] / base['hit_p50_us']:.1f}x" if r["hit_p50_us"] and base.get("hit_p50_us")
                 else "-")
        share = f" ({r['false_share_of_hits']:.1%})" if r["false_share_of_hits"] is not None else ""
        lines.append(f"| {r['name']} | {r['hit_rate']:.1%} | {r['false_hits']}{share} | "
                     f"{_fmt(r['hit_p50_us'])} | {_fmt(r['hit_p99_us'])} | {ratio} | {r['note']} |")
    return "\n".join(lines)


def _fmt(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} us"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    workload = generate(WorkloadSpec(requests=args.requests, sessions=max(2, args.requests // 35), seed=args.seed))
    items = workload.items
    sim = SimulatedR1(speed=0)
    rows: list[dict[str, Any]] = []
    only = set(args.only.split(",")) if args.only else None

    def want(key: str) -> bool:
        return only is None or key in only

    async def guarded(name: str, fn: Callable[[], Awaitable[Result]] | Callable[[], Result]) -> None:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            out = fn()
            res = await out if asyncio.iscoroutine(out) else out  # type: ignore[misc]
        except Exception as exc:
            res = Result(name)
            res.skipped = f"{type(exc).__name__}: {exc}"[:200]
        rows.append(res.row())

    embedding = None
    with tempfile.TemporaryDirectory(prefix="r1mw-compare-") as tmp:
        root = Path(tmp)
        if want("r1mw"):
            await guarded("r1mw", lambda: run_r1mw(items, workload, "r1mw", "r1mw", root))
            await guarded("r1mw exact", lambda: run_r1mw(items, workload, "r1mw exact stage alone", "exact", root))
        if want("litellm"):
            await guarded("litellm local", lambda: run_litellm(items, sim, "local"))
            await guarded("litellm redis", lambda: run_litellm(items, sim, "redis"))
        search, why = redis_search_available()
        if want("gptcache") or want("redisvl"):
            embedding = Model2VecEmbedding()
        if want("gptcache"):
            await guarded("gptcache exact", lambda: run_gptcache(items, sim, False, root, None))
            await guarded("gptcache similar", lambda: run_gptcache(items, sim, True, root, embedding))
        for name in ("LiteLLM cache type='redis-semantic'", "RedisVL SemanticCache (model2vec)"):
            if name.startswith("RedisVL") and search and want("redisvl") and embedding is not None:
                await guarded(name, lambda: run_redisvl(items, sim, embedding))  # type: ignore[arg-type]
            elif not search:
                r = Result(name)
                r.skipped = why
                rows.append(r.row())
    return {"workload": workload.summary(), "rows": rows, "versions": versions(),
            "command": " ".join(["python", "benchmarks/compare.py", *sys.argv[1:]])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", default=None, help="comma-separated: r1mw,litellm,gptcache,redisvl")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    base = next((r for r in report["rows"] if r["name"] == "r1mw" and not r["skipped"]), {})
    w = report["workload"]
    print(f"\nworkload: {w['requests']} requests, {w['distinct_questions']} distinct questions "
          f"(ceiling {w['ceiling_hit_rate']:.1%} without prefetch), seed {args.seed}; one client, same process\n")
    print(markdown(report["rows"], base))
    print("\nversions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
