"""Alert rules fire and clear on scripted traffic, driven with an injected clock (no sleeps)."""

from __future__ import annotations

import asyncio

import logging

import pytest

import r1mw
from r1mw.observe.alerts import AlertEngine, Sample, sample_pipeline
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio


class Collect:
    """An r1mw_alert observer, registered like any plugin."""

    __name__ = "collect-alerts"

    def __init__(self):
        self.alerts = []

    @r1mw.hookimpl
    def r1mw_alert(self, pipeline, alert):
        self.alerts.append(dict(alert))


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def msgs(text):
    return [{"role": "user", "content": text}]


async def test_hit_rate_rule_fires_and_clears_on_scripted_traffic(caplog):
    collect = Collect()
    settings = r1mw.Settings(stages="metrics,exact", alert_hit_rate_below=0.5, alert_window_s=60,
                             alert_min_requests=10, alert_interval_s=3600)
    async with r1mw.Pipeline(settings, plugins=[collect]) as pipe:
        llm = r1mw.wrap(FakeR1(), pipe)
        clock = Clock()
        engine = AlertEngine.from_settings(pipe.settings, clock=clock)
        engine.observe(sample_pipeline(pipe, clock()))
        # t=0..10: 10 distinct questions, all misses -> hit rate 0 < 0.5: fires
        for i in range(10):
            await llm(model="m", messages=msgs(f"q{i}"))
        clock.t += 10
        with caplog.at_level(logging.WARNING, logger="r1mw.alerts"):
            fired = engine.tick(pipe)
        assert [(a["name"], a["state"]) for a in fired] == [("hit_rate_low", "firing")]
        assert fired[0]["value"] == 0.0 and fired[0]["threshold"] == 0.5
        assert "hit_rate_low" in caplog.text  # the built-in plugin logs it
        assert engine.firing == ["hit_rate_low"]
        # still low: no new transition
        clock.t += 10
        assert engine.tick(pipe) == []
        # t=20..80: 90 repeats (hits); the window (60 s) now holds only the hits: clears
        for i in range(90):
            await llm(model="m", messages=msgs(f"q{i % 10}"))
        clock.t += 60
        cleared = engine.tick(pipe)
        assert [(a["name"], a["state"]) for a in cleared] == [("hit_rate_low", "resolved")]
        assert cleared[0]["value"] == 1.0
        assert engine.firing == []
    assert [(a["name"], a["state"]) for a in collect.alerts] == [("hit_rate_low", "firing"),
                                                                 ("hit_rate_low", "resolved")]


async def test_error_rate_and_latency_rules():
    # p99 threshold far above what a loaded CI machine adds to an in-RAM miss (no timing luck)
    settings = r1mw.Settings(stages="metrics,exact", tiers="l1", alert_error_rate_above=0.2,
                             alert_p99_ms_above=400, alert_window_s=30, alert_min_requests=5)
    fake = FakeR1()
    async with r1mw.Pipeline(settings) as pipe:
        llm = r1mw.wrap(fake, pipe)
        clock = Clock()
        engine = AlertEngine.from_settings(pipe.settings, clock=clock)
        engine.tick(pipe)
        fake.fail = ConnectionError("upstream down")
        for i in range(5):
            with pytest.raises(ConnectionError):
                await llm(model="m", messages=msgs(f"e{i}"))
        fake.fail = None
        for i in range(5):
            await llm(model="m", messages=msgs(f"ok{i}"))
        clock.t += 5
        fired = {a["name"]: a for a in engine.tick(pipe)}
        assert fired["upstream_error_rate_high"]["state"] == "firing"
        assert fired["upstream_error_rate_high"]["value"] == pytest.approx(0.5)
        assert "latency_p99_high" not in fired  # a fake upstream answers in microseconds
        # a slow upstream pushes p99 over 400 ms
        fake.latency = 0.5
        await asyncio.gather(*(llm(model="m", messages=msgs(f"slow{i}")) for i in range(5)))
        clock.t += 40  # the window now holds only the slow requests: errors gone
        changed = {a["name"]: a["state"] for a in engine.tick(pipe)}
        assert changed == {"latency_p99_high": "firing", "upstream_error_rate_high": "resolved"}


async def test_p99_rule_without_the_metrics_stage_reads_the_window_and_resolves():
    # No metrics stage: the rule reads the core's latencies. They are the newest kept, not the
    # window's, so one slow spell kept the rule firing through later windows of fast traffic.
    settings = r1mw.Settings(stages="exact", tiers="l1", alert_p99_ms_above=400, alert_window_s=60,
                             alert_min_requests=5, alert_interval_s=3600)
    async with r1mw.Pipeline(settings) as pipe:
        assert pipe.stage("metrics") is None
        clock = Clock()
        engine = AlertEngine.from_settings(pipe.settings, clock=clock)
        engine.tick(pipe)
        slow, fast = r1mw.wrap(FakeR1(latency=0.5), pipe), r1mw.wrap(FakeR1(), pipe)
        await asyncio.gather(*(slow(model="m", messages=msgs(f"slow{i}")) for i in range(10)))
        clock.t += 30
        assert [(a["name"], a["state"]) for a in engine.tick(pipe)] == [("latency_p99_high", "firing")]
        for window in range(3):  # windows holding only fast misses (well under 400 ms each)
            clock.t += 120
            for i in range(200):
                await fast(model="m", messages=msgs(f"fast{window}-{i}"))
            expected = [] if window else ["resolved"]  # resolves in the first such window
            assert [a["state"] for a in engine.tick(pipe)] == expected
            assert engine.firing == []
        # and a slow spell after them fires again: the window moved on, nothing was lost
        await asyncio.gather(*(slow(model="m", messages=msgs(f"slow-again{i}")) for i in range(10)))
        clock.t += 120
        assert [a["state"] for a in engine.tick(pipe)] == ["firing"]


