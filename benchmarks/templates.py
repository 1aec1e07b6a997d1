"""Template matching speed and the exact-hit rate it buys.

    python benchmarks/templates.py            # everything (about a minute on 2 cores)
    python benchmarks/templates.py --quick    # smaller samples

Prints:
1. match time p50/p99 with 10, 100 and 1,000 templates (4 patterns each: template + 3
   variants), for the indexed registry against one combined pattern and a linear scan of
   per-pattern regexes, on prompts that match and prompts that do not;
2. the miner's cost per unmatched prompt;
3. the template stage's cost on an exact RAM hit through the whole pipeline;
4. the exact-hit rate on a workload generated from trading_templates.json (filled templates,
   repeats, rewordings, spelling variants, different slot values), with and without the
   template stage, and the false hits (a reply served for a different question: must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from typing import Any

import r1mw
from r1mw.templating import BUNDLED, Miner, Template, TemplateRegistry, load_file
from r1mw.templating.registry import _Bucket
from r1mw.templating.template import parse_pattern
from r1mw.testing import FakeR1

VERBS = ["Analyze", "Assess", "Predict", "Compare", "Explain", "Summarize", "Evaluate", "Estimate", "Backtest",
         "Forecast", "Describe", "Review", "Rank", "Screen", "Model", "Price", "Hedge", "Stress", "Chart", "Score",
         "What", "How", "Why", "When", "Should", "Can", "Give", "Show", "List", "Find"]
NOUNS = ["risk", "momentum", "volatility", "earnings", "guidance", "margin", "valuation", "liquidity", "beta",
         "drawdown", "exposure", "sentiment", "breadth", "skew", "carry", "basis", "spread", "yield", "flow", "gamma",
         "dividend", "buyback", "float", "short interest", "options volume", "insider buying", "revenue", "cash burn"]
TYPES = [("symbol", "ticker"), ("size", "money"), ("pct", "percent"), ("when", "date"), ("horizon", "period"),
         ("count", "number"), ("topic", "text")]
VALUE = {"ticker": lambda r: r.choice(["AAPL", "msft", "NVDA", "tsla", "SPY", "QQQ"]),
         "money": lambda r: r.choice(["$50,000", "$25k", "100000 dollars", "$1M"]),
         "percent": lambda r: r.choice(["5%", "0.5 percent", "12%"]),
         "date": lambda r: r.choice(["2024-03-15", "March 3, 2025", "12/01/2023"]),
         "period": lambda r: r.choice(["the next week", "the coming month", "5-minute", "Q1 2024"]),
         "number": lambda r: r.choice(["1,000", "250", "3k"]),
         "text": lambda r: r.choice(["the energy sector", "RSI(14) mean reversion", "a covered call"])}


def synthetic(n: int, seed: int = 1) -> list[Template]:
    """``n`` templates with 3 variants each; first words from a 30-word vocabulary, about one
    pattern in ten starting with a slot (those go to the suffix index)."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        slots = r.sample(TYPES, r.randint(1, 3))
        names = [f"{name}" for name, _ in slots]
        typed = {name: kind for name, kind in slots}

        def phrase() -> str:
            words = [r.choice(VERBS), "the", r.choice(NOUNS), f"t{i}"]  # t{i}: a distinct fixed word
            for name in names:
                words += [r.choice(["for", "of", "over", "at", "with", "on"]), "{" + name + "}"]
            words += [r.choice(NOUNS), "please"]
            if r.random() < 0.1:  # starts with a slot
                words = ["{" + names[0] + "}:"] + [w for w in words if w != "{" + names[0] + "}"]
            return " ".join(words)

        patterns = []
        while len(patterns) < 4:
            p = phrase()
            if p not in patterns and all(("{" + n + "}") in p for n in names):
                patterns.append(p)
        out.append(Template(f"s{i}", patterns[0], tuple(patterns[1:]), typed, source="file"))
    return out


