"""TieredStore: look up fastest tier first, promote hits, write through on store."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from .entry import Entry

__all__ = ["TieredStore"]


class TieredStore:
    """Tiers in order, fastest first. The first tier may offer ``get_nowait``/``set_nowait``
    (the RAM tier): an L1 hit then costs no await.

    ``get`` returns ``(entry, tier_name)`` or ``None``; a hit below L1 is promoted to L1.
    """

    def __init__(self, tiers: Sequence[Any]) -> None:
        if not tiers:
            raise ValueError("a TieredStore needs at least one tier")
        self.tiers = list(tiers)
        self.first = self.tiers[0]
        self._nowait = getattr(self.first, "get_nowait", None)
        self.promotions = 0
        self._drop_listeners: list[Callable[[bytes], Any]] = []
        last = self.tiers[-1]
        if hasattr(last, "on_evict"):
            last.on_evict = lambda key, _entry: self._dropped(key)

    def add_drop_listener(self, listener: Callable[[bytes], Any]) -> None:
        """Call ``listener(key)`` when a key leaves the last tier (evicted, expired, deleted):
        the semantic index drops its vector then."""
        self._drop_listeners.append(listener)

    def _dropped(self, key: bytes) -> None:
        for listener in self._drop_listeners:
            listener(key)

    def get_nowait(self, key: bytes) -> Entry | None:
        """L1 only, synchronously (None when the first tier is not a RAM tier)."""
        return self._nowait(key) if self._nowait is not None else None

    async def get(self, key: bytes) -> tuple[Entry, str] | None:
        now = time.time()
        for i, tier in enumerate(self.tiers):
            entry = await tier.get(key)
            if entry is None:
                continue
            if entry.expired(now):
                await tier.delete(key)
                continue
            if i:
                self.promotions += 1
                await self.first.set(key, entry)
            return entry, tier.name
        return None

    async def set(self, key: bytes, entry: Entry) -> None:
        for tier in self.tiers:
            await tier.set(key, entry)

    async def delete(self, key: bytes) -> bool:
        found = False
        for tier in self.tiers:
            found = await tier.delete(key) or found
        if found:
            self._dropped(key)
        return found

    async def clear(self) -> None:
        for tier in self.tiers:
            await tier.clear()

    async def close(self) -> None:
        for tier in self.tiers:
            close = getattr(tier, "close", None)
            if close is not None:
                await close()

    def stats(self) -> dict[str, Any]:
        return {"promotions": self.promotions, **{t.name: t.stats() for t in self.tiers}}
