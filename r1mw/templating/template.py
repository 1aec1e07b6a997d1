"""Template objects and their compilation into regex alternatives.

A template is a prompt with ``{slot}`` / ``{slot:type}`` placeholders (``{{`` and ``}}``
are literal braces) plus rewordings (``variants``) that keep every slot: a filled variant
asks the same question as the filled template, so it matches the same template id.

Matching is lenient only where the question cannot change: case and whitespace of the
fixed text, curly quotes, space around punctuation and the final ``.?!``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .slots import SLOT_TYPES, SlotType, slot_type

__all__ = ["KEY_WORDS", "Alternative", "Template", "normalize_text", "parse_pattern"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_]\w*)(?::([A-Za-z_]\w*))?\}|[{}]")
_LIT_TOKEN = re.compile(r"(\s+)|(\w+)|(.)", re.S)
_END_PUNCT = re.compile(r"[\s.?!]+$")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "\u00a0": " "})
_SPECIAL = frozenset("’‘“”\u00a0")


def normalize_text(text: str) -> str:
    """What the matcher sees: curly quotes straightened, outer whitespace stripped."""
    if not _SPECIAL.isdisjoint(text):
        text = text.translate(_QUOTES)
    return text.strip()


def parse_pattern(pattern: str) -> list[tuple[str, str | None] | str]:
    """Split a pattern into literal strings and ``(slot, type or None)`` pairs.

    Raises ValueError on a stray brace or a malformed placeholder.
    """
    parts: list[tuple[str, str | None] | str] = []
    literal: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(pattern):
        literal.append(pattern[pos:m.start()])
        pos = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
        elif m.group(1) is None:
            raise ValueError(f"stray {token!r} at column {m.start() + 1} of {pattern!r} "
                             "(write {{ or }} for a literal brace)")
        else:
            if "".join(literal):
                parts.append("".join(literal))
            literal = []
            parts.append((m.group(1), m.group(2)))
    literal.append(pattern[pos:])
    if "".join(literal):
        parts.append("".join(literal))
    if any(isinstance(a, tuple) and isinstance(b, tuple) for a, b in zip(parts, parts[1:])):
        raise ValueError(f"two slots side by side in {pattern!r}: their boundary would be ambiguous")
    return parts


@dataclass(frozen=True, slots=True)
class Template:
    """A prompt template. ``slots`` maps slot names to type names (``text`` by default);
    types written inline (``{when:date}``) win. ``source`` is ``file``, ``code`` or ``mined``.

    ``equivalents`` lists, per slot, spellings that name the same value as a canonical one
    (``{"symbol": {"AAPL": ["Apple (AAPL)"]}}``): a listed spelling matches whatever the
    slot's type, case-insensitively, and keys as its canonical value. A canonical value the
    type itself rejects ("ES futures" in a ticker slot) is accepted as written.
    """

    id: str
    text: str
    variants: tuple[str, ...] = ()
    slots: Mapping[str, str] = field(default_factory=dict)
    source: str = "code"
    # Mined templates hold single-token slots (one token, not a phrase), except ``phrases``.
    single_token: bool = False
    phrases: tuple[str, ...] = ()
    equivalents: Mapping[str, Mapping[str, Sequence[str]]] = field(default_factory=dict)
    # slot -> casefolded listed spelling -> canonical value (built from ``equivalents``)
    _aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise ValueError("a template needs a non-empty string id")
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"template {self.id!r} has an empty pattern")
        object.__setattr__(self, "variants", tuple(self.variants))
        object.__setattr__(self, "phrases", tuple(self.phrases))
        types = {name: slot_type(t).name for name, t in dict(self.slots).items()}
        names: set[str] | None = None
        for pattern in (self.text, *self.variants):
            parts = parse_pattern(pattern)
            seen = [p for p in parts if isinstance(p, tuple)]
            here = [name for name, _ in seen]
            if len(set(here)) != len(here):
                raise ValueError(f"template {self.id!r}: slot repeated in {pattern!r}")
            if names is None:
                names = set(here)
            elif set(here) != names:
                raise ValueError(f"template {self.id!r}: variant {pattern!r} has slots {sorted(here)}, "
                                 f"the template has {sorted(names)}")
            for name, inline in seen:
                if inline is not None:
                    t = slot_type(inline).name
                    if types.get(name, t) != t and name not in dict(self.slots):
                        raise ValueError(f"template {self.id!r}: slot {name!r} typed both "
                                         f"{types[name]!r} and {t!r}")
                    types[name] = t
        assert names is not None
        if not set(self.phrases) <= names:
            raise ValueError(f"template {self.id!r}: phrases {sorted(set(self.phrases) - names)} are not slots")
        unknown = set(types) - names
        if unknown:
            raise ValueError(f"template {self.id!r}: types given for slots it does not have: {sorted(unknown)}")
        object.__setattr__(self, "slots", {name: types.get(name, "text") for name in sorted(names)})
        self._set_equivalents(names)

    def _set_equivalents(self, names: set[str]) -> None:
        equivalents = {str(k): {str(c): tuple(map(str, r)) for c, r in v.items()}
                       for k, v in dict(self.equivalents).items()}
        unknown = set(equivalents) - names
        if unknown:
            raise ValueError(f"template {self.id!r}: equivalents given for slots it does not have: "
                             f"{sorted(unknown)}")
        aliases: dict[str, dict[str, str]] = {}
        for name, table in equivalents.items():
            out = aliases[name] = {}
            for canonical, spellings in table.items():
                for spelling in (canonical, *spellings):
                    key = _alias_key(spelling)
                    if not key:
                        raise ValueError(f"template {self.id!r}: an empty spelling of {canonical!r}")
                    if out.setdefault(key, canonical) != canonical:
                        raise ValueError(f"template {self.id!r}: {spelling!r} is listed for both "
                                         f"{out[key]!r} and {canonical!r} (slot {name!r})")
        object.__setattr__(self, "equivalents", equivalents)
        object.__setattr__(self, "_aliases", aliases)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(self.slots)

    def slot_type(self, name: str) -> SlotType:
        return SLOT_TYPES[self.slots[name]]

    def normalizer(self, name: str) -> Callable[[str], "str | None"]:
        """The function that checks and normalizes a value of slot ``name``: a listed
        equivalent becomes its canonical value, then the slot's type normalizes."""
        base = self.slot_type(name).normalize
        table = self._aliases.get(name)
        if not table:
            return base

        def normalize(text: str) -> str | None:
            canonical = table.get(_alias_key(text))
            if canonical is None:
                return base(text)
            value = base(canonical)
            return canonical if value is None else value

        return normalize

    def slot_pattern(self, name: str) -> str:
        """The regex fragment of slot ``name``: its listed spellings, then its type's pattern."""
        pattern = self.slot_type(name).pattern
        table = self._aliases.get(name)
        if not table:
            return pattern
        spellings = sorted(table, key=len, reverse=True)
        return "|".join([*(r"\s+".join(map(re.escape, s.split())) for s in spellings), pattern])

    def to_dict(self) -> dict[str, Any]:
        """The file form of this template (JSON/TOML/YAML entry)."""
        out: dict[str, Any] = {"id": self.id, "template": self.text}
        if self.variants:
            out["variants"] = list(self.variants)
        out["slots"] = dict(self.slots)
        if self.phrases:
            out["phrases"] = list(self.phrases)
        if self.equivalents:
            out["equivalents"] = {k: {c: list(r) for c, r in v.items()} for k, v in self.equivalents.items()}
        return out

    def alternatives(self) -> list["Alternative"]:
        """One compiled alternative per pattern (the template, then each variant)."""
        return [Alternative.build(self, p, i) for i, p in enumerate((self.text, *self.variants))]


