"""What a tier stores under a key: the reply plus what the stages need to reuse it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..types import Reply

__all__ = ["Entry"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached reply. ``expires`` is a wall-clock time (0 = never).

    ``meta`` holds plain values the stages attach at store time: the question text and its
    scope (for the semantic index), the template id and slots, ``prefetched``, ``alias_of``.
    """

    reply: Reply
    expires: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    stored_at: float = field(default_factory=time.time)

    def expired(self, now: float) -> bool:
        return 0.0 < self.expires <= now

    def to_wire(self) -> dict[str, Any]:
        return {"r": self.reply.to_wire(), "e": self.expires, "m": self.meta, "t": self.stored_at}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "Entry":
        return cls(Reply.from_wire(data["r"]), float(data["e"]), dict(data["m"]), float(data["t"]))

    def size_hint(self) -> int:
        """Approximate bytes in RAM: the text dominates."""
        n = 200
        for c in self.reply.choices:
            n += len(c.content or "") + len(c.reasoning_content or "")
        return n
