"""Matching: render -> match round-trips, variants share one id, different values never do."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from r1mw.templating import (
    BUNDLED,
    Template,
    TemplateRegistry,
    canonical_form,
    load_file,
)
from r1mw.templating.template import parse_pattern

TRADING = load_file(BUNDLED)
REGISTRY = TemplateRegistry(TRADING)
DATA = json.loads(BUNDLED.read_text())
LITERAL_WORDS = {w.casefold() for t in TRADING for p in (t.text, *t.variants) for w in re.findall(r"\w+", p)}

# Text values made of consonant-only "words": they can never spell a fixed word of a template.
_word = st.text("bcdfghjklmnpqrstvwxz", min_size=2, max_size=7).filter(lambda w: w.casefold() not in LITERAL_WORDS)
_text = st.lists(_word, min_size=1, max_size=4).map(" ".join)
_number = st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False, allow_infinity=False)
_periods = ["the next week", "the coming week", "the next 7 days", "the next month", "hourly", "1-hour", "5-minute",
            "daily", "weekly", "Q3 2024", "the second quarter of 2024", "2015-2020", "the past 5 years", "year to date",
            "the next trading day", "today's session", "4h", "the next 12 months"]
VALUES = {
    "text": _text,
    "phrase": st.tuples(_text, _number).map(lambda p: f"{p[0]} ${p[1]:,} {p[0].upper()}"),
    "ticker": st.from_regex(r"[A-Z]{1,5}", fullmatch=True),
    "number": _number.map(lambda d: f"{d:,}"),
    "money": _number.map(lambda d: f"${d:,}"),
    "percent": _number.map(lambda d: f"{d}%"),
    "date": st.dates(dt.date(1990, 1, 1), dt.date(2050, 1, 1)).map(lambda d: d.strftime("%B %d, %Y")),
    "period": st.sampled_from(_periods),
}


@st.composite
def filled(draw, templates=TRADING):
    template = draw(st.sampled_from(templates))
    slots = {name: draw(VALUES[kind]) for name, kind in template.slots.items()}
    return template, slots


def _fill(pattern: str, slots: dict[str, str]) -> str:
    out = []
    for part in parse_pattern(pattern):
        out.append(part if isinstance(part, str) else slots[part[0]])
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(filled())
def test_render_then_match_gives_the_template_and_normalized_values(case):
    template, slots = case
    text = REGISTRY.render(template.id, slots)
    assert REGISTRY.match(text) == (template.id, REGISTRY.normalize_slots(template.id, slots))


@settings(max_examples=300, deadline=None)
@given(filled(), st.data())
def test_every_variant_with_any_spacing_and_case_matches_the_same(case, data):
    template, slots = case
    pattern = data.draw(st.sampled_from((template.text, *template.variants)))
    text = _fill(pattern, slots)
    # Harmless changes: case of the fixed text, doubled spaces, a trailing period or question mark.
    if data.draw(st.booleans()):
        text = text.replace(" ", "  ")
    if data.draw(st.booleans()):
        text = text.rstrip("?.") + data.draw(st.sampled_from([".", "?", "", " ?"]))
    words = re.split(r"(\s+)", text)
    upper = data.draw(st.sets(st.integers(0, len(words) - 1), max_size=3))
    # Change the case of fixed words only (text slot values keep their case).
    slot_words = {w for v in slots.values() for w in str(v).split()}
    text = "".join(w.upper() if i in upper and w not in slot_words and w.isalpha() else w for i, w in enumerate(words))
    found = REGISTRY.match_full(text)
    assert found is not None, text
    assert found.template.id == template.id
    assert found.slots == REGISTRY.normalize_slots(template.id, slots)
    assert found.canonical == REGISTRY.canonical(template.id, slots)


@settings(max_examples=200, deadline=None)
@given(filled(), st.data())
def test_different_slot_values_never_share_a_canonical_form(case, data):
    template, slots = case
    name = data.draw(st.sampled_from(sorted(slots)))
    other = dict(slots)
    other[name] = data.draw(VALUES[template.slots[name]])
    a, b = REGISTRY.normalize_slots(template.id, slots), REGISTRY.normalize_slots(template.id, other)
    assume(a != b)
    assert REGISTRY.canonical(template.id, slots) != REGISTRY.canonical(template.id, other)
    assert REGISTRY.match_full(REGISTRY.render(template.id, other)).canonical != REGISTRY.canonical(template.id, slots)


def test_bundled_examples_and_near_misses():
    # Every listed slot value fills every pattern and matches back; swapping one value for
    # another listed value (a near miss) changes the canonical form.
    for template in TRADING:
        base = {name: DATA["slots"][name][0] for name in template.slots}
        keys = set()
        for pattern in (template.text, *template.variants):
            found = REGISTRY.match_full(_fill(pattern, base))
            assert found is not None and found.template.id == template.id, pattern
            keys.add(found.canonical)
        assert len(keys) == 1
        for name in template.slots:
            for value in DATA["slots"][name][1:]:
                changed = REGISTRY.match_full(_fill(template.text, {**base, name: value}))
                assert changed is not None and changed.canonical not in keys, (template.id, name, value)


def test_listed_slot_equivalents_share_a_key_when_the_slot_is_typed():
    equivalents = DATA["slot_equivalents"]
    checked = 0
    for template in TRADING:
        for name, kind in template.slots.items():
            if kind == "text" or name not in equivalents:
                continue
            base = {n: DATA["slots"][n][0] for n in template.slots}
            for value, others in equivalents[name].items():
                want = REGISTRY.match_full(_fill(template.text, {**base, name: value})).canonical
                for other in others:
                    got = REGISTRY.match_full(_fill(template.text, {**base, name: other}))
                    if got is not None and got.canonical == want:
                        checked += 1
    assert checked >= 20  # timeframe, chart_interval, account_size, risk_pct, quarter spellings


def test_canonical_form_cannot_be_imitated_by_a_value():
    a = canonical_form("t", {"a": 'x"|b="y', "b": "z"})
    b = canonical_form("t", {"a": "x", "b": 'y"|b="z'})
    assert a != b


def test_most_specific_template_wins_and_unmatched_text_is_none():
    reg = TemplateRegistry([
        Template("general", "Analyze {thing}"),
        Template("specific", "Analyze {symbol:ticker} using {strategy}"),
        Template("suffix", "{thing} looks weak today"),
        Template("floating", "{a} versus {b}"),
    ])
    assert reg.match("Analyze AAPL using MACD") == ("specific", {"symbol": "AAPL", "strategy": "MACD"})
    assert reg.match("Analyze the whole market") == ("general", {"thing": "the whole market"})
    assert reg.match("aapl looks weak today!") == ("suffix", {"thing": "aapl"})
    assert reg.match("gold versus silver") == ("floating", {"a": "gold", "b": "silver"})
    assert reg.match("Tell me a joke") is None
    assert reg.match("") is None
    assert reg.match("Analyze " + "x" * 5000) is None  # too long to match


def test_a_value_the_type_refuses_falls_back_to_a_less_specific_template():
    reg = TemplateRegistry([Template("dated", "Price of {s:ticker} on {d:date}"),
                            Template("any", "Price of {s:ticker} on {d}")])
    assert reg.match("Price of AAPL on 2024-02-30") == ("any", {"s": "AAPL", "d": "2024-02-30"})
    assert reg.match("Price of AAPL on 2024-02-03") == ("dated", {"s": "AAPL", "d": "2024-02-03"})


def test_adding_and_removing_templates_rebuilds_the_index():
    reg = TemplateRegistry()
    assert reg.match("Explain the PEG ratio") is None
    reg.add(Template("ratio", "Explain the {ratio} ratio"))
    assert reg.match("Explain the PEG ratio") == ("ratio", {"ratio": "PEG"})
    with pytest.raises(ValueError, match="declared twice"):
        reg.add(Template("ratio", "Something {x}"))
    reg.remove("ratio")
    assert reg.match("Explain the PEG ratio") is None and len(reg) == 0


def test_bad_templates_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="variant"):
        Template("t", "Analyze {a} with {b}", variants=("Analyze {a}",))
    with pytest.raises(KeyError, match="unknown slot type"):
        Template("t", "Analyze {a:stock}")
    with pytest.raises(ValueError, match="side by side"):
        Template("t", "Analyze {a}{b}")
    with pytest.raises(ValueError, match="stray"):
        Template("t", "Analyze {a} }")
    braces = TemplateRegistry([Template("b", "Show {{raw}} for {x}")])
    assert braces.match("Show {raw} for AAPL") == ("b", {"x": "AAPL"})


def test_render_refuses_missing_or_invalid_values():
    with pytest.raises(ValueError, match="takes slots"):
        REGISTRY.render("assess_risk", {})
    with pytest.raises(ValueError, match="not a percent"):
        REGISTRY.render("value_at_risk", {"confidence": "high", "portfolio": "x", "var_horizon": "1-day"})
    with pytest.raises(KeyError):
        REGISTRY.render("nope", {})


_LIT = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "zeta", "iota", "lambda", "rho"]
_KINDS = ["text", "ticker", "number", "money", "percent", "date", "period"]


@st.composite
def random_template(draw):
    """A template of fixed words and 1-4 typed slots, never two slots without a word between."""
    n_slots = draw(st.integers(1, 4))
    pieces = []
    if draw(st.booleans()):
        pieces.append(" ".join(draw(st.lists(st.sampled_from(_LIT), min_size=1, max_size=3))))
    types = {}
    for i in range(n_slots):
        kind = draw(st.sampled_from(_KINDS))
        types[f"s{i}"] = kind
        pieces.append("{s%d:%s}" % (i, kind))
        if i < n_slots - 1 or draw(st.booleans()):
            pieces.append(" ".join(draw(st.lists(st.sampled_from(_LIT), min_size=1, max_size=3)))
                          + draw(st.sampled_from(["", ",", ":", "?"])))
    text = " ".join(pieces)
    assume(any(isinstance(p, str) and p.strip() for p in parse_pattern(text)))
    return Template("random", text), types


@settings(max_examples=300, deadline=None)
@given(random_template(), st.data())
def test_any_template_rendered_with_any_valid_values_matches_back(case, data):
    template, types = case
    registry = SHARED  # adding and removing also exercises the index rebuild
    registry.add(template)
    try:
        slots = {name: data.draw(VALUES[kind]) for name, kind in types.items()}
        text = registry.render("random", slots)
        assert registry.match(text) == ("random", registry.normalize_slots("random", slots)), text
    finally:
        registry.remove("random")


SHARED = TemplateRegistry(TRADING)


_slot_maps = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.text(max_size=6), min_size=1)


@settings(max_examples=300, deadline=None)
@given(_slot_maps, _slot_maps)
def test_canonical_form_is_injective(a, b):
    assert (canonical_form("t", a) == canonical_form("t", b)) == (a == b)


@pytest.mark.parametrize("a,b", [
    ("Assess risk for 500 shares of TY", "Assess risk for 500 shares of PLS"),
    ("Assess risk for a $50,000 long position in TY", "Assess risk for a $50,000 long position in PLS"),
    ("Assess risk for 500 shares of THX", "Assess risk for 500 shares of"),
    ("Assess risk for 500 shares of ty", "Assess risk for 500 shares of pls"),  # "of" needs its noun
    ("Assess risk for a $50,000 long position in ty", "Assess risk for a $50,000 long position in cheers"),
])
def test_a_ticker_that_spells_a_courtesy_word_stays_in_its_slot(a, b):
    fa, fb = REGISTRY.match_full(a), REGISTRY.match_full(b)
    assert fa is not None
    assert fb is None or fa.canonical != fb.canonical


@pytest.mark.parametrize("polite", [
    "Assess risk for 500 shares of AAPL thx", "Assess risk for 500 shares of AAPL, pls",
    "Assess risk for 500 shares of AAPL ty", "Assess risk for 500 shares of AAPL. Thanks!",
])
def test_lower_case_courtesy_after_a_slot_is_still_dropped(polite):
    assert REGISTRY.match_full(polite).canonical == REGISTRY.match_full("Assess risk for 500 shares of AAPL").canonical