class FakeDiskTier:
    """A second tier whose stats say how full it is and whether it can be reached."""

    name = "disk"

    def __init__(self):
        self.bytes, self.up = 10, True

    async def get(self, key):
        return None

    async def set(self, key, value, ttl=None):
        pass

    async def delete(self, key):
        return False

    async def exists(self, key):
        return False

    async def clear(self):
        pass

    def stats(self):
        return {"entries": 1, "bytes": self.bytes, "max_bytes": 100, "up": self.up}


class DiskPlugin:
    __name__ = "fake-disk"

    def __init__(self):
        self.tier = FakeDiskTier()

    @r1mw.hookimpl
    def r1mw_register_tiers(self):
        return {"disk": lambda pipeline: self.tier}


async def test_disk_full_and_redis_down_rules_follow_tier_state():
    plugin = DiskPlugin()
    settings = r1mw.Settings(stages="exact", tiers="l1,disk", alert_disk_full_pct=90, alert_redis_down=True)
    async with r1mw.Pipeline(settings, plugins=[plugin]) as pipe:
        clock = Clock()
        engine = AlertEngine.from_settings(pipe.settings, clock=clock)
        assert engine.tick(pipe) == []
        plugin.tier.bytes, plugin.tier.up = 95, False
        clock.t += 1
        changed = {a["name"]: a for a in engine.tick(pipe)}
        assert changed["disk_tier_full"]["state"] == "firing" and changed["disk_tier_full"]["value"] == 95.0
        assert "tier disk" in changed["disk_tier_full"]["message"]
        assert changed["redis_down"]["state"] == "firing" and "disk" in changed["redis_down"]["message"]
        plugin.tier.bytes, plugin.tier.up = 50, True
        clock.t += 1
        assert {a["name"]: a["state"] for a in engine.tick(pipe)} == {"disk_tier_full": "resolved",
                                                                        "redis_down": "resolved"}


async def test_background_engine_runs_with_the_pipeline_and_is_exported():
    settings = r1mw.Settings(stages="metrics,exact", alert_hit_rate_below=0.9, alert_interval_s=0.01)
    async with r1mw.Pipeline(settings) as pipe:
        engine = pipe.services["alerts"]
        assert engine.states() == {"hit_rate_low": False}
        assert any(t.get_name() == "r1mw-alerts" for t in pipe._background)
    assert not pipe._background  # cancelled at close


async def test_no_rule_means_no_engine():
    async with r1mw.Pipeline(r1mw.Settings(stages="exact")) as pipe:
        assert "alerts" not in pipe.services
    assert AlertEngine.from_settings(r1mw.Settings()) is None


def test_window_keeps_one_base_sample_and_quiet_below_min_requests():
    from r1mw.observe.alerts import Rule, _hit_rate

    engine = AlertEngine([Rule("hit_rate_low", 0.5, _hit_rate, below=True)], window_s=10, min_requests=5)
    engine.observe(Sample(at=0, served=0, hits=0))
    engine.observe(Sample(at=5, served=3, hits=0))
    assert engine.evaluate(5) == []  # 3 requests < min_requests: nothing to say
    engine.observe(Sample(at=12, served=10, hits=0))
    assert engine.evaluate(12)[0]["state"] == "firing"
    engine.observe(Sample(at=30, served=110, hits=100))
    w = engine.window()
    assert (w.served, w.hits) == (100, 100)  # base: the sample at t=12, the newest >= 10 s old
    assert engine.evaluate(30)[0]["state"] == "resolved"


def test_alert_flags_parse_and_reject_bad_values():
    s = r1mw.Settings.from_env({"R1MW_ALERT_HIT_RATE_BELOW": "0.8", "R1MW_ALERT_P99_MS_ABOVE": "off",
                                "R1MW_ALERT_REDIS_DOWN": "yes"}, dotenv=None)
    assert s.alert_hit_rate_below == 0.8 and s.alert_p99_ms_above is None and s.alert_redis_down is True
    with pytest.raises(r1mw.ConfigError, match="R1MW_ALERT_HIT_RATE_BELOW"):
        r1mw.Settings.from_env({"R1MW_ALERT_HIT_RATE_BELOW": "80%"}, dotenv=None)
    with pytest.raises(r1mw.ConfigError, match="R1MW_ALERT_DISK_FULL_PCT"):
        r1mw.Settings.from_env({"R1MW_ALERT_DISK_FULL_PCT": "150"}, dotenv=None)
