"""What a session asks next: a bounded variable-order Markov model (PPM-style backoff).

Symbols are what a request *is*: ``t:<template id>`` for a templated request, ``q:<hash>`` for
an untemplated one (exact repeats of sequences). For each context of the last 1..``order``
symbols of a session the model counts which symbol came next; prediction backs off from the
longest context that has enough observations. Slot values carry over: each session remembers
the latest value of every slot it used, and for each transition the model learns, per slot of
the next template, whether the value repeats the session's latest value of that slot (the
ticker from two requests back, the analyst's usual horizon), embeds another remembered value in
a fixed text ("a $50,000 long position in {symbol}"), or is one dominant literal. The most
frequent relation the session can fill wins; a prediction with a slot no majority agrees on
is not made.

Memory is bounded (contexts, successors per context, sessions, remembered raw requests: each
LRU-capped), and the whole model round-trips through plain msgpack-able data (never pickle).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
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
        # next symbol -> slot name -> {"#": observations, tag: count} (tags: see _tags)
        self.slot_stats: dict[str, dict[str, dict[str, int]]] = {}

    def add(self, symbol: str, memory: Mapping[str, Any], next_slots: Mapping[str, Any] | None,
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
                per["#"] = per.get("#", 0) + 1
                for tag in _tags(name, value, memory):
                    per[tag] = per.get(tag, 0) + 1
                if len(per) > _MAX_TAGS:  # a slot with many literals is not predictable: keep it small
                    del per[min((k for k in per if k not in ("#", "=")), key=per.__getitem__)]

    def fill(self, symbol: str, memory: Mapping[str, Any]) -> tuple[dict[str, Any], float] | None:
        """Slots for ``symbol`` from what usually happens, with the share of past transitions
        they agree with (the product over slots); None when one cannot be filled."""
        stats = self.slot_stats.get(symbol)
        if not stats:
            return {}, 1.0
        out: dict[str, Any] = {}
        agreement = 1.0
        for name, per in stats.items():
            total = per.get("#", 0)
            # The most frequent relation that this session can fill: "the session's strategy"
            # when it has one, else the desk's usual literal; a minority is never a guess.
            ranked = sorted((kv for kv in per.items() if kv[0] != "#"), key=lambda kv: (-kv[1], _RANK[kv[0][0]]))
            for tag, count in ranked:
                if count * 2 <= total:  # no majority: guessing would waste money
                    return None
                value = _resolve(name, tag, memory)
                if value is not None:
                    out[name] = value
                    agreement *= count / (total + 1)  # smoothed: two agreeing samples are not certainty
                    break
            else:
                return None
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


_MAX_TAGS = 16
_RANK = {"=": 0, "p": 1, "f": 1, "v": 2}


def _tags(name: str, value: Any, memory: Mapping[str, Any]) -> list[str]:
    """Every way a slot of the next request relates to what the session asked before:
    ``=`` (the session's latest value of the same slot: the ticker, the analyst's usual
    horizon), ``p:<slot>\x00<pattern>`` (a fixed text that embeds the session's latest value of
    another slot, e.g. "a $50,000 long position in {symbol}"; ``f:`` the same in a value kept
    without case), and always ``v:<literal>``."""
    tags = []
    if name in memory and memory[name] == value:
        tags.append("=")
    if isinstance(value, str):
        folded = value == value.casefold()  # a value compared without case ("phrase" slots)
        for other, carried in reversed(memory.items()):  # the most recent first
            if other == name or not isinstance(carried, str) or len(carried) < 2:
                continue
            if carried in value:
                tags.append("p:" + other + "\x00" + value.replace(carried, "\x01"))
                break
            if folded and carried.casefold() in value:
                tags.append("f:" + other + "\x00" + value.replace(carried.casefold(), "\x01"))
                break
    tags.append("v:" + _text(value))
    return tags


def _resolve(name: str, tag: str, memory: Mapping[str, Any]) -> Any:
    if tag == "=":
        return memory.get(name)
    if tag[:2] in ("p:", "f:"):
        other, pattern = tag[2:].split("\x00", 1)
        carried = memory.get(other)
        if not isinstance(carried, str):
            return None
        return pattern.replace("\x01", carried if tag[0] == "p" else carried.casefold())
    return tag[2:]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value) if not isinstance(value, (int, float)) else str(value)


_MEMORY_SLOTS = 32


@dataclass(slots=True)
class _Session:
    history: list[str] = field(default_factory=list)
    last: Mapping[str, Any] | None = None
    # The session's latest value of each slot name, the most recent last (bounded).
    memory: dict[str, Any] = field(default_factory=dict)

    def remember(self, slots: Mapping[str, Any] | None) -> None:
        self.last = dict(slots) if slots else None
        for name, value in (slots or {}).items():
            self.memory.pop(name, None)
            self.memory[name] = value
        while len(self.memory) > _MEMORY_SLOTS:
            del self.memory[next(iter(self.memory))]


class SequenceModel:
    """Learns per-session sequences of request symbols and predicts the next ones.

    >>> m = SequenceModel(order=2, min_support=2)
    >>> for _ in range(3):
    ...     m.observe("s", "t:analyze", {"symbol": "AAPL"})
    ...     m.observe("s", "t:risk", {"symbol": "AAPL"})
    >>> m.observe("s2", "t:analyze", {"symbol": "NVDA"})
    >>> p = m.predict("s2")[0]
    >>> p.symbol, dict(p.slots), p.probability  # smoothed: 3 of 3 is not certainty
    ('t:risk', {'symbol': 'NVDA'}, 0.5625)
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
            state = self._sessions[session] = _Session()
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session)
        history = state.history
        if history and history[-1] == symbol and state.last == (dict(slots) if slots else None):
            return  # the same request again (a retry, a re-read) is not a step of the sequence
        for n in range(1, min(self.order, len(history)) + 1):
            context = tuple(history[-n:])
            succ = self._contexts.get(context)
            if succ is None:
                succ = self._contexts[context] = _Successors()
                while len(self._contexts) > self.max_contexts:
                    self._contexts.popitem(last=False)
            else:
                self._contexts.move_to_end(context)
            succ.add(symbol, state.memory, slots, self.max_successors)
        history.append(symbol)
        state.remember(slots)
        if len(history) > self.order:
            del history[0]

    def predict(self, session: str, k: int = 2) -> list[Prediction]:
        """Up to ``k`` likely next requests of ``session``, most likely first."""
        state = self._sessions.get(session)
        if state is None or not state.history:
            return []
        history = state.history
        for n in range(min(self.order, len(history)), 0, -1):
            succ = self._contexts.get(tuple(history[-n:]))
            if succ is None or succ.total < self.min_support:
                continue
            out = []
            for symbol, count in sorted(succ.counts.items(), key=lambda kv: -kv[1])[:k]:
                slots, agreement = None, 1.0
                if symbol.startswith("t:"):
                    filled = succ.fill(symbol, state.memory)
                    if filled is None:
                        continue
                    slots, agreement = filled
                # The chance the guess is exactly right: this successor, and these slot values.
                out.append(Prediction(symbol, count / (succ.total + 1) * agreement, slots,
                                      self._examples.get(symbol), count))
            return out
        return []

    # -- persistence: plain data ---------------------------------------------------------
    def to_data(self) -> dict[str, Any]:
        return {
            "v": 2,
            "order": self.order,
            "contexts": [[list(ctx), succ.to_data()] for ctx, succ in self._contexts.items()],
            "examples": [[k, v] for k, v in self._examples.items()],
        }

    def load_data(self, data: Mapping[str, Any]) -> None:
        if data.get("v") != 2 or data.get("order") != self.order:
            return  # another format or order: start afresh rather than mislearn
        for ctx, succ in _tail(data.get("contexts", ()), self.max_contexts):
            self._contexts[tuple(str(s) for s in ctx)] = _Successors.from_data(succ)
        for key, example in _tail(data.get("examples", ()), self.max_examples):
            self._examples[str(key)] = example


def _tail(items: Iterable[Any], n: int) -> list[Any]:
    items = list(items)
    return items[-n:] if n else []
