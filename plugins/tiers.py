"""Built-in storage tiers: ``l1`` (bounded RAM)."""

from __future__ import annotations

from typing import Any

import r1mw
from r1mw.tiers import MemoryTier


def _l1(pipeline: r1mw.Pipeline) -> MemoryTier:
    s = pipeline.settings
    return MemoryTier("l1", max_entries=s.l1_size, max_bytes=s.l1_max_bytes)


@r1mw.hookimpl
def r1mw_register_tiers() -> dict[str, Any]:
    return {"l1": _l1}
