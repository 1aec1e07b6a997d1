"""The prefetch budget is one budget for every process sharing a cache directory."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest
from hypothesis import settings as hsettings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import r1mw
from r1mw.budget import SharedBudget
from r1mw.testing import FakeR1

from test_prefetch import ask, pipeline, run_sessions, settle

LIMITS = dict(max_inflight=3, max_per_minute=5, tokens_per_hour=5000)


class SharedBudgetMachine(RuleBasedStateMachine):
    """Three workers on one ledger, random traffic, crashes and restarts: the limits hold for
    the three together. A crashed worker's calls count as spent at their reservation."""

    def __init__(self):
        super().__init__()
        self.now = 1_000_000.0
        self.dir = tempfile.mkdtemp()
        self.workers = [self._worker() for _ in range(3)]
        self.grants = []     # (worker index, grant)
        self.starts = []
        self.spent = []      # (when, tokens): what the desk was billed, as the ledger counts it

    def _worker(self):
        return SharedBudget(self.dir, clock=lambda: self.now, **LIMITS)

    @rule(w=st.integers(0, 2), estimate=st.integers(1, 3000))
    def acquire(self, w, estimate):
        grant = self.workers[w].try_acquire(estimate)
        if grant is not None:
            self.grants.append((w, grant))
            self.starts.append(self.now)

    @precondition(lambda self: self.grants)
    @rule(data=st.data())
    def release(self, data):
        w, grant = self.grants.pop(data.draw(st.integers(0, len(self.grants) - 1)))
        spent = data.draw(st.integers(0, grant.reserved))  # a reply costs at most its reservation
        self.workers[w].release(grant, spent)
        self.spent.append((self.now, spent))

    @rule(w=st.integers(0, 2))
    def crash_and_restart(self, w):
        # killed: its lock goes with it, nothing is written on the way out
        self.workers[w]._alive.close()
        self.workers[w]._alive = None
        for grant in [g for i, g in self.grants if i == w]:
            self.spent.append((grant.started, grant.reserved))
        self.grants = [(i, g) for i, g in self.grants if i != w]
        self.workers[w] = self._worker()

    @rule(seconds=st.floats(0, 900))
    def wait(self, seconds):
        self.now += seconds

    @invariant()
    def limits_hold_for_all_workers_together(self):
        assert all(w.shared for w in self.workers)
        assert len(self.grants) <= 3
        assert sum(1 for t in self.starts if t > self.now - 60) <= 5
        reserved = sum(g.reserved for _, g in self.grants)
        assert sum(s for t, s in self.spent if t > self.now - 3600) + reserved <= 5000

    def teardown(self):
        for w in self.workers:
            w.close()


TestSharedBudget = SharedBudgetMachine.TestCase
TestSharedBudget.settings = hsettings(max_examples=40, stateful_step_count=40, deadline=None)


_HOLDER = textwrap.dedent("""
    import sys
    from r1mw.budget import SharedBudget
    budget = SharedBudget(sys.argv[1], max_inflight=1, max_per_minute=10, tokens_per_hour=1000)
    assert budget.shared and budget.try_acquire(600) is not None
    print("holding", flush=True)
    sys.stdin.read()  # until killed
""")


def test_another_process_s_call_counts_until_it_dies_then_its_reservation_is_spent(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        here = SharedBudget(tmp_path, max_inflight=1, max_per_minute=10, tokens_per_hour=1000)
        assert here.try_acquire(100) is None and here.refused["inflight"] == 1  # its call is in flight
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # It died mid-call: no longer in flight, but what it may have been billed is spent.
    assert here.try_acquire(500) is None and here.refused["tokens"] == 1
    grant = here.try_acquire(400)
    assert grant is not None and here.spent_last_hour() == 600 and here.inflight == 1
    here.release(grant, 300)
    assert here.spent_last_hour() == 900 and here.inflight == 0
    here.close()
    assert os.listdir(tmp_path) == ["budget.ledger"]  # no one's alive-file left


@pytest.mark.anyio
async def test_two_pipelines_on_one_cache_directory_share_one_token_budget(tmp_path):
    # Two worker processes of one service (here two pipelines: the same files) used to have the
    # whole budget each: 60 tokens an hour was 120.
    fake = FakeR1()
    async with pipeline(cache_dir=str(tmp_path), prefetch_token_budget=60) as one, \
            pipeline(cache_dir=str(tmp_path), prefetch_token_budget=60) as two:
        stats = {}
        for name, pipe in (("one", one), ("two", two)):
            llm = r1mw.wrap(fake, pipe)
            await run_sessions(llm, ["AAPL", "MSFT", "TSLA"], session_prefix=name)
            await settle(pipe)
            for i, t in enumerate(["NVDA", "AMD", "INTC"]):
                await llm(model="r1", messages=ask(f"Analyze {t} using RSI"), cache={"session": f"{name}-n{i}"})
                await settle(pipe, until=lambda s: s["issued"] + s["refused"]["tokens"] > i)
            stats[name] = pipe.stage("prefetch").stats()
    assert stats["one"]["tokens_spent"] + stats["two"]["tokens_spent"] == 60  # two 30-token calls in all
    assert stats["two"]["refused"]["tokens"] >= 1 and stats["two"]["tokens_last_hour"] == 60


def test_a_damaged_ledger_is_a_warning_and_a_fresh_hour(tmp_path, caplog):
    budget = SharedBudget(tmp_path, max_inflight=2, max_per_minute=10, tokens_per_hour=1000)
    budget.release(budget.try_acquire(500), 500)
    (tmp_path / "budget.ledger").write_bytes(b"\x00\x00\x00\x09garbage")
    with caplog.at_level(logging.WARNING, logger="r1mw.budget"):
        grant = budget.try_acquire(900)
    assert grant is not None and "unreadable ledger" in caplog.text
    budget.release(grant, 900)
    assert SharedBudget(tmp_path, max_inflight=2, max_per_minute=10, tokens_per_hour=1000).spent_last_hour() == 900


def test_where_no_ledger_can_be_kept_each_process_keeps_its_own_budget(tmp_path, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    with caplog.at_level(logging.WARNING, logger="r1mw.budget"):
        budget = SharedBudget(blocked / "prefetch", max_inflight=1, max_per_minute=10, tokens_per_hour=1000)
    assert not budget.shared and "keeps its own budget" in caplog.text
    grant = budget.try_acquire(600)
    assert grant is not None and budget.try_acquire(100) is None  # the limits still hold, per process
    budget.release(grant, 600)
    assert budget.spent_last_hour() == 600
    budget.close()
