"""Eviction policies: bounds always hold, the index matches the queues (and S3-FIFO's small-queue
byte count its contents, values replaced by others of a different size included), S3-FIFO beats LRU."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1mw.tiers.policy import POLICIES, S3FIFO, make_policy

NAMES = sorted(POLICIES)

ops = st.lists(st.tuples(st.sampled_from(["get", "put", "pop"]), st.integers(0, 30), st.integers(1, 40)),
               max_size=300)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=80, deadline=None)
@given(ops=ops, cap=st.integers(1, 10), max_bytes=st.sampled_from([0, 60, 200]))
def test_bounds_hold_and_evicted_items_are_gone(name, ops, cap, max_bytes):
    policy = make_policy(name, cap, max_bytes)
    model: dict[int, int] = {}
    for op, key, size in ops:
        if op == "get":
            node = policy.get(key)
            assert (node is None) == (key not in model)
            if node is not None:
                assert node.value == model[key]
        elif op == "put":
            value = random.random()
            evicted = policy.put(key, value, size)
            model[key] = value
            for node in evicted:
                assert model.pop(node.key) == node.value
        else:
            node = policy.pop(key)
            assert (node is None) == (model.pop(key, None) is None)
        assert len(policy) == len(model) <= cap
        if max_bytes:
            assert policy.bytes <= max_bytes
        assert policy.bytes == sum(n.size for n in policy.index.values())
        if isinstance(policy, S3FIFO):  # the small queue's own byte count (it bounds that queue)
            assert set(policy._small) | set(policy._main) == set(policy.index)
            assert policy._small_bytes == sum(n.size for n in policy._small.values())
    # every remaining item can still be evicted: the queues hold exactly the index
    drained = policy.put("flush-a", 0, 1) + policy.put("flush-b", 0, 1)
    assert all(n.key in model for n in drained if n.key not in ("flush-a", "flush-b"))


def _zipf_hit_ratio(policy, keys: int, n: int, alpha: float) -> float:
    rng = random.Random(3)
    weights = [1 / (r ** alpha) for r in range(1, keys + 1)]
    trace = rng.choices(range(keys), weights=weights, k=n)
    hits = 0
    for key in trace:
        if policy.get(key) is not None:
            hits += 1
        else:
            policy.put(key, None)
    return hits / n


def test_s3fifo_beats_lru_on_a_skewed_trace():
    s3 = _zipf_hit_ratio(S3FIFO(50), 2000, 30_000, 0.9)
    lru = _zipf_hit_ratio(make_policy("lru", 50), 2000, 30_000, 0.9)
    assert s3 > lru


def test_s3fifo_one_hit_wonders_do_not_flush_the_hot_set():
    policy = S3FIFO(100)
    hot = list(range(50))
    for _ in range(3):
        for key in hot:
            if policy.get(key) is None:
                policy.put(key, None)
    for key in range(1000, 3000):  # a scan of keys seen once
        policy.put(key, None)
    assert sum(policy.get(k) is not None for k in hot) >= 45