def fill(pattern: str, template: Template, r: random.Random) -> str:
    return "".join(p if isinstance(p, str) else VALUE[template.slots[p[0]]](r) for p in parse_pattern(pattern))


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def time_calls(fn: Any, queries: list[str], repeat: int) -> tuple[float, float]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(repeat):
        for q in queries:
            t0 = clock()
            fn(q)
            samples.append((clock() - t0) / 1000)
    return percentiles(samples)


def bench_match(quick: bool) -> None:
    print("\n## match time (us), 4 patterns per template")
    print(f"{'templates':>9} {'queries':>9} | {'indexed p50':>11} {'p99':>7} | {'one pattern p50':>15} {'p99':>7} "
          f"| {'linear p50':>10} {'p99':>7}")
    r = random.Random(5)
    for n in (10, 100, 1000):
        templates = synthetic(n)
        t0 = time.perf_counter()
        registry = TemplateRegistry(templates)
        registry.compile()
        build_ms = (time.perf_counter() - t0) * 1000
        combined = _Bucket()
        for rank, alt in enumerate(a for t in templates for a in t.alternatives()):
            combined.alts.append(((0, -alt.specificity, rank), alt))
        combined.compile()
        linear = [(re.compile(a.regex, re.I | re.S), a) for t in templates for a in t.alternatives()]

        def one_pattern(text: str) -> Any:
            return TemplateRegistry._try(combined, text)

        def scan(text: str) -> Any:
            for rx, alt in linear:
                m = rx.fullmatch(text)
                if m:
                    values = [alt.template.slot_type(n).normalize(v) for n, v in zip(alt.slots, m.groups())]
                    if None not in values:
                        return alt, values
            return None

        hits = [fill(r.choice((t.text, *t.variants)), t, r) for t in r.choices(templates, k=200)]
        misses = [f"{r.choice(VERBS)} the {r.choice(NOUNS)} of AAPL versus {r.choice(NOUNS)} this year"
                  for _ in range(200)]
        assert all(registry.match(q) is not None for q in hits)
        for label, queries in (("match", hits), ("no match", misses)):
            repeat = 5 if quick else 20
            ip50, ip99 = time_calls(registry._match, queries, repeat)  # the memo off: every call matches
            cp50, cp99 = time_calls(one_pattern, queries, 1 if n == 1000 else repeat)
            lp50, lp99 = time_calls(scan, queries, 1 if n >= 100 else repeat)
            print(f"{n:>9} {label:>9} | {ip50:>11.1f} {ip99:>7.1f} | {cp50:>15.1f} {cp99:>7.1f} "
                  f"| {lp50:>10.1f} {lp99:>7.1f}")
        print(f"{'':>9} (index build + compile: {build_ms:.0f} ms)")
    trading = TemplateRegistry(load_file(BUNDLED))
    q = "Calculate the position size for a $25,000 account risking 1% per trade on AAPL with a 5% stop-loss"
    p50, p99 = time_calls(trading._match, [q] * 200, 10)
    print(f"bundled trading set (14 templates, 44 patterns), 4-slot typed prompt: p50 {p50:.1f} us, p99 {p99:.1f} us")
    p50, p99 = time_calls(trading.match, [q] * 200, 10)
    print(f"the same prompt repeated (memo hit): p50 {p50:.2f} us, p99 {p99:.2f} us")


