"""The built-in guards: a semantic candidate is served only if every guard allows it.

The cosine of two prompts finds candidates; it cannot tell "Convert 100 USD to EUR" from
"Convert 100 EUR to USD" (cosine 1.0). Each guard checks one way two prompts can ask different
questions while looking alike, and vetoes the candidate when they do:

========== ======================================================================
numbers    the numbers differ (1,000 = 1k = 1000.0; 5% is not 5; $2M = 2,000,000)
symbols    a ticker, currency, identifier or proper name is in one prompt only
periods    dates and periods differ (months, weekdays, Q1..Q4, "last week", "daily")
negation   one prompt negates more often than the other
direction  the prompts sit on opposite sides of an axis (buy/sell, above/below, call/put,
           enable/disable, ...) or one word is the other's negated form (install/uninstall)
question   both are questions of different kinds (why vs is, how vs how much, when vs where)
roles      the same words fill different roles ("from A to B" vs "from B to A") or the
           same words come in another order ("dog bites man" vs "man bites dog")
function   a function word that carries the question changed: all/some, and/or, will/did,
           my/your, this/that, now/too, by/on Friday, in-the-money/at-the-money
edit       the prompts are one or two words apart: the words that changed are the point of
           the question ("largest organ" vs "largest internal organ", "5 km" vs "5 miles")
slots      the template slots of both requests differ
========== ======================================================================

Guards are plain objects with ``name`` and ``allows(asked, stored, info)``; a plugin adds its
own through the ``r1mw_register_guards`` hook. Guards only ever see candidates above the
similarity threshold, so they cost nothing on a miss.
"""

from __future__ import annotations

import re
from collections import Counter
from difflib import SequenceMatcher
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from . import lexicon as lx
from . import vocab
from .text import Facts, analyze, directions_of, stem, written_as_ticker

if TYPE_CHECKING:
    from ..protocols import Guard

__all__ = [
    "BUILTIN_GUARDS",
    "DirectionGuard",
    "EditGuard",
    "FunctionWordGuard",
    "NegationGuard",
    "NumberGuard",
    "PeriodGuard",
    "QuestionGuard",
    "RoleGuard",
    "SlotGuard",
    "SymbolGuard",
    "first_veto",
]


class NumberGuard:
    """Every number, in whatever spelling, must be the same on both sides."""

    name = "numbers"

    def allows(self, asked: str, stored: str, info: Mapping[str, Any]) -> bool:
        a, b = analyze(asked), analyze(stored)
        # same values in the same order: "3rd of 3 first-class" is not "1st of 3 third-class";
        # and digits no number explains must be written alike ("15.03.2024", "1.2.3")
        # and operators are written alike: "x > 5" is not "x < 5", "5 - 3" not "5 + 3"
        return (a.numbers == b.numbers and a.number_order == b.number_order and a.digit_shapes == b.digit_shapes
                and a.operators == b.operators)


class SymbolGuard:
    """Tickers, currencies, identifiers and names of one prompt must appear in the other."""

    name = "symbols"

    def allows(self, asked: str, stored: str, info: Mapping[str, Any]) -> bool:
        a, b = analyze(asked), analyze(stored)
        if a.currencies != b.currencies or a.marks != b.marks:  # "C++" / "C#", "BBB+" / "BBB-"
            return False
        if not (_tickers_kept(a, b) and _tickers_kept(b, a)):
            return False
        return _covered(a.symbols - _expansions(b, a), b) and _covered(b.symbols - _expansions(a, b), a)


_CURRENCY_MARKS = "".join(lx.CURRENCY_SYMBOLS)


