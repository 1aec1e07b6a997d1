"""A stateful model of the context cache over l1,l2: set/get/delete/restart against a dict."""

from __future__ import annotations

import asyncio

from hypothesis import settings as hsettings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import r1mw
from r1mw.context import normalize

KEYS = st.sampled_from(["q1", "q2", "q3", ("doc", 1), ("doc", 2), "q4", "q5"])
NAMESPACES = st.sampled_from(["", "desk-a"])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=5) | st.binary(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6,
)


class ContextCacheModel(RuleBasedStateMachine):
    """RAM holds 2 entries: most reads go down to the disk tier, and restarts empty RAM."""

    @initialize()
    def start(self):
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="r1mw-ctx-model-")
        self.loop = asyncio.new_event_loop()
        self.model: dict[tuple[str, object], object] = {}
        self.pipe = self._open()

    def _open(self):
        pipe = r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1,l2", l1_size=2, cache_dir=self.dir))
        self.loop.run_until_complete(pipe.start())
        return pipe

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    @rule(key=KEYS, ns=NAMESPACES, value=VALUES)
    def set(self, key, ns, value):
        self.run(self.pipe.context_cache.set(key, value, namespace=ns))
        self.model[(ns, key)] = normalize(value)

    @rule(key=KEYS, ns=NAMESPACES)
    def get(self, key, ns):
        missing = object()
        got = self.run(self.pipe.context_cache.get(key, missing, namespace=ns))
        expected = self.model.get((ns, key), missing)
        assert got is missing if expected is missing else got == expected

    @rule(key=KEYS, ns=NAMESPACES)
    def delete(self, key, ns):
        found = self.run(self.pipe.context_cache.delete(key, namespace=ns))
        assert found == ((ns, key) in self.model)
        self.model.pop((ns, key), None)

    @rule()
    def restart(self):
        self.run(self.pipe.close())
        self.pipe = self._open()

    @invariant()
    def ram_stays_bounded(self):
        if hasattr(self, "pipe"):
            assert self.pipe.stats()["tiers"]["l1"]["entries"] <= 2

    def teardown(self):
        import shutil

        if hasattr(self, "pipe"):
            self.run(self.pipe.close())
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


ContextCacheModel.TestCase.settings = hsettings(max_examples=25, stateful_step_count=25, deadline=None)
test_context_cache_model = ContextCacheModel.TestCase
