"""examples/context_retrieval.py: the expanded-context builder, cached by @r1mw.cached."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import r1mw

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "context_retrieval.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("context_retrieval_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


async def test_context_is_built_once_then_served_from_ram_and_after_a_restart_from_disk(example, monkeypatch):
    monkeypatch.setenv("R1MW_TIERS", "l1,l2")  # the default pipeline reads the environment
    example.BUILDS.clear()
    query = "liquidity risk and debt maturities at JPM"
    first = await example.build_context(query)
    second = await example.build_context(query)
    assert example.BUILDS == [query]
    assert second["context"] == first["context"] and "JPM" in first["context"]
    assert first["tokens"] <= 2_000 and len(first["context"]) <= 2_000 * example.CHARS_PER_TOKEN
    emb = second["embedding"]
    assert emb.dtype == np.float32 and emb.shape == (len(first["chunk_ids"]), 64)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    # a different budget is a different context
    small = await example.build_context(query, budget_tokens=200)
    assert len(small["chunk_ids"]) < len(first["chunk_ids"]) and len(example.BUILDS) == 2
    stats = r1mw.context.default_pipeline().stats()["context"]
    assert stats["hits_by_tier"] == {"l1": 1} and stats["misses"] == 2

    await r1mw.context.close_default_pipeline()  # "restart": a fresh pipeline, empty RAM
    third = await example.build_context(query)
    assert len(example.BUILDS) == 2  # served from the disk tier, not rebuilt
    assert third["context"] == first["context"] and third["embedding"].tobytes() == emb.tobytes()
    assert r1mw.context.default_pipeline().stats()["context"]["hits_by_tier"] == {"l2": 1}
    await r1mw.context.close_default_pipeline()


async def test_get_and_set_context_by_query_hash(example, monkeypatch):
    monkeypatch.setenv("R1MW_TIERS", "l1,l2")
    async with r1mw.Pipeline(r1mw.Settings.from_env()) as pipe:
        query = "Outlook and guidance for NVDA"
        assert await example.get_context(query, pipe) is None
        built = await example.build_context.__wrapped__(query)  # built without the cache
        await example.set_context(query, built, pipe)
        got = await example.get_context("  outlook AND guidance for nvda ", pipe)  # same normalized query
        assert got["context"] == built["context"] and np.array_equal(got["embedding"], built["embedding"])
        # the explicit pair lives in the example's namespace, apart from the default one
        assert await pipe.context_cache.get(("context", example.query_hash(query))) is None
