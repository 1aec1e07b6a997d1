"""What a session asks next: a bounded variable-order Markov model (PPM-style backoff).

Symbols are what a request *is*: ``t:<template id>`` for a templated request, ``q:<hash>`` for
an untemplated one (exact repeats of sequences). For each context of the last 1..``order``
symbols of a session the model counts which symbol came next; prediction backs off from the
longest context that has enough observations. Slot values carry over: each session remembers
the latest value of every slot it used, and for each transition the model learns, per slot of
the next template, whether the value repeats the session's latest value of that slot (the
ticker from two requests back), is the user's usual value of it (the analyst's horizon),
follows the latest value in the order the user or the desk walks that slot (the next ticker
of a watchlist), embeds another remembered value in a fixed text ("a $50,000 long position in
{symbol}"), or is one dominant literal. The most frequent relation the session can fill wins;
a prediction with a slot no majority agrees on is not made.

Memory is bounded (contexts, successors per context, sessions, remembered raw requests: each
LRU-capped), and the whole model round-trips through plain msgpack-able data (never pickle).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
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

    __slots__ = ("counts", "total", "slot_stats", "_ranked")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0
        # next symbol -> slot name -> {"#": observations, "?<relation>": observations where
        # the session could have filled that relation, tag: count} (tags: see _tags)
        self.slot_stats: dict[str, dict[str, dict[str, int]]] = {}
        # next symbol -> slot name -> _relations() of its stats, until they change: fill()
        # runs for every successor of every prediction, and sorting the relations each time
        # was half of what learning a request cost.
        self._ranked: dict[str, dict[str, list[tuple[str, int, int]]]] = {}

    def add(self, symbol: str, slot_tags: Mapping[str, list[str]] | None, cap: int) -> None:
        if symbol not in self.counts and len(self.counts) >= cap:
            rarest = min(self.counts, key=self.counts.__getitem__)
            self.total -= self.counts.pop(rarest)
            self.slot_stats.pop(rarest, None)
            self._ranked.pop(rarest, None)
        self.counts[symbol] = self.counts.get(symbol, 0) + 1
        self.total += 1
        if slot_tags:
            self._ranked.pop(symbol, None)
            stats = self.slot_stats.setdefault(symbol, {})
            for name, tags in slot_tags.items():
                per = stats.setdefault(name, {})
                per["#"] = per.get("#", 0) + 1
                for tag in tags:
                    per[tag] = per.get(tag, 0) + 1
                if len(per) > _MAX_TAGS:  # a slot with many literals is not predictable: keep it small
                    del per[min((k for k in per if k[0] not in "#?="), key=per.__getitem__)]

    def fill(self, symbol: str, memory: dict[str, Any], lookup: "_Lookup") -> tuple[dict[str, Any], float] | None:
        """Slots for ``symbol`` from what usually happens, with the share of past transitions
        they agree with (the product over slots); None when one cannot be filled. ``lookup``
        answers the session's learnt values: the value a slot took before with the same
        carried value (the desk's position in this ticker, which beats the general pattern),
        the user's usual value, the value that follows another in the user's or desk's order."""
        stats = self.slot_stats.get(symbol)
        if not stats:
            return {}, 1.0
        out: dict[str, Any] = {}
        agreement = 1.0
        known = self._ranked.get(symbol)
        if known is None:
            known = self._ranked[symbol] = {}
        for name, per in stats.items():
            relations = known.get(name)
            if relations is None:
                relations = known[name] = _relations(per)
            # The relation most often true where it could be filled, that this session can
            # fill: "the session's horizon" when it has one, else the desk's usual literal; a
            # minority is never a guess.
            for tag, count, total in relations:
                if count * 2 <= total:  # no majority: guessing would waste money
                    return None
                if tag[:2] == "x:":
                    # Embeds the session's value of another slot: the value asked before with
                    # that one ("500 shares of AAPL"), else the pattern most new ones took.
                    other = tag[2:]
                    seen = lookup.known(symbol, name, other, memory.get(other))
                    if seen is not None:
                        value, share = seen[0], count / (total + 1) * seen[1]
                    else:
                        found = _for_new_value(per, other, count - per.get("k:" + other, 0), memory, name)
                        if found is None:
                            continue
                        value, share = found[0], count / (total + 1) * found[1]
                elif tag in ("u", "n"):
                    # The user's usual value, or the one that follows the session's latest in
                    # the walked order: as likely as the relation and that value together.
                    seen = lookup.usual(name) if tag == "u" else lookup.following(name, memory.get(name))
                    if seen is None:
                        continue
                    value, share = seen[0], count / (total + 1) * seen[1]
                else:
                    value = _resolve(name, tag, memory)
                    if value is None:
                        continue
                    share = count / (total + 1)  # smoothed: two agreeing samples are not certainty
                out[name] = value
                agreement *= share
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
_RANK = {"=": 0, "u": 1, "n": 2, "x": 3, "v": 4}
# The relations that hold only where the session has something to fill them with; a literal
# or a pattern can always be filled.
_CONDITIONAL = ("=", "u", "n")


def _tags(name: str, value: Any, memory: dict[str, Any], usual: Any = None, following: Any = None) -> list[str]:
    """Every way a slot of the next request relates to what the session asked before:
    ``=`` (the session's latest value of the same slot: the ticker), ``u`` (the user's usual
    value: their horizon), ``n`` (the value that followed the session's latest one before, in
    the user's or the desk's order: the next ticker of the watchlist),
    ``p:<slot>\x00<pattern>`` (a fixed text that embeds the session's latest value of another
    slot, e.g. "a $50,000 long position in {symbol}"; ``f:`` the same in a value kept without
    case), and always ``v:<literal>``. Also ``?=``, ``?u``, ``?n``: the session had a latest
    value, a usual value, a following value to compare with (where each relation *could*
    hold: the desk's first prediction of the day has no horizon of its own to repeat)."""
    tags = []
    text = _text(value)
    if name in memory:
        tags.append("?=")
    if usual is not None:
        tags.append("?u")
    if following is not None:
        tags.append("?n")
    if name in memory and memory[name] == value:
        tags.append("=")
    elif following is not None and text == following:
        tags.append("n")
    if usual is not None and text == usual:
        tags.append("u")
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
    tags.append("v:" + text)
    return tags


def _relations(per: Mapping[str, int]) -> list[tuple[str, int, int]]:
    """A slot's candidate relations as (relation, times it held, times it could have held),
    the most often true first: ``=``, ``u``, ``n``, ``v:<literal>``, and ``x:<slot>`` (embeds
    that slot's value: its known-value and pattern tags together). Measured where it could
    hold, "the user's own horizon again" beats the literal most of the desk happens to use."""
    total = per.get("#", 0)
    merged: dict[str, int] = {}
    for tag, count in per.items():
        if tag[0] in "#?":
            continue
        if tag[:2] in ("p:", "f:", "k:"):
            tag = "x:" + (tag[2:] if tag[0] == "k" else tag[2:].split("\x00", 1)[0])
        merged[tag] = merged.get(tag, 0) + count
    out = [(tag, count, max(count, per.get("?" + tag, total)) if tag in _CONDITIONAL else total)
           for tag, count in merged.items()]
    return sorted(out, key=lambda r: (-r[1] / (r[2] + 1), _RANK[r[0][0]]))


def _for_new_value(per: Mapping[str, int], other: str, new: int, memory: Mapping[str, Any],
                   name: str) -> tuple[Any, float] | None:
    """The pattern most ``new`` carried values of ``other`` were filled with, if a majority."""
    best = max(((t, c) for t, c in per.items() if t[:2] in ("p:", "f:") and t[2:].split("\x00", 1)[0] == other),
               key=lambda kv: kv[1], default=None)
    if best is None or best[1] * 2 <= new:
        return None
    value = _resolve(name, best[0], memory)
    return None if value is None else (value, best[1] / (new + 1))


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


def _majority(counts: Mapping[str, int] | None) -> tuple[str, float] | None:
    """The value most of ``counts`` agree on, with its smoothed share; None unless it was seen
    at least twice and is a majority (once is not a habit)."""
    if not counts:
        return None
    total = sum(counts.values())
    value, count = max(counts.items(), key=lambda kv: kv[1])
    return (value, count / (total + 1)) if count >= 2 and count * 2 > total else None


def _count(table: "OrderedDict[Any, dict[str, int]]", key: Any, value: str, cap: int) -> None:
    """One more sighting of ``value`` under ``key`` in an LRU-bounded table of counts."""
    counts = table.get(key)
    if counts is None:
        counts = table[key] = {}
        while len(table) > cap:
            table.popitem(last=False)
    else:
        table.move_to_end(key)
    counts[value] = counts.get(value, 0) + 1
    if len(counts) > _MAX_TAGS:  # a long tail is not predictable: keep the table small
        del counts[min(counts, key=counts.__getitem__)]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value) if not isinstance(value, (int, float)) else str(value)


