"""A seeded trading workload: analysts' sessions over a day, with ground truth.

An analyst's session works through tickers: an analysis of the ticker with a strategy, the
risk of a position in it, a prediction over a horizon, sometimes a chart question, then the
next ticker (a prefetcher has a pattern to learn). Tickers, strategies and horizons are
Zipf-popular, so the desk keeps asking the same questions. Mixed in:

* exact repeats: an earlier request sent again, byte for byte;
* rewordings: a question in another form (the template variants, equivalent slot
  renderings such as ``$100k`` for ``$100,000``, case, spacing, punctuation, polite words);
* near misses: an earlier request with one slot changed (ticker, size, horizon, interval,
  direction, strategy): textually close, a different question;
* one-off questions that no template covers.

Every request carries ``question_id``, its ground truth from :mod:`r1mw.workload.truth`:
the same id means the same correct answer, a different id a different one.

>>> w = generate(WorkloadSpec(requests=50, sessions=5, seed=1))
>>> len(w.items), w.items[0].question_id == generate(WorkloadSpec(requests=50, sessions=5, seed=1)).items[0].question_id
(50, True)
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import json
import math
import random
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Sequence

from .truth import POLITE_PREFIXES, POLITE_SUFFIXES, Catalog

__all__ = ["Item", "Workload", "WorkloadSpec", "add_arguments", "generate", "spec_from_args"]

MODEL = "deepseek-reasoner"

# The session flow: what an analyst asks about each ticker, in order.
_FLOW = ("analyze_strategy", "assess_risk", "predict_movement")
_CHART_FOLLOWUPS = ("key_levels", "trade_plan", "indicator_read")
_SIDE = ("position_sizing", "option_strategy", "event_reaction", "earnings_summary", "backtest",
         "relative_performance", "value_at_risk", "stress_test")
_ONEOFF_FRAMES = (
    "Draft a two-line note to the desk about {symbol}'s move on {date}",
    "Why did {symbol} gap {updown} at the open on {date}?",
    "Explain the {n}-basis-point move in the 10-year yield on {date} to a new hire",
    "Reconcile my {symbol} P&L for {date}: I show {amount} but the blotter shows {amount2}",
    "Summarize what {person} said about {symbol} on {date} in three bullets",
    "Write a limerick about {symbol} hitting a new high on {date}",
    "Check this Python snippet that computes a {n}-day rolling beta for {symbol} against SPY",
    "Translate our {date} morning note on {symbol} into plain English for a client",
)
_PEOPLE = ("the CFO", "the CEO", "our PM", "the sell-side analyst", "the Fed chair", "the strategist")
_IMPERATIVE = frozenset({"analyze", "run", "use", "assess", "give", "predict", "forecast", "identify",
                         "calculate", "evaluate", "summarize", "backtest", "compare", "compute",
                         "estimate", "stress", "build", "read"})
_POSITION_FORMS = ("a $50,000 long position in {t}", "500 shares of {t}", "a short position of 1,000 {t} shares",
                   "a $20,000 position in {t}", "a $250,000 long position in {t}")


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What to generate. Every field is a flag of ``r1mw demo`` (``--near-miss-share`` ...)."""

    requests: int = 2000
    sessions: int = 60
    analysts: int = 12
    hours: float = 8.0
    seed: int = 7
    repeat_share: float = 0.15
    reword_share: float = 0.45
    near_miss_share: float = 0.03
    oneoff_share: float = 0.01
    side_share: float = 0.04
    zipf: float = 2.2
    habit: float = 0.9
    think_s: float = 45.0
    # The desk's habits (each analyst's usual strategy, horizon...) come from this seed when
    # set, so that several days (other seeds) are the same desk; None: drawn with ``seed``.
    desk_seed: int | None = None

    def __post_init__(self) -> None:
        if self.requests < 1 or self.sessions < 1 or self.analysts < 1:
            raise ValueError("requests, sessions and analysts must be >= 1")
        shares = (self.repeat_share, self.reword_share, self.near_miss_share, self.oneoff_share, self.side_share)
        if any(not 0.0 <= s <= 1.0 for s in shares):
            raise ValueError("every share must be in [0, 1]")
        if not 0.0 <= self.habit <= 1.0:
            raise ValueError("habit must be in [0, 1]")
        # Unchecked, hours <= 0 (or NaN) made a nonsense day, and think_s < 0 a math domain error.
        if not 0.0 < self.hours < math.inf:
            raise ValueError(f"hours={self.hours!r} is invalid: expected a number > 0")
        if not 0.0 <= self.think_s < math.inf:
            raise ValueError(f"think_s={self.think_s!r} is invalid: expected a number >= 0")
        if not 0.0 <= self.zipf < math.inf:
            raise ValueError(f"zipf={self.zipf!r} is invalid: expected a number >= 0")
        if self.repeat_share + self.near_miss_share + self.oneoff_share + self.side_share > 1.0:
            raise ValueError("repeat + near-miss + one-off + side shares must sum to <= 1")


