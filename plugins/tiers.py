"""Built-in storage tiers: ``l1`` (bounded RAM, S3-FIFO) and ``l2`` (one file per entry on a
local SSD directory). ``R1MW_TIERS`` picks them, fastest first."""

from __future__ import annotations

from typing import Any, Callable

import r1mw
from r1mw.tiers import DiskTier, MemoryTier


def _l1(pipeline: r1mw.Pipeline) -> MemoryTier:
    s = pipeline.settings
    return MemoryTier("l1", max_entries=s.l1_size, max_bytes=s.l1_max_bytes, policy=s.l1_policy)


def _l2(pipeline: r1mw.Pipeline) -> DiskTier:
    s = pipeline.settings
    return DiskTier(s.tier_dir("l2"), "l2", max_entries=s.l2_size, max_bytes=s.l2_max_bytes, fsync=s.l2_fsync)


@r1mw.hookimpl
def r1mw_register_tiers() -> dict[str, Callable[[r1mw.Pipeline], r1mw.Tier]]:
    return {"l1": _l1, "l2": _l2}
