"""Template files: TOML, JSON and YAML load alike; a malformed file fails at start-up with
ConfigError naming the file, the line and the reason."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

import r1mw
from r1mw.templating import BUNDLED, load_file

pytestmark = pytest.mark.anyio


def settings_(**kw):
    """Settings for a test: keyword settings ignore the environment, so pass the test's own
    cache dir (the autouse fixture's R1MW_CACHE_DIR), never the user's ~/.cache."""
    kw.setdefault("cache_dir", os.environ["R1MW_CACHE_DIR"])
    return r1mw.Settings(**kw)

ROOT = Path(__file__).resolve().parent.parent

TOML = textwrap.dedent('''\
    version = 1

    [slot_types]
    size = "money"

    [[templates]]
    id = "risk"
    template = "Assess risk for {size} in {symbol:ticker}"
    variants = ["How risky is {size} in {symbol}?"]

    [[templates]]
    id = "close"
    template = "How did {symbol} close on {day}?"
    slots = { symbol = "ticker", day = "date" }
    ''')

YAML = textwrap.dedent('''\
    version: 1
    slot_types:
      size: money
    templates:
      - id: risk
        template: "Assess risk for {size} in {symbol:ticker}"
        variants: ["How risky is {size} in {symbol}?"]
      - id: close
        template: "How did {symbol} close on {day}?"
        slots: {symbol: ticker, day: date}
    ''')


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_three_formats_load_the_same_templates(tmp_path):
    data = {"version": 1, "slot_types": {"size": "money"}, "templates": [
        {"id": "risk", "template": "Assess risk for {size} in {symbol:ticker}",
         "variants": ["How risky is {size} in {symbol}?"]},
        {"id": "close", "template": "How did {symbol} close on {day}?", "slots": {"symbol": "ticker", "day": "date"}},
    ]}
    loaded = [load_file(_write(tmp_path, "t.toml", TOML)), load_file(_write(tmp_path, "t.yaml", YAML)),
              load_file(_write(tmp_path, "t.json", json.dumps(data)))]
    forms = [[t.to_dict() for t in ts] for ts in loaded]
    assert forms[0] == forms[1] == forms[2]
    assert dict(loaded[0][0].slots) == {"size": "money", "symbol": "ticker"}
    assert dict(loaded[0][1].slots) == {"day": "date", "symbol": "ticker"}


def test_bundled_and_example_files_load():
    assert len(load_file(BUNDLED)) == 14
    assert [t.to_dict() for t in load_file(ROOT / "examples" / "trading_templates.json")] == \
        [t.to_dict() for t in load_file(BUNDLED)]
    assert {t.id for t in load_file(ROOT / "examples" / "templates.toml")} >= {"analyze_strategy", "price_on_date"}


def _python_3_10(monkeypatch, tomli):
    """As on Python 3.10 (requires-python >= 3.10): no tomllib in the standard library, and
    ``tomli`` (the same parser, published on its own) installed or not (None)."""
    monkeypatch.setattr(sys, "version_info", (3, 10, 14, "final", 0))
    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` raises ImportError
    monkeypatch.setitem(sys.modules, "tomli", tomli)


def test_a_toml_file_loads_on_python_3_10_through_tomli(tmp_path, monkeypatch):
    import tomllib

    path = _write(tmp_path, "t.toml", TOML)
    expected = [t.to_dict() for t in load_file(path)]
    _python_3_10(monkeypatch, tomli=tomllib)  # tomllib is tomli, as it joined the standard library
    assert [t.to_dict() for t in load_file(path)] == expected
    bad = _write(tmp_path, "bad.toml", 'version = 1\n[[templates]]\nid = "a"\ntemplate = "unterminated\n')
    with pytest.raises(r1mw.ConfigError, match=r"bad\.toml:4: invalid TOML"):
        load_file(bad)


def test_a_toml_file_on_python_3_10_without_tomli_says_what_to_install(tmp_path, monkeypatch):
    path = _write(tmp_path, "t.toml", TOML)
    _python_3_10(monkeypatch, tomli=None)
    with pytest.raises(r1mw.ConfigError, match=r"t\.toml:1: .*pip install tomli"):
        load_file(path)


BAD = [
    ("bad.json", '{\n  "templates": [\n    {"id": "a", "template": "x {y}"},\n  ]\n}\n', 4, "invalid JSON"),
    ("bad.toml", 'version = 1\n[[templates]]\nid = "a"\ntemplate = "unterminated\n', 4, "invalid TOML"),
    ("bad.yaml", "templates:\n  - id: a\n    template: [unclosed\n", 4, "invalid YAML"),
    ("type.toml", 'version = 1\n\n[[templates]]\nid = "a"\ntemplate = "Analyze {s:stock}"\n', 4, "unknown slot type"),
    ("variant.json", json.dumps({"templates": [{"id": "ok", "template": "Hi {x}"},
                                               {"id": "bad", "template": "Analyze {a} with {b}",
                                                "variants": ["Analyze {a}"]}]}, indent=1), 8, "variant"),
    ("dup.yaml", "templates:\n  - id: a\n    template: 'A {x}'\n  - id: a\n    template: 'B {x}'\n", 4,
     "declared twice"),
    ("key.toml", '[[templates]]\nid = "a"\ntemplate = "A {x}"\nvaraints = ["B {x}"]\n', 4, "unknown keys"),
    ("brace.json", '{"templates": [\n {"id": "a",\n  "template": "A {x} }"}]}', 2, "stray"),
    ("slots.json", '{"templates": [\n {"id": "a", "template": "A {x}", "slots": ["y"]}]}', 2, "'slots' lists"),
    ("empty.toml", "version = 1\n", 1, "'templates' must be a non-empty list"),
    ("list.json", "[1, 2]", 1, "top level"),
    ("notes.txt", "hello", None, "expected a .toml, .json, .yaml"),
]


@pytest.mark.parametrize("name,text,line,reason", BAD, ids=[b[0] for b in BAD])
async def test_a_malformed_file_fails_at_start_up_naming_file_line_and_reason(tmp_path, name, text, line, reason):
    path = _write(tmp_path, name, text)
    with pytest.raises(r1mw.ConfigError) as err:
        async with r1mw.Pipeline(settings_(stages="template,exact", templates=str(path))):
            pass
    message = str(err.value)
    assert str(path) in message and reason in message
    if line is not None:
        assert message.startswith(f"{path}:{line}: "), message
    assert "\n" not in message


async def test_a_missing_file_names_the_flag(tmp_path):
    with pytest.raises(r1mw.ConfigError, match="R1MW_TEMPLATES=.*no such file"):
        async with r1mw.Pipeline(settings_(stages="template", templates=str(tmp_path / "none.toml"))):
            pass


def test_cli_check_lists_a_good_file_and_rejects_a_bad_one(tmp_path, capsys):
    from r1mw.cli import main

    good = shutil.copy(BUNDLED, tmp_path / "t.json")
    assert main(["templates", "check", str(good)]) == 0
    out = capsys.readouterr()
    assert "analyze_strategy: Analyze {symbol} using {strategy}" in out.out and "14 templates OK" in out.err
    bad = _write(tmp_path, "bad.toml", '[[templates]]\nid = "a"\ntemplate = "A {x:nope}"\n')
    assert main(["templates", "check", str(bad)]) == 2
    assert f"{bad}:2: template #1 ('a'): unknown slot type 'nope'" in capsys.readouterr().err


EQUIVALENTS = {
    "version": 1,
    "slot_types": {"symbol": "ticker"},
    "slot_equivalents": {"_note": "ignored", "symbol": {"AAPL": ["Apple (AAPL)"], "BTC-USD": ["BTC/USD"]}},
    "slots": {"symbol": ["AAPL", "MSFT", "ES futures"]},
    "templates": [{"id": "predict", "template": "Predict movement for {symbol} over {when}",
                   "slots": ["symbol", "when"]}],
}


def test_listed_equivalents_and_listed_values_key_as_their_canonical_value(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(EQUIVALENTS))
    reg = r1mw.templating.TemplateRegistry(load_file(path))
    canon = {s: reg.match_full(f"Predict movement for {s} over the next week").slots["symbol"]
             for s in ("AAPL", "aapl", "Apple (AAPL)", "apple  (aapl)", "BTC/USD", "btc-usd", "ES futures",
                       "es futures", "MSFT")}
    assert canon == {"AAPL": "AAPL", "aapl": "AAPL", "Apple (AAPL)": "AAPL", "apple  (aapl)": "AAPL",
                     "BTC/USD": "BTC-USD", "btc-usd": "BTC-USD", "ES futures": "ES futures",
                     "es futures": "ES futures", "MSFT": "MSFT"}
    # A different company in the same form is not an equivalent: no match, never AAPL's key.
    assert reg.match_full("Predict movement for Apple (MSFT) over the next week") is None
    # What the prefetcher renders matches back to the same key.
    assert reg.match_full(reg.render("predict", {"symbol": "Apple (AAPL)", "when": "x"})).canonical == \
        reg.canonical("predict", {"symbol": "AAPL", "when": "x"})


def test_a_spelling_listed_for_two_values_or_a_malformed_table_fails_at_start_up(tmp_path):
    twice = {**EQUIVALENTS, "slot_equivalents": {"symbol": {"AAPL": ["Apple"], "APLE": ["apple"]}}}
    (tmp_path / "twice.json").write_text(json.dumps(twice))
    with pytest.raises(r1mw.ConfigError, match="listed for both"):
        load_file(tmp_path / "twice.json")
    bad = {**EQUIVALENTS, "slot_equivalents": {"symbol": ["AAPL"]}}
    (tmp_path / "bad.json").write_text(json.dumps(bad, indent=1))
    with pytest.raises(r1mw.ConfigError, match=r"bad.json:\d+: 'slot_equivalents'.symbol must map"):
        load_file(tmp_path / "bad.json")


def _catalog_cases():
    """(catalog, registry of the bundled templates, [(template id, slot, written value,
    the other slots)]): every catalog value and listed rendering of every slot of every
    template, the other slots at their first value."""
    from r1mw.templating import TemplateRegistry
    from r1mw.workload.truth import Catalog

    catalog = Catalog.load()
    registry = TemplateRegistry()
    for template in load_file(BUNDLED):
        registry.add(template)
    registry.compile()
    cases = []
    for tid, spec in catalog.templates.items():
        base = {slot: catalog.slot_values[slot][0] for slot in spec.slots}
        for slot in spec.slots:
            for value in catalog.slot_values[slot]:
                cases.extend((tid, slot, rendering, base) for rendering in catalog.renderings(slot, value))
    return catalog, registry, cases


def test_what_a_prefetch_renders_from_a_key_asks_the_question_the_key_holds():
    # The prefetch stage renders a template from the slot values the template stage keyed a
    # request by, written as users wrote them (it has seen every value it predicts, except
    # phrases it builds for a new ticker). That text is sent upstream and its reply stored
    # under the same key, so it must ask the question every text with that key asks, as the
    # workload's judge sees it: for every bundled template, every form, every slot value of
    # the catalog and every listed rendering of it. (The judge found "today's session"
    # rendered back as "today", and "the 5-minute chart" as "the 5 minutes chart".) The
    # display form alone cannot always agree with the judge: its catalog writes "the past
    # month" for one slot and "the last 5 years" for another; phrases it always does.
    catalog, registry, cases = _catalog_cases()
    checked = 0
    for tid, slot, rendering, base in cases:
        for form in range(len(catalog.templates[tid].forms())):
            text = catalog.render(tid, {**base, slot: rendering}, form)
            found = registry.match_full(text)
            assert found is not None and found.template.id == tid, text
            again = registry.render(tid, dict(found.slots), found.written)
            assert catalog.identify(again) == catalog.identify(text), (text, again)
            assert registry.match_full(again).canonical == found.canonical, (text, again)
            if slot == "position_size":  # a phrase: its display form is the same question
                shown = registry.render(tid, dict(found.slots))
                assert catalog.identify(shown) == catalog.identify(text), (text, shown)
            checked += 1
    # Bar sizes are displayed as traders write them: the same value, read back.
    assert registry.render("key_levels", {"symbol": "AAPL", "chart_interval": "5m"}).endswith("the 5-minute chart?")
    assert "daily" in registry.render("key_levels", {"symbol": "AAPL", "chart_interval": "1D"})
    assert checked > 500


def test_the_bundled_templates_never_merge_values_the_judge_tells_apart():
    # Two spellings of a slot the template stage keys alike must be the same value for the
    # workload's judge: over every catalog value and listed rendering of every slot.
    catalog, registry, cases = _catalog_cases()
    keyed: dict[tuple[str, str, str], str] = {}
    for tid, slot, rendering, base in cases:
        found = registry.match_full(catalog.render(tid, {**base, slot: rendering}))
        assert found is not None, (tid, slot, rendering)
        judged = catalog.normalize(slot, rendering)
        assert keyed.setdefault((tid, slot, found.slots[slot]), judged) == judged, (tid, slot, rendering)
    assert len(cases) > 300