@dataclass(frozen=True, slots=True)
class Item:
    """One request of the workload."""

    index: int
    t: float                 # seconds since the start of the day
    analyst: str
    session: str
    kind: str                # flow, side, repeat, near_miss, oneoff
    question_id: str         # ground truth: same id <=> same correct answer
    template_id: str | None
    text: str
    system: str | None
    reworded: bool = False
    think_s: float = 0.0     # the analyst reads the answer this long before the next request
    near_id: str | None = None  # near misses: the question this one nearly repeats

    @property
    def messages(self) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        out.append({"role": "user", "content": self.text})
        return out

    def kwargs(self, model: str = MODEL) -> dict[str, Any]:
        """OpenAI chat kwargs for this request: the analyst is the OpenAI ``user``, the
        session goes in r1mw's ``cache=``."""
        return {"model": model, "messages": self.messages, "user": self.analyst, "cache": {"session": self.session}}


@dataclass(slots=True)
class Workload:
    spec: WorkloadSpec
    items: list[Item]

    def sessions(self) -> list[list[Item]]:
        """Items grouped by session, each in order, sessions by start time."""
        groups: dict[str, list[Item]] = {}
        for item in self.items:
            groups.setdefault(item.session, []).append(item)
        return sorted(groups.values(), key=lambda g: g[0].t)

    def summary(self) -> dict[str, Any]:
        """Counts by kind, distinct questions and the hit-rate ceiling without prefetch
        (every first occurrence of a question has to go upstream)."""
        n = len(self.items)
        distinct = len({i.question_id for i in self.items})
        return {"requests": n, "distinct_questions": distinct, "ceiling_hit_rate": 1 - distinct / n,
                "kinds": dict(Counter(i.kind for i in self.items)),
                "reworded": sum(i.reworded for i in self.items),
                "distinct_texts": len({(i.system, i.text) for i in self.items})}

    def to_jsonl(self) -> Iterator[str]:
        for item in self.items:
            yield json.dumps(asdict(item))


# -- the generator ---------------------------------------------------------------------------


class _Zipf:
    """Zipf-popular choice over ``values`` in their listed order (the first is the most asked)."""

    def __init__(self, values: Sequence[str], s: float) -> None:
        self.values = list(values)
        weights = [1.0 / (rank ** s) for rank in range(1, len(values) + 1)]
        self.cum = list(itertools.accumulate(weights))

    def __call__(self, rng: random.Random) -> str:
        return self.values[bisect.bisect_left(self.cum, rng.random() * self.cum[-1])]


@dataclass(slots=True)
class _Question:
    template_id: str
    slots: dict[str, str]      # canonical values


@dataclass(slots=True)
class _Surface:
    """How a question was written: template form, slot renderings, style."""

    form: int = 0
    renderings: dict[str, str] = field(default_factory=dict)
    style: tuple[str, ...] = ()
    seed: int = 0


