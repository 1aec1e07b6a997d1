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
        return self.value  # type: ignore[no-any-return]

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
        """Approximate bytes in RAM: the text dominates. A ``meta["size"]`` set at store time
        (the context cache measures its values) wins over the guess."""
        known = self.meta.get("size")
        if type(known) is int:
            return 200 + known
        value = self.value
        if isinstance(value, Reply):
            n = 200
            for c in value.choices:
                n += len(c.content or "") + len(c.reasoning_content or "")
            return n
        nbytes = getattr(value, "nbytes", None)
        if nbytes is not None:
            return 200 + int(nbytes)
        if isinstance(value, (str, bytes)):
            return 200 + len(value)
        return 200 + len(repr(value)) if not isinstance(value, (dict, list, tuple)) else 200 + 64 * len(value)
