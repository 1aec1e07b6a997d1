"""Storage tiers and the :class:`TieredStore` that chains them (fastest first).

``MemoryTier`` (L1, decoded entries, S3-FIFO), ``DiskTier`` (L2, one checksummed file per
entry), the eviction policies in :mod:`r1mw.tiers.policy`.
"""

from .disk import DiskTier
from .entry import Entry
from .memory import MemoryTier
from .policy import LRU, S3FIFO, SIEVE, Policy, WTinyLFU, make_policy
from .store import TieredStore

__all__ = ["LRU", "S3FIFO", "SIEVE", "DiskTier", "Entry", "MemoryTier", "Policy", "TieredStore", "WTinyLFU",
           "make_policy"]
