"""What a session asks next: a bounded variable-order Markov model (PPM-style backoff).

Symbols are what a request *is*: ``t:<template id>`` for a templated request, ``q:<hash>`` for
an untemplated one (exact repeats of sequences). For each context of the last 1..``order``
symbols of a session the model counts which symbol came next; prediction backs off from the
longest context that has enough observations. Slot values carry over: for each transition it
learns, per slot of the next template, whether the value repeats the previous request's slot of
the same name (the ticker, usually), embeds another of its slots in a fixed text ("a $50,000
long position in {symbol}"), or is one dominant literal; a prediction whose slots cannot be
filled that way is not made.

Memory is bounded (contexts, successors per context, sessions, remembered raw requests: each
LRU-capped), and the whole model round-trips through plain msgpack-able data (never pickle).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = ["Prediction", "SequenceModel"]


@dataclass(frozen=True, slots=True)
class Prediction:
    """A predicted next request: its symbol, probability, and what is needed to build it
    (template slots, or the remembered messages of an untemplated request)."""

    symbol: str
    probability: float
    slots: Mapping[str, Any] | None = None
    example: Any = None
    support: int = 0


class _Successors:
    """Next-symbol counts of one context, capped at ``cap`` entries (the rarest is replaced)."""

    __slots__ = ("counts", "total", "slot_stats")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0
        # next symbol -> slot name -> {"=": carried count, literal value: count}
        self.slot_stats: dict[str, dict[str, dict[str, int]]] = {}

    def add(self, symbol: str, prev_slots: Mapping[str, Any] | None, next_slots: Mapping[str, Any] | None,
            cap: int) -> None:
        if symbol not in self.counts and len(self.counts) >= cap:
            rarest = min(self.counts, key=self.counts.__getitem__)
            self.total -= self.counts.pop(rarest)
            self.slot_stats.pop(rarest, None)
        self.counts[symbol] = self.counts.get(symbol, 0) + 1
        self.total += 1
        if next_slots:
            stats = self.slot_stats.setdefault(symbol, {})
            for name, value in next_slots.items():
                per = stats.setdefault(name, {})
                tag = _tag(name, value, prev_slots)
                per[tag] = per.get(tag, 0) + 1
                if len(per) > 16:  # a slot with many literals is not predictable: keep it small
                    del per[min((k for k in per if k != "="), key=per.__getitem__)]

    def fill(self, symbol: str, prev_slots: Mapping[str, Any] | None) -> tuple[dict[str, Any], float] | None:
        """Slots for ``symbol`` from what usually happens, with the share of past transitions
        they agree with (the product over slots); None when one cannot be filled."""
        stats = self.slot_stats.get(symbol)
        if not stats:
            return {}, 1.0
        out: dict[str, Any] = {}
        agreement = 1.0
        for name, per in stats.items():
            total = sum(per.values())
            tag, count = max(per.items(), key=lambda kv: kv[1])
            if count * 2 <= total:  # no majority: guessing would waste money
                return None
            agreement *= count / total
            if tag == "=":
                if prev_slots is None or name not in prev_slots:
                    return None
                out[name] = prev_slots[name]
            elif tag.startswith("p:"):
                other, pattern = tag[2:].split("\x00", 1)
                if prev_slots is None or not isinstance(prev_slots.get(other), str):
                    return None
                out[name] = pattern.replace("\x01", prev_slots[other])
            else:
                out[name] = tag[2:]
        return out, agreement

    def to_data(self) -> list[Any]:
        return [self.counts, self.slot_stats]

    @classmethod
    def from_data(cls, data: list[Any]) -> "_Successors":
        s = cls()
        s.counts = {str(k): int(v) for k, v in data[0].items()}
        s.total = sum(s.counts.values())
        s.slot_stats = {str(k): {str(n): {str(t): int(c) for t, c in per.items()} for n, per in v.items()}
                        for k, v in data[1].items()}
        return s


def _tag(name: str, value: Any, prev: Mapping[str, Any] | None) -> str:
    """How a slot of the next request relates to the previous request's slots:
    ``=`` (the same slot's value carried over), ``p:<slot>\x00<pattern>`` (a text that embeds
    another slot's value, e.g. "a $50,000 long position in {symbol}"), or ``v:<literal>``."""
    if prev is not None:
        if prev.get(name) == value:
            return "="
        if isinstance(value, str):
            for other, carried in prev.items():
                if isinstance(carried, str) and len(carried) >= 2 and carried in value:
                    return "p:" + other + "\x00" + value.replace(carried, "\x01")
    return "v:" + _text(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value) if not isinstance(value, (int, float)) else str(value)


@dataclass(slots=True)
class _Session:
    history: list[str]
    slots: list[Mapping[str, Any] | None]


class SequenceModel:
    """Learns per-session sequences of request symbols and predicts the next ones.

    >>> m = SequenceModel(order=2, min_support=2)
    >>> for _ in range(3):
    ...     m.observe("s", "t:analyze", {"symbol": "AAPL"})
    ...     m.observe("s", "t:risk", {"symbol": "AAPL"})
    >>> m.observe("s2", "t:analyze", {"symbol": "NVDA"})
    >>> p = m.predict("s2")[0]
    >>> p.symbol, dict(p.slots), p.probability
    ('t:risk', {'symbol': 'NVDA'}, 1.0)
    """

    def __init__(self, *, order: int = 3, min_support: int = 2, max_contexts: int = 20_000,
                 max_successors: int = 8, max_sessions: int = 10_000, max_examples: int = 5_000) -> None:
        self.order = order
        self.min_support = min_support
        self.max_contexts = max_contexts
        self.max_successors = max_successors
        self.max_sessions = max_sessions
        self.max_examples = max_examples
        self._contexts: OrderedDict[tuple[str, ...], _Successors] = OrderedDict()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._examples: OrderedDict[str, Any] = OrderedDict()  # q:<hash> -> how to re-issue it
        self.observed = 0

    def __len__(self) -> int:
        return len(self._contexts)

    def observe(self, session: str, symbol: str, slots: Mapping[str, Any] | None = None,
                example: Any = None) -> None:
        """Record that ``session`` asked ``symbol`` (with its slots) after what it asked before."""
        self.observed += 1
        if example is not None:
            self._examples[symbol] = example
            self._examples.move_to_end(symbol)
            while len(self._examples) > self.max_examples:
                self._examples.popitem(last=False)
        state = self._sessions.get(session)
        if state is None:
            state = self._sessions[session] = _Session([], [])
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session)
        history = state.history
        if history and history[-1] == symbol and state.slots[-1] == slots:
            return  # the same request again (a retry, a re-read) is not a step of the sequence
        prev_slots = state.slots[-1] if state.slots else None
        for n in range(1, min(self.order, len(history)) + 1):
            context = tuple(history[-n:])
            succ = self._contexts.get(context)
            if succ is None:
                succ = self._contexts[context] = _Successors()
                while len(self._contexts) > self.max_contexts:
                    self._contexts.popitem(last=False)
            else:
                self._contexts.move_to_end(context)
            succ.add(symbol, prev_slots, slots, self.max_successors)
        history.append(symbol)
        state.slots.append(dict(slots) if slots else None)
        if len(history) > self.order:
            del history[0]
            del state.slots[0]

    def predict(self, session: str, k: int = 2) -> list[Prediction]:
        """Up to ``k`` likely next requests of ``session``, most likely first."""
        state = self._sessions.get(session)
        if state is None or not state.history:
            return []
        history, prev_slots = state.history, state.slots[-1]
        for n in range(min(self.order, len(history)), 0, -1):
            succ = self._contexts.get(tuple(history[-n:]))
            if succ is None or succ.total < self.min_support:
                continue
            out = []
            for symbol, count in sorted(succ.counts.items(), key=lambda kv: -kv[1])[:k]:
                slots, agreement = None, 1.0
                if symbol.startswith("t:"):
                    filled = succ.fill(symbol, prev_slots)
                    if filled is None:
                        continue
                    slots, agreement = filled
                # The chance the guess is exactly right: this successor, and these slot values.
                out.append(Prediction(symbol, count / succ.total * agreement, slots,
                                      self._examples.get(symbol), count))
            return out
        return []

    # -- persistence: plain data ---------------------------------------------------------
    def to_data(self) -> dict[str, Any]:
        return {
            "v": 1,
            "order": self.order,
            "contexts": [[list(ctx), succ.to_data()] for ctx, succ in self._contexts.items()],
            "examples": [[k, v] for k, v in self._examples.items()],
        }

    def load_data(self, data: Mapping[str, Any]) -> None:
        if data.get("v") != 1 or data.get("order") != self.order:
            return  # another format or order: start afresh rather than mislearn
        for ctx, succ in _tail(data.get("contexts", ()), self.max_contexts):
            self._contexts[tuple(str(s) for s in ctx)] = _Successors.from_data(succ)
        for key, example in _tail(data.get("examples", ()), self.max_examples):
            self._examples[str(key)] = example


def _tail(items: Iterable[Any], n: int) -> list[Any]:
    items = list(items)
    return items[-n:] if n else []
