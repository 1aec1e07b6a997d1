"""Hardening: single-flight under storms of identical requests, cancellations, failures,
streams closed early and plain requests mixed with streams (hypothesis drives the mix).

Invariants, whatever the interleaving: nobody waits forever (bounded loop steps, not a
clock), every request that completes has the answer to its own question, no key stays in
flight, and what the cache holds afterwards answers the right question.
"""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings as hsettings, strategies as st

import r1mw
from r1mw.errors import StreamIncomplete
from r1mw.testing import FakeR1

QUESTIONS = ["Analyze AAPL", "Analyze MSFT", "Analyze  AAPL"]  # the third differs by a space

_op = st.fixed_dictionaries({
    "q": st.integers(0, len(QUESTIONS) - 1),
    "stream": st.booleans(),
    "delay": st.integers(0, 6),             # loop steps before the request starts
    "cancel_after": st.none() | st.integers(0, 12),
    "read": st.sampled_from(["all", "two_then_close", "two_then_drop"]),
    "no_cache": st.booleans(),
    "no_store": st.booleans(),
})


class Upstream:
    def __init__(self, failures):
        self.fake = FakeR1()
        self.failures = itertools.cycle(failures or [False])
        self.calls = 0

    async def __call__(self, **kwargs):
        self.calls += 1
        fail = next(self.failures)
        for _ in range(3):
            await asyncio.sleep(0)
        if fail:
            raise ConnectionError("upstream down")
        return await self.fake(**kwargs)


async def _scenario(ops, failures, stages="exact", tiers="l1"):
    upstream = Upstream(failures)
    pipe = r1mw.Pipeline(r1mw.Settings(stages=stages, tiers=tiers))
    # L2 writes run in a thread: past the first steps, give them real time (a bound, not a
    # timing assertion: a hang still never ends).
    pause = 0.0 if "l2" not in tiers else 0.002
    await pipe.start()
    llm = r1mw.wrap(upstream, pipe)
    answers: dict[int, str | BaseException] = {}

    async def one(i, op):
        for _ in range(op["delay"]):
            await asyncio.sleep(0)
        messages = [{"role": "user", "content": QUESTIONS[op["q"]]}]
        control = {"no-cache": op["no_cache"], "no-store": op["no_store"]}
        try:
            if not op["stream"]:
                reply = await llm(model="m", messages=messages, cache=control)
                answers[i] = reply["choices"][0]["message"]["content"].rstrip()
                return
            stream = await llm(model="m", messages=messages, cache=control, stream=True)
            if op["read"] == "all":
                text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in stream if c["choices"]])
                answers[i] = text.rstrip()  # FakeR1 streams word + " "
            else:
                n = 0
                async for _ in stream:
                    n += 1
                    if n == 2:
                        break
                if op["read"] == "two_then_close":
                    await stream.aclose()
                del stream  # two_then_drop: garbage, never closed
        except ConnectionError as exc:
            answers[i] = exc

    tasks = [asyncio.ensure_future(one(i, op)) for i, op in enumerate(ops)]
    for step in range(2_000):
        for task, op in zip(tasks, ops):
            if op["cancel_after"] == step and not task.done():
                task.cancel()
        if all(t.done() for t in tasks):
            break
        await asyncio.sleep(0 if step < 500 else pause)
    stuck = [ops[i] for i, t in enumerate(tasks) if not t.done()]
    assert not stuck, f"requests never finished: {stuck}"
    for i, (task, op) in enumerate(zip(tasks, ops)):
        if task.cancelled():
            continue
        assert task.exception() is None or isinstance(task.exception(), StreamIncomplete), task.exception()
        if i in answers and isinstance(answers[i], str):
            assert answers[i] == upstream.fake.answer_for(QUESTIONS[op["q"]]).rstrip(), (op, answers[i])
    for _ in range(50):  # stores of streams that ended are spawned tasks
        await asyncio.sleep(pause)
    assert len(pipe.singleflight) == 0
    # What the cache holds answers the right question.
    upstream.failures = itertools.cycle([False])
    for q in QUESTIONS:
        reply = await llm(model="m", messages=[{"role": "user", "content": q}])
        # (a streamed FakeR1 reply ends with the space after its last word)
        assert reply["choices"][0]["message"]["content"].rstrip() == upstream.fake.answer_for(q)
    await pipe.close()