def _tickers_kept(f: Facts, other: Facts) -> bool:
    """A ticker written in capitals must be in the other prompt as a symbol, or as the same word
    in the same place. The function word with its letters elsewhere is not it ("sell IT now ...
    wait for it" / "sell NOW now ... wait for it", ON / on, ALL / all), while "the US dollar" /
    "the us dollar" and "EMA" / "ema" (analysis reads those as the ticker) keep it."""
    aligned: set[int] | None = None
    for i in f.capital_at:
        ticker = f.fwords[i].lstrip(_CURRENCY_MARKS)  # "$it" is the ticker IT
        if ticker in other.symbols or _spelled_out(ticker, other.words):
            continue
        if ticker in other.words and ticker not in lx.STOPWORDS:
            continue
        if aligned is None:  # rare: a function word in capitals; align only then
            aligned = {k for tag, i1, i2, _, _ in _opcodes(f.fwords, other.fwords) if tag == "equal"
                       for k in range(i1, i2)}
        if i not in aligned:
            return False
    return True


def _covered(symbols: frozenset[str], other: Facts) -> bool:
    if not symbols:
        return True
    words = set(other.words) | other.symbols
    if all(s in words for s in symbols):
        return True
    stems = {stem(w) for w in words}  # "Datasets" against "dataset"
    return all(s in words or stem(s) in stems or _spelled_out(s, other.words) for s in symbols)


def _expansions(short: Facts, long: Facts) -> set[str]:
    """Words of ``long`` that spell out an acronym of ``short`` ("Random Access Memory" for RAM)."""
    out: set[str] = set()
    words = long.words
    for acronym in short.symbols:
        n = len(acronym)
        if not (2 <= n <= 6 and acronym.isalpha()):
            continue
        for i in range(len(words) - n + 1):
            if all(words[i + j][:1] == acronym[j] for j in range(n)):
                out.update(words[i : i + n])
    return out


def _spelled_out(acronym: str, words: Sequence[str]) -> bool:
    """True when ``words`` spell ``acronym`` out: "RAM" / "random access memory"."""
    n = len(acronym)
    if not (2 <= n <= 6 and acronym.isalpha()):
        return False
    for i in range(len(words) - n + 1):
        if all(words[i + j][:1] == acronym[j] for j in range(n)):
            return True
    return False


class PeriodGuard:
    """Dates and periods (months, weekdays, quarters, "last week", "daily") must match."""

    name = "periods"

    def allows(self, asked: str, stored: str, info: Mapping[str, Any]) -> bool:
        return analyze(asked).periods == analyze(stored).periods


class NegationGuard:
    """As many negations on both sides ("should I pay" vs "should I not pay")."""

    name = "negation"

    def allows(self, asked: str, stored: str, info: Mapping[str, Any]) -> bool:
        return analyze(asked).negations == analyze(stored).negations


class DirectionGuard:
    """No axis on opposite sides (buy/sell, above/below, up/down, call/put, enable/disable),
    and no word against its negated form (install/uninstall, compress/decompress)."""

    name = "direction"

    def allows(self, asked: str, stored: str, info: Mapping[str, Any]) -> bool:
        a, b = analyze(asked), analyze(stored)
        if a.directions != b.directions:
            sa, sb = set(a.directions), set(b.directions)
            only_a, only_b = sa - sb, sb - sa
            for axis, sign in only_a:
                # only a contradiction vetoes: "speed up" against a prompt without "up" is fine,
                # and so is a side named by one prompt that also names the other side ("large
                # and small caps" / "large caps"): the edit guard weighs the word that went
                if (axis, -sign) in only_b:
                    return False
        return not _negated_forms(a, b)


def _negated_forms(a: Facts, b: Facts) -> bool:
    ca, cb = set(a.content), set(b.content)
    for x, ys in ((ca - cb, cb), (cb - ca, ca)):
        for word in x:
            for prefix in lx.NEGATING_PREFIXES:
                if word.startswith(prefix) and len(word) - len(prefix) >= 3 and word[len(prefix):] in ys:
                    return True
    return False


class QuestionGuard:
    """Two questions of different kinds ask different things: "why is X" presumes X,
    "is X" asks whether; "how much" asks a quantity, "how" a manner."""

    name = "question"

    def allows(self, asked: str, stored: str, info: Mapping[str, Any]) -> bool:
        qa, qb = analyze(asked).qtype, analyze(stored).qtype
        return qa is None or qb is None or qa == qb


