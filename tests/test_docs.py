"""Docs that are generated from code stay in sync with it."""

from __future__ import annotations

import re
from pathlib import Path

import r1mw
from r1mw.settings import flags_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_readme_flags_table_matches_the_flag_table():
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- flags:start -->\n(.*?)\n<!-- flags:end -->", readme, re.S)
    assert table is not None, "README.md lost its flags markers"
    assert table.group(1) == flags_markdown(), (
        "README flags table is stale: regenerate with "
        "python -c 'from r1mw.settings import flags_markdown; print(flags_markdown())'"
    )


def test_public_api_is_exactly_all():
    public = {name for name in dir(r1mw) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(r1mw, name)).__name__ == "module"}
    assert sorted(r1mw.__all__) == r1mw.__all__
    assert public - modules == set(r1mw.__all__)


def test_every_hook_is_documented_in_the_plugin_guide():
    from r1mw import hookspecs

    guide = (ROOT / "docs" / "plugins.md").read_text()
    table = re.search(r"<!-- hooks:start -->\n(.*?)\n<!-- hooks:end -->", guide, re.S).group(1)
    documented = set(re.findall(r"`(r1mw_\w+)\(", table))
    declared = {name for name in dir(hookspecs) if name.startswith("r1mw_")}
    assert documented == declared


# -- the examples a new user copies first, run against the fake DeepSeek server (no network) --

def _fake_deepseek_client_class(peer):
    import httpx
    import openai

    class FakeDeepSeek(openai.AsyncOpenAI):  # what the docs' AsyncOpenAI(...) builds, pointed at the peer
        def __init__(self, *args, **kwargs):
            kwargs.update(api_key="test", base_url="https://r1.test/v1", max_retries=0,
                          http_client=httpx.AsyncClient(transport=peer.transport()))
            super().__init__(*args, **kwargs)

    return FakeDeepSeek


def test_readme_wrapping_example_prints_what_the_readme_says(monkeypatch, capsys):
    import openai
    from r1mw.testing import R1Peer

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Wrapping your client", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    first = re.search(r"# first run: (.*)$", code, re.M).group(1)
    again = re.search(r"Run it again and the first call is answered from disk too: `([^`]*)`", section).group(1)
    monkeypatch.setattr(openai, "AsyncOpenAI", _fake_deepseek_client_class(R1Peer()))
    for expected in (first, again):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
        assert capsys.readouterr().out.splitlines()[-1] == expected


def test_the_openai_example_says_when_it_needs_a_key():
    # (tests/test_adapters_plugin_example.py runs it against R1Peer)
    import os
    import subprocess
    import sys

    path = ROOT / "examples" / "openai_deepseek.py"
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPSEEK_API_KEY", "OPENAI_API_KEY")}
    run = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "set DEEPSEEK_API_KEY" in run.stderr and "Traceback" not in run.stderr


def test_the_fake_deepseek_snippet_of_the_adapters_guide_runs():
    import asyncio

    guide = (ROOT / "docs" / "adapters.md").read_text()
    code = re.search(r"## Testing against a fake R1 server.*?```python\n(.*?)```", guide, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "docs/adapters.md", "exec"), scope)
    reply = asyncio.run(scope["client"].chat.completions.create(
        model="deepseek-reasoner", messages=[{"role": "user", "content": "Is AAPL overbought?"}]))
    assert reply.choices[0].message.reasoning_content and len(scope["peer"].calls) == 1