def _literal_regex(text: str) -> tuple[list[str], int]:
    """Regex pieces for fixed text, and its count of word characters (specificity)."""
    out: list[str] = []
    words = 0
    for m in _LIT_TOKEN.finditer(text):
        if m.group(1):
            kind = "s"
        elif m.group(2):
            kind = "w"
            words += len(m.group(2))
        else:
            kind = "p"
        if kind == "s":
            out.append("\x00s")  # resolved below, once the neighbours are known
            continue
        out.append(re.escape(m.group(0)))
    # A space between two words must stay a space; next to punctuation it may vanish.
    pieces: list[str] = []
    for i, piece in enumerate(out):
        if piece != "\x00s":
            pieces.append(piece)
            continue
        before = out[i - 1] if i else ""
        after = out[i + 1] if i + 1 < len(out) else ""
        # At an edge the neighbour is a slot, which counts as a word.
        word_before = not before or bool(re.match(r"\w", _unescape(before)[-1:]))
        word_after = not after or bool(re.match(r"\w", _unescape(after)[:1]))
        pieces.append(r"\s+" if word_before and word_after else r"\s*")
    return pieces, words


def _join(pieces: list[str]) -> str:
    regex = "".join(p for p in pieces if p)
    return re.sub(r"(\\s[*+])+", lambda m: r"\s+" if r"\s+" in m.group(0) else r"\s*", regex)