class RoleGuard:
    """The same words must keep their roles and their order.

    Roles are read from prepositions ("from A to B", "A than B", "A vs B"); the order of
    shared tickers, currencies and names must not change; and when two prompts use the
    same words, a different order is a different question ("dog bites man").
    """

    name = "roles"
    same_words = 0.7
    short_prompt = 5
    content_order = True

    def allows(self, asked: str, stored: str, info: Mapping[str, Any]) -> bool:
        a, b = analyze(asked), analyze(stored)
        if a.roles != b.roles and _role_moved(a, b):
            return False
        if _swapped(a.words, b.words):
            return False
        if a.passive != b.passive:
            # Active against passive: agent and object trade places ("A specifies B" / "B is
            # specified by A"), so the same words in the same order mean the roles flipped.
            # Only names and short prompts are checked: in a long sentence one passive clause
            # says nothing about the order of the other words.
            n = min(len(a.raw_content), len(b.raw_content))
            return not ((n <= 2 * self.short_prompt and _same_order(a.anchors, b.anchors))
                        or (n <= self.short_prompt and _same_order(a.raw_content, b.raw_content)))
        if len(a.roles) >= 2 and sorted(a.roles) == sorted(b.roles):
            # prepositions carry every role the same way and only those phrases moved:
            # "flights from Boston to Denver" / "flights to Denver from Boston"
            held = {stem(w) for w, _ in a.roles}
            if [w for w in a.raw_content if w not in held] == [w for w in b.raw_content if w not in held]:
                return True
        if a.raw_content != b.raw_content and Counter(a.raw_content) == Counter(b.raw_content):
            return False  # the very same words in another order ("dog bites man")
        # Nearly the same words: then names and tickers must also keep their order
        # ("A is a tributary of B" vs "B is a tributary of A"), and so must the words. A real
        # rewording may move them; the other guards watch what it changes.
        if _jaccard(a.words, b.words) >= self.same_words and (
                _order(a.anchors, b.anchors) or (self.content_order and _order(a.raw_content, b.raw_content))):
            return False
        return True


def _role_moved(a: Facts, b: Facts) -> bool:
    """True when a role ("from", "to", "than", "vs") passes from one shared word to another:
    "convert USD to EUR" / "convert EUR to USD". A role that appears or goes with a rewording
    ("the module's function" / "the function from the module") is no conflict."""
    shared = (set(a.words) | a.currencies) & (set(b.words) | b.currencies)
    holders_a: dict[str, set[str]] = {}
    holders_b: dict[str, set[str]] = {}
    for word, role in a.roles:
        if word in shared:
            holders_a.setdefault(role, set()).add(word)
    for word, role in b.roles:
        if word in shared:
            holders_b.setdefault(role, set()).add(word)
    for role, ha in holders_a.items():
        hb = holders_b.get(role)
        if hb and ha != hb and (ha - hb) and (hb - ha):
            return True
    return False


def _role_map(f: Facts) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for word, role in f.roles:
        out.setdefault(word, set()).add(role)
    return out


def _jaccard(xs: Sequence[str], ys: Sequence[str]) -> float:
    sx, sy = set(xs), set(ys)
    return len(sx & sy) / len(sx | sy) if sx or sy else 1.0


def _order(xs: Sequence[str], ys: Sequence[str]) -> bool:
    """True when the items both sequences hold exactly once come in a different order."""
    cx, cy = Counter(xs), Counter(ys)
    shared = {w for w in cx if cx[w] == 1 and cy.get(w) == 1}
    if len(shared) < 2:
        return False
    return [w for w in xs if w in shared] != [w for w in ys if w in shared]


