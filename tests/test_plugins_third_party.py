"""The plugin system as a third-party team uses it: plugins written from docs/plugins.md and
r1mw.protocols, registered next to the built-ins, with bugs of their own."""

from __future__ import annotations

import logging
import types

import msgpack

import pytest

import r1mw
from r1mw.observe.alerts import AlertEngine, sample_pipeline
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio

Q = [{"role": "user", "content": "Analyze AAPL using RSI(14) mean reversion"}]


def plugin(name: str, **hooks):
    """A plugin module named ``name`` with the given functions as hook implementations."""
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, r1mw.hookimpl(function))
    return module


def boom(*args, **kwargs):
    raise RuntimeError("the plugin's own bug")


class Passing:
    name = "passing"

    def __init__(self, pipeline):
        pass

    async def handle(self, request, call_next):
        return await call_next(request)


class FailsToStart(Passing):
    async def start(self):
        raise RuntimeError("the plugin's own bug")


# -- start-up: one line naming the plugin ------------------------------------------------------

START_UP_FAULTS = {
    "r1mw_register_stages": ("exact", {"r1mw_register_stages": boom}),
    "r1mw_register_tiers": ("exact", {"r1mw_register_tiers": boom}),
    "r1mw_register_codecs": ("exact", {"r1mw_register_codecs": boom}),
    "r1mw_register_templates": ("template,exact", {"r1mw_register_templates": boom}),
    "r1mw_pipeline_started": ("exact", {"r1mw_pipeline_started": boom}),
    "stage start()": ("fails,exact", {"r1mw_register_stages": lambda: {"fails": FailsToStart}}),
}


@pytest.mark.parametrize("where", sorted(START_UP_FAULTS))
async def test_a_plugin_failing_at_start_up_is_one_plugin_error_line_naming_it(where):
    stages, hooks = START_UP_FAULTS[where]
    pipe = r1mw.Pipeline(r1mw.Settings(stages=stages, tiers="l1"), plugins=[plugin("acme.fragile", **hooks)])
    with pytest.raises(r1mw.PluginError) as err:
        await pipe.start()
    message = str(err.value)
    assert "'acme.fragile'" in message and "the plugin's own bug" in message and "\n" not in message
    assert isinstance(err.value.__cause__, RuntimeError)
    with pytest.raises(r1mw.PipelineStateError):  # a failed start leaves nothing running
        await pipe.handle(pipe.request("m", Q, {}, {}, upstream=FakeR1()))


async def test_two_plugins_registering_one_stage_name_are_both_named():
    class MyExact(Passing):
        name = "exact"

    mine = plugin("acme.exact", r1mw_register_stages=lambda: {"exact": MyExact})
    with pytest.raises(r1mw.PluginError) as err:
        await r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1"), plugins=[mine]).start()
    message = str(err.value)
    assert "'acme.exact'" in message and "'r1mw.exact'" in message
    assert "R1MW_DISABLE_PLUGINS=r1mw.exact" in message
    # what the message says to do replaces the built-in stage
    settings = r1mw.Settings(stages="exact", tiers="l1", disable_plugins="r1mw.exact")
    async with r1mw.Pipeline(settings, plugins=[mine]) as pipe:
        assert [type(stage) for stage in pipe.stages] == [MyExact]


# -- observers: one that raises starves nobody -------------------------------------------------


class Recorder:
    """A well-behaved observer."""

    __name__ = "acme.recorder"

    def __init__(self):
        self.events = []
        self.alerts = []
        self.closing = 0

    @r1mw.hookimpl
    def r1mw_events(self, pipeline, events):
        self.events += events

    @r1mw.hookimpl
    def r1mw_alert(self, pipeline, alert):
        self.alerts.append(alert["name"])

    @r1mw.hookimpl
    def r1mw_pipeline_closing(self, pipeline):
        self.closing += 1


BROKEN = plugin("acme.broken", r1mw_events=boom, r1mw_alert=boom, r1mw_pipeline_closing=boom)


