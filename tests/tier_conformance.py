"""The contract every Tier passes. Reuse it for a new tier::

    from tier_conformance import TierConformance

    class TestMyTier(TierConformance):
        def make_tier(self, path, max_entries):
            return MyTier(path, max_entries=max_entries)

        def corrupt(self, tier, key):      # optional: damage the stored entry, return True
            ...

Tiers that take bytes get byte values (``value(i)``); a tier with ``takes = "entry"`` gets
:class:`r1mw.Entry` objects. TTLs use real time with short sleeps (behaviour, not timing).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

import r1mw


class TierConformance:
    pytestmark = pytest.mark.anyio
    ttl = 0.05  # seconds; a tier with a coarser clock may raise it

    # -- what a subclass provides ---------------------------------------------------------
    def make_tier(self, path: Path, max_entries: int) -> Any:
        raise NotImplementedError

    def corrupt(self, tier: Any, key: bytes) -> bool:
        """Damage the stored entry of ``key`` in place; False when the tier cannot be damaged."""
        return False

    def bound(self, tier: Any, max_entries: int) -> tuple[str, int]:
        """The stats field the tier's capacity bounds and its limit: a tier bounded in bytes
        only (an archive) returns ``("bytes", tier.max_bytes)``."""
        return "entries", max_entries

    def value(self, tier: Any, i: int) -> Any:
        if getattr(tier, "takes", "bytes") == "entry":
            return r1mw.Entry({"answer": f"value {i}"})
        return f"value {i} ".encode() + os.urandom(8) + b"x" * (i % 50)

    @staticmethod
    def key(i: int) -> bytes:
        return i.to_bytes(4, "big") + b"conformance-key!"

    async def close(self, tier: Any) -> None:
        close = getattr(tier, "close", None)
        if close is not None:
            await close()

    # -- the contract -------------------------------------------------------------------------
    async def test_get_after_set_and_overwrite(self, tmp_path):
        tier = self.make_tier(tmp_path, 100)
        try:
            assert await tier.get(self.key(1)) is None
            v1, v2 = self.value(tier, 1), self.value(tier, 2)
            await tier.set(self.key(1), v1)
            assert await tier.get(self.key(1)) == v1
            await tier.set(self.key(1), v2)
            assert await tier.get(self.key(1)) == v2
            assert await tier.get(self.key(2)) is None
        finally:
            await self.close(tier)

    async def test_delete_exists_clear(self, tmp_path):
        tier = self.make_tier(tmp_path, 100)
        try:
            for i in range(5):
                await tier.set(self.key(i), self.value(tier, i))
            assert await tier.exists(self.key(3))
            assert await tier.delete(self.key(3)) is True
            assert not await tier.exists(self.key(3))
            assert await tier.get(self.key(3)) is None
            assert await tier.delete(self.key(3)) is False
            await tier.clear()
            for i in range(5):
                assert await tier.get(self.key(i)) is None
            assert tier.stats()["entries"] == 0
        finally:
            await self.close(tier)

    async def test_ttl_expires_entries(self, tmp_path):
        tier = self.make_tier(tmp_path, 100)
        try:
            await tier.set(self.key(1), self.value(tier, 1), ttl=self.ttl)
            forever = self.value(tier, 2)
            await tier.set(self.key(2), forever)
            await asyncio.sleep(self.ttl * 2)
            assert await tier.get(self.key(1)) is None
            assert await tier.get(self.key(2)) == forever
        finally:
            await self.close(tier)

    async def test_capacity_is_never_exceeded_and_evictions_are_reported(self, tmp_path):
        cap = 8
        tier = self.make_tier(tmp_path, cap)
        evicted: dict[bytes, Any] = {}
        if hasattr(tier, "on_evict"):
            tier.on_evict = lambda key, value: evicted.__setitem__(key, value)
        values = {}
        try:
            field, limit = self.bound(tier, cap)
            for i in range(cap * 4):
                values[self.key(i)] = self.value(tier, i)
                await tier.set(self.key(i), values[self.key(i)])
                assert tier.stats()[field] <= limit
            present = {k for k in values if await tier.get(k) is not None}
            assert 0 < len(present) < len(values)
            if hasattr(tier, "on_evict"):
                # Every key is either still there or was handed to on_evict with its value.
                assert set(evicted) | present == set(values)
                assert all(values[k] == v for k, v in evicted.items())
        finally:
            await self.close(tier)

    @pytest.mark.parametrize("seed", [1, 2, 3])
    async def test_every_key_that_leaves_was_deleted_or_reported_and_none_comes_back(self, tmp_path, seed):
        # Random sets, overwrites and deletes under a tight bound. A tier that drops a key
        # silently leaves the semantic index and the store pointing at it; one that serves a
        # deleted or reported key again serves what the cache said was gone.
        import random

        rng = random.Random(seed)
        tier = self.make_tier(tmp_path, 6)
        model: dict[bytes, Any] = {}
        if hasattr(tier, "on_evict"):
            def evicted(key: bytes, value: Any) -> None:
                if model.get(key) == value:  # an older version leaving is not this one
                    del model[key]
            tier.on_evict = evicted
        if hasattr(tier, "on_lost"):
            tier.on_lost = lambda key: model.pop(key, None)
        silent = not hasattr(tier, "on_evict")
        try:
            for step in range(300):
                k = self.key(rng.randrange(12))
                if rng.random() < 0.7:
                    v = self.value(tier, step)
                    model[k] = v  # before the call: the set itself may evict it
                    await tier.set(k, v)
                else:
                    model.pop(k, None)
                    await tier.delete(k)
                probe = self.key(rng.randrange(12))
                got = await tier.get(probe)
                if silent:  # no eviction callback: only never wrong, never back from a delete
                    assert got is None or got == model.get(probe)
                else:
                    assert got == model.get(probe), f"step {step}: {probe!r}"
        finally:
            await self.close(tier)

    async def test_corrupt_entry_is_a_counted_miss(self, tmp_path):
        tier = self.make_tier(tmp_path, 100)
        try:
            await tier.set(self.key(1), self.value(tier, 1))
            if not self.corrupt(tier, self.key(1)):
                pytest.skip(f"{type(tier).__name__} has no stored form to damage")
            assert await tier.get(self.key(1)) is None
            assert tier.stats()["corrupt"] >= 1
            assert await tier.get(self.key(1)) is None
            await tier.set(self.key(1), self.value(tier, 3))  # the key is usable again
            assert await tier.get(self.key(1)) is not None
        finally:
            await self.close(tier)

    async def test_stats_figures(self, tmp_path):
        tier = self.make_tier(tmp_path, 100)
        try:
            await tier.set(self.key(1), self.value(tier, 1))
            await tier.get(self.key(1))
            await tier.get(self.key(2))
            stats = tier.stats()
            for field in ("entries", "bytes", "hits", "misses", "evictions"):
                assert field in stats, field
            assert stats["entries"] == 1 and stats["hits"] >= 1 and stats["misses"] >= 1
            assert isinstance(tier.name, str) and tier.name
        finally:
            await self.close(tier)