def _same_order(xs: Sequence[str], ys: Sequence[str]) -> bool:
    """True when at least two shared items come in the same order in both sequences."""
    cx, cy = Counter(xs), Counter(ys)
    shared = {w for w in cx if cx[w] == 1 and cy.get(w) == 1}
    return len(shared) >= 2 and [w for w in xs if w in shared] == [w for w in ys if w in shared]


_SWAP_WINDOW = 400  # tokens compared for swaps: enough for any question, bounded for 1 MB prompts


def _swapped(xs: Sequence[str], ys: Sequence[str]) -> bool:
    """True when two words both prompts hold once trade places: each now sits where the
    other sat (same word before it, or same word after it). "from Paris to Rome" / "from Rome
    to Paris", "trained by A, ridden by B" / "trained by B, ridden by A", "dog bites man"."""
    xs, ys = xs[:_SWAP_WINDOW], ys[:_SWAP_WINDOW]
    cx, cy = Counter(xs), Counter(ys)
    shared = [w for w in xs if cx[w] == 1 and cy.get(w) == 1 and w not in lx.STOPWORDS]
    if len(shared) < 2:
        return False
    pos_x = {w: i for i, w in enumerate(xs) if w in cx and cx[w] == 1}
    pos_y = {w: i for i, w in enumerate(ys) if w in cy and cy[w] == 1}

    def ctx(seq: Sequence[str], i: int) -> tuple[str, str]:
        return (seq[i - 1] if i > 0 else "<s>", seq[i + 1] if i + 1 < len(seq) else "</s>")

    contexts = {w: (ctx(xs, pos_x[w]), ctx(ys, pos_y[w])) for w in shared}
    for i, u in enumerate(shared):
        (u_x, u_y) = contexts[u]
        for v in shared[i + 1:]:
            if pos_y[v] > pos_y[u]:
                continue  # same relative order in both prompts
            (v_x, v_y) = contexts[v]
            for side in (0, 1):
                if u_x[side] == v_y[side] and v_x[side] == u_y[side] and u_x[side] != v_x[side]:
                    return True
    return False


class EditGuard:
    """Two prompts a word or two apart differ in exactly what they ask about.

    When all but one or two content words are shared, the changed words are the question
    ("side effects of Lisinopril" vs "of Metformin", "5 kilometers" vs "5 miles"); a real
    rewording changes more than that.
    """

    name = "edit"
    max_changed = 2
    max_changed_ratio = 1.5
    long_prompt = 10

    def allows(self, asked: str, stored: str, info: Mapping[str, Any]) -> bool:
        a, b = analyze(asked), analyze(stored)
        ra, rb = Counter(a.raw_content), Counter(b.raw_content)
        raw_changed = max(sum((ra - rb).values()), sum((rb - ra).values()))
        if raw_changed == 0:
            return True
        ca, cb = Counter(a.content), Counter(b.content)
        changed = max(sum((ca - cb).values()), sum((cb - ca).values()))
        shared = sum((ca & cb).values())
        if raw_changed <= self.max_changed:
            # one or two words changed: that is the question, unless they are everyday
            # synonyms ("employ" for "use") or two scattered details of a long statement, none
            # of which can be the point ("hawkish"/"dovish" made twice, "celh"/"elf")
            return changed == 0 or (shared > self.long_prompt and not _one_span(a.raw_content, b.raw_content)
                                    and not _pointed_change(a, b, ra - rb, rb - ra) and not _substituted_in_place(a, b))
        if changed == 0:
            return True
        # One span swapped in an unchanged frame is a slot filled differently ("statute of
        # limitations for personal injury / for contract breach in California"); a rewording
        # changes words here and there.
        if _one_span(a.raw_content, b.raw_content):
            return False
        # A question or request whose words all stay in place but for a few put in place of
        # others (or added, or dropped) asks about those ("tax treatment ... retail investors" / "accounting treatment
        # ... institutional traders"): one such word already vetoes, so several must too.
        if _substituted_in_place(a, b):
            return False
        # and if most words changed, the shared frame is all the cosine saw
        return changed <= shared * self.max_changed_ratio


