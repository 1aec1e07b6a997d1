"""Storage tiers and the :class:`TieredStore` that chains them (fastest first)."""

from .entry import Entry
from .memory import MemoryTier
from .store import TieredStore

__all__ = ["Entry", "MemoryTier", "TieredStore"]
