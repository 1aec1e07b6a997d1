"""The built-in tiers pass the tier contract (tests/tier_conformance.py)."""

from __future__ import annotations

import os

from tier_conformance import TierConformance

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
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x10]))
        return True


class TestDiskTierFsyncThreaded(TestDiskTier):
    def make_tier(self, path, max_entries):
        return DiskTier(path / "l2", max_entries=max_entries, fsync="full", inline_reads=False)