def _asks(f: Facts) -> bool:
    """A question or a request: what a cache is asked (a statement is rarely a prompt)."""
    if "?" in f.text:
        return True
    # any sentence may be the request: "Here is the filing: ... Summarize the risks."
    return any(_asking(sentence) for sentence in _SENTENCES.split(f.text[:_SWAP_WINDOW * 8]))


def _asking(sentence: str) -> bool:
    words = [w for w in (t.strip(_PUNCT).lower() for t in sentence.split(None, 6)[:6]) if w and w not in lx.FILLERS]
    if not words:
        return False
    if words[0] in ("i", "we", "i'd", "we'd") and len(words) > 1:  # "I need ...", "we'd like ...", "I want to know ..."
        return words[1] in _WANT or words[0].endswith("'d") and words[1] == "like"
    return words[0] in lx.QUESTION_WORDS or words[0] in lx.AUX_START or words[0] in lx.REQUEST_VERBS


_SENTENCES = re.compile(r"(?<=[.!;:\n])\s+")
_PUNCT = "\"'“”‘’()[]{},.;:!*-–—"
_WANT = frozenset("want need would like wonder wish".split())


def _substituted_in_place(a: Facts, b: Facts) -> bool:
    """True when two questions or requests keep every other content word in its place and differ
    only by words (up to three at a time) put in place of others, added or dropped, at two places
    or more: each is a detail of what is asked ("an async function ..., vectorized")."""
    edits = [op for op in SequenceMatcher(None, a.raw_content, b.raw_content, autojunk=False).get_opcodes()
             if op[0] != "equal"
             # an acronym against its words spelled out is a rewording ("VaR" / "value at risk")
             and not any(_spelled_out(w, b.words) for w in a.content_words[op[1]:op[2]])
             and not any(_spelled_out(w, a.words) for w in b.content_words[op[3]:op[4]])]
    return (len(edits) >= 2 and all(i2 - i1 <= 3 and j2 - j1 <= 3 for _, i1, i2, j1, j2 in edits)
            and _asks(a) and _asks(b))


def _pointed_change(a: Facts, b: Facts, gone: Counter[str], came: Counter[str]) -> bool:
    """Is a change between two long prompts one that can be the whole question? The same word
    replaced twice ("support ... support" / "resistance ... resistance"), a word on a direction
    axis without its like on the other side ("growth" / "expansion", "small-cap" / "large-cap"),
    a number, a ticker or name, or a short word that is no English word (a lower-case ticker:
    "celh" / "elf", "onon" / "deck")."""
    if len(gone) == 1 == len(came) and sum(gone.values()) == 2 == sum(came.values()):
        return True  # one substitution, made twice: it is the question, wherever it sits
    went, new = _written(a, gone), _written(b, came)
    if {d for w in went for d in directions_of(w)} != {d for w in new for d in directions_of(w)}:
        return True
    for word, facts in [(w, a) for w in went] + [(w, b) for w in new]:
        if (any(c.isdigit() for c in word) or word in facts.symbols or written_as_ticker(word)
                or vocab.could_be_ticker(word)):
            return True
    return False


def _written(f: Facts, stems: Counter[str]) -> set[str]:
    """The words of ``f`` as written whose stems are ``stems``."""
    return {w for w, s in zip(f.content_words, f.raw_content) if s in stems}


def _one_span(xs: Sequence[str], ys: Sequence[str]) -> bool:
    """True when ``ys`` is ``xs`` with one contiguous span replaced, inserted or deleted."""
    ops = SequenceMatcher(None, xs, ys, autojunk=False).get_opcodes()
    edits = [op for op in ops if op[0] != "equal"]
    kept = sum(i2 - i1 for tag, i1, i2, _, _ in ops if tag == "equal")
    return len(edits) == 1 and kept >= 2