def bench_mining(quick: bool) -> None:
    print("\n## mining cost per unmatched prompt (us)")
    r = random.Random(9)
    words = [f"w{i}" for i in range(400)] + NOUNS
    prompts = [" ".join(r.choice(words) for _ in range(r.randint(5, 20))) for _ in range(5000 if quick else 20000)]
    registry = TemplateRegistry()
    miner = Miner(registry, capacity=100)
    samples = []
    clock = time.perf_counter_ns
    for p in prompts:
        t0 = clock()
        miner.observe(p)
        samples.append((clock() - t0) / 1000)
    p50, p99 = percentiles(samples[len(samples) // 2:])  # once the cluster table is full
    print(f"one-off prompts, {miner.stats()['clusters']} clusters live: p50 {p50:.1f}  p99 {p99:.1f}")


async def bench_hot_path(quick: bool) -> None:
    print("\n## exact RAM hit through the pipeline (us)")
    n = 5000 if quick else 30000
    q = [{"role": "user", "content": "Predict movement for AAPL over the next week"}]
    for stages in ("exact", "template,exact"):
        async with r1mw.Pipeline(r1mw.Settings(stages=stages, templates=str(BUNDLED), template_cache_size=0)) as pipe:
            llm = r1mw.wrap(FakeR1(), pipe)
            await llm(model="m", messages=q)
            samples = []
            clock = time.perf_counter_ns
            for _ in range(n):
                t0 = clock()
                await llm(model="m", messages=q)
                samples.append((clock() - t0) / 1000)
        p50, p99 = percentiles(samples)
        print(f"stages={stages:<16} p50 {p50:6.1f}  p99 {p99:6.1f}")


# -- the workload ------------------------------------------------------------------------


def workload(n: int, seed: int) -> list[tuple[str, tuple]]:
    """(prompt, identity) pairs; identity = (template id, base slot values): two requests
    with one identity ask the same question (the file's own definition)."""
    data = json.loads(BUNDLED.read_text())
    r = random.Random(seed)
    templates = data["templates"]
    weights = [t["weight"] for t in templates]
    equivalents = data["slot_equivalents"]
    out = []
    for _ in range(n):
        t = r.choices(templates, weights)[0]
        # A skewed choice of values: analysts ask about a few names and settings most.
        base = {name: data["slots"][name][min(int(r.expovariate(0.7)), len(data["slots"][name]) - 1)]
                for name in t["slots"]}
        pattern = t["template"] if r.random() < 0.5 else r.choice(t["variants"])
        shown = {}
        for name, value in base.items():
            spellings = [value] + list(equivalents.get(name, {}).get(value, []))
            shown[name] = r.choice(spellings) if r.random() < 0.3 else value
        text = "".join(p if isinstance(p, str) else shown[p[0]] for p in parse_pattern(pattern))
        noise = r.random()
        if noise < 0.15 and not pattern.startswith("{"):
            text = text[0].lower() + text[1:]
        elif noise < 0.3:
            text = text.replace(" ", "  ", 2)
        elif noise < 0.4:
            text = text.rstrip("?.") + r.choice([".", "?", ""])
        out.append((text, (t["id"], tuple(sorted(base.items())))))
    return out


async def bench_hit_rate(quick: bool) -> None:
    n = 1000 if quick else 3000
    requests = workload(n, seed=11)
    print(f"\n## exact-hit rate on the generated trading workload ({n} requests, "
          f"{len({i for _, i in requests})} distinct questions)")
    identity_of = {}
    for text, ident in requests:
        identity_of.setdefault(text, ident)
    for stages in ("exact", "template,exact"):
        fake = FakeR1()
        false_hits = 0
        async with r1mw.Pipeline(r1mw.Settings(stages=stages, templates=str(BUNDLED), template_cache_size=0)) as pipe:
            llm = r1mw.wrap(fake, pipe)
            for text, ident in requests:
                reply = await llm(model="deepseek-reasoner", messages=[{"role": "user", "content": text}])
                answered = reply["choices"][0]["message"]["content"][len("Answer to: "):]
                if identity_of[answered] != ident:
                    false_hits += 1
            s = pipe.stats()
        print(f"stages={stages:<16} hit rate {s['hit_rate']:6.1%}  upstream calls {len(fake.calls):5d}  "
              f"false hits {false_hits}")
    best = len({i for _, i in requests})
    print(f"{'(ceiling)':<23} hit rate {1 - best / n:6.1%}  upstream calls {best:5d}  (one call per distinct question)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import platform

    print(f"# r1mw template benchmarks  (CPython {platform.python_version()}, {platform.machine()})")
    bench_match(args.quick)
    bench_mining(args.quick)
    asyncio.run(bench_hot_path(args.quick))
    asyncio.run(bench_hit_rate(args.quick))


if __name__ == "__main__":
    main()