_MEMORY_SLOTS = 32


@dataclass(slots=True)
class _Session:
    user: str | None = None
    desk: str = ""
    history: list[str] = field(default_factory=list)
    last: Mapping[str, Any] | None = None
    # The session's latest value of each slot name, the most recent last (bounded).
    memory: dict[str, Any] = field(default_factory=dict)
    # (history, memory, last) before the latest request: the thread to go back to if that
    # request turns out to have been an aside (a look back at another ticker's answer).
    before: tuple[list[str], dict[str, Any], Mapping[str, Any] | None] | None = None

    def remember(self, slots: Mapping[str, Any] | None) -> None:
        self.last = dict(slots) if slots else None
        _remember(self.memory, slots)


def _remember(memory: dict[str, Any], slots: Mapping[str, Any] | None) -> None:
    for name, value in (slots or {}).items():
        memory.pop(name, None)
        memory[name] = value
    while len(memory) > _MEMORY_SLOTS:
        del memory[next(iter(memory))]


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
                 max_successors: int = 8, max_sessions: int = 10_000, max_examples: int = 5_000,
                 max_known: int = 20_000) -> None:
        self.order = order
        self.min_support = min_support
        self.max_contexts = max_contexts
        self.max_successors = max_successors
        self.max_sessions = max_sessions
        self.max_examples = max_examples
        self.max_known = max_known
        self._contexts: OrderedDict[tuple[str, ...], _Successors] = OrderedDict()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._examples: OrderedDict[str, Any] = OrderedDict()  # q:<hash> -> how to re-issue it
        # A user's latest slot values across their sessions (their usual horizon, strategy).
        self._users: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # (symbol, slot, carried slot, carried value) -> {value: count}: what a slot embedding
        # another took before for that value ("500 shares of AAPL" for AAPL).
        self._known: OrderedDict[tuple[str, str, str, str], dict[str, int]] = OrderedDict()
        # (user, slot) -> {value: count}: a user's usual values (their horizon, their strategy).
        self._usual: OrderedDict[tuple[str, str], dict[str, int]] = OrderedDict()
        # (scope, slot, value) -> {next value: count}: the order a user ("u\x00<user>") or a
        # desk ("d\x00<desk>") walks a slot's values: their watchlist, ticker after ticker.
        self._next: OrderedDict[tuple[str, str, str], dict[str, int]] = OrderedDict()
        self.observed = 0
        self.asides = 0

    def __len__(self) -> int:
        return len(self._contexts)

    def observe(self, session: str, symbol: str, slots: Mapping[str, Any] | None = None,
                example: Any = None, user: str | None = None, desk: str = "") -> bool:
        """Record that ``session`` (of ``user``, if known, on ``desk``: the group whose shared
        order it follows, e.g. the namespace) asked ``symbol`` with its slots after what it
        asked before. False when it was the session's latest request again (a retry, a
        re-read): not a step, so the session's predictions are unchanged.

        Each desk learns apart: its sequences, slot statistics and literals ("the Project
        Falcon book") never shape another desk's predictions (a namespace is a tenant)."""
        self.observed += 1
        if desk:
            symbol = f"{desk}\x00{symbol}"
        if example is not None:
            self._examples[symbol] = example
            self._examples.move_to_end(symbol)
            while len(self._examples) > self.max_examples:
                self._examples.popitem(last=False)
        state = self._sessions.get(session)
        if state is None:
            state = self._sessions[session] = _Session(user=user, desk=desk)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session)
        if state.history and state.history[-1] == symbol and state.last == (dict(slots) if slots else None):
            return False  # the same request again (a retry, a re-read) is not a step of the sequence
        if state.before is not None and self._was_aside(state, symbol, slots):
            # The previous request was a look back (another ticker's answer, a repeat); the
            # session's thread goes on from before it. What it taught is kept.
            state.history, state.memory, state.last = state.before
            self.asides += 1
        state.before = (list(state.history), dict(state.memory), state.last)
        history = state.history
        memory = self._memory(state)
        lookup = _Lookup(self, state)
        slot_tags = self._slot_tags(symbol, slots, memory, lookup) if history else None
        if slots:
            self._learn_values(state, slots, memory)
        for n in range(1, min(self.order, len(history)) + 1):
            context = tuple(history[-n:])
            succ = self._contexts.get(context)
            if succ is None:
                succ = self._contexts[context] = _Successors()
                while len(self._contexts) > self.max_contexts:
                    self._contexts.popitem(last=False)
            else:
                self._contexts.move_to_end(context)
            succ.add(symbol, slot_tags, self.max_successors)
        history.append(symbol)
        state.remember(slots)
        if state.user is not None and slots:
            mine = self._users.get(state.user)
            if mine is None:
                mine = self._users[state.user] = {}
                while len(self._users) > self.max_sessions:
                    self._users.popitem(last=False)
            else:
                self._users.move_to_end(state.user)
            _remember(mine, slots)
        if len(history) > self.order:
            del history[0]
        return True

    def _memory(self, state: "_Session") -> dict[str, Any]:
        """The session's remembered slot values over its user's, in recency order (the
        session's are newer; ``_tags`` looks for the most recent value a slot embeds)."""
        mine = self._users.get(state.user) if state.user is not None else None
        if not mine:
            return state.memory
        session = state.memory
        return {**{k: v for k, v in mine.items() if k not in session}, **session}

    def _learn_values(self, state: "_Session", slots: Mapping[str, Any], memory: Mapping[str, Any]) -> None:
        """Count the user's usual values and the order the user and desk walk each slot's."""
        for name, value in slots.items():
            text = _text(value)
            if state.user is not None:
                _count(self._usual, (state.user, name), text, self.max_known)
            before = memory.get(name)
            if before is not None and before != value:
                for scope in _scopes(state):
                    _count(self._next, (scope, name, _text(before)), text, self.max_known)

    def _slot_tags(self, symbol: str, slots: Mapping[str, Any] | None,
                   memory: dict[str, Any], lookup: "_Lookup") -> dict[str, list[str]] | None:
        """Each slot's tags for the transition statistics. A value that embeds another slot's
        value is also remembered for that value; when it was seen with that value before, its
        pattern tag becomes ``k:<slot>`` ("a value known for the carried one"), so the pattern
        counts say how the desk fills the slot for a *new* value."""
        if not slots:
            return None
        out = {}
        for name, value in slots.items():
            usual = lookup.usual(name)
            following = lookup.following(name, memory.get(name))
            tags = _tags(name, value, memory, usual and usual[0], following and following[0])
            pattern = next((t for t in tags if t[:2] in ("p:", "f:")), None)
            if pattern is not None:
                other = pattern[2:].split("\x00", 1)[0]
                key = (symbol, name, other, _text(memory[other]))
                _count(self._known, key, _text(value), self.max_known)
                if sum(self._known[key].values()) > 1:  # seen with this value before: not news about new values
                    tags = ["k:" + other if t is pattern else t for t in tags]
            out[name] = tags
        return out

    def predict(self, session: str, k: int = 2) -> list[Prediction]:
        """Up to ``k`` likely next requests of ``session``, most likely first."""
        state = self._sessions.get(session)
        if state is None:
            return []
        found = self._predict(state, k)
        if not state.desk:
            return found
        return [replace(p, symbol=p.symbol.rpartition("\x00")[2]) for p in found]

    def _was_aside(self, state: _Session, symbol: str, slots: Mapping[str, Any] | None) -> bool:
        """Does ``symbol``/``slots`` continue what the session was doing *before* its latest
        request, and not what that request would lead to? Then that request was an aside."""
        if _fits(self._predict(state, self.max_successors), symbol, slots):
            return False
        assert state.before is not None
        history, memory, last = state.before
        if not history:
            return False
        thread = _Session(user=state.user, desk=state.desk, history=history, last=last, memory=memory)
        return _fits(self._predict(thread, self.max_successors), symbol, slots)

    def _predict(self, state: _Session, k: int) -> list[Prediction]:
        if not state.history:
            return []
        history = state.history
        memory = self._memory(state)
        lookup = _Lookup(self, state)
        found = [(n, self._contexts.get(tuple(history[-n:]))) for n in range(min(self.order, len(history)), 0, -1)]
        contexts = [succ for _, succ in found if succ is not None]
        for _, succ in found:
            if succ is None or succ.total < self.min_support:
                continue
            out = []
            for symbol, count in sorted(succ.counts.items(), key=lambda kv: -kv[1])[:k]:
                slots, agreement = None, 1.0
                if symbol.rpartition("\x00")[2].startswith("t:"):  # (a desk's symbols carry its name)
                    # Which request comes next depends on the longer context; how its slots
                    # relate to the session's hardly does: fill them from the context that saw
                    # this successor most often (a long context seen twice is noise).
                    fuller = max(contexts, key=lambda c: c.counts.get(symbol, 0))
                    filled = fuller.fill(symbol, memory, lookup)
                    if filled is None:
                        continue
                    slots, agreement = filled
                # The chance the guess is exactly right: this successor, and these slot values.
                out.append(Prediction(symbol, count / (succ.total + 1) * agreement, slots,
                                      self._examples.get(symbol), count))
            if out:
                return out
            # Nothing this context knows can be filled for this session: back off to a
            # shorter one (PPM's escape) rather than make no guess at all.
        return []

    # -- persistence: plain data ---------------------------------------------------------
    def to_data(self) -> dict[str, Any]:
        return {
            "v": 4,
            "order": self.order,
            "contexts": [[list(ctx), succ.to_data()] for ctx, succ in self._contexts.items()],
            "examples": [[k, v] for k, v in self._examples.items()],
            "known": [[list(k), v] for k, v in self._known.items()],
            "usual": [[list(k), v] for k, v in self._usual.items()],
            "next": [[list(k), v] for k, v in self._next.items()],
            # Each user's latest values: after a restart "the horizon Carl used last" still
            # fills a prediction before Carl has a usual one.
            "users": [[user, [[k, v] for k, v in latest.items()]] for user, latest in self._users.items()],
        }

    def load_data(self, data: Mapping[str, Any]) -> None:
        # v2 lacks only the usual values and orders, which are learnt again; v3 where each
        # relation could hold and the users' latest values.
        version = data.get("v")
        if version not in (2, 3, 4) or data.get("order") != self.order:
            return  # another format or order: start afresh rather than mislearn
        for ctx, succ in _tail(data.get("contexts", ()), self.max_contexts):
            successors = self._contexts[tuple(str(s) for s in ctx)] = _Successors.from_data(succ)
            if version < 4:  # counted before "where it could hold" was: every observation could
                for per in (per for stats in successors.slot_stats.values() for per in stats.values()):
                    for relation in _CONDITIONAL:
                        per.setdefault("?" + relation, per.get("#", 0))
        for key, example in _tail(data.get("examples", ()), self.max_examples):
            self._examples[str(key)] = example
        for key, counts in _tail(data.get("known", ()), self.max_known):
            if len(key) == 4:
                self._known[(str(key[0]), str(key[1]), str(key[2]), str(key[3]))] = \
                    {str(v): int(c) for v, c in counts.items()}
        for key, counts in _tail(data.get("usual", ()), self.max_known):
            if len(key) == 2:
                self._usual[(str(key[0]), str(key[1]))] = {str(v): int(c) for v, c in counts.items()}
        for key, counts in _tail(data.get("next", ()), self.max_known):
            if len(key) == 3:
                self._next[(str(key[0]), str(key[1]), str(key[2]))] = {str(v): int(c) for v, c in counts.items()}
        for user, latest in _tail(data.get("users", ()), self.max_sessions):
            self._users[str(user)] = {str(k): v for k, v in latest[-_MEMORY_SLOTS:]}