class _Generator:
    def __init__(self, spec: WorkloadSpec, catalog: Catalog) -> None:
        self.spec = spec
        self.cat = catalog
        self.rng = random.Random(spec.seed)
        z = spec.zipf
        sv = catalog.slot_values
        self.pick = {slot: _Zipf(values, z) for slot, values in sv.items()}
        self.side = _WeightedChoice([(t, catalog.templates[t].weight) for t in _SIDE if t in catalog.templates])
        self.history: list[tuple[_Question, _Surface, str]] = []   # (question, surface, text)
        # Each analyst has usual settings (their strategy, horizon, interval...): the desk's
        # tool fills them in, which is why the same questions come back all day.
        desk = self.rng if spec.desk_seed is None else random.Random(spec.desk_seed)
        self.habits = {f"analyst-{a:02d}": {slot: pick(desk) for slot, pick in self.pick.items()}
                       for a in range(spec.analysts)}
        self.analyst = ""
        self.oneoffs = 0

    # -- questions ----------------------------------------------------------------------
    def _fill(self, template_id: str, ticker: str) -> _Question:
        spec = self.cat.templates[template_id]
        slots: dict[str, str] = {}
        for slot in spec.slots:
            if slot == "symbol":
                slots[slot] = ticker
            elif slot == "stock":
                slots[slot] = ticker if ticker in self.cat.slot_values["stock"] else self.pick["stock"](self.rng)
            elif slot == "position_size":
                slots[slot] = self._position(ticker)
            elif self.analyst and self.rng.random() < self.spec.habit:
                slots[slot] = self.habits[self.analyst][slot]
            else:
                slots[slot] = self.pick[slot](self.rng)
        return _Question(template_id, slots)

    def _position(self, ticker: str) -> str:
        listed = [p for p in self.cat.slot_values["position_size"] if ticker.split("-")[0] in p.split()]
        forms = listed + [f.format(t=ticker) for f in _POSITION_FORMS]
        # Each desk holds few positions per ticker: Zipf over them, most often the first.
        return _Zipf(forms, 2.5)(self.rng)

    # -- surfaces -------------------------------------------------------------------------
    def _surface(self, q: _Question, reword: bool) -> _Surface:
        if not reword:
            return _Surface()
        rng = self.rng
        spec = self.cat.templates[q.template_id]
        form = rng.randrange(len(spec.forms()))
        renderings = {}
        for slot, value in q.slots.items():
            options = self.cat.renderings(slot, value)
            if len(options) > 1 and rng.random() < 0.5:
                renderings[slot] = rng.choice(options[1:])
            elif _has_number_format(value) and rng.random() < 0.5:
                renderings[slot] = _reformat_numbers(value)
        styles = [s for s in ("case", "spacing", "punctuation", "polite") if rng.random() < 0.35]
        surface = _Surface(form, renderings, tuple(styles), rng.randrange(1 << 30))
        if surface.form == 0 and not surface.renderings and not surface.style:
            surface.style = ("punctuation",)
        return surface

    def _text(self, q: _Question, s: _Surface) -> str:
        slots = {k: s.renderings.get(k, v) for k, v in q.slots.items()}
        text = self.cat.render(q.template_id, slots, s.form)
        return _styled(text, s.style, random.Random(s.seed))

    # -- the request kinds ----------------------------------------------------------------
    def _emit(self, q: _Question, s: _Surface) -> tuple[str, str, str | None]:
        text = self._text(q, s)
        self.history.append((q, s, text))
        qid = self.cat.question_id(q.template_id, q.slots)
        return qid, text, self.cat.templates[q.template_id].system

    def _from_history(self) -> tuple[_Question, _Surface, str]:
        # Popular and recent requests come back: a recency-weighted draw over history.
        n = len(self.history)
        back = min(n - 1, int(self.rng.expovariate(1 / max(1.0, n / 4))))
        return self.history[n - 1 - back]

    def _near_miss(self) -> tuple[_Question, _Surface, str] | None:
        base_q, base_s, _ = self._from_history()
        base_id = self.cat.question_id(base_q.template_id, base_q.slots)
        slots = list(base_q.slots)
        self.rng.shuffle(slots)
        for slot in slots:
            changed = _perturb(slot, base_q.slots[slot], self.cat.slot_values.get(slot, ()), self.rng)
            if changed is None:
                continue
            q = _Question(base_q.template_id, {**base_q.slots, slot: changed})
            if self.cat.question_id(q.template_id, q.slots) != base_id:
                s = _Surface(base_s.form, {k: v for k, v in base_s.renderings.items() if k != slot},
                             base_s.style, base_s.seed)
                return q, s, base_id
        return None

    def _oneoff(self, index: int) -> str:
        rng = self.rng
        frame = rng.choice(_ONEOFF_FRAMES)
        day = 1 + index % 28
        return frame.format(symbol=self.pick["symbol"](rng), date=f"2024-{1 + index // 28 % 12:02d}-{day:02d}",
                            updown=rng.choice(("up", "down")), n=rng.randint(3, 250),
                            amount=f"${rng.randint(1000, 99999):,}", amount2=f"${rng.randint(1000, 99999):,}",
                            person=rng.choice(_PEOPLE))

    # -- sessions ---------------------------------------------------------------------------
    def run(self) -> list[Item]:
        spec, rng = self.spec, self.rng
        lengths = _split(spec.requests, spec.sessions, rng)
        day = spec.hours * 3600.0
        # Sessions interleave in time; requests are made in time order so that a repeat or
        # a near miss only ever refers to something asked before it.
        queue: list[tuple[float, int]] = []
        sessions: list[list[Any]] = []  # [session, analyst, requests left, plan]
        for s_index, length in enumerate(lengths):
            analyst = f"analyst-{rng.randrange(spec.analysts):02d}"
            sessions.append([f"s{s_index:04d}-{analyst}", analyst, length, None])
            heapq.heappush(queue, (rng.uniform(0, day * 0.9), s_index))
        items: list[Item] = []
        while queue:
            t, s_index = heapq.heappop(queue)
            state = sessions[s_index]
            session, analyst, left, plan = state
            self.analyst = analyst
            if plan is None:
                plan = state[3] = self._session_plan()
            think = rng.lognormvariate(math.log(spec.think_s), 0.6)
            kind, qid, tid, text, reword, near = self._next(plan)
            items.append(Item(index=len(items), t=round(t, 3), analyst=analyst, session=session, kind=kind,
                              question_id=qid, template_id=tid, text=text,
                              system=self.cat.templates[tid].system if tid else None,
                              reworded=reword, think_s=round(think, 3), near_id=near))
            state[2] = left - 1
            if left > 1:
                heapq.heappush(queue, (t + think, s_index))
        return items

    def _next(self, plan: Iterator[_Question]) -> tuple[str, str, str | None, str, bool, str | None]:
        """One request: (kind, question id, template id, text, reworded, near-miss base id)."""
        spec, rng = self.spec, self.rng
        r = rng.random()
        reword = rng.random() < spec.reword_share
        kind = "flow"
        if r < spec.oneoff_share:
            kind = "oneoff"
        elif r < spec.oneoff_share + spec.near_miss_share and self.history:
            kind = "near_miss"
        elif r < spec.oneoff_share + spec.near_miss_share + spec.repeat_share and self.history:
            kind = "repeat"
        elif r < spec.oneoff_share + spec.near_miss_share + spec.repeat_share + spec.side_share:
            kind = "side"
        if kind == "oneoff":
            text = self._oneoff(self.oneoffs)
            self.oneoffs += 1
            return kind, self.cat.identify(text), None, text, False, None
        if kind == "repeat":
            q, s, text = self._from_history()
            self.history.append((q, s, text))
            return kind, self.cat.question_id(q.template_id, q.slots), q.template_id, text, False, None
        found = self._near_miss() if kind == "near_miss" else None
        near = None
        if found is not None:
            q, s, near = found
            reword = False
        else:
            kind = "side" if kind == "side" else "flow"
            q = self._fill(self.side(rng), self.pick["symbol"](rng)) if kind == "side" else next(plan)
            s = self._surface(q, reword)
        qid, text, _system = self._emit(q, s)
        return kind, qid, q.template_id, text, reword, near

    def _session_plan(self) -> Iterator[_Question]:
        """Endless: for each next ticker, analysis -> risk -> prediction (-> a chart question)."""
        rng = self.rng
        while True:
            ticker = self.pick["symbol"](rng)
            for template_id in _FLOW:
                yield self._fill(template_id, ticker)
            if rng.random() < 0.35:
                yield self._fill(rng.choice(_CHART_FOLLOWUPS), ticker)


