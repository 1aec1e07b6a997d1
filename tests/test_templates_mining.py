"""Templates mined from traffic: hidden shapes are found, one-offs are not, different
questions are never merged, the cap evicts the least used, export works from the CLI."""

from __future__ import annotations

import json
import os
import random
import tomllib

import pytest

import r1mw
from r1mw.cli import main
from r1mw.templating import Miner, TemplateRegistry, load_file, tokenize
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio


def settings_(**kw):
    """Settings for a test: keyword settings ignore the environment, so pass the test's own
    cache dir (the autouse fixture's R1MW_CACHE_DIR), never the user's ~/.cache."""
    kw.setdefault("cache_dir", os.environ["R1MW_CACHE_DIR"])
    return r1mw.Settings(**kw)

TICKERS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMD", "META", "GOOGL", "NFLX", "JPM", "XOM"]
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu river mountain ocean forest desert "
         "valley canyon island harbor bridge tower castle garden market school library museum theater").split()

# The hidden shapes, with the template the miner should find for each.
SHAPES = [
    (lambda r: f"{r.choice(TICKERS)}: what is the bull case and the bear case?",
     "{ticker1}: what is the bull case and the bear case?", {"ticker1": "ticker"}),
    (lambda r: f"Should I buy {r.choice(TICKERS)} at ${r.randint(50, 500)} or wait for a pullback?",
     "Should I buy {ticker1} at {money1} or wait for a pullback?", {"ticker1": "ticker", "money1": "money"}),
    (lambda r: f"Show the dividend history of {r.choice(TICKERS)} since {r.randint(1995, 2020)}",
     "Show the dividend history of {ticker1} since {number1}", {"ticker1": "ticker", "number1": "number"}),
    (lambda r: f"Explain the {r.choice(['P/E', 'PEG', 'debt-to-equity', 'current', 'quick'])} ratio for "
               f"{r.choice(TICKERS)} in simple terms",
     "Explain the {text1} ratio for {ticker1} in simple terms", {"text1": "text", "ticker1": "ticker"}),
    (lambda r: f"How did {r.choice(TICKERS)} close on 2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}?",
     "How did {ticker1} close on {date1}?", {"ticker1": "ticker", "date1": "date"}),
]


def stream(seed: int, n: int = 300, oneoffs: int = 40) -> list[str]:
    r = random.Random(seed)
    prompts = [r.choice(SHAPES)[0](r) for _ in range(n)]
    prompts += [" ".join(r.choice(WORDS) for _ in range(r.randint(4, 12))).capitalize() + "?" for _ in range(oneoffs)]
    r.shuffle(prompts)
    return prompts


def mine(prompts, **kw):
    registry = TemplateRegistry()
    miner = Miner(registry, **kw)
    for p in prompts:
        if registry.match(p) is None:
            miner.observe(p)
    return registry, miner


@pytest.mark.parametrize("seed", range(1, 13))
def test_hidden_shapes_become_templates_and_one_offs_do_not(seed):
    prompts = stream(seed)
    registry, miner = mine(prompts)
    found = {t.text: dict(t.slots) for t in registry}
    assert found == {text: slots for _, text, slots in SHAPES}
    assert all(t.source == "mined" and t.id.startswith("mined-") for t in registry)
    # Every shaped prompt now matches its template; no one-off does.
    for p in prompts:
        match = registry.match(p)
        shaped = any(w in p for w in ("bull case", "pullback", "dividend", "ratio for", "close on"))
        assert (match is not None) == shaped, p


def test_a_shape_needs_min_support_and_differing_tokens():
    registry, _ = mine(["Show the dividend history of AAPL since 2001"] * 10)
    assert len(registry) == 0  # repeats of one prompt are the exact stage's business
    registry, _ = mine(["Show the dividend history of AAPL since 2001", "Show the dividend history of MSFT since 2001"],
                       min_support=3)
    assert len(registry) == 0
    registry, _ = mine(["Show the dividend history of AAPL since 2001", "Show the dividend history of MSFT since 2001"],
                       min_support=2)
    assert [t.text for t in registry] == ["Show the dividend history of {ticker1} since 2001"]


