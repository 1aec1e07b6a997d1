"""L1: a bounded in-RAM tier holding decoded entries (no codec on the hot path)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from .entry import Entry

__all__ = ["MemoryTier"]


class MemoryTier:
    """LRU bounded by entries and bytes. ``get_nowait`` answers without an await."""

    def __init__(self, name: str = "l1", max_entries: int = 1000, max_bytes: int = 0) -> None:
        self.name = name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[bytes, tuple[Entry, int]] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = self.evictions = self.expired = 0
        self.on_evict: Any = None  # callable(key, entry): the store moves it down a tier

    def get_nowait(self, key: bytes) -> Entry | None:
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        entry = item[0]
        if entry.expires and entry.expired(time.time()):
            self._remove(key)
            self.expired += 1
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return entry

    async def get(self, key: bytes) -> Entry | None:
        return self.get_nowait(key)

    def set_nowait(self, key: bytes, entry: Entry) -> None:
        size = entry.size_hint()
        if key in self._data:
            self._remove(key)
        self._data[key] = (entry, size)
        self._bytes += size
        while len(self._data) > self.max_entries or (self.max_bytes and self._bytes > self.max_bytes):
            old_key, (old, _) = next(iter(self._data.items()))
            self._remove(old_key)
            self.evictions += 1
            if self.on_evict is not None:
                self.on_evict(old_key, old)

    async def set(self, key: bytes, value: Entry, ttl: float | None = None) -> None:
        self.set_nowait(key, value)

    def _remove(self, key: bytes) -> None:
        _, size = self._data.pop(key)
        self._bytes -= size

    async def delete(self, key: bytes) -> bool:
        if key in self._data:
            self._remove(key)
            return True
        return False

    async def exists(self, key: bytes) -> bool:
        return key in self._data

    async def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self._data), "bytes": self._bytes, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions, "expired": self.expired,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes}
