"""The plugin system as a third-party team uses it: plugins written from docs/plugins.md and
r1mw.protocols, registered next to the built-ins, with bugs of their own."""

from __future__ import annotations

import types

import pytest

import r1mw
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