class FunctionWordGuard:
    """Function words that carry the question must agree: quantifiers ("all" / "some" tech
    stocks, "the only stock" / "a stock"), "and" / "or", tense and modality ("Will the Fed cut"
    / "Did the Fed cut" / "Should the Fed cut"), whose ("my risk" / "your risk", "we" / "they"),
    "this" / "that", "now" / "too", "still" / "already", a preposition before a date or time
    ("by Friday" / "on Friday", "in 2 weeks" / "for 2 weeks", "at the open" / "by the open"),
    "in-the-money" / "at-the-money".

    The edit guard ignores function words (a rewording moves them around freely), so they are
    read here, where the two prompts differ: a word of a family put in place of another of the
    same family (a short edit); tense, person, possession and quantity also when the two
    prompts share no value at all. In a short prompt a one-word swap in an unchanged frame must
    be a swap of interchangeable words ("buy on before earnings" / "buy now before earnings":
    ON, a ticker in lower case). Articles, courtesy ("please", "can you explain") and dropping a
    word the rewording does without ("my risk" / "the risk") never count.
    """

    name = "function"
    short_prompt = 10  # content words: a longer statement rewords its function words freely
    short_edit = 3     # words on each side of an edit read as "one put in place of the other"
    whole = ("tense", "person", "poss", "quant")  # families compared over the whole prompt too

    def allows(self, asked: str, stored: str, info: Mapping[str, Any]) -> bool:
        a, b = analyze(asked), analyze(stored)
        if a.fwords == b.fwords:
            return True
        fa, fb = _families(a.flabels), _families(b.flabels)
        for family in self.whole:
            va, vb = fa.get(family), fb.get(family)
            if va and vb and not any(_compatible(x, y) for x in va for y in vb):
                return False  # nothing in common: "Did ..." / "Will ...", "we" / "they"
        edits = [op for op in _opcodes(a.fwords, b.fwords) if op[0] != "equal"]
        short = max(len(a.content), len(b.content)) <= self.short_prompt
        swap = _one_word_swap(edits) if short else None
        if swap is not None:
            i, j = swap
            if not _interchangeable(a.fwords[i], a.flabels[i], b.fwords[j], b.flabels[j]):
                return False
        for _, i1, i2, j1, j2 in edits:
            if i2 - i1 > self.short_edit or j2 - j1 > self.short_edit:
                continue  # a rewording, not a word put in place of another
            la, lb = a.flabels[i1:i2], b.flabels[j1:j2]
            if short and ("quant:only" in la) != ("quant:only" in lb):
                return False  # "the only stock" / "a stock"
            sa, sb = _families(la), _families(lb)
            for family in sa.keys() & sb.keys():
                if not (all(any(_compatible(x, y) for y in sb[family]) for x in sa[family])
                        and all(any(_compatible(x, y) for x in sa[family]) for y in sb[family])):
                    return False  # put in place: "Was AAPL" / "Is AAPL", "my" / "your", "and" / "or"
        return True


_ALIGN_EXACT = 400  # words: past this, frequent words may not anchor the alignment (bounded cost)


def _opcodes(xs: Sequence[str], ys: Sequence[str]) -> list[tuple[str, int, int, int, int]]:
    """The alignment of two word sequences, their common head and tail trimmed first (cheap: most
    pairs differ in a few places), exact up to _ALIGN_EXACT words in the middle."""
    head = 0
    while head < len(xs) and head < len(ys) and xs[head] == ys[head]:
        head += 1
    tail = 0
    while tail < len(xs) - head and tail < len(ys) - head and xs[-1 - tail] == ys[-1 - tail]:
        tail += 1
    mx, my = xs[head:len(xs) - tail], ys[head:len(ys) - tail]
    exact = max(len(mx), len(my)) <= _ALIGN_EXACT
    ops: list[tuple[str, int, int, int, int]] = [(tag, i1 + head, i2 + head, j1 + head, j2 + head)
           for tag, i1, i2, j1, j2 in SequenceMatcher(None, mx, my, autojunk=not exact).get_opcodes()]
    if head:
        ops.insert(0, ("equal", 0, head, 0, head))
    if tail:
        ops.append(("equal", len(xs) - tail, len(xs), len(ys) - tail, len(ys)))
    return ops


