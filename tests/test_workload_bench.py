"""`r1mw bench` runs every benchmark it can and reports each one (figures are not asserted)."""

from __future__ import annotations

import json

import pytest

from r1mw import cli


def test_bench_reports_every_benchmark(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = cli.main(["bench", "--n", "200", "--clients", "20", "--seconds", "0.3", "--speed", "0.00001",
                     "--semantic-sizes", "200", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "exact hit in RAM" in text and "load:" in text
    report = json.loads(out.read_text())
    names = [r["name"] for r in report["rows"]]
    assert not [r for r in report["rows"] if r["note"].startswith("failed")], report["rows"]
    assert any(n.startswith("exact hit in RAM, all stages") for n in names)
    assert any(n.startswith("tier l1: get") for n in names)
    assert any(n.startswith("miss overhead") for n in names)
    load = next(r for r in report["rows"] if r["name"].startswith("load:"))
    assert load["n"] > 0 and load["errors"] == 0 and load["peak_rss_mb"] > 0
    hot = next(r for r in report["rows"] if r["name"].startswith("exact hit in RAM, all stages"))
    assert hot["n"] == 200 and hot["p50_us"] > 0


def test_a_misspelt_benchmark_name_is_a_usage_error(capsys) -> None:
    # `--only semantc` ran nothing, printed an empty table and exited 0
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", "--only", "hot,semantc"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'semantc'" in err and "hot,tiers,miss,templates,semantic,load" in err
