"""`r1mw litellm-config PATH`: a LiteLLM config checked before a service starts with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1mw.cli import main

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "litellm_config.yaml"


def test_prints_the_settings_the_shipped_config_maps_to(monkeypatch, capsys):
    monkeypatch.setenv("REDIS_HOST", "10.0.0.7")
    monkeypatch.setenv("REDIS_PORT", "6380")
    assert main(["litellm-config", str(CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "redis://10.0.0.7:6380/0" in out
    assert "R1MW_NAMESPACE" in out and "trading-desk" in out
    assert "R1MW_DEFAULT_TTL" in out and "86400" in out
    assert "max_context_expansion: 2000000 tokens" in out


def test_a_bad_config_exits_2_with_one_line_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "config.yaml"
    bad.write_text("litellm_settings:\n  cache: true\nr1_optimizations:\n  prefetchh: true\n")
    assert main(["litellm-config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "r1_optimizations.prefetchh: unknown key" in err


def test_a_missing_environment_variable_is_named(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_HOST", raising=False)
    assert main(["litellm-config", str(CONFIG)]) == 2
    assert "REDIS_HOST is not set" in capsys.readouterr().err


@pytest.mark.parametrize("text,line,what", [
    ("litellm_settings:\n  cache: true\n  cache_params:\n    type: [unclosed\n", 5, "expected ',' or ']'"),
    ("litellm_settings:\n  cache: true\n    ttl: 3\n", 3, "mapping values are not allowed here"),
    ("\tlitellm_settings: {}\n", 1, "found character '\\t'"),
])
def test_invalid_yaml_is_one_line_naming_file_line_and_what(tmp_path, capsys, text, line, what):
    bad = tmp_path / "config.yaml"
    bad.write_text(text)
    assert main(["litellm-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # PyYAML's own message spans five lines, with a caret
    assert f"{bad}:{line}: invalid YAML: " in err and what in err
