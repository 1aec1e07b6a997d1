"""Ground truth of the bundled trading workload: which texts ask the same question.

The catalog is ``r1mw/data/trading_templates.json``: templates, their variants (rewordings
that keep every slot), slot values and ``slot_equivalents`` (renderings that mean the same
value). Two requests ask the same question exactly when they fill the same template with
the same slot values, up to variants, equivalent renderings, case, spacing, end
punctuation, polite prefixes and number formats (``$50,000`` = ``$50k``). Everything else
(another ticker, size, horizon, direction) is a different question.

:meth:`Catalog.identify` is the judge: any text -> its question id. The generator labels
every request it makes with the id the judge gives, and the simulated upstream names that
id in its answer, so a reply served for another question is seen as a false hit.

>>> cat = Catalog.load()
>>> cat.identify("Analyze AAPL using RSI(14) mean reversion") == \\
...     cat.identify("please   use rsi(14) mean reversion to analyze Apple (AAPL)")
True
>>> cat.identify("Analyze AAPL using RSI(14) mean reversion") == \\
...     cat.identify("Analyze MSFT using RSI(14) mean reversion")
False
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping, Sequence

import xxhash

__all__ = ["Catalog", "POLITE_PREFIXES", "POLITE_SUFFIXES", "TemplateSpec", "normalize_text"]

# Words around a request that never change what it asks (the paraphrase styles use them).
POLITE_PREFIXES = ("please", "could you", "can you please", "hey, could you", "quick one:",
                   "i'd like you to", "when you get a chance,")
POLITE_SUFFIXES = ("thanks", "thank you", "thanks!", "please", "cheers")

# Templates whose persona is the risk manager; the others go to the analyst persona.
_RISK_TEMPLATES = frozenset({"assess_risk", "position_sizing", "value_at_risk", "stress_test"})

_SPACE = re.compile(r"\s+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_MONEY_SUFFIX = re.compile(r"\$(\d+(?:\.\d+)?)\s*(k|m|million|thousand)\b")
_MULT = {"k": 1_000, "thousand": 1_000, "m": 1_000_000, "million": 1_000_000}
_SLOT = re.compile(r"\{(\w+)\}")


def normalize_text(text: str) -> str:
    """Case, spacing, end punctuation and polite words removed: what the judge compares."""
    t = _SPACE.sub(" ", text.strip().lower())
    changed = True
    while changed:
        changed = False
        t = t.rstrip(" ?.!,;:")
        for suffix in POLITE_SUFFIXES:
            for sep in (", ", ". ", " - ", " "):
                if t.endswith(sep + suffix.rstrip("!")):
                    t = t[: -len(sep + suffix.rstrip("!"))]
                    changed = True
        for prefix in POLITE_PREFIXES:
            if t.startswith(prefix + " "):
                t = t[len(prefix) + 1:].lstrip(" ,")
                changed = True
    return t.strip(" ,")


def _money(m: re.Match[str]) -> str:
    value = float(m.group(1)) * _MULT[m.group(2)]
    return f"${value:.0f}" if value == int(value) else f"${value}"


def _normalize_value(value: str) -> str:
    v = _SPACE.sub(" ", value.strip().lower()).strip(" ,.?!")
    v = _THOUSANDS.sub("", v)
    return _MONEY_SUFFIX.sub(_money, v)


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """One template: its canonical text, variants (same question), slot names, persona."""

    id: str
    weight: float
    template: str
    variants: tuple[str, ...]
    slots: tuple[str, ...]
    system: str

    def forms(self) -> tuple[str, ...]:
        """The canonical text first, then the variants."""
        return (self.template, *self.variants)


@dataclass(slots=True)
class Catalog:
    """The templates, slot values and equivalences of the bundled workload, with the judge."""

    templates: dict[str, TemplateSpec]
    slot_values: dict[str, tuple[str, ...]]
    equivalents: dict[str, dict[str, tuple[str, ...]]]
    system_prompts: tuple[str, ...]
    _canon: dict[str, dict[str, str]] = field(default_factory=dict)
    _patterns: list[tuple[re.Pattern[str], str]] = field(default_factory=list)

    @classmethod
    def load(cls, data: Mapping[str, Any] | None = None) -> "Catalog":
        """The bundled catalog (or one from a dict of the same structure)."""
        if data is None:
            return _bundled()
        systems = tuple(data.get("system_prompts") or ("",))
        analyst, risk = systems[0], systems[1] if len(systems) > 1 else systems[0]
        templates = {}
        for t in data["templates"]:
            slots = tuple(_SLOT.findall(t["template"]))
            for v in t.get("variants", ()):
                if sorted(_SLOT.findall(v)) != sorted(slots):
                    raise ValueError(f"template {t['id']!r}: variant {v!r} does not keep every slot")
            templates[t["id"]] = TemplateSpec(
                id=t["id"], weight=float(t.get("weight", 1.0)), template=t["template"],
                variants=tuple(t.get("variants", ())), slots=slots,
                system=risk if t["id"] in _RISK_TEMPLATES else analyst)
        equivalents = {k: {c: tuple(r) for c, r in v.items()}
                       for k, v in data.get("slot_equivalents", {}).items() if not k.startswith("_")}
        cat = cls(templates=templates,
                  slot_values={k: tuple(v) for k, v in data["slots"].items()},
                  equivalents=equivalents, system_prompts=systems)
        cat._build()
        return cat

    def _build(self) -> None:
        for slot, table in self.equivalents.items():
            canon = self._canon.setdefault(slot, {})
            for value, renderings in table.items():
                for r in renderings:
                    canon[_normalize_value(r)] = _normalize_value(value)
        # Longest forms first: a longer fixed text is the more specific match.
        forms = [(form, t.id) for t in self.templates.values() for form in t.forms()]
        forms.sort(key=lambda f: -len(_SLOT.sub("", f[0])))
        for form, tid in forms:
            self._patterns.append((re.compile(_pattern_of(normalize_text(form))), tid))

    # -- the judge -----------------------------------------------------------------------
    def normalize(self, slot: str, value: str) -> str:
        """A slot value in its canonical form (``$100k`` -> ``$100000``, ``1h`` -> ``1-hour``)."""
        v = _normalize_value(value)
        return self._canon.get(slot, {}).get(v, v)

    def question_id(self, template_id: str, slots: Mapping[str, str]) -> str:
        """The ground-truth id of a template filled with ``slots`` (any renderings)."""
        canon = sorted((k, self.normalize(k, v)) for k, v in slots.items())
        digest = xxhash.xxh64_hexdigest(json.dumps([template_id, canon]).encode())[:10]
        return f"{template_id}/{digest}"

    def match(self, text: str) -> tuple[str, dict[str, str]] | None:
        """(template id, raw slot values) of a templated text, or None."""
        t = normalize_text(text)
        for pattern, tid in self._patterns:
            m = pattern.fullmatch(t)
            if m is not None:
                return tid, m.groupdict()
        return None

    def identify(self, text: str) -> str:
        """The question id of any request text: templated texts by template and slots,
        the rest by their normalized text."""
        found = self.match(text)
        if found is not None:
            return self.question_id(*found)
        return "text/" + xxhash.xxh64_hexdigest(normalize_text(text).encode())[:10]

    def identify_messages(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The question id of a chat request: its last user message, and the rest of the
        conversation when it is neither empty nor the persona the workload sends with that
        question (another system prompt, earlier turns): another persona or context is
        another answer, so a cache that serves across them must be seen as wrong. (A bare
        question and the same with its usual persona share an id: the workload never sends
        both, and callers of the simulator ask bare questions.)"""
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].get("role") == "user":
                qid = self.identify(_text(messages[i].get("content")))
                context = [(m.get("role"), _text(m.get("content"))) for j, m in enumerate(messages) if j != i]
                if not context or context == self._usual_context(qid):
                    return qid
                digest = xxhash.xxh64_hexdigest(json.dumps(context).encode())[:10]
                return f"{qid}+ctx/{digest}"
        return "text/empty"

    def _usual_context(self, question_id: str) -> list[tuple[str, str]]:
        # The generator sends a templated question with its persona, any other text alone.
        spec = self.templates.get(question_id.split("/", 1)[0])
        return [("system", spec.system)] if spec is not None and spec.system else []

    # -- rendering -------------------------------------------------------------------------
    def render(self, template_id: str, slots: Mapping[str, str], form: int = 0) -> str:
        """Fill form ``form`` (0 = the canonical template, 1.. = variants) with ``slots``."""
        spec = self.templates[template_id]
        text = spec.forms()[form]
        return _SLOT.sub(lambda m: slots[m.group(1)], text)

    def renderings(self, slot: str, value: str) -> tuple[str, ...]:
        """The listed renderings of ``value`` (itself first)."""
        return (value, *self.equivalents.get(slot, {}).get(value, ()))


def _text(content: Any) -> str:
    return content if isinstance(content, str) else str(content)


def _pattern_of(form: str) -> str:
    out, pos, seen = [], 0, set()
    for m in _SLOT.finditer(form):
        out.append(re.escape(form[pos:m.start()]))
        name = m.group(1)
        out.append(f"(?P={name})" if name in seen else f"(?P<{name}>.+?)")
        seen.add(name)
        pos = m.end()
    out.append(re.escape(form[pos:]))
    return "".join(out)


@lru_cache(maxsize=1)
def _bundled() -> Catalog:
    raw = resources.files("r1mw").joinpath("data/trading_templates.json").read_text(encoding="utf-8")
    return Catalog.load(json.loads(raw))
