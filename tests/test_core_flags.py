"""Flag values that were accepted silently although they are not what the flag allows."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from hypothesis import given, settings as hsettings, strategies as st

import r1mw
from r1mw.cli import SHARE, check_numbers, main


@pytest.mark.parametrize("name, raw", [
    ("R1MW_L1_MAX_BYTES", "0.5"),  # was truncated to 0, which means unbounded
    ("R1MW_L2_MAX_BYTES", "0.9"),
    ("R1MW_REDIS_TIMEOUT_MS", "inf"),
    ("R1MW_ALERT_WINDOW_S", "inf"),
    ("R1MW_METRICS_SNAPSHOT_INTERVAL_S", "1e400"),  # float() overflows to inf
    ("R1MW_REDIS_BREAKER_COOLDOWN_S", "inf"),
    ("SIMILARITY_THRESHOLD", "nan"),
])
def test_a_size_rounding_to_zero_or_a_number_that_is_not_finite_is_refused(name, raw):
    with pytest.raises(r1mw.ConfigError) as err:
        r1mw.Settings.from_env({name: raw}, dotenv=None)
    message = str(err.value)
    assert name in message and repr(raw) in message and "expected" in message and "\n" not in message


def test_sizes_and_numbers_that_mean_something_still_pass():
    s = r1mw.Settings.from_env({"R1MW_L1_MAX_BYTES": "0", "R1MW_L2_MAX_BYTES": "0.5KB",
                                "R1MW_L4_MAX_BYTES": "0.0", "R1MW_REDIS_TIMEOUT_MS": "1e3"}, dotenv=None)
    assert (s.l1_max_bytes, s.l2_max_bytes, s.l4_max_bytes, s.redis_timeout_ms) == (0, 500, 0, 1000.0)


@pytest.mark.parametrize("line", ["R1MW_NAMESPACE", "export R1MW_NAMESPACE", "CACHE_L1_SIZE"])
def test_a_dotenv_line_naming_a_flag_without_a_value_is_a_config_error(tmp_path, line):
    env = tmp_path / "custom.env"
    env.write_text(f"R1MW_STAGES=exact\n{line}\nOTHER_TOOL_FLAG\n")  # a tenant boundary would be lost
    with pytest.raises(r1mw.ConfigError) as err:
        r1mw.Settings.from_env({}, dotenv=env)
    message = str(err.value)
    assert line.split()[-1] in message and "line 2" in message and "\n" not in message
    env.write_text("R1MW_NAMESPACE=\nOTHER_TOOL_FLAG\n")  # empty on purpose, and foreign names: fine
    assert r1mw.Settings.from_env({}, dotenv=env).namespace == ""


@pytest.mark.parametrize("name, value, unknown", [
    ("R1MW_STAGES", "exact,bogus", "'bogus'"),
    ("R1MW_TIERS", "l1,l9", "'l9'"),
    ("R1MW_CODEC", "msgpack+nope", "'msgpack+nope'"),
])
def test_r1mw_config_checks_plugin_names_as_pipeline_start_does(monkeypatch, capsys, name, value, unknown):
    monkeypatch.setenv(name, value)
    assert main(["config"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert name in err and unknown in err and "available:" in err and "\n" not in err
    assert captured.out == ""  # no table of settings that would not start
    monkeypatch.delenv(name)
    assert main(["config"]) == 0


@pytest.mark.anyio
async def test_a_model_that_cannot_load_is_a_one_line_config_error(monkeypatch):
    from r1mw.semantic import embedder as module

    def load_model(name):  # what huggingface_hub raises offline: several lines
        raise OSError("Got: ConnectError: Name or service not known\nAn error happened while trying to "
                      "locate the files on the Hub.\n\nPlease check your internet connection.")

    monkeypatch.setattr(module, "load_model", load_model)
    with pytest.raises(r1mw.ConfigError) as err:
        await module.Model2VecEmbedder("someone/some-model").load()
    message = str(err.value)
    assert "R1MW_EMBED_MODEL='someone/some-model'" in message and "locate the files" in message
    assert "\n" not in message and "expected" in message


@pytest.mark.parametrize("argv", [
    ["report", "{ok}", "--out", "{missing}/r.html"],
    ["report", "{ok}", "--out", "{tmp}"],  # a directory
    ["templates", "export", "--out", "{missing}/t.json"],
    ["bench", "--only", "hot", "--n", "10", "--json", "{missing}/b.json"],
])
def test_a_file_the_command_cannot_write_is_one_line_not_a_traceback(tmp_path, capsys, argv):
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"ts": 1700000000, "started": 1, "outcomes": {"miss": 1}}\n')
    names = {"ok": str(ok), "missing": str(tmp_path / "no-such-dir"), "tmp": str(tmp_path)}
    capsys.readouterr()
    assert main([arg.format(**names) for arg in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("r1mw: ") and str(tmp_path) in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv,flag", [
    (["demo", "--stream-share", "2"], "--stream-share=2.0"),
    (["demo", "--error-rate", "-0.1"], "--error-rate=-0.1"),
    (["demo", "--concurrency", "0"], "--concurrency=0"),
    (["demo", "--think-scale", "-1"], "--think-scale=-1.0"),
    (["demo", "--burst-clients", "0"], "--burst-clients=0"),
    (["demo", "--burst-requests", "-5"], "--burst-requests=-5"),
    (["demo", "--price-out", "-1"], "--price-out=-1.0"),
    (["demo", "--speed", "inf"], "--speed=inf"),
    (["demo", "--think-s", "-5"], "think_s=-5.0"),  # was a math domain error traceback
    (["demo", "--hours", "0"], "hours=0.0"),
    (["bench", "--clients", "0"], "--clients=0"),
    (["bench", "--seconds", "0"], "--seconds=0.0"),
    (["bench", "--n", "-1"], "--n=-1"),
    (["zstd-dict", "--size", "10"], "--size=10"),
    (["zstd-dict", "--samples", "5"], "--samples=5"),
])
def test_a_numeric_option_out_of_range_is_a_one_line_usage_error(capsys, argv, flag):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert flag in captured.err and "is invalid: expected" in captured.err


@given(share=st.floats(allow_nan=True).filter(lambda v: not 0.0 <= v <= 1.0))
@hsettings(max_examples=50, deadline=None)
def test_any_stream_share_outside_0_1_is_refused_before_the_demo_runs(share):
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["demo", f"--stream-share={share!r}"]) == 2
    assert err.getvalue().count("\n") == 1 and "expected a share in [0, 1]" in err.getvalue()


@given(share=st.floats(0.0, 1.0), rate=st.floats(0.0, 1.0))
def test_every_share_in_0_1_passes_the_check(share, rate):
    check_numbers(argparse.Namespace(stream_share=share, error_rate=rate), {"stream_share": SHARE, "error_rate": SHARE})


def test_the_workload_command_refuses_a_bad_flag_in_one_line(capsys):
    from r1mw.workload.generator import main as workload_main

    assert workload_main(["--think-s", "-5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "think_s=-5.0 is invalid" in err


def test_semantic_sizes_below_one_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--semantic-sizes", "0/10"])
    assert exit_.value.code == 2 and "expected sizes >= 1" in capsys.readouterr().err


RULE = "template before exact and semantic, prefetch before template and exact"


@pytest.mark.parametrize("stages, late, early", [
    ("exact,template", "template", "exact"),  # template keying would silently be off
    ("metrics,exact,semantic,template", "template", "exact"),
    ("semantic,template", "template", "semantic"),
    ("metrics,template,exact,semantic,prefetch", "prefetch", "template"),  # prefetch would see only misses
    ("template,exact,prefetch", "prefetch", "template"),
])
def test_built_in_stages_out_of_order_are_refused_at_start_up_in_one_line(monkeypatch, capsys, stages, late, early):
    with pytest.raises(r1mw.ConfigError) as err:
        r1mw.Settings.from_env({"R1MW_STAGES": stages}, dotenv=None)
    message = str(err.value)
    assert f"R1MW_STAGES={stages!r}" in message and RULE in message and "\n" not in message
    assert f"{late} is listed after {early}" in message
    with pytest.raises(r1mw.ConfigError, match="R1MW_STAGES"):
        r1mw.Settings(stages=stages)
    monkeypatch.setenv("R1MW_STAGES", stages)
    assert main(["config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and RULE in captured.err and captured.err.count("\n") == 1


@pytest.mark.parametrize("stages", [
    "metrics,prefetch,template,exact,semantic", "exact", "template,exact", "exact,semantic", "prefetch,semantic",
    "semantic,prefetch", "template,semantic,exact", "metrics",
])
def test_orders_that_mean_something_are_kept(stages):
    assert ",".join(r1mw.Settings.from_env({"R1MW_STAGES": stages}, dotenv=None).stages) == stages


@pytest.mark.anyio
async def test_a_plugin_stage_may_run_anywhere_among_the_built_in_ones():
    seen: list[str] = []

    class Audit:
        name = "audit"

        def __init__(self, pipeline: r1mw.Pipeline) -> None:
            pass

        async def handle(self, request, call_next):
            seen.append(request.meta.get("template_id") or "-")
            return await call_next(request)

    class Plugin:
        @r1mw.hookimpl
        def r1mw_register_stages(self):
            return {"audit": Audit}

    async def llm(**kwargs):
        return {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}

    for stages in ("audit,prefetch,template,exact", "prefetch,template,audit,exact", "template,exact,audit"):
        async with r1mw.Pipeline(r1mw.Settings(stages=stages, tiers="l1"), plugins=[Plugin()]) as pipe:
            assert [s.name for s in pipe.stages] == stages.split(",")
            await r1mw.wrap(llm, pipe)(model="m", messages=[{"role": "user", "content": "hi"}])
    assert len(seen) == 3


def test_r1mw_config_shows_the_stage_order_rule(capsys):
    assert main(["config"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "R1MW_STAGES" in line)
    assert "outermost first (template before exact and semantic" in row


TIER_RULE = "l1, l2, l3, l4, redis in that order"


@pytest.mark.parametrize("tiers, late, early", [
    ("l2,l1", "l1", "l2"),  # every lookup would go to disk first, RAM only behind it
    ("l1,l4,l3", "l3", "l4"),  # the archive would evict into the segment tier
    ("l1,redis,l2", "l2", "redis"),  # Redis before a local tier stops demotion (docs/design.md)
    ("redis,l1", "l1", "redis"),
])
def test_built_in_tiers_out_of_order_are_refused_at_start_up_in_one_line(monkeypatch, capsys, tiers, late, early):
    with pytest.raises(r1mw.ConfigError) as err:
        r1mw.Settings.from_env({"R1MW_TIERS": tiers}, dotenv=None)
    message = str(err.value)
    assert f"R1MW_TIERS={tiers!r}" in message and TIER_RULE in message and "\n" not in message
    assert f"{late} is listed after {early}" in message
    monkeypatch.setenv("R1MW_TIERS", tiers)
    assert main(["config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and TIER_RULE in captured.err and captured.err.count("\n") == 1


@pytest.mark.parametrize("tiers", [
    "l1,l2", "l1", "l2", "l1,l2,l3,l4,redis", "l1,redis", "l1,l3,l4", "l1,l2,redis", "shared",
    "l1,dynamo,l2", "dynamo,l1",  # a plugin's tier goes anywhere
])
def test_tier_orders_that_mean_something_are_kept(tiers):
    assert ",".join(r1mw.Settings.from_env({"R1MW_TIERS": tiers}, dotenv=None).tiers) == tiers


@pytest.mark.parametrize("line, meant", [
    ("SIMILARITY_TRESHOLD=0.9", "SIMILARITY_THRESHOLD"),  # a flag without the R1MW_ prefix, misspelt
    ("CACHE_L1_SIZ=50", "CACHE_L1_SIZE"),
    ("R1_CONTEXT_PREFETCH_ENABLE=false", "R1_CONTEXT_PREFETCH_ENABLED"),
    ("EMBEDDINGS_CACHE_SIZE=10", "EMBEDDING_CACHE_SIZE"),
    ("RIMW_STAGES=exact", "R1MW_STAGES"),  # the prefix itself misspelt
    ("r1mw_stages=exact", "R1MW_STAGES"),  # names are upper case: it kept its default
    ("similarity_threshold=0.9", "SIMILARITY_THRESHOLD"),
])
def test_a_misspelt_flag_in_dotenv_is_a_one_line_error_naming_it(tmp_path, line, meant):
    env = tmp_path / ".env"
    env.write_text(f"OPENAI_API_KEY=sk-test\n{line}\n")
    with pytest.raises(r1mw.ConfigError) as err:
        r1mw.Settings.from_env({}, dotenv=env)
    message = str(err.value)
    name = line.split("=")[0]
    assert f"{name}=" in message and "not an r1mw flag" in message and f"did you mean {meant}?" in message
    assert "\n" not in message


def test_other_tools_names_in_dotenv_are_left_alone(tmp_path):
    env = tmp_path / ".env"
    names = ("OPENAI_API_KEY", "DEEPSEEK_API_KEY", "REDIS_HOST", "REDIS_PORT", "REDIS_URL", "CACHE_DIR",
             "CACHE_SIZE", "LOG_LEVEL", "ALERT_WEBHOOK_URL", "DATABASE_URL", "HF_HOME", "R1_API_KEY")
    env.write_text("".join(f"{name}=x\n" for name in names))
    assert r1mw.Settings.from_env({}, dotenv=env) == r1mw.Settings()


def test_a_lower_case_flag_in_the_environment_is_an_error_too():
    with pytest.raises(r1mw.ConfigError, match="did you mean R1MW_NAMESPACE"):
        r1mw.Settings.from_env({"r1mw_namespace": "desk-a"}, dotenv=None)


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_help_states_each_default_once_and_no_none(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in out and "(default: False)" not in out
    assert "(default 2000) (default: 2000)" not in out and "(default: 2000) (default: 2000)" not in out
    if command == "demo":
        assert "analyst sessions (default: 60)" in out and "(default: --seed)" in out
        assert "every registered stage of metrics,prefetch,template,exact,semantic)" in out


def test_help_still_prints_when_dotenv_holds_a_bad_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CACHE_L1_SIZE=abc\n")
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    captured = capsys.readouterr()
    assert "COMMAND" in captured.out and "config" in captured.out
    assert "CACHE_L1_SIZE='abc' is invalid" in captured.err  # said once, before the help
    assert main(["config"]) == 2  # a command still stops on it
    assert captured.err.count("\n") == 1
