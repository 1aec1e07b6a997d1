"""L1: a bounded in-RAM tier holding decoded entries (no codec on the hot path)."""

from __future__ import annotations

import time
from typing import Any, Callable

from .entry import Entry
from .policy import Policy, make_policy

__all__ = ["MemoryTier"]


class MemoryTier:
    """Entries bounded by count and bytes, evicted by a policy (S3-FIFO by default).

    ``get_nowait``/``set_nowait`` answer without an await: the exact stage's RAM hit is a
    dict lookup, an expiry compare and a frequency bump. Values are :class:`Entry` objects
    (``takes = "entry"``); what the policy evicts goes to ``on_evict(key, entry)``, which the
    :class:`~r1mw.tiers.TieredStore` sets to move it down a tier.
    """

    takes = "entry"

    def __init__(self, name: str = "l1", max_entries: int = 1000, max_bytes: int = 0,
                 policy: str | Policy = "s3fifo", clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.policy = policy if isinstance(policy, Policy) else make_policy(policy, max_entries, max_bytes)
        self._index = self.policy.index
        self._hit = self.policy.hit
        self._clock = clock
        self.hits = self.misses = self.evictions = self.expired = 0
        self.on_evict: Callable[[bytes, Entry], Any] | None = None
        self.on_lost: Callable[[bytes], Any] | None = None  # removed on its own (expired)

    def get_nowait(self, key: bytes) -> Entry | None:
        node = self._index.get(key)
        if node is None:
            self.misses += 1
            return None
        if node.expires and node.expires <= self._clock():
            self.policy.pop(key)
            self.expired += 1
            self.misses += 1
            if self.on_lost is not None:
                self.on_lost(key)
            return None
        self._hit(node)
        self.hits += 1
        return node.value

    async def get(self, key: bytes) -> Entry | None:
        return self.get_nowait(key)

    def set_nowait(self, key: bytes, entry: Entry, ttl: float | None = None) -> None:
        expires = entry.expires
        if ttl:
            deadline = self._clock() + ttl
            expires = min(expires, deadline) if expires else deadline
        evicted = self.policy.put(key, entry, entry.size_hint(), expires)
        if evicted:
            self.evictions += len(evicted)
            on_evict = self.on_evict
            if on_evict is not None:
                for node in evicted:
                    on_evict(node.key, node.value)  # type: ignore[arg-type]

    async def set(self, key: bytes, value: Entry, ttl: float | None = None) -> None:
        self.set_nowait(key, value, ttl)

    async def delete(self, key: bytes) -> bool:
        return self.policy.pop(key) is not None

    def contains(self, key: bytes) -> bool:
        node = self._index.get(key)
        return node is not None and not (node.expires and node.expires <= self._clock())

    async def exists(self, key: bytes) -> bool:
        return self.contains(key)

    async def clear(self) -> None:
        self.policy.clear()
        self._index = self.policy.index
        self._hit = self.policy.hit

    def __len__(self) -> int:
        return len(self.policy)

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self.policy), "bytes": self.policy.bytes, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions, "expired": self.expired,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes, "policy": self.policy.name}

