"""The event bus: a bounded buffer drained in the background into the ``r1mw_events`` hook.

Emitting costs an append (no await, no pluggy call). When nobody implements the hook the
bus is disabled at build time and ``emit`` is a no-op. When the buffer is full the oldest
events are dropped and counted: observers must never slow a request down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Event", "EventBus"]

log = logging.getLogger("r1mw.events")


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened. ``kind`` names it; ``data`` carries plain values.

    Kinds emitted by the core and built-in stages: ``served`` (one per request: source,
    tier, latency, model, namespace, template id, tokens), ``stored``, ``evicted``,
    ``fault`` (a corrupt entry or an unreachable tier), ``prefetch``.
    """

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


class EventBus:
    def __init__(self, deliver: Callable[[list[Event]], None] | None, *, maxlen: int = 10_000,
                 interval: float = 0.05) -> None:
        self._deliver = deliver
        self._buffer: deque[Event] = deque(maxlen=maxlen)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.delivered = 0
        self.enabled = deliver is not None

    def emit(self, kind: str, **data: Any) -> None:
        if not self.enabled:
            return
        buffer = self._buffer
        if len(buffer) == buffer.maxlen:
            self.dropped += 1
        buffer.append(Event(kind, data))

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain_forever(), name="r1mw-events")

    async def _drain_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.flush()

    def flush(self) -> None:
        """Deliver everything buffered now (also called at close and by tests)."""
        if not self._buffer or self._deliver is None:
            return
        batch = list(self._buffer)
        self._buffer.clear()
        try:
            self._deliver(batch)
            self.delivered += len(batch)
        except Exception:  # an observer's bug must not stop the bus
            log.exception("an r1mw_events observer failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.flush()
