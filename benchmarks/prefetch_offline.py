"""Prefetch, offline: the bundled workload through the template matcher and the prediction
model alone, with every first occurrence explained.

    python benchmarks/prefetch_offline.py [--requests 1200] [--seed 7] [--zipf 2.2 1.0]
                                          [--min-prob 0.3] [--show 5]

No pipeline, no upstream, no clock: requests are fed in the workload's time order to the
bundled templates (as the template stage keys them) and to :class:`r1mw.predictor.SequenceModel`
(as the prefetch stage teaches it, with the session and the analyst as user); after each one
the model's predictions at or above ``--min-prob`` count as prefetched. It runs in seconds, so
it is the tool for changing the model; ``benchmarks/prefetch.py`` is the measurement (budgets,
concurrency, timing, the real stages), and the two agree within about 1.5 points.

It prints the gain in hit rate, the prefetches issued and how many went unused, and what
happened to every question's first occurrence after a session's first request, by kind of
request:

* ``prefetched``: predicted above the threshold before it was asked;
* ``under threshold``: predicted exactly, with too low a probability;
* ``wrong slots``: its template was predicted for that session, with other slot values;
* ``not predicted``: neither.

``--show N`` prints N examples of the wrong-slot and not-predicted flow steps, with what the
model predicted instead.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from r1mw import Settings
from r1mw.predictor import SequenceModel
from r1mw.templating import BUNDLED, TemplateRegistry, load_file
from r1mw.workload.generator import Item, WorkloadSpec, generate

_CATEGORIES = ("prefetched", "under threshold", "wrong slots", "not predicted")


@dataclass
class Result:
    requests: int
    used: int = 0
    issued: int = 0
    table: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


class Keys:
    """What the template stage makes of a prompt: the key, the symbol and slots for the model."""

    def __init__(self) -> None:
        self.registry = TemplateRegistry()
        for template in load_file(BUNDLED):
            self.registry.add(template)
        self.registry.compile()

    def of(self, text: str) -> tuple[tuple[str, str], str, dict[str, Any] | None]:
        found = self.registry.match_full(text)
        if found is None:
            return ("q", text), "q:" + text, None
        return (found.template.id, found.canonical), "t:" + found.template.id, dict(found.slots)

    def render(self, symbol: str, slots: Any) -> str | None:
        try:
            return self.registry.render(symbol[2:], dict(slots or {}))
        except Exception:  # a slot value the template refuses: no request to make
            return None


def run(spec: WorkloadSpec, min_prob: float, show: int) -> Result:
    keys = Keys()
    workload = generate(spec)
    model = SequenceModel()
    result = Result(len(workload.items))
    asked: set[tuple[str, str]] = set()
    prefetched: set[tuple[str, str]] = set()
    # Per session: every key the model predicted (best probability) and every template it
    # predicted, with the slots of the latest such prediction.
    predicted: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    templates: dict[str, dict[str, Any]] = defaultdict(dict)
    started: set[str] = set()
    for item in sorted(workload.items, key=lambda i: i.t):
        key, symbol, slots = keys.of(item.text)
        if key not in asked and item.session in started:
            category = _explain(key, symbol, predicted[item.session], templates[item.session], prefetched, min_prob)
            result.table[(_kind(item), category)] += 1
            result.used += category == "prefetched"
            if show and item.kind == "flow" and category in ("wrong slots", "not predicted") \
                    and len(result.examples[category]) < show:
                result.examples[category].append(
                    f"{item.session}: asked {symbol[2:]} {slots}; predicted {templates[item.session].get(symbol, '-')}")
        asked.add(key)
        started.add(item.session)
        model.observe(item.session, symbol, slots, user=item.analyst)
        for p in model.predict(item.session):
            # An untemplated request is re-issued as it was asked (its symbol here is its text).
            text = keys.render(p.symbol, p.slots) if p.symbol.startswith("t:") else p.symbol[2:]
            if text is None:
                continue
            pkey, _, pslots = keys.of(text)
            seen = predicted[item.session]
            seen[pkey] = max(seen.get(pkey, 0.0), p.probability)
            templates[item.session][p.symbol] = pslots
            if p.probability >= min_prob and pkey not in asked and pkey not in prefetched:
                prefetched.add(pkey)
                result.issued += 1
    return result


def _explain(key: tuple[str, str], symbol: str, predicted: dict[tuple[str, str], float],
             templates: dict[str, Any], prefetched: set[tuple[str, str]], min_prob: float) -> str:
    if key in prefetched:
        return "prefetched"
    if key in predicted:
        return "under threshold"
    return "wrong slots" if symbol in templates else "not predicted"


def _kind(item: Item) -> str:
    return f"flow: {item.template_id}" if item.kind == "flow" else item.kind


def report(spec: WorkloadSpec, min_prob: float, result: Result) -> None:
    n = result.requests
    unused = result.issued - result.used
    print(f"\nzipf {spec.zipf}: {n} requests, seed {spec.seed}, min prob {min_prob}: "
          f"gain {result.used / n * 100:+.1f} points; issued {result.issued}, used {result.used}, "
          f"unused {unused} ({unused / max(1, result.issued):.0%} of issued)")
    kinds = sorted({k for k, _ in result.table}, key=lambda k: -sum(result.table[(k, c)] for c in _CATEGORIES))
    print(f"  {'first occurrences (points of hit rate)':40}" + "".join(f"{c:>17}" for c in _CATEGORIES))
    for kind in kinds:
        print(f"  {kind:40}" + "".join(f"{result.table[(kind, c)] / n * 100:17.1f}" for c in _CATEGORIES))
    for category, lines in result.examples.items():
        print(f"  examples, {category}:")
        for line in lines:
            print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--zipf", type=float, nargs="+", default=[2.2, 1.0])
    parser.add_argument("--min-prob", type=float, default=Settings().prefetch_min_prob)
    parser.add_argument("--show", type=int, default=0, help="examples of missed flow steps to print")
    args = parser.parse_args()
    for zipf in args.zipf:
        spec = WorkloadSpec(requests=args.requests, seed=args.seed, zipf=zipf)
        report(spec, args.min_prob, run(spec, args.min_prob, args.show))


if __name__ == "__main__":
    main()
