"""Semantic stage benchmark: hit and false-hit rates on labelled pairs, precision/recall curves,
threshold calibration, semantic-hit latency at 10k/100k entries, ANN recall.

    python benchmarks/semantic.py                      # rates at the shipped threshold + curves
    python benchmarks/semantic.py --calibrate          # pick the threshold for the model in use
    python benchmarks/semantic.py --latency            # p50/p99 of a semantic hit, 10k and 100k entries
    python benchmarks/semantic.py --ann 1000000        # usearch recall and latency at 1M vectors

Pairs: ``--pairs PATH``, else ``$R1MW_DEV_PAIRS``, else ``../shared/data/dev_pairs.jsonl`` next to
the repository (read its README). Nothing of the pair file is copied into the package.
Besides the file's sources, a ``trading-templates`` source is generated from the bundled
templates: a template against its rewordings (same question) and against the same template
with one slot value changed (a different question).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

import r1mw
from r1mw.semantic.calibration import threshold_for
from r1mw.semantic.embedder import Model2VecEmbedder
from r1mw.semantic.guards import BUILTIN_GUARDS, first_veto
from r1mw.semantic.index import Record, scope_of
from r1mw.semantic.text import embedding_text, normalize_question
from r1mw.testing import FakeR1

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GRID = [round(0.50 + 0.05 * i, 2) for i in range(11)]
CACHE_SPECIFIC = ("arko14-semantic-cache-blindspots", "trading-templates", "domain-handwritten")


def find_pairs(arg: str | None) -> Path:
    for candidate in (arg, os.environ.get("R1MW_DEV_PAIRS")):
        if candidate:
            return Path(candidate)
    for base in (ROOT.parent, *ROOT.parents):
        path = base / "shared" / "data" / "dev_pairs.jsonl"
        if path.exists():
            return path
    sys.exit("dev_pairs.jsonl not found: pass --pairs PATH or set R1MW_DEV_PAIRS")


def load_pairs(path: Path, with_templates: bool = True) -> list[dict[str, str]]:
    pairs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for p in pairs:
        p["source"] = p["source"].split("/")[0]
    if with_templates:
        pairs += template_pairs() + domain_pairs()
    return pairs


def template_pairs(seed: int = 7) -> list[dict[str, str]]:
    """Same / different pairs from the bundled trading templates (generated, deterministic)."""
    data = json.loads((ROOT / "r1mw" / "data" / "trading_templates.json").read_text())
    rng = random.Random(seed)
    out = []
    for t in data["templates"]:
        for _ in range(6):
            values = {s: rng.choice(data["slots"][s]) for s in t["slots"]}
            base = t["template"].format(**values)
            variant = rng.choice(t["variants"]).format(**values)
            out.append({"a": base, "b": variant, "label": "same", "source": "trading-templates", "kind": "paraphrase"})
            slot = rng.choice(t["slots"])
            other = dict(values, **{slot: rng.choice([v for v in data["slots"][slot] if v != values[slot]])})
            out.append({"a": base, "b": t["template"].format(**other), "label": "different",
                        "source": "trading-templates", "kind": "near_miss"})
    return out


# Hand-written near misses of the target users (tickers, directions, periods, numbers, role swaps)
# and rewordings: written before they were run, kept whatever the result.
DOMAIN_DIFFERENT = [("What is the P/E ratio of Apple?","What is the P/E ratio of Microsoft?"),("How do I open a Roth IRA?","How do I close a Roth IRA?"),
("What's the dividend yield of KO?","What's the dividend yield of PEP?"),("Is it a good time to buy bonds?","Is it a good time to sell bonds?"),
("How are capital gains taxed in the US?","How are capital gains taxed in Canada?"),("What does a high VIX mean?","What does a low VIX mean?"),
("When does the market open?","When does the market close?"),("Explain call options","Explain put options"),
("Should I invest in gold?","Should I invest in silver?"),("What are the risks of investing in emerging markets?","What are the benefits of investing in emerging markets?"),
("How does inflation affect stocks?","How do stocks affect inflation?"),("Is bitcoin a good hedge against inflation?","Is gold a good hedge against inflation?"),
("What happens to bond prices when rates rise?","What happens to bond prices when rates fall?"),("Is the Fed likely to hike in June?","Is the Fed likely to cut in June?"),
("Summarize the bull case for NVDA","Summarize the bear case for NVDA"),("What is a good entry point for a long position in oil?","What is a good entry point for a short position in oil?"),
("How much should I save for retirement at 30?","How much should I save for retirement at 40?"),("Can I deduct mortgage interest?","Can I deduct student loan interest?"),
("What is the expense ratio of VOO?","What is the expense ratio of VTI?"),("Compare Tesla with Ford","Compare Ford with Tesla and GM"),
("How do I calculate the Sharpe ratio?","How do I calculate the Sortino ratio?"),("Is it better to pay rent or buy a house?","Is it better to buy a house or pay rent?"),
("What is the yield on the 10-year Treasury?","What is the yield on the 2-year Treasury?"),("Why did the stock market crash in 2008?","Why did the stock market crash in 1929?"),
("Is the stock overvalued?","Is the stock undervalued?"),("What are the tax implications of selling stock at a loss?","What are the tax implications of selling stock at a gain?"),
("Should I rebalance my portfolio monthly?","Should I rebalance my portfolio yearly?"),("What is the minimum balance for a brokerage account?","What is the maximum balance for a brokerage account?"),
("How do interest rates affect growth stocks?","How do interest rates affect value stocks?"),("What is the best way to hedge currency risk for European stocks?","What is the best way to hedge currency risk for Japanese stocks?"),
]
DOMAIN_SAME = [("What is the P/E ratio of Apple?","what's Apple's P/E ratio"),("How do I open a Roth IRA?","How can I open a Roth IRA?"),
("Is it a good time to buy bonds?","Is now a good time to buy bonds?"),("Explain call options","Please explain call options"),
("What are the risks of investing in emerging markets?","What risks does investing in emerging markets carry?"),("How does inflation affect stocks?","How do stocks get affected by inflation?"),
("What is the expense ratio of VOO?","VOO expense ratio?"),("Can I deduct mortgage interest?","Is mortgage interest deductible?"),]


def domain_pairs() -> list[dict[str, str]]:
    return ([{"a": a, "b": b, "label": "different", "source": "domain-handwritten", "kind": "near_miss"}
             for a, b in DOMAIN_DIFFERENT]
            + [{"a": a, "b": b, "label": "same", "source": "domain-handwritten", "kind": "paraphrase"}
               for a, b in DOMAIN_SAME])


# -- rates through the real pipeline ---------------------------------------------------------


async def pipeline_rates(pairs: list[dict[str, str]], threshold: float | None) -> dict[tuple[str, str], list[int]]:
    """Store ``a`` in a fresh namespace, ask ``b``: [hits, pairs] per (source, kind)."""
    fake = FakeR1()
    with tempfile.TemporaryDirectory() as tmp:
        settings = r1mw.Settings(stages="exact,semantic", tiers="l1", l1_size=2 * len(pairs) + 10, cache_dir=tmp,
                                 similarity_threshold=threshold, semantic_dedup_enabled=False)
        async with r1mw.Pipeline(settings) as pipe:
            await pipe.wait_ready()
            llm = r1mw.wrap(fake, pipe)
            rates: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
            for i, p in enumerate(pairs):
                ns = {"namespace": f"pair-{i}"}
                await llm(model="deepseek-reasoner", messages=[{"role": "user", "content": p["a"]}], cache=ns)
                calls = len(fake.calls)
                await llm(model="deepseek-reasoner", messages=[{"role": "user", "content": p["b"]}], cache=ns)
                hit = len(fake.calls) == calls
                r = rates[(p["source"], p["kind"])]
                r[0] += hit
                r[1] += 1
            stage = pipe.stats()["stages"]["semantic"]
    print(f"threshold {stage['threshold']:.2f} ({stage['threshold_source']}); vetoes: {stage['vetoed_by']}")
    return rates


def print_rates(rates: dict[tuple[str, str], list[int]]) -> None:
    print("\n| source | kind | pairs | hits | rate |")
    print("| --- | --- | ---: | ---: | ---: |")
    for (source, kind), (hits, n) in sorted(rates.items()):
        label = "paraphrase hit rate" if kind == "paraphrase" else "false-hit rate"
        print(f"| {source} | {kind} | {n} | {hits} | {hits / n:.1%} ({label}) |")
    diff = [v for (s, k), v in rates.items() if k != "paraphrase"]
    fh, nd = sum(v[0] for v in diff), sum(v[1] for v in diff)
    same = [v for (s, k), v in rates.items() if k == "paraphrase"]
    th, ns = sum(v[0] for v in same), sum(v[1] for v in same)
    print(f"\nall `different` pairs: {fh} false hits of {nd} = {fh / nd:.2%}; "
          f"all `same` pairs: {th} hits of {ns} = {th / ns:.1%}")
    specific = sum(v[0] for (s, k), v in rates.items() if k != "paraphrase" and s in CACHE_SPECIFIC)
    print(f"false hits on the cache-specific near misses ({', '.join(CACHE_SPECIFIC)}): {specific}")


# -- curves and calibration (same embedder and guards, threshold swept) ------------------------


def score_pairs(pairs: list[dict[str, str]], model: str = "") -> tuple[np.ndarray, np.ndarray, str]:
    """(cosine, allowed-by-every-guard) per pair."""
    embedder = Model2VecEmbedder(model)
    asyncio.run(embedder.load())
    a = [normalize_question(p["a"]) for p in pairs]
    b = [normalize_question(p["b"]) for p in pairs]
    va, vb = embedder.embed([embedding_text(x) for x in a]), embedder.embed([embedding_text(x) for x in b])
    cos = np.array([float(x @ y) if x is not None and y is not None else -1.0 for x, y in zip(va, vb)])
    guards = [cls() for cls in BUILTIN_GUARDS]
    allowed = np.array([first_veto(guards, q, s, {}) is None for q, s in zip(b, a)])
    return cos, allowed, embedder.model_name


def curves(pairs, cos, allowed) -> dict[str, list[tuple[float, float, float, float, float]]]:
    """Per source: (threshold, precision, recall, precision without guards, recall without guards)."""
    out: dict[str, list[tuple[float, float, float, float, float]]] = {}
    sources = sorted({p["source"] for p in pairs}) + ["all"]
    same = np.array([p["label"] == "same" for p in pairs])
    for source in sources:
        mask = np.ones(len(pairs), bool) if source == "all" else np.array([p["source"] == source for p in pairs])
        rows = []
        for t in GRID:
            row = [t]
            for use_guards in (True, False):
                hit = mask & (cos >= t) & (allowed if use_guards else True)
                tp, fp = int((hit & same).sum()), int((hit & ~same).sum())
                pos = int((mask & same).sum())
                row += [tp / (tp + fp) if tp + fp else float("nan"), tp / pos if pos else float("nan")]
            rows.append(tuple(row))
        out[source] = rows
    return out


def print_curves(table) -> None:
    print("\nPrecision / recall per source (guards on; cosine alone in brackets):\n")
    for source, rows in table.items():
        print(f"**{source}**\n")
        print("| threshold | precision | recall | precision, cosine only | recall, cosine only |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for t, p, r, p0, r0 in rows:
            print(f"| {t:.2f} | {_pct(p)} | {_pct(r)} | {_pct(p0)} | {_pct(r0)} |")
        print()


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:.1%}"


def plot(table, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib not installed: pip install 'r1mw[plot]' to write {path.name})")
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    colors = {source: f"C{i}" for i, source in enumerate(table)}
    for ax, guarded in zip(axes, (True, False)):
        for source, rows in table.items():
            if all(r[1 if guarded else 3] != r[1 if guarded else 3] for r in rows):
                continue
            recall = [r[2 if guarded else 4] for r in rows]
            precision = [r[1 if guarded else 3] for r in rows]
            ax.plot(recall, precision, marker="o", label=source, color=colors[source],
                    linewidth=2.5 if source == "all" else 1.2)
        ax.set_title("cosine + guards" if guarded else "cosine only")
        ax.set_xlabel("recall (paraphrases served)")
        ax.set_xlim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision (served replies that were right)")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Semantic stage, thresholds {GRID[0]}-{GRID[-1]} (offline model)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def calibrate(pairs, cos, allowed, model: str) -> float:
    """The threshold (step 0.01) that serves the most paraphrases with no cache-specific false hit
    and false hits <= 1 % of all different pairs, at it and at the two steps below it (a margin
    for unseen prompts); ties go to the higher threshold."""
    same = np.array([p["label"] == "same" for p in pairs])
    specific = np.array([p["source"] in CACHE_SPECIFIC and p["label"] == "different" for p in pairs])

    def acceptable(t: float) -> bool:
        hit = (cos >= t) & allowed
        return int((hit & specific).sum()) == 0 and int((hit & ~same).sum()) <= 0.01 * int((~same).sum())

    best = None
    print("\n| threshold | paraphrases served | false hits (all different) | cache-specific false hits |")
    print("| ---: | ---: | ---: | ---: |")
    for i in range(50, 100):
        t = i / 100
        hit = (cos >= t) & allowed
        tp, fp, sp = int((hit & same).sum()), int((hit & ~same).sum()), int((hit & specific).sum())
        # a margin: the two thresholds just below must be acceptable too
        ok = acceptable(t) and acceptable(t - 0.01) and acceptable(t - 0.02)
        if i % 5 == 0 or 75 <= i <= 90:
            print(f"| {t:.2f} | {tp / same.sum():.1%} | {fp / (~same).sum():.2%} | {sp} |{' ok' if ok else ''}")
        if ok and (best is None or tp >= best[1]):
            best = (t, tp)
    chosen = best[0] if best else 0.95
    print(f"\ncalibrated threshold for {model}: {chosen:.2f}")
    return chosen


# -- latency -------------------------------------------------------------------------------


def template_prompts(n: int, seed: int = 1) -> list[str]:
    data = json.loads((ROOT / "r1mw" / "data" / "trading_templates.json").read_text())
    rng = random.Random(seed)
    seen: set[str] = set()
    out = []
    while len(out) < n:
        t = rng.choice(data["templates"])
        values = {s: rng.choice(data["slots"][s]) for s in t["slots"]}
        text = t["template"].format(**values) + f" (desk note {rng.randrange(10**9)})"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


async def latency(n: int, ann: bool, queries: int = 500) -> dict[str, Any]:
    """Semantic hits through the whole pipeline with ``n`` entries in one scope."""
    fake = FakeR1()
    with tempfile.TemporaryDirectory() as tmp:
        settings = r1mw.Settings(stages="exact,semantic", tiers="l1", l1_size=n + queries + 10, cache_dir=tmp,
                                 semantic_ann_min=n if ann else 0, semantic_dedup_enabled=False,
                                 embedding_cache_size=0)
        async with r1mw.Pipeline(settings) as pipe:
            await pipe.wait_ready()
            stage = pipe.stage("semantic")
            texts = template_prompts(n)
            started = time.perf_counter()
            vectors = stage.embedder.embed([embedding_text(normalize_question(t)) for t in texts])
            scope = scope_of("", "m", [], {}, None)
            reply = r1mw.Reply(choices=(r1mw.Choice(content="cached answer"),))
            for text, vec in zip(texts, vectors):
                key = r1mw.key_of("", "m", [{"role": "user", "content": text}], {})
                pipe.store.first.set_nowait(key, r1mw.Entry(reply))
                stage.index.add(Record(key, scope, normalize_question(text), added=time.time()), vec)
            fill = time.perf_counter() - started
            stage._maybe_build_ann()
            while stage._ann_task is not None:
                await asyncio.sleep(0.5)
            build = time.perf_counter() - started - fill
            llm = r1mw.wrap(fake, pipe)
            rng = random.Random(3)
            targets = rng.sample(texts, queries)
            times = []
            for text in targets:  # a reworded ask: filler words, no trailing note change
                asked = "Please, " + text.lower()
                t0 = time.perf_counter()
                await llm(model="m", messages=[{"role": "user", "content": asked}])
                times.append(time.perf_counter() - t0)
            sem = pipe.stats()["stages"]["semantic"]
            # component costs
            probe = [embedding_text("please, " + t) for t in targets[:200]]
            t0 = time.perf_counter()
            for p in probe:
                stage.embedder.embed([p])
            embed_us = (time.perf_counter() - t0) / len(probe) * 1e6
            qv = [v for v in stage.embedder.embed(probe) if v is not None]
            t0 = time.perf_counter()
            for v in qv:
                stage.index.search(scope, v, stage.threshold, stage.top_k)
            search_us = (time.perf_counter() - t0) / len(qv) * 1e6
    ts = np.array(times) * 1e3
    return {"entries": n, "backend": sem["index"]["partitions"], "hits": sem["hits"], "asked": queries,
            "upstream_calls": len(fake.calls), "p50_ms": float(np.percentile(ts, 50)),
            "p99_ms": float(np.percentile(ts, 99)), "embed_us": embed_us, "search_us": search_us,
            "fill_s": fill, "ann_build_s": build if ann else 0.0}


def ann_recall(n: int, queries: int = 1000, dim: int = 64) -> None:
    """usearch against exact search on ``n`` random unit vectors: recall@1 of the true nearest
    neighbour for queries near a stored vector, build time and search latency."""
    from r1mw.semantic.index import ExactPartition, build_ann

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    records = [Record(i.to_bytes(8, "big"), b"s", "") for i in range(n)]
    t0 = time.perf_counter()
    ann = build_ann(dim, records, x)
    build = time.perf_counter() - t0
    exact = ExactPartition(dim, capacity=n)
    for r, v in zip(records, x):
        exact.add(r, v)
    picks = rng.choice(n, queries, replace=False)
    q = x[picks] + 0.3 * rng.standard_normal((queries, dim)).astype(np.float32) / np.sqrt(dim)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    agree, ta, te = 0, [], []
    for v in q:
        t = time.perf_counter(); got = ann.search(v, -1.0, 4); ta.append(time.perf_counter() - t)
        t = time.perf_counter(); want = exact.search(v, -1.0, 4); te.append(time.perf_counter() - t)
        agree += bool(got) and got[0].record.key == want[0].record.key
    print(f"{n:,} vectors x {dim}: usearch build {build:.1f} s; recall@1 vs exact {agree / queries:.1%}; "
          f"search p50 {np.percentile(ta, 50) * 1e6:.0f} us (exact {np.percentile(te, 50) * 1e6:.0f} us), "
          f"p99 {np.percentile(ta, 99) * 1e6:.0f} us (exact {np.percentile(te, 99) * 1e6:.0f} us)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", help="dev_pairs.jsonl path")
    ap.add_argument("--threshold", type=float, default=None, help="SIMILARITY_THRESHOLD (default: calibrated)")
    ap.add_argument("--model", default="", help="R1MW_EMBED_MODEL (default: the offline model)")
    ap.add_argument("--calibrate", action="store_true", help="print the threshold sweep and the pick")
    ap.add_argument("--latency", action="store_true", help="semantic-hit latency at 10k and 100k entries")
    ap.add_argument("--sizes", default="10000,100000", help="entry counts for --latency")
    ap.add_argument("--ann", type=int, default=0, help="usearch recall/latency on N random vectors")
    ap.add_argument("--no-rates", action="store_true", help="skip the pair rates and curves")
    args = ap.parse_args()
    if args.model:
        os.environ["R1MW_EMBED_MODEL"] = args.model
    if not args.no_rates:
        path = find_pairs(args.pairs)
        pairs = load_pairs(path)
        print(f"pairs: {path} ({len(pairs)} incl. {len(template_pairs())} generated trading-templates pairs "
              f"and {len(domain_pairs())} hand-written domain pairs)")
        cos, allowed, model = score_pairs(pairs, args.model)
        if args.calibrate:
            calibrate(pairs, cos, allowed, model)
        t, source = threshold_for(model, args.threshold)
        print(f"\n## Rates at the shipped threshold {t:.2f} ({source}), through the pipeline")
        print_rates(asyncio.run(pipeline_rates(pairs, args.threshold)))
        table = curves(pairs, cos, allowed)
        print_curves(table)
        plot(table, DOCS / "semantic_pr.png")
    if args.latency:
        print("\n## Semantic-hit latency (whole pipeline, one scope, warm, embedding cache off)\n")
        print("| entries | index | p50 ms | p99 ms | embed us | search us | hits/asked | fill s | ANN build s |")
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        sizes = [int(x) for x in args.sizes.split(",")]
        runs = [(n, False) for n in sizes] + [(n, True) for n in sizes if n >= 100_000]
        for n, ann in runs:
            r = asyncio.run(latency(n, ann))
            print(f"| {n:,} | {'usearch' if ann else 'exact'} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                  f"{r['embed_us']:.0f} | {r['search_us']:.0f} | {r['hits']}/{r['asked']} | {r['fill_s']:.1f} | "
                  f"{r['ann_build_s']:.1f} |", flush=True)
    if args.ann:
        ann_recall(args.ann)


if __name__ == "__main__":
    main()