def _one_word_swap(edits: Sequence[tuple[str, int, int, int, int]]) -> tuple[int, int] | None:
    """(i, j) when the only edit puts word j of one prompt where word i of the other was: a
    replace of one word, or a word dropped next to where another came ("sell on now" / "sell
    now now" aligns as a deletion and an insertion one word apart)."""
    if len(edits) == 1:
        tag, i1, i2, j1, j2 = edits[0]
        return (i1, j1) if tag == "replace" and i2 - i1 == 1 == j2 - j1 else None
    if len(edits) == 2:
        (t1, a1, a2, b1, b2), (t2, c1, c2, d1, d2) = edits
        if {t1, t2} == {"delete", "insert"} and c1 - a2 <= 1 and a2 - a1 + c2 - c1 + b2 - b1 + d2 - d1 == 2:
            return (a1, d1) if t1 == "delete" else (c1, b1)
    return None


def _families(labels: Sequence[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for label in labels:
        if label and label != "polite":
            family, _, value = label.partition(":")
            out.setdefault(family, set()).add(value)
    return out


def _compatible(x: str, y: str) -> bool:
    return x == y or frozenset((x, y)) in lx.COMPATIBLE_VALUES


# Families whose words only ever conflict with another word of their own family: "my" / "your",
# "we" / "they", "this" / "that", "and" / "or". Against any other word ("my risk" / "the risk",
# "Derry and grew up" / "Derry. He grew up") a rewording is the likelier reading.
_AMONG_THEMSELVES = frozenset({"person", "poss", "demonstrative", "conj", "polite"})


def _interchangeable(x: str, label_x: str, y: str, label_y: str) -> bool:
    """May a rewording put ``y`` where ``x`` was (everything else unchanged)?"""
    if x == y or (label_x and label_x == label_y):
        return True
    if any(x in group and y in group for group in lx.FUNCTION_EQUIVALENTS):
        return True
    fx, _, vx = label_x.partition(":")
    fy, _, vy = label_y.partition(":")
    if fx and fy and fx == fy:
        return _compatible(vx, vy)  # "did" / "will", "all" / "some": no
    for family in (fx, fy):
        if family and family not in _AMONG_THEMSELVES:
            return False  # a word that carries the question came or went: "it" / "all", "on" / "now"
    if (x in lx.STOPWORDS) != (y in lx.STOPWORDS):
        return True  # a content word came or went: the edit guard's call
    return (x in lx.PREPOSITIONS) == (y in lx.PREPOSITIONS)  # "on" / "now": not a rewording


class SlotGuard:
    """Requests matched to templates must carry the same slot values."""

    name = "slots"

    def allows(self, asked: str, stored: str, info: Mapping[str, Any]) -> bool:
        sa, sb = info.get("asked_slots"), info.get("stored_slots")
        if not sa and not sb:
            return True
        if info.get("asked_template") != info.get("stored_template"):
            return False
        return dict(sa or {}) == dict(sb or {})


BUILTIN_GUARDS: tuple[type[Guard], ...] = (
    SlotGuard, NumberGuard, SymbolGuard, PeriodGuard, NegationGuard, DirectionGuard,
    QuestionGuard, RoleGuard, FunctionWordGuard, EditGuard,
)


def first_veto(guards: Sequence[Any], asked: str, stored: str, info: Mapping[str, Any]) -> str | None:
    """Name of the first guard that vetoes ``stored`` for ``asked``, or None if all allow.

    A guard that raises vetoes (a broken guard must fail closed, never serve a wrong answer).
    """
    for guard in guards:
        try:
            if not guard.allows(asked, stored, info):
                return str(getattr(guard, "name", type(guard).__name__))
        except Exception:
            return f"{getattr(guard, 'name', type(guard).__name__)}!error"
    return None