def test_mined_templates_never_merge_different_questions():
    registry, _ = mine(stream(5))
    a = registry.match_full("Should I buy AAPL at $120 or wait for a pullback?")
    same = registry.match_full("should I buy  aapl at $120.00 or wait for a pullback")
    other_price = registry.match_full("Should I buy AAPL at $121 or wait for a pullback?")
    other_word = registry.match_full("Explain the PEG ratio for AAPL in simple terms")
    other_case = registry.match_full("Explain the peg ratio for AAPL in simple terms")
    assert a.canonical == same.canonical
    assert a.canonical != other_price.canonical
    assert other_word.canonical != other_case.canonical  # mined text slots keep their literal value
    assert registry.match("Should I buy AAPL at $120 or sell it?") is None  # the fixed text must be the same


def test_capacity_evicts_the_least_used():
    registry = TemplateRegistry()
    miner = Miner(registry, capacity=2)
    shapes = ["Show the dividend history of {} since 2001", "What is the beta of {} versus the market",
              "Compare {} with its sector peers today"]
    for shape in shapes[:2]:
        for t in TICKERS[:3]:
            miner.observe(shape.format(t))
    assert len(registry) == 2
    used = registry.match_full("What is the beta of AMD versus the market")
    miner.touch(used.template.id)
    for t in TICKERS[:3]:
        miner.observe(shapes[2].format(t))
    assert len(registry) == 2 and miner.evicted == 1
    assert registry.match("What is the beta of AMD versus the market") is not None  # used: kept
    assert registry.match("Show the dividend history of AMD since 2001") is None  # least used: evicted


def test_tokenize_splits_trailing_punctuation_and_possessives():
    assert tokenize("What is AAPL's P/E, roughly?") == ["What", "is", "AAPL", "'s", "P/E", ",", "roughly", "?"]
    assert tokenize("Buy $1,000.50 of SPY.") == ["Buy", "$1,000.50", "of", "SPY", "."]


