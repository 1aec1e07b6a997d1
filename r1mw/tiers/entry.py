"""What a tier stores under a key: the reply plus what the stages need to reuse it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..types import Reply

__all__ = ["Entry"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached value: a :class:`Reply` (the stages' entries) or any codec-encodable value
    (the context cache's). ``expires`` is a wall-clock time (0 = never).

    ``meta`` holds plain values the stages attach at store time: the question text and its
    scope (for the semantic index), the template id and slots, ``prefetched``, ``alias_of``.
    """

    value: Any
    expires: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    stored_at: float = field(default_factory=time.time)

    def expired(self, now: float) -> bool:
        return 0.0 < self.expires <= now

    @property
    def reply(self) -> Reply:
        return self.value

    def to_wire(self) -> dict[str, Any]:
        """Plain structure for a codec: replies in their wire form, other values as they are."""
        if isinstance(self.value, Reply):
            return {"r": self.value.to_wire(), "e": self.expires, "m": self.meta, "t": self.stored_at}
        return {"v": self.value, "e": self.expires, "m": self.meta, "t": self.stored_at}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "Entry":
        value = Reply.from_wire(data["r"]) if "r" in data else data["v"]
        return cls(value, float(data["e"]), dict(data["m"]), float(data["t"]))

    def size_hint(self) -> int:
        """Approximate bytes in RAM (the L1 byte budget): text, bytes and arrays dominate."""
        value = self.value
        # Tool-call arguments and meta (the question text, slots) can outweigh the content:
        # left out, the RAM byte budget held several times its size.
        meta = _size(self.meta, 0) if self.meta else 0
        if isinstance(value, Reply):
            n = 200 + meta
            for c in value.choices:
                n += len(c.content or "") + len(c.reasoning_content or "")
                if c.tool_calls:
                    n += _size(c.tool_calls, 0)
            return n
        return 200 + meta + _size(value, 0)


def _size(value: Any, depth: int) -> int:
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    nbytes = getattr(value, "nbytes", None)
    if nbytes is not None:
        return int(nbytes)
    if depth > 8:  # deep structures: an estimate is enough
        return 64
    if isinstance(value, dict):
        return sum(16 + _size(k, depth + 1) + _size(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(8 + _size(v, depth + 1) for v in value)
    return 16