class _WeightedChoice:
    def __init__(self, pairs: Sequence[tuple[str, float]]) -> None:
        self.values = [p[0] for p in pairs]
        self.cum = list(itertools.accumulate(p[1] for p in pairs))

    def __call__(self, rng: random.Random) -> str:
        return self.values[bisect.bisect_left(self.cum, rng.random() * self.cum[-1])]


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    parts = min(parts, total)
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


# -- surface styles ---------------------------------------------------------------------------


def _styled(text: str, styles: Sequence[str], rng: random.Random) -> str:
    for style in styles:
        if style == "case":
            text = text.lower() if rng.random() < 0.7 else text[0].lower() + text[1:]
        elif style == "spacing":
            words = text.split(" ")
            i = rng.randrange(len(words))
            words[i] = words[i] + " "
            text = (" " if rng.random() < 0.3 else "") + " ".join(words) + ("  " if rng.random() < 0.5 else "")
        elif style == "punctuation":
            stripped = text.rstrip("?.!")
            text = stripped + rng.choice(("", ".", "?", "!")) if stripped == text else stripped
        elif style == "polite":
            first = text.strip().split(" ", 1)[0].lower()
            if first in _IMPERATIVE and rng.random() < 0.6:
                prefix = rng.choice(POLITE_PREFIXES)
                body = text.strip()
                text = f"{prefix[0].upper()}{prefix[1:]} {body[0].lower()}{body[1:]}"
            else:
                text = text.rstrip() + rng.choice((", ", ". ", " ")) + rng.choice(POLITE_SUFFIXES)
    return text


