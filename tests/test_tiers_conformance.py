"""The built-in tiers pass the tier contract (tests/tier_conformance.py)."""

from __future__ import annotations

import os

from tier_conformance import TierConformance
from tier_faults import flip_byte

from r1mw.tiers import DiskTier, MemoryTier


class TestMemoryTier(TierConformance):
    def make_tier(self, path, max_entries):
        return MemoryTier("l1", max_entries=max_entries)


class TestMemoryTierLRU(TierConformance):
    def make_tier(self, path, max_entries):
        return MemoryTier("l1", max_entries=max_entries, policy="lru")


class TestDiskTier(TierConformance):
    def make_tier(self, path, max_entries):
        return DiskTier(path / "l2", max_entries=max_entries)

    def corrupt(self, tier, key):
        path = tier._path(key)
        flip_byte(path, os.path.getsize(path) // 2, 0x10)
        return True


class TestDiskTierFsyncThreaded(TestDiskTier):
    def make_tier(self, path, max_entries):
        return DiskTier(path / "l2", max_entries=max_entries, fsync="full", inline_reads=False)
