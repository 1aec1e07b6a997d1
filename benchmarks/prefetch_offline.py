"""Prefetch, offline: the bundled workload through the template matcher and the prediction
model alone, with every first occurrence explained.

    python benchmarks/prefetch_offline.py [--requests 1200] [--seed 7 [8 ...]] [--zipf 2.2 1.0]
                                          [--min-prob 0.3] [--show 5] [--days-before 1 [--expired]]

No pipeline, no upstream, no clock: requests are fed in the workload's time order to the
bundled templates (as the template stage keys them) and to :class:`r1mw.predictor.SequenceModel`
(as the prefetch stage teaches it, with the session and the analyst as user); after each one
the model's predictions at or above ``--min-prob`` count as prefetched. It runs in seconds, so
it is the tool for changing the model; ``benchmarks/prefetch.py`` is the measurement (budgets,
concurrency, timing, the real stages), and the two agree within about 1.5 points.

With several seeds (other days of other desks), the figures are pooled over them: one seed's
day is a few hundred first occurrences, so a change of a point is within one seed's luck.

It prints the gain in hit rate, the prefetches issued and how many went unused, and what
happened to every question's first occurrence after a session's first request, by kind of
request:

* ``prefetched``: predicted above the threshold before it was asked;
* ``under threshold``: predicted exactly, with too low a probability;
* ``wrong slots``: its template was predicted for that session, with other slot values;
* ``not predicted``: neither.

``--show N`` prints N examples of the wrong-slot and not-predicted flow steps, with what the
model predicted instead.

Last, a reference: the same count for a predictor that knows the generator's own probabilities
(each analyst's habits, each ticker's positions, the habit rate) and, after each analysis
and each risk question of the flow, names the likeliest next flow step of the same ticker
with its true probability. No sequence model learnt from the traffic can know more than
that, so its gain at a given share of unused prefetches is what the model can hope for.
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
    used_by_half: list[int] = field(default_factory=lambda: [0, 0])  # first / second half of the day
    table: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, other: "Result") -> None:
        """Pool ``other`` (another seed's day) into this one."""
        self.requests += other.requests
        self.used += other.used
        self.issued += other.issued
        self.used_by_half = [a + b for a, b in zip(self.used_by_half, other.used_by_half)]
        self.table.update(other.table)
        for category, lines in other.examples.items():
            self.examples[category].extend(lines)


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


def days(requests: int, seed: int, zipf: float, days_before: int) -> tuple[WorkloadSpec, list[WorkloadSpec]]:
    """The measured day and ``days_before`` earlier ones: with earlier days, all of one desk
    (``desk_seed``: the analysts' habits) and each with its own requests (other seeds)."""
    desk = seed if days_before else None
    earlier = [WorkloadSpec(requests=requests, seed=seed + 1000 + day, zipf=zipf, desk_seed=desk)
               for day in range(days_before)]
    return WorkloadSpec(requests=requests, seed=seed, zipf=zipf, desk_seed=desk), earlier


def run(spec: WorkloadSpec, min_prob: float, show: int, earlier: list[WorkloadSpec] = (),
        expired: bool = False) -> Result:
    keys = Keys()
    workload = generate(spec)
    model = SequenceModel()
    result = Result(len(workload.items))
    asked: set[tuple[str, str]] = set()
    for day, before in enumerate(earlier):  # earlier days: the model learns, the cache fills
        for item in sorted(generate(before).items, key=lambda i: i.t):
            key, symbol, slots = keys.of(item.text)
            if not expired:
                asked.add(key)
            model.observe(f"day{day}-{item.session}", symbol, slots, user=item.analyst)
    prefetched: set[tuple[str, str]] = set()
    # Per session: every key the model predicted (best probability) and every template it
    # predicted, with the slots of the latest such prediction.
    predicted: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    templates: dict[str, dict[str, Any]] = defaultdict(dict)
    started: set[str] = set()
    for index, item in enumerate(sorted(workload.items, key=lambda i: i.t)):
        key, symbol, slots = keys.of(item.text)
        if key not in asked and item.session in started:
            category = _explain(key, symbol, predicted[item.session], templates[item.session], prefetched, min_prob)
            result.table[(_kind(item), category)] += 1
            result.used += category == "prefetched"
            result.used_by_half[index * 2 >= result.requests] += category == "prefetched"
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


def oracle(spec: WorkloadSpec, min_prob: float, earlier: list[WorkloadSpec] = (),
           expired: bool = False) -> tuple[int, int, list[int]]:
    """(requests, issued, used in the first and in the second half of the day) for the
    predictor that knows the generator's probabilities."""
    from r1mw.workload.generator import _POSITION_FORMS, _Generator, _Zipf
    from r1mw.workload.truth import Catalog

    catalog = Catalog.load()
    generator = _Generator(spec, catalog)  # same seed: the same habits and requests as generate()
    items = generator.run()

    def distribution(values: list[str], s: float) -> dict[str, float]:
        weights = _Zipf(values, s).cum
        out: dict[str, float] = {}
        for i, value in enumerate(values):
            out[value] = out.get(value, 0.0) + (weights[i] - (weights[i - 1] if i else 0.0)) / weights[-1]
        return out

    def likeliest(template_id: str, ticker: str, analyst: str) -> tuple[dict[str, str], float]:
        slots, p = {}, 1.0
        for slot in catalog.templates[template_id].slots:
            if slot == "symbol":
                slots[slot] = ticker
            elif slot == "position_size":
                listed = [v for v in catalog.slot_values["position_size"] if ticker.split("-")[0] in v.split()]
                dist = distribution(listed + [f.format(t=ticker) for f in _POSITION_FORMS], 2.5)
                slots[slot] = max(dist, key=dist.__getitem__)
                p *= dist[slots[slot]]
            else:
                habit = generator.habits[analyst][slot]
                slots[slot] = habit
                p *= spec.habit + (1 - spec.habit) * distribution(list(catalog.slot_values[slot]), spec.zipf)[habit]
        return slots, p

    canonical = {catalog.normalize("symbol", v): v for v in catalog.slot_values["symbol"]}
    later: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        later[item.question_id] = i  # the last time each question is asked
        first.setdefault(item.question_id, i)
    asked: set[str] = set() if expired else {item.question_id for before in earlier for item in generate(before).items}
    ticker: dict[str, str] = {}
    issued = 0
    used = [0, 0]
    nxt = {"analyze_strategy": "assess_risk", "assess_risk": "predict_movement"}
    for i, item in enumerate(items):
        asked.add(item.question_id)
        if item.kind != "flow" or item.template_id not in nxt:
            continue
        if item.template_id == "analyze_strategy":
            found = catalog.match(item.text)
            if found is not None:
                ticker[item.session] = canonical[catalog.normalize("symbol", found[1]["symbol"])]
        if item.session not in ticker:
            continue
        template_id = nxt[item.template_id]
        slots, p = likeliest(template_id, ticker[item.session], item.analyst)
        qid = catalog.question_id(template_id, slots)
        if p >= min_prob and qid not in asked:
            asked.add(qid)  # issued once; asked from now on, as far as prefetching goes
            issued += 1
            if later.get(qid, -1) > i:  # asked after: its first time is after the prediction
                used[first[qid] * 2 >= len(items)] += 1
    return len(items), issued, used


def _kind(item: Item) -> str:
    return f"flow: {item.template_id}" if item.kind == "flow" else item.kind


def report(spec: WorkloadSpec, seeds: list[int], min_prob: float, result: Result) -> None:
    n = result.requests
    unused = result.issued - result.used
    print(f"\nzipf {spec.zipf}: {n} requests, seed {', '.join(map(str, seeds))}, min prob {min_prob}: "
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
    parser.add_argument("--seed", type=int, nargs="+", default=[7],
                        help="workload seeds; with several, the figures are pooled over their days")
    parser.add_argument("--zipf", type=float, nargs="+", default=[2.2, 1.0])
    parser.add_argument("--min-prob", type=float, default=Settings().prefetch_min_prob)
    parser.add_argument("--show", type=int, default=0, help="examples of missed flow steps to print")
    parser.add_argument("--days-before", type=int, default=0,
                        help="earlier days of the same desk (other seeds, the same habits) learnt and cached first")
    parser.add_argument("--expired", action="store_true",
                        help="with --days-before: the earlier days' answers have expired (a TTL of a day: market "
                             "analyses go stale), only the model carries over")
    args = parser.parse_args()
    for zipf in args.zipf:
        pooled, n, issued, halves = Result(0), 0, 0, [0, 0]
        for seed in args.seed:
            spec, earlier = days(args.requests, seed, zipf, args.days_before)
            pooled.add(run(spec, args.min_prob, args.show, earlier, args.expired))
            one = oracle(spec, args.min_prob, earlier, args.expired)
            n, issued, halves = n + one[0], issued + one[1], [a + b for a, b in zip(halves, one[2])]
        result = pooled
        report(spec, args.seed, args.min_prob, result)
        used = sum(halves)
        print(f"  reference (flow steps only): a predictor that knows the generator's probabilities from the first request: "
              f"gain {used / n * 100:+.1f} points; issued {issued}, unused {(issued - used) / max(1, issued):.0%}")
        print(f"  first occurrences prefetched, model / reference: first half of the day "
              f"{result.used_by_half[0]} / {halves[0]}, second half {result.used_by_half[1]} / {halves[1]} "
              f"(the model learns the desk's habits as the day goes; the reference knows them from the start)")


if __name__ == "__main__":
    main()
