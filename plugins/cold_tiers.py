"""Built-in cold tiers: ``l3`` (append-only segment files, for large/slow disks) and ``l4``
(compressed archive). Both store the bytes the store's codec made."""

from __future__ import annotations

from typing import Any, Callable

import r1mw
from r1mw.tiers.archive import ArchiveTier
from r1mw.tiers.segment import SegmentTier


def _l3(pipeline: r1mw.Pipeline) -> SegmentTier:
    s = pipeline.settings
    return SegmentTier(s.tier_dir("l3"), name="l3", max_entries=s.l3_size, max_bytes=s.l3_max_bytes,
                       segment_bytes=s.l3_segment_bytes or 64 * 2**20, inline_reads=s.l3_inline_reads,
                       compact_ratio=s.l3_compact_ratio, refresh_interval=s.shared_refresh_ms / 1000.0)


def _l4(pipeline: r1mw.Pipeline) -> ArchiveTier:
    s = pipeline.settings
    return ArchiveTier(s.tier_dir("l4"), name="l4", max_bytes=s.l4_max_bytes, codec=s.l4_codec,
                       block_bytes=s.l4_block_bytes or 64 * 2**10, refresh_interval=s.shared_refresh_ms / 1000.0)


@r1mw.hookimpl
def r1mw_register_tiers() -> dict[str, Callable[[r1mw.Pipeline], r1mw.Tier]]:
    return {"l3": _l3, "l4": _l4}