async def test_the_stage_mines_persists_and_the_cli_exports(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("R1MW_CACHE_DIR", str(cache))
    fake = FakeR1()
    prompts = stream(7, n=120, oneoffs=10)
    async with r1mw.Pipeline(settings_(stages="template,exact", cache_dir=str(cache))) as pipe:
        llm = r1mw.wrap(fake, pipe)
        for p in prompts:
            await llm(model="m", messages=[{"role": "user", "content": p}])
        stats = pipe.stats()["stages"]["template"]
        assert stats["mining"]["mined"] == 5
        assert stats["matched"] > 0
        # While the process runs, the mined templates are already on disk for the CLI.
        assert main(["templates", "export"]) == 0
        running = json.loads(capsys.readouterr().out)
        assert len(running["templates"]) == 5

    out = tmp_path / "mined.json"
    assert main(["templates", "export", "--out", str(out)]) == 0
    exported = load_file(out)  # the export is a valid template file
    assert {t.text for t in exported} == {text for _, text, _ in SHAPES}
    assert {t.text: dict(t.slots) for t in exported} == {text: slots for _, text, slots in SHAPES}
    toml_out = tmp_path / "mined.toml"
    assert main(["templates", "export", "--out", str(toml_out)]) == 0
    assert len(tomllib.loads(toml_out.read_text())["templates"]) == 5
    assert {t.text for t in load_file(toml_out)} == {text for _, text, _ in SHAPES}
    yaml_out = tmp_path / "mined.yaml"
    assert main(["templates", "export", "--out", str(yaml_out)]) == 0
    assert [t.to_dict() for t in load_file(yaml_out)] == [t.to_dict() for t in load_file(toml_out)]

    # A new process starts with what the previous one mined: the shapes match at once.
    async with r1mw.Pipeline(settings_(stages="template,exact", cache_dir=str(cache))) as pipe:
        assert pipe.services["templates"].match("How did NVDA close on 2024-05-06?") is not None
        assert pipe.stats()["stages"]["template"]["mining"]["mined"] == 5


async def test_a_corrupt_mined_file_is_ignored_not_fatal(tmp_path):
    cache = tmp_path / "cache"
    (cache / "templates").mkdir(parents=True)
    (cache / "templates" / "mined.json").write_text('{"templates": [{"id": "x", "template": "A {b:nope}"}, 3]')
    async with r1mw.Pipeline(settings_(stages="template,exact", cache_dir=str(cache))) as pipe:
        stats = pipe.stats()["stages"]["template"]["mining"]
        assert stats["load_faults"] == 1 and stats["mined"] == 0
        await r1mw.wrap(FakeR1(), pipe)(model="m", messages=[{"role": "user", "content": "hello there you"}])
    (cache / "templates" / "mined.json").write_text(json.dumps({"templates": [
        {"id": "x", "template": "A {b:nope}"}, {"id": "ok", "template": "Explain {text1} to me", "slots": {}}]}))
    async with r1mw.Pipeline(settings_(stages="template,exact", cache_dir=str(cache))) as pipe:
        stats = pipe.stats()["stages"]["template"]["mining"]
        assert stats["load_faults"] == 1 and stats["mined"] == 1


async def test_mining_off_when_the_cache_size_is_zero(tmp_path):
    async with r1mw.Pipeline(settings_(stages="template,exact", template_cache_size=0)) as pipe:
        llm = r1mw.wrap(FakeR1(), pipe)
        for p in stream(3, n=60, oneoffs=0):
            await llm(model="m", messages=[{"role": "user", "content": p}])
        assert len(pipe.services["templates"]) == 0
        assert "mining" not in pipe.stats()["stages"]["template"]


def test_export_with_nothing_mined_writes_an_empty_list(tmp_path, capsys):
    assert main(["templates", "export", "--cache-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["templates"] == []


def test_export_from_a_directory_that_does_not_exist_is_a_one_line_error(tmp_path, capsys):
    # a mistyped --cache-dir printed an empty list, as if nothing had been mined
    assert main(["templates", "export", "--cache-dir", str(tmp_path / "none")]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1
    assert f"--cache-dir={str(tmp_path / 'none')!r} is invalid: no such directory" in out.err


async def test_mined_templates_are_announced_and_prefetch_requests_teach_nothing(tmp_path):
    seen = []

    class Observer:
        @r1mw.hookimpl
        def r1mw_events(self, pipeline, events):
            seen.extend(e for e in events if e.kind == "template_mined")

    prompts = [f"Show the dividend history of {t} since 2001" for t in TICKERS[:3]]
    async with r1mw.Pipeline(settings_(stages="template,exact"), plugins=[Observer()]) as pipe:
        fake = FakeR1()
        for p in prompts:  # issued as prefetches: not mined
            request = pipe.request("m", [{"role": "user", "content": p}], {}, {}, upstream=_upstream(fake))
            request.meta["prefetch"] = True
            await pipe.handle(request)
        assert pipe.stats()["stages"]["template"]["mining"]["observed"] == 0
        llm = r1mw.wrap(fake, pipe)
        for p in prompts:
            await llm(model="m", messages=[{"role": "user", "content": p}])
        assert pipe.stats()["stages"]["template"]["mining"]["mined"] == 1
    assert [e.data["template"] for e in seen] == ["Show the dividend history of {ticker1} since 2001"]


def _upstream(fake):
    from r1mw.types import Choice, Reply

    async def call(request):
        await fake(**request.upstream_kwargs())
        return Reply(choices=(Choice(content="ok"),))

    return call


TOPICS = ["NVDA", "the Fed", "oil supply cuts", "the yen carry trade unwind", "AI chip export rules",
          "Apple's buyback", "the ECB", "bank deposits outflows in March"]


def test_a_slot_that_takes_phrases_of_any_length_is_mined():
    r = random.Random(4)
    prompts = [f"Summarize the latest news about {r.choice(TOPICS)} in three bullet points" for _ in range(30)]
    prompts += stream(4, n=100, oneoffs=30)
    r.shuffle(prompts)
    registry, miner = mine(prompts)
    texts = {t.text: t for t in registry}
    phrase = texts.pop("Summarize the latest news about {text1} in three bullet points")
    assert phrase.phrases == ("text1",)
    assert set(texts) == {text for _, text, _ in SHAPES}  # and nothing else: no template from one-offs
    # A topic never seen, of a length never seen, matches; the value goes into the key as written.
    found = registry.match_full("summarize the latest news about the  Swiss franc peg in three bullet points.")
    assert found.template is phrase and found.slots == {"text1": "the Swiss franc peg"}
    other = registry.match_full("Summarize the latest news about the swiss franc peg in three bullet points")
    assert other.canonical != found.canonical  # text keeps its case: a different key, never a merge
    assert registry.match("Summarize the latest news about oil in five bullet points") is None


async def test_phrase_slots_survive_persistence_and_export(tmp_path, capsys):
    cache = tmp_path / "cache"
    prompts = [f"Summarize the latest news about {t} in three bullet points" for t in TOPICS[:4]]
    async with r1mw.Pipeline(settings_(stages="template,exact", cache_dir=str(cache))) as pipe:
        llm = r1mw.wrap(FakeR1(), pipe)
        for p in prompts:
            await llm(model="m", messages=[{"role": "user", "content": p}])
    async with r1mw.Pipeline(settings_(stages="template,exact", cache_dir=str(cache))) as pipe:
        assert pipe.services["templates"].match(
            "Summarize the latest news about a brand new multi word topic in three bullet points") is not None
    assert main(["templates", "export", "--cache-dir", str(cache), "--out", str(tmp_path / "m.toml")]) == 0
    [entry] = tomllib.loads((tmp_path / "m.toml").read_text())["templates"]
    assert entry["phrases"] == ["text1"]


def test_a_specific_early_template_is_retired_by_its_general_form():
    registry = TemplateRegistry()
    miner = Miner(registry)
    for t in TICKERS[:3]:  # the first prompts all said "current"
        miner.observe(f"Explain the current ratio for {t} in simple terms")
    assert [t.text for t in registry] == ["Explain the current ratio for {ticker1} in simple terms"]
    registry.match("Explain the current ratio for AMD in simple terms")
    miner.touch(next(iter(registry)).id)
    for ratio, t in [("PEG", "AAPL"), ("quick", "MSFT"), ("debt-to-equity", "NVDA")]:
        if registry.match(f"Explain the {ratio} ratio for {t} in simple terms") is None:
            miner.observe(f"Explain the {ratio} ratio for {t} in simple terms")
    [general] = list(registry)
    assert general.text == "Explain the {text1} ratio for {ticker1} in simple terms"
    assert miner.retired == 1 and miner.mined[general.id].uses == 1  # the uses carry over
    assert registry.match("Explain the current ratio for AMD in simple terms") == (
        general.id, {"text1": "current", "ticker1": "AMD"})


async def test_a_fault_in_mining_never_fails_the_request(monkeypatch):
    fake = FakeR1()
    async with r1mw.Pipeline(settings_(stages="template,exact")) as pipe:
        stage = pipe.stage("template")

        def broken(text):
            raise RuntimeError("bug in the miner")

        monkeypatch.setattr(stage.miner, "observe", broken)
        reply = await r1mw.wrap(fake, pipe)(model="m", messages=[{"role": "user", "content": "hello there you"}])
        assert reply["choices"][0]["message"]["content"] == fake.answer_for("hello there you")
        assert pipe.stats()["stages"]["template"]["mining"]["faults"] == 1
