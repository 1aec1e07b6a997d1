"""Hard limits on speculative spending: calls in flight, calls per minute, tokens per hour.

A call may start only when all three allow it *including what it may cost*: its token
reservation (an upper estimate) is counted until the call ends, then replaced by what it
really cost. Time comes from an injectable clock so tests need no sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Budget", "Grant"]


@dataclass(slots=True)
class Grant:
    """One admitted call; give it back with :meth:`Budget.release`."""

    reserved: int
    started: float
    released: bool = field(default=False)


class Budget:
    def __init__(self, *, max_inflight: int, max_per_minute: int, tokens_per_hour: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_inflight = max_inflight
        self.max_per_minute = max_per_minute
        self.tokens_per_hour = tokens_per_hour
        self.clock = clock
        self.inflight = 0
        self.reserved = 0
        self._starts: deque[float] = deque()
        self._spent: deque[tuple[float, int]] = deque()
        self._spent_total = 0
        self.refused = {"inflight": 0, "rate": 0, "tokens": 0}

    def _expire(self, now: float) -> None:
        while self._starts and self._starts[0] <= now - 60.0:
            self._starts.popleft()
        while self._spent and self._spent[0][0] <= now - 3600.0:
            self._spent_total -= self._spent.popleft()[1]

    def spent_last_hour(self) -> int:
        self._expire(self.clock())
        return self._spent_total

    def ledger(self) -> dict[str, list[list[float]]]:
        """What still counts against the limits, as ages in seconds (plain data, to persist:
        a restart must not give the hour's budget back). Reservations in flight count as
        spent: the calls they belong to may be billed whatever happens to this process."""
        now = self.clock()
        self._expire(now)
        spent = [[now - at, tokens] for at, tokens in self._spent]
        if self.reserved:
            spent.append([0.0, self.reserved])
        return {"spent": spent, "starts": [[now - at] for at in self._starts]}

    def restore(self, ledger: dict[str, list[list[float]]]) -> None:
        """Count what an earlier process spent (see :meth:`ledger`) against this one's limits."""
        now = self.clock()
        for age, tokens in ledger.get("spent", ()):
            if 0.0 <= age < 3600.0 and tokens > 0:
                self._spent.append((now - age, int(tokens)))
                self._spent_total += int(tokens)
        for (age,) in ledger.get("starts", ()):
            if 0.0 <= age < 60.0:
                self._starts.append(now - age)
        # Both are read oldest first.
        self._spent = deque(sorted(self._spent))
        self._starts = deque(sorted(self._starts))

    def started_last_minute(self) -> int:
        self._expire(self.clock())
        return len(self._starts)

    def try_acquire(self, estimate: int) -> Grant | None:
        """Admit a call expected to cost at most ``estimate`` tokens, or refuse (None)."""
        now = self.clock()
        self._expire(now)
        if self.inflight >= self.max_inflight:
            self.refused["inflight"] += 1
            return None
        if len(self._starts) >= self.max_per_minute:
            self.refused["rate"] += 1
            return None
        if self._spent_total + self.reserved + estimate > self.tokens_per_hour:
            self.refused["tokens"] += 1
            return None
        self.inflight += 1
        self.reserved += estimate
        self._starts.append(now)
        return Grant(estimate, now)

    def release(self, grant: Grant, spent: int) -> None:
        """The call ended having cost ``spent`` tokens (0 if it failed or was answered from cache)."""
        if grant.released:
            return
        grant.released = True
        self.inflight -= 1
        self.reserved -= grant.reserved
        if spent:
            self._spent.append((self.clock(), spent))
            self._spent_total += spent
