"""Reading a tier's ``stats()`` dict: the keys observability understands.

Tiers report plain dicts; these are the keys read (any may be missing): ``entries``,
``bytes`` (as stored), ``max_bytes``, ``hits``, ``misses``, ``evictions``; compression as
``compression_ratio`` or ``raw_bytes`` (before compression) next to ``bytes``; reachability
as ``up`` / ``connected`` (bool) or ``breaker_open`` / ``circuit_open`` (bool).
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["compression_ratio", "tier_up"]


def compression_ratio(stats: Mapping[str, Any]) -> float | None:
    """A tier's compression ratio from its stats: ``compression_ratio``, or ``raw_bytes`` over
    ``bytes`` (also spelled ``uncompressed_bytes`` / ``stored_bytes``)."""
    ratio = stats.get("compression_ratio")
    if isinstance(ratio, (int, float)):
        return float(ratio)
    raw = stats.get("raw_bytes", stats.get("uncompressed_bytes"))
    stored = stats.get("stored_bytes", stats.get("bytes"))
    if isinstance(raw, (int, float)) and isinstance(stored, (int, float)) and stored > 0:
        return raw / stored
    return None


def tier_up(stats: Mapping[str, Any]) -> bool | None:
    """Whether a tier is reachable, from ``up`` / ``connected`` / ``breaker_open`` / ``circuit_open``."""
    for key in ("up", "connected", "available", "healthy"):
        if isinstance(stats.get(key), bool):
            return bool(stats[key])
    for key in ("breaker_open", "circuit_open", "down"):
        if isinstance(stats.get(key), bool):
            return not stats[key]
    return None
