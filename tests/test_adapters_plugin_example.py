"""The third-party plugin in examples/r1mw_shout_plugin: loaded by registration and by entry point."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest

import r1mw
import r1mw.manager
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "r1mw_shout_plugin"
Q = [{"role": "user", "content": "Is the 50-day SMA above the 200-day on NVDA?"}]


@pytest.fixture
def shout_module(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    sys.modules.pop("r1mw_shout", None)
    yield importlib.import_module("r1mw_shout")
    sys.modules.pop("r1mw_shout", None)
    # `pip install ./examples/r1mw_shout_plugin` (docs/plugins.md) leaves r1mw_shout.egg-info in
    # EXAMPLE: entry points scanned while EXAMPLE was on sys.path would then name a module the
    # next tests cannot import.
    r1mw.manager._entry_points.cache_clear()


@pytest.fixture
def shout_installed(tmp_path, monkeypatch):
    """The example installed as a distribution: a dist-info made from its own pyproject.toml
    (name, version, entry points), found by importlib.metadata on sys.path like any install."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site-packages"
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    entry_points = "".join(f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in eps.items())
                           for group, eps in project["entry-points"].items())
    (dist / "entry_points.txt").write_text(entry_points)
    (site / "r1mw_shout.py").write_text((EXAMPLE / "r1mw_shout.py").read_text())
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop("r1mw_shout", None)
    r1mw.manager._entry_points.cache_clear()  # entry points are scanned once per process
    yield project
    r1mw.manager._entry_points.cache_clear()
    sys.modules.pop("r1mw_shout", None)


def answer(reply: dict) -> str:
    return reply["choices"][0]["message"]["content"]


async def run_twice(pipe: r1mw.Pipeline, fake: FakeR1) -> tuple[dict, dict]:
    llm = r1mw.wrap(fake, pipe)
    return await llm(model="m", messages=Q), await llm(model="m", messages=Q)


async def test_registered_by_hand_outside_the_cache(shout_module):
    fake = FakeR1()
    async with r1mw.Pipeline(r1mw.Settings(stages="shout,exact"), plugins=[shout_module]) as pipe:
        miss, hit = await run_twice(pipe, fake)
        stored = pipe.store.get_nowait(r1mw.key_of("", "m", Q, {})).reply
        stats = pipe.stats()
    assert [s.name for s in pipe.stages] == ["shout", "exact"]
    assert answer(miss) == answer(hit) == fake.answer_for(Q[0]["content"]).upper()
    assert stored.content == fake.answer_for(Q[0]["content"])  # cached as the upstream said it
    assert stats["stages"]["shout"] == {"seen": 2} and stats["hits"] == 1 and len(fake.calls) == 1


async def test_loaded_through_its_entry_point_in_the_order_of_r1mw_stages(shout_installed):
    assert shout_installed["entry-points"]["r1mw"] == {"shout": "r1mw_shout"}
    fake = FakeR1()
    settings = r1mw.Settings.from_env({"R1MW_STAGES": "exact,shout"}, dotenv=None)
    async with r1mw.Pipeline(settings) as pipe:  # no plugins=: found through the entry point
        miss, hit = await run_twice(pipe, fake)
        stored = pipe.store.get_nowait(r1mw.key_of("", "m", Q, {})).reply
        stats = pipe.stats()
    assert pipe.pm.has_plugin("shout")
    assert [s.name for s in pipe.stages] == ["exact", "shout"]
    assert answer(miss) == answer(hit) == fake.answer_for(Q[0]["content"]).upper()
    assert stored.content == fake.answer_for(Q[0]["content"]).upper()  # inside the cache: stored shouted
    assert stats["stages"]["shout"] == {"seen": 1}  # the hit never reached it
    assert len(fake.calls) == 1


async def test_disabling_the_entry_point_removes_its_stage(shout_installed):
    settings = r1mw.Settings(stages="exact,shout", disable_plugins="shout")
    with pytest.raises(r1mw.ConfigError, match="R1MW_STAGES: unknown name 'shout'") as raised:
        async with r1mw.Pipeline(settings):
            pass
    # the line says why the stage is gone, not only that it is unknown
    assert "R1MW_DISABLE_PLUGINS=shout" in str(raised.value)


async def test_streams_pass_the_plugin_stage_untouched(shout_module):
    fake = FakeR1()
    async with r1mw.Pipeline(r1mw.Settings(stages="shout,exact"), plugins=[shout_module]) as pipe:
        llm = r1mw.wrap(fake, pipe)
        chunks = [c async for c in await llm(model="m", messages=Q, stream=True)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip() == fake.answer_for(Q[0]["content"])


async def test_the_openai_deepseek_example_runs_against_an_r1_peer(capsys):
    import httpx
    import openai

    from r1mw.testing import R1Peer

    spec = importlib.util.spec_from_file_location("openai_deepseek", EXAMPLE.parent / "openai_deepseek.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # importable: nothing runs, nothing connects
    peer = R1Peer()
    client = openai.AsyncOpenAI(api_key="sk-test", base_url="https://api.deepseek.com", max_retries=0,
                                http_client=httpx.AsyncClient(transport=peer.transport()))
    answers = await example.main(client)
    assert answers == [peer.answer_for(example.QUESTION[0]["content"])] * 2
    assert len(peer.calls) == 1
    out = capsys.readouterr().out
    assert "first call:" in out and "same again:" in out and "{'exact:l1': 2}" in out
