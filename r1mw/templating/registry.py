"""The template registry: fast matching of a prompt against hundreds of templates.

No linear scan of regexes per request. Every alternative (a template or one of its
variants) is filed under the first whole words of its fixed prefix, or, when it starts with
a slot, under the last whole words of its fixed suffix (up to three, casefolded, so "What
is" and "What are" are different buckets); the few that start *and* end with a slot float. Each
bucket is one combined regex (an alternation ordered most specific first, declared before
mined). A request costs a few dict lookups and usually one ``fullmatch`` on a small
alternation, whatever the number of templates; a repeated prompt costs one dict lookup.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from .template import KEY_WORDS, Alternative, Template, normalize_text, parse_pattern

__all__ = ["MAX_MATCH_CHARS", "MEMO_SIZE", "TemplateMatch", "TemplateRegistry", "canonical_form"]

MAX_MATCH_CHARS = 4000
"""Longer prompts are never matched: their regex cost would grow with the text."""

_HEAD = re.compile(r"\W*(\w+)(?:\W+(\w+))?(?:\W+(\w+))?")
# Courtesy around a request changes nothing it asks ("Hey, could you ...", "..., thanks!").
# Tried only when the prompt as written matches no template. "Would you ..." is not here: it
# can ask for an opinion ("would you buy AAPL?"), not for the task.
_COURTESY_HEAD = re.compile(
    r"^\s*(?:(?:hey|hi|hello|quick one|quick question|when you get a chance|when you have a (?:minute|moment|sec|second)"
    r"|if you can|please|pls|could you|can you|i'd like you to|i would like you to)\b[\s,:;.!-]*)+", re.I)
_COURTESY_TAIL = re.compile(
    r"(?:[\s,;:.!?-]*\b(?:thanks|thank you|thx|ty|cheers|please|pls)(?: (?:so much|a lot))?)+[\s.!?]*$", re.I)
_WORD = re.compile(r"\w+")
_TAIL_CHARS = 200
MEMO_SIZE = 4096
"""Recent prompts whose match result is kept: a repeated prompt costs one dict lookup."""


_TEXT_TYPES = frozenset({"text", "phrase"})  # slot types that can swallow trailing courtesy
_COURTESY_SPAN = 80  # courtesy at the end is short: the tail regex scans only this much


# A courtesy word in capitals is a ticker: TY (Tri-Continental, 10-year T-note futures), PLS
# (Pilbara Minerals), HI... "500 shares of TY" asks about TY; "... thx" and ", pls" are courtesy.
_SHOUTED = re.compile(r"(?<![\w'’])[A-Z]{2,5}(?![\w'’])")
# What is left must not end on a word that needs another after it: "500 shares of" + "ty"
# is an instrument named ty, whatever its case.
_DANGLING = re.compile(
    r"(?:^|\W)(?:of|in|on|for|to|at|by|with|from|into|onto|about|over|under|against|vs|versus|than|per|via"
    r"|and|or|the|a|an|my|our|your)\W*$", re.I)


def _droppable(courtesy: str, left: str) -> bool:
    """May ``courtesy`` be dropped from the end of a prompt (or slot) that is ``left`` without it?"""
    return _SHOUTED.search(courtesy) is None and _DANGLING.search(left) is None


def _strip_tail(text: str) -> str:
    """``text`` without courtesy at its end. Looked for in the last words only (from a space,
    so a word is never cut): scanning a 4,000-character prompt costs 200 us, its last 80
    characters a few."""
    cut = text.find(" ", len(text) - _COURTESY_SPAN) if len(text) > _COURTESY_SPAN else 0
    if cut < 0:
        return text
    m = _COURTESY_TAIL.search(text, cut)
    if m is None:
        return text
    left = text[:m.start()]
    return left if _droppable(m.group(0), left) else text


def _strip_head(text: str) -> str:
    m = _COURTESY_HEAD.match(text)
    return text if m is None or _SHOUTED.search(m.group(0)) else text[m.end():]


def _without_courtesy(text: str) -> list[str]:
    """``text`` without its courtesy: at both ends, at the end only (a variant may itself
    start with "Can you ..."), at the start only; distinct, non-empty, not ``text``."""
    head = _strip_head(text)
    out: list[str] = []
    for bare in (_strip_tail(head), _strip_tail(text), head):
        if bare and bare != text and bare not in out:
            out.append(bare)
    return out


def _absorbed(full: "TemplateMatch", bare: "TemplateMatch | None") -> bool:
    """Is ``full`` the ``bare`` match with courtesy glued to one text slot at the edge?"""
    if bare is None or bare.template is not full.template:
        return False
    changed = [n for n in full.slots if full.slots[n] != bare.slots[n]]
    if len(changed) != 1 or full.template.slots[changed[0]] not in _TEXT_TYPES:
        return False
    name = changed[0]
    # as written: the normalized value of a phrase is case-folded, and case tells TY from "ty"
    a, b = full.written.get(name, full.slots[name]), bare.written.get(name, bare.slots[name])
    if a.startswith(b):
        rest = a[len(b):]
        return bool(rest) and _COURTESY_TAIL.fullmatch(rest) is not None and _droppable(rest, b)
    if a.endswith(b):
        rest = a[:len(a) - len(b)]
        return bool(rest) and _COURTESY_HEAD.fullmatch(rest) is not None and _SHOUTED.search(rest) is None
    return False


@dataclass(frozen=True, slots=True)
class TemplateMatch:
    """A prompt matched to a template: its id, normalized slot values and canonical form,
    and each slot's text as the prompt wrote it (``written``: "$50,000", where ``slots``
    has "$50000")."""

    template: Template
    slots: dict[str, str]
    _canonical: str | None = field(default=None, repr=False, compare=False)
    written: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def template_id(self) -> str:
        return self.template.id

    @property
    def canonical(self) -> str:
        """The canonical form, computed on first use (a memoized match is reused per request)."""
        form = self._canonical
        if form is None:
            form = canonical_form(self.template.id, self.slots)
            object.__setattr__(self, "_canonical", form)
        return form


def canonical_form(template_id: str, slots: Mapping[str, str]) -> str:
    """``tpl:<id>|slot="value"|...``, slots sorted by name.

    Values are JSON strings, so no value can imitate a separator: the form is injective.
    """
    return "tpl:" + template_id + "".join(f"|{name}={_quote(slots[name])}" for name in sorted(slots))


_PLAIN = re.compile(r'[^"\\\x00-\x1f\x7f]*')


def _quote(value: str) -> str:
    # JSON string quoting; the common value needs no escape and skips json.dumps.
    if _PLAIN.fullmatch(value):
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=False)


_Rank = tuple[int, int, int]
_Group = tuple[_Rank, Alternative, tuple[tuple[str, int, Callable[[str], "str | None"]], ...]]


class _Bucket:
    __slots__ = ("alts", "regex", "groups")

    def __init__(self) -> None:
        self.alts: list[tuple[tuple[int, int, int], Alternative]] = []
        self.regex: re.Pattern[str] | None = None
        self.groups: dict[int, _Group] = {}

    def compile(self) -> None:
        self.alts.sort(key=lambda item: item[0])
        parts: list[str] = []
        groups: dict[int, _Group] = {}
        next_group = 1
        for rank, alt in self.alts:
            # The outer group closes last, so ``m.lastindex`` names the alternative that matched.
            outer = next_group
            inner = tuple(range(outer + 1, outer + 1 + len(alt.slots)))
            next_group = outer + 1 + len(alt.slots)
            parts.append(f"({alt.regex})")
            normalizers = tuple(alt.template.normalizer(n) for n in alt.slots)
            groups[outer] = (rank, alt, tuple(zip(alt.slots, inner, normalizers)))
        self.regex = re.compile("|".join(parts), re.I | re.S) if parts else None
        self.groups = groups


class TemplateRegistry:
    """Templates by id with a prefix/suffix index; published as ``pipeline.services["templates"]``.

    ``match(text)`` gives ``(template_id, slots)`` or None; ``render(template_id, slots)``
    writes the request text back (what the prefetcher sends).
    """

    def __init__(self, templates: Iterable[Template] = ()) -> None:
        self._templates: dict[str, Template] = {}
        self._rank: dict[str, int] = {}
        self._order = 0
        self._prefix: dict[tuple[str, ...], _Bucket] = {}
        self._suffix: dict[tuple[str, ...], _Bucket] = {}
        self._memo: dict[str, TemplateMatch | None] = {}
        self._floating = _Bucket()
        self._dirty: set[int] = set()
        self._buckets: dict[int, _Bucket] = {}
        for template in templates:
            self.add(template)

    # -- contents ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._templates)

    def __contains__(self, template_id: object) -> bool:
        return template_id in self._templates

    def __iter__(self) -> Iterator[Template]:
        return iter(list(self._templates.values()))

    def get(self, template_id: str) -> Template | None:
        return self._templates.get(template_id)

    def add(self, template: Template) -> None:
        """Add a template (ValueError if its id is taken)."""
        if template.id in self._templates:
            raise ValueError(f"template id {template.id!r} is declared twice")
        self._templates[template.id] = template
        self._order += 1
        self._rank[template.id] = self._order
        priority = 1 if template.source == "mined" else 0
        for alt in template.alternatives():
            bucket = self._bucket_for(alt, create=True)
            assert bucket is not None
            bucket.alts.append(((priority, -alt.specificity, self._order * 64 + alt.index), alt))
            self._dirty.add(id(bucket))
            self._buckets[id(bucket)] = bucket
        self._memo.clear()

    def remove(self, template_id: str) -> Template | None:
        template = self._templates.pop(template_id, None)
        if template is None:
            return None
        for alt in template.alternatives():
            bucket = self._bucket_for(alt, create=False)
            if bucket is not None:
                bucket.alts = [item for item in bucket.alts if item[1].template.id != template_id]
                self._dirty.add(id(bucket))
                if not bucket.alts and bucket is not self._floating:  # mined churn must not leak
                    index = self._prefix if alt.first is not None else self._suffix
                    index.pop(alt.first if alt.first is not None else alt.last, None)  # type: ignore[arg-type]
                    self._buckets.pop(id(bucket), None)
                    self._dirty.discard(id(bucket))
        self._memo.clear()
        return template

    def _bucket_for(self, alt: Alternative, *, create: bool) -> _Bucket | None:
        if alt.first is not None:
            index, key = self._prefix, alt.first
        elif alt.last is not None:
            index, key = self._suffix, alt.last
        else:
            return self._floating
        bucket = index.get(key)
        if bucket is None and create:
            bucket = index[key] = _Bucket()
        return bucket

    def _compile_dirty(self) -> None:
        for key in list(self._dirty):
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.compile()
        self._dirty.clear()

    def compile(self) -> None:
        """Compile every changed bucket now (else the first match does it)."""
        self._compile_dirty()

    # -- matching ----------------------------------------------------------------------
    def match_full(self, text: str) -> TemplateMatch | None:
        """The most specific template matching ``text``, with normalized slots, or None."""
        memo = self._memo
        try:
            return memo[text]
        except KeyError:
            pass
        if len(text) > MAX_MATCH_CHARS + 64:  # never matched, never memoized (bounded memory)
            return None
        found = self._match(text)
        if found is None or not _TEXT_TYPES.isdisjoint(found.template.slots.values()):
            for bare in _without_courtesy(text):
                shorter = self._match(bare)
                # Matched without its courtesy; or a text slot at the edge of the template
                # swallowed it ("... on {strategy}" + " please"): the same template without it
                # is what was asked.
                if (found is None and shorter is not None) or (found is not None and _absorbed(found, shorter)):
                    found = shorter
                    break
        if len(memo) >= MEMO_SIZE:
            del memo[next(iter(memo))]  # oldest first
        memo[text] = found
        return found

    def _match(self, text: str) -> TemplateMatch | None:
        if self._dirty:
            self._compile_dirty()
        text = normalize_text(text)
        if not text or len(text) > MAX_MATCH_CHARS:
            return None
        candidates: list[_Bucket] = []
        head = _HEAD.match(text)
        if head is not None and self._prefix:
            words = tuple(w.casefold() for w in head.groups() if w is not None)
            for n in range(1, len(words) + 1):
                bucket = self._prefix.get(words[:n])
                if bucket is not None:
                    candidates.append(bucket)
        if self._suffix:
            tail = _WORD.findall(text[-_TAIL_CHARS:])
            if len(text) > _TAIL_CHARS and len(tail) <= KEY_WORDS:
                tail = _WORD.findall(text)  # the slice may have cut the first of them
            words = tuple(w.casefold() for w in tail[-KEY_WORDS:])
            for n in range(1, len(words) + 1):
                bucket = self._suffix.get(words[-n:])
                if bucket is not None:
                    candidates.append(bucket)
        if self._floating.alts:
            candidates.append(self._floating)
        best: tuple[_Rank, TemplateMatch] | None = None
        for bucket in candidates:
            if bucket.regex is None:
                continue
            found = self._try(bucket, text)
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        return None if best is None else best[1]

    @staticmethod
    def _try(bucket: _Bucket, text: str) -> tuple[_Rank, TemplateMatch] | None:
        assert bucket.regex is not None
        m = bucket.regex.fullmatch(text)
        if m is None:
            return None
        rank, alt, slot_groups = bucket.groups[m.lastindex]  # type: ignore[index]
        slots: dict[str, str] = {}
        written: dict[str, str] = {}
        for name, group, normalize in slot_groups:
            raw = m.group(group)
            value = normalize(raw)
            if value is None:
                # The split the plain pattern found is not a value of the type: try this
                # alternative and the less specific ones with their typed patterns.
                return TemplateRegistry._slow(bucket, text, m.lastindex)  # type: ignore[arg-type]
            slots[name] = value
            written[name] = raw
        return rank, TemplateMatch(alt.template, slots, written=written)

    @staticmethod
    def _slow(bucket: _Bucket, text: str, failed: int) -> tuple[_Rank, TemplateMatch] | None:
        for outer, (rank, alt, slot_groups) in sorted(bucket.groups.items()):
            if outer < failed:  # the plain pattern accepts a superset: those cannot match
                continue
            m = alt.typed_regex().fullmatch(text)
            if m is None:
                continue
            slots = {}
            written = {}
            for i, (name, _, normalize) in enumerate(slot_groups, 1):
                value = normalize(m.group(i))
                if value is None:
                    break
                slots[name] = value
                written[name] = m.group(i)
            else:
                return rank, TemplateMatch(alt.template, slots, written=written)
        return None

    def match(self, text: str) -> tuple[str, dict[str, str]] | None:
        """``(template_id, slots)`` for a prompt, or None."""
        found = self.match_full(text)
        return None if found is None else (found.template.id, found.slots)

    # -- rendering ---------------------------------------------------------------------
    def normalize_slots(self, template_id: str, slots: Mapping[str, Any]) -> dict[str, str]:
        """Slot values normalized by type; ValueError names a missing, extra or bad value."""
        template = self._templates.get(template_id)
        if template is None:
            raise KeyError(f"no template {template_id!r}")
        if set(slots) != set(template.slots):
            raise ValueError(f"template {template_id!r} takes slots {sorted(template.slots)}, "
                             f"got {sorted(slots)}")
        out: dict[str, str] = {}
        for name, value in slots.items():
            normalized = template.normalizer(name)(str(value))
            if normalized is None:
                raise ValueError(f"{value!r} is not a {template.slots[name]} (slot {name!r} of {template_id!r})")
            out[name] = normalized
        return out

    def render(self, template_id: str, slots: Mapping[str, Any], written: Mapping[str, str] | None = None) -> str:
        """The template's main pattern filled with ``slots`` (normalized first). ``written``
        gives some slots' text as users write it ("the 5-minute", "$50,000 ... NVDA"): used
        where it means the same value, the type's display form elsewhere.

        >>> r = TemplateRegistry(); r.add(Template("risk", "Assess risk for {size:money}")); r.compile()
        >>> r.render("risk", {"size": "$50k"}), r.render("risk", {"size": "$50k"}, {"size": "$50,000"})
        ('Assess risk for $50000', 'Assess risk for $50,000')
        """
        values = self.normalize_slots(template_id, slots)
        template = self._templates[template_id]
        out = []
        for part in parse_pattern(template.text):
            if isinstance(part, str):
                out.append(part)
            else:
                name = part[0]
                text = written.get(name) if written else None
                if text is None or template.normalizer(name)(text) != values[name]:
                    text = template.slot_type(name).display(values[name])
                out.append(text)
        return "".join(out)

    def canonical(self, template_id: str, slots: Mapping[str, Any]) -> str:
        """The canonical form of a filled template (what the exact key is made of)."""
        return canonical_form(template_id, self.normalize_slots(template_id, slots))