@hsettings(max_examples=120, deadline=None)
@given(st.lists(_op, min_size=1, max_size=10), st.lists(st.booleans(), max_size=4))
def test_single_flight_storms_never_hang_and_never_mix_answers(ops, failures):
    asyncio.run(_scenario(ops, failures))


@hsettings(max_examples=25, deadline=None)
@given(st.lists(_op, min_size=1, max_size=8), st.lists(st.booleans(), max_size=4))
def test_storms_through_the_default_chain_and_a_disk_tier(ops, failures):
    # (the test's own cache dir; entries of earlier examples may answer later ones: still the
    # right answers)
    asyncio.run(_scenario(ops, failures, "metrics,prefetch,template,exact", "l1,l2"))


# -- a model of cache control: when must the upstream be called? ------------------------------

_request = st.fixed_dictionaries({
    "q": st.integers(0, 2),
    "namespace": st.sampled_from([None, "desk-a", "desk-b"]),
    "user": st.sampled_from([None, "alice", "bob"]),
    "temperature": st.sampled_from([None, 0.0, 0.6]),
    "no_cache": st.booleans(),
    "no_store": st.booleans(),
    "ttl": st.sampled_from([None, None, 0, -1, 3600]),
    "stream": st.booleans(),
})


async def _model_run(requests, tiers, scope_by_user, cache_dir, l1_size=1000):
    fake = FakeR1()
    settings = r1mw.Settings(stages="exact", tiers=tiers, scope_by_user=scope_by_user, cache_dir=cache_dir,
                             l1_size=l1_size)
    stored: set[tuple] = set()
    async with r1mw.Pipeline(settings) as pipe:
        llm = r1mw.wrap(fake, pipe)
        for r in requests:
            namespace = r["namespace"] or ""
            if scope_by_user and r["user"]:
                namespace += "/" + r["user"]
            key = (namespace, r["q"], r["temperature"])
            control = {"no-cache": r["no_cache"], "no-store": r["no_store"]}
            if r["namespace"] is not None:
                control["namespace"] = r["namespace"]
            if r["ttl"] is not None:
                control["ttl"] = r["ttl"]
            kwargs = {"user": r["user"]} if r["user"] else {}
            if r["temperature"] is not None:
                kwargs["temperature"] = r["temperature"]
            calls = len(fake.calls)
            exact = pipe.stage("exact")
            stored_before = exact.stored
            messages = [{"role": "user", "content": QUESTIONS[r["q"]]}]
            if r["stream"]:
                stream = await llm(model="m", messages=messages, cache=control, stream=True, **kwargs)
                text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in stream if c["choices"]])
                for _ in range(3):  # the finished stream leaves single-flight on the next loop turn
                    await asyncio.sleep(0)
                if len(fake.calls) > calls and not r["no_store"] and (r["ttl"] is None or r["ttl"] > 0):
                    # The store of a stream is a spawned task (an L2 write runs in a thread).
                    for _ in range(5_000):
                        if exact.stored > stored_before:
                            break
                        await asyncio.sleep(0.001)
            else:
                reply = await llm(model="m", messages=messages, cache=control, **kwargs)
                text = reply["choices"][0]["message"]["content"]
            assert text.rstrip() == fake.answer_for(QUESTIONS[r["q"]])
            expected_call = r["no_cache"] or key not in stored
            assert (len(fake.calls) > calls) == expected_call, (r, stored)
            if expected_call and not r["no_store"] and (r["ttl"] is None or r["ttl"] > 0):
                stored.add(key)


@hsettings(max_examples=50, deadline=None)
@given(st.lists(_request, min_size=1, max_size=12),
       st.sampled_from([("l1", 1000), ("l1,l2", 1000), ("l1,l2", 1), ("l2", 1)]), st.booleans())
def test_cache_control_namespaces_and_scopes_follow_the_model(requests, tiers, scope_by_user):
    import tempfile

    # (with L2 behind it, an L1 of one entry loses nothing: L2 holds every entry)
    with tempfile.TemporaryDirectory() as cache_dir:
        asyncio.run(_model_run(requests, tiers[0], scope_by_user, cache_dir, tiers[1]))