_NUMBER = re.compile(r"\$?\d{1,3}(?:,\d{3})+")


def _has_number_format(value: str) -> bool:
    return _NUMBER.search(value) is not None


def _reformat_numbers(value: str) -> str:
    """``$50,000`` -> ``$50k``, ``1,000`` -> ``1000``: same value, another format."""

    def one(m: Any) -> str:
        token = m.group(0)
        digits = int(token.lstrip("$").replace(",", ""))
        if token.startswith("$") and digits % 1000 == 0:
            return f"${digits // 1000}k" if digits < 1_000_000 or digits % 1_000_000 else f"${digits // 1_000_000}M"
        return token.replace(",", "")

    return _NUMBER.sub(one, value)


_DIRECTIONS = (("long", "short"), ("short", "long"), ("calls", "puts"), ("bullish", "bearish"),
               ("above", "below"), ("buy", "sell"))
_AMOUNT = re.compile(r"(\$?)(\d[\d,]*)")


def _perturb(slot: str, value: str, values: Sequence[str], rng: random.Random) -> str | None:
    """Another value for ``slot``: a listed one, or the same phrase with another number or
    the opposite direction (``long`` -> ``short``)."""
    words = value.split()
    for a, b in _DIRECTIONS:
        if a in words and rng.random() < 0.5:
            return " ".join(b if w == a else w for w in words)
    m = _AMOUNT.search(value)
    if m is not None and (slot == "position_size" or not values or rng.random() < 0.3):
        n = int(m.group(2).replace(",", ""))
        new = max(1, int(n * rng.choice((0.5, 1.5, 2, 3))))
        if new != n:
            return value[:m.start(2)] + (f"{new:,}" if "," in m.group(2) else str(new)) + value[m.end(2):]
    others = [v for v in values if v != value]
    return rng.choice(others) if others else None


def generate(spec: WorkloadSpec | None = None, catalog: Catalog | None = None) -> Workload:
    """Generate the workload of ``spec`` (same spec, same workload)."""
    spec = spec or WorkloadSpec()
    return Workload(spec, _Generator(spec, catalog or Catalog.load()).run())


# -- command-line flags ---------------------------------------------------------------------------

_HELP = {
    "requests": "requests in the workload", "sessions": "analyst sessions", "analysts": "analysts on the desk",
    "hours": "length of the simulated day (hours)", "seed": "random seed (same seed, same workload)",
    "repeat_share": "share of exact repeats of an earlier request",
    "reword_share": "share of new requests written in another form (variant, renderings, style)",
    "near_miss_share": "share of near misses (an earlier request with one slot changed)",
    "oneoff_share": "share of one-off questions no template covers",
    "side_share": "share of side questions (options, earnings, VaR...) outside the session flow",
    "zipf": "Zipf exponent of ticker/strategy/horizon popularity",
    "habit": "probability an analyst uses their usual strategy, horizon, interval... (their defaults)",
    "think_s": "mean seconds an analyst reads an answer before the next request",
    "desk_seed": "seed of the analysts' habits (default: --seed); the same for several days = the same desk",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per :class:`WorkloadSpec` field (``--near-miss-share`` ...)."""
    group = parser.add_argument_group("workload")
    defaults = WorkloadSpec()
    for f in fields(WorkloadSpec):
        default = getattr(defaults, f.name)
        kind = int if default is None else type(default)  # desk_seed: an int when given
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=default,
                           help=_HELP.get(f.name, f.name) + ("" if default is None else " (default: %(default)s)"))


def spec_from_args(args: argparse.Namespace) -> WorkloadSpec:
    return WorkloadSpec(**{f.name: getattr(args, f.name) for f in fields(WorkloadSpec)})


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m r1mw.workload``: write the workload as JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m r1mw.workload", description=__doc__.split("\n")[0])
    add_arguments(parser)
    parser.add_argument("--summary", action="store_true", help="print counts instead of the requests")
    args = parser.parse_args(argv)
    try:
        spec = spec_from_args(args)
    except ValueError as exc:  # one line, like a usage error: not a traceback
        print(f"{parser.prog}: error: workload flags: {exc}", file=sys.stderr)
        return 2
    workload = generate(spec)
    if args.summary:
        print(json.dumps(workload.summary(), indent=2))
    else:
        for line in workload.to_jsonl():
            sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