@pytest.mark.parametrize("order", ["broken-last", "broken-first"])
async def test_an_observer_that_raises_does_not_starve_the_others(order, caplog):
    recorder = Recorder()
    plugins = [recorder, BROKEN] if order == "broken-last" else [BROKEN, recorder]
    settings = r1mw.Settings(stages="metrics,exact", tiers="l1", alert_hit_rate_below=0.5,
                             alert_min_requests=1, alert_interval_s=3600)
    with caplog.at_level(logging.WARNING):
        async with r1mw.Pipeline(settings, plugins=plugins) as pipe:
            llm = r1mw.wrap(FakeR1(), pipe)
            engine = AlertEngine.from_settings(pipe.settings, clock=lambda: 1e6)
            engine.observe(sample_pipeline(pipe, 1e6 - 10))
            for question in ("q1", "q2"):  # two misses: hit rate 0, the rule fires
                assert await llm(model="m", messages=[{"role": "user", "content": question}])
            pipe.events.flush()
            fired = engine.tick(pipe, 1e6)
    assert [e.kind for e in recorder.events].count("served") == 2
    assert len(recorder.events) == pipe.stats()["events"]["delivered"]
    assert [a["name"] for a in fired] == recorder.alerts == ["hit_rate_low"]
    assert "hit_rate_low" in caplog.text  # the built-in r1mw.alerts observer logged it too
    assert recorder.closing == 1
    # each failure is logged once, naming the plugin
    failures = [r.getMessage() for r in caplog.records if "acme.broken" in r.getMessage()]
    assert sorted(failures) == ["plugin 'acme.broken': r1mw_alert failed",
                                "plugin 'acme.broken': r1mw_events failed",
                                "plugin 'acme.broken': r1mw_pipeline_closing failed"]


# -- a codec of one's own -----------------------------------------------------------------------


class PlainMsgpack:
    """A codec written from r1mw.protocols.Codec: its bytes are no r1mw envelope."""

    name = "acme-msgpack"

    def __init__(self, pipeline):
        self.decoded = 0

    def encode(self, value):
        return msgpack.packb(value, use_bin_type=True)

    def decode(self, data):
        self.decoded += 1
        try:
            return msgpack.unpackb(bytes(data), raw=False)
        except Exception as exc:
            raise r1mw.CodecError(f"not acme-msgpack: {exc}") from None


ACME_CODEC = plugin("acme.codec", r1mw_register_codecs=lambda: {"acme-msgpack": PlainMsgpack})


async def test_a_plugin_codec_reads_back_what_it_wrote_to_the_disk_tier():
    settings = r1mw.Settings(stages="exact", tiers="l1,l2", codec="acme-msgpack")
    fake = FakeR1()
    async with r1mw.Pipeline(settings, plugins=[ACME_CODEC]) as pipe:
        first = await r1mw.wrap(fake, pipe)(model="m", messages=Q)
    async with r1mw.Pipeline(settings, plugins=[ACME_CODEC]) as pipe:  # a restart: RAM is empty
        again = await r1mw.wrap(fake, pipe)(model="m", messages=Q)
        assert pipe.stats()["hits_by"] == {"exact:l2": 1} and pipe.store.codec.decoded == 1
        assert pipe.store.stats()["l2"]["corrupt"] == 0
    assert len(fake.calls) == 1 and again["choices"][0]["message"] == first["choices"][0]["message"]
    # bytes its decode refuses are a miss (counted), never an error
    async with r1mw.Pipeline(settings, plugins=[ACME_CODEC]) as pipe:
        await pipe.store.tiers[1].set(b"k" * 16, b"\xc1 not msgpack")
        assert await pipe.store.get(b"k" * 16) is None
        assert pipe.store.stats()["l2"]["corrupt"] == 1


# -- plugin names ------------------------------------------------------------------------------


async def test_a_misspelt_disabled_plugin_is_a_config_error_listing_the_plugins():
    settings = r1mw.Settings(stages="exact", tiers="l1", disable_plugins="semantic")  # means r1mw.semantic
    with pytest.raises(r1mw.ConfigError) as err:
        await r1mw.Pipeline(settings).start()
    message = str(err.value)
    assert "R1MW_DISABLE_PLUGINS" in message and "'semantic'" in message and "r1mw.semantic" in message
    # a plugin given by object can be disabled by its name too
    settings = r1mw.Settings(stages="exact", tiers="l1", disable_plugins="acme.fragile")
    async with r1mw.Pipeline(settings, plugins=[plugin("acme.fragile", r1mw_pipeline_started=boom)]) as pipe:
        assert pipe.stage("exact") is not None


async def test_plugin_objects_registered_twice_or_under_one_name():
    import r1mw_plugins.exact  # installed through its entry point already: passing it again is harmless

    async with r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1"), plugins=[r1mw_plugins.exact]) as pipe:
        assert pipe.stage("exact") is not None
    twins = [plugin("acme.twin", r1mw_pipeline_started=lambda pipeline: None) for _ in range(2)]
    with pytest.raises(r1mw.PluginError, match="two plugins are named 'acme.twin'"):
        await r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1"), plugins=twins).start()
