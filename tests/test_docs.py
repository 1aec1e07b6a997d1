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