class _Lookup:
    """What the model learnt, as one session sees it: its user's and its desk's habits."""

    __slots__ = ("model", "state")

    def __init__(self, model: SequenceModel, state: _Session) -> None:
        self.model = model
        self.state = state

    def known(self, symbol: str, name: str, other: str, carried: Any) -> tuple[str, float] | None:
        """The value ``name`` took before when ``other`` was ``carried`` (AAPL's position)."""
        return _majority(self.model._known.get((symbol, name, other, _text(carried))))

    def usual(self, name: str) -> tuple[str, float] | None:
        """The user's usual value of ``name``."""
        user = self.state.user
        return None if user is None else _majority(self.model._usual.get((user, name)))

    def following(self, name: str, current: Any) -> tuple[str, float] | None:
        """The value that came after ``current`` in the user's order, else in the desk's."""
        if current is None:
            return None
        for scope in _scopes(self.state):
            found = _majority(self.model._next.get((scope, name, _text(current))))
            if found is not None:
                return found
        return None


def _scopes(state: _Session) -> tuple[str, ...]:
    desk = "d\x00" + state.desk
    return (desk,) if state.user is None else ("u\x00" + state.user, desk)


def _fits(predictions: Iterable[Prediction], symbol: str, slots: Mapping[str, Any] | None) -> bool:
    """Is this request one of ``predictions``, slot for slot?"""
    return any(p.symbol == symbol and dict(p.slots or {}) == dict(slots or {}) for p in predictions)


def _tail(items: Iterable[Any], n: int) -> list[Any]:
    items = list(items)
    return items[-n:] if n else []