@functools.lru_cache(maxsize=1024)
def _compile_typed(regex: str) -> "re.Pattern[str]":
    return re.compile(regex, re.I | re.S)


KEY_WORDS = 3
_WORD = re.compile(r"\w+")


def _key_words(parts: list[Any], *, head: bool) -> tuple[str, ...] | None:
    """The whole fixed words at the start (or end) of a pattern, casefolded, at most
    KEY_WORDS. A word glued to a slot ("RSI{n}") is not whole: the prompt's word would be
    "RSI14", so it cannot be a key."""
    if not parts or not isinstance(parts[0 if head else -1], str):
        return None
    literal: str = parts[0 if head else -1]
    alone = len(parts) == 1
    words = list(_WORD.finditer(literal))
    if not head:
        words.reverse()
    out: list[str] = []
    for m in words[:KEY_WORDS]:
        whole = alone or (m.end() < len(literal) if head else m.start() > 0)
        if not whole:
            break
        out.append(m.group(0).casefold())
    if not out:
        return None
    return tuple(out) if head else tuple(reversed(out))


def _alias_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _unescape(piece: str) -> str:
    return re.sub(r"\\(.)", r"\1", piece)


@dataclass(frozen=True, slots=True)
class Alternative:
    """One pattern of one template, compiled to a regex fragment without named groups.

    ``first``/``last`` are up to :data:`KEY_WORDS` casefolded whole words the pattern starts
    or ends with (the keys of the prefix and suffix indexes), or None when it starts or
    ends with a slot.
    """

    template: Template
    index: int
    regex: str
    slots: tuple[str, ...]  # slot names in group order
    specificity: int
    first: tuple[str, ...] | None
    last: tuple[str, ...] | None
    typed: str = ""

    @classmethod
    def build(cls, template: Template, pattern: str, index: int) -> "Alternative":
        parts = parse_pattern(normalize_text(pattern))
        # The final .?! and surrounding space never change the question.
        if parts and isinstance(parts[-1], str):
            tail = _END_PUNCT.sub("", parts[-1])
            parts = parts[:-1] + ([tail] if tail else [])
        pieces = [r"\s*"]
        typed_at: dict[int, str] = {}
        slots: list[str] = []
        specificity = 0
        for i, part in enumerate(parts):
            if isinstance(part, str):
                lit, words = _literal_regex(part)
                specificity += words
                # Space may appear or vanish between a slot and the punctuation next to it.
                if i > 0 and not re.match(r"[\w\s]", part[:1]):
                    pieces.append(r"\s*")
                pieces.extend(lit)
                if i + 1 < len(parts) and not re.match(r"[\w\s]", part[-1:]):
                    pieces.append(r"\s*")
                continue
            # The fixed text around a slot finds its boundaries; the slot's type then checks
            # and normalizes the value. Inlining each type's (large) pattern instead would make
            # a 1,000-template index take seconds to compile, for the same matches.
            slots.append(part[0])
            one_token = template.single_token and part[0] not in template.phrases
            pieces.append(r"([^\s]+?)" if one_token else r"(.+?)")
            typed_at[len(pieces) - 1] = template.slot_pattern(part[0])
        pieces.append(r"[\s.?!]*")
        first = _key_words(parts, head=True)
        last = _key_words(parts, head=False)
        regex = _join(pieces)
        typed = regex
        if typed_at and not template.single_token:
            typed = _join([f"({typed_at[i]})" if i in typed_at else p for i, p in enumerate(pieces)])
        return cls(template, index, regex, tuple(slots), specificity, first, last, typed)

    def typed_regex(self) -> "re.Pattern[str]":
        """The pattern with each slot's own type pattern inlined: slower to compile, but its
        backtracking finds the split the plain one misses ("{horizon} {confidence}" over
        "the next week 95%"). Compiled on first need only."""
        return _compile_typed(self.typed)
