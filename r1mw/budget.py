"""Hard limits on speculative spending: calls in flight, calls per minute, tokens per hour.

A call may start only when all three allow it *including what it may cost*: its token
reservation (an upper estimate) is counted until the call ends, then replaced by what it
really cost. Time comes from an injectable clock so tests need no sleeping.

:class:`Budget` keeps the limits of one process; :class:`SharedBudget` keeps them for every
process that shares a cache directory (the worker processes of one service).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import msgpack

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: each process keeps its own budget
    fcntl = None  # type: ignore[assignment]

__all__ = ["Budget", "Grant", "SharedBudget"]

log = logging.getLogger("r1mw.budget")


@dataclass(slots=True)
class Grant:
    """One admitted call; give it back with :meth:`Budget.release`."""

    reserved: int
    started: float
    released: bool = field(default=False)
    call: int = 0  # its line in a shared ledger


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

    def close(self) -> None:
        """Nothing to let go of: the limits of one process end with it."""


_LEDGER_VERSION = 1


class SharedBudget(Budget):
    """:class:`Budget`'s limits for every process sharing ``directory``, as one budget.

    The worker processes of one service share a cache directory; each used to have the whole
    budget, so four workers spent four. Here the ledger (calls in flight with their
    reservations, the minute's starts, the hour's spending) is one small file, read and
    rewritten in place under an exclusive ``flock`` at each admission and release: a few times a
    minute, off the request path. Times are wall-clock: processes' monotonic clocks differ, and
    the ledger outlives a restart (a restart does not give the hour's budget back).

    Each process holds a lock on a file of its own for as long as it lives: a call whose
    process is gone (crashed, killed) is counted as spent at its reservation, since it may
    have been billed, and no longer as in flight. The lock is never waited for on the event
    loop: an admission that finds it taken is refused (``refused["busy"]``), a release is
    written at the next admission or at :meth:`close` (till then its reservation counts).
    A directory where the ledger cannot be kept (read-only, no ``flock``) leaves each
    process its own budget, with a warning.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> a = SharedBudget(d, max_inflight=1, max_per_minute=10, tokens_per_hour=1000)
    >>> b = SharedBudget(d, max_inflight=1, max_per_minute=10, tokens_per_hour=1000)
    >>> grant = a.try_acquire(600)
    >>> b.try_acquire(100) is None  # one call in flight between them
    True
    >>> a.release(grant, 700)
    >>> b.try_acquire(400) is None  # 700 of 1,000 tokens spent this hour
    True
    >>> a.close(); b.close()
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_inflight: int, max_per_minute: int,
                 tokens_per_hour: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(max_inflight=max_inflight, max_per_minute=max_per_minute,
                         tokens_per_hour=tokens_per_hour, clock=clock)
        self.refused["busy"] = 0
        self.directory = Path(directory)
        self.owner = secrets.token_hex(8)
        self._calls: list[list[Any]] = []   # [owner, call, started, reserved], as last read
        self._unsettled: list[tuple[int, int]] = []   # (call, spent) released, not yet written
        self._next_call = 0
        self._alive: IO[bytes] | None = None
        self.shared = False
        self.shared = fcntl is not None and self._open()

    # -- the files --------------------------------------------------------------------------
    @property
    def _ledger(self) -> Path:
        return self.directory / "budget.ledger"

    def _alive_path(self, owner: str) -> Path:
        return self.directory / f"budget.{owner}.alive"

    def _open(self) -> bool:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            alive = open(self._alive_path(self.owner), "wb")
            try:
                fcntl.flock(alive, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                alive.close()
                raise
            self._alive = alive
            if self._transaction(lambda: None, wait=True) is _BUSY:
                raise OSError("the ledger's lock could not be taken")
            return True
        except OSError as exc:
            log.warning("prefetch budget: cannot keep a shared ledger in %s (%s); this process "
                        "keeps its own budget", self.directory, exc)
            self.close()
            return False

    def close(self) -> None:
        """Write what is left to write and let the other processes know this one is gone."""
        if self.shared and self._unsettled:
            with contextlib.suppress(OSError):
                self._transaction(lambda: None, wait=True)
        if self._alive is not None:
            with contextlib.suppress(OSError):
                self._alive_path(self.owner).unlink(missing_ok=True)
            self._alive.close()  # releases the lock: our calls still listed count as spent
            self._alive = None

    def _transaction(self, change: Callable[[], Any], *, wait: bool = False) -> Any:
        """Read the ledger, apply the releases not yet written, run ``change`` on this
        process's view of it, write it back; all under the ledger's lock."""
        fd = os.open(self._ledger, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _BUSY
            self._adopt(self._read(os.pread(fd, os.fstat(fd).st_size, 0)))
            unsettled, self._unsettled = self._unsettled, []
            for call, spent in unsettled:
                self._settle(call, spent)
            try:
                result = change()
                self._write(fd)
            except BaseException:
                self._unsettled = unsettled + self._unsettled
                raise
            return result
        finally:
            os.close(fd)  # releases the lock

    def _read(self, raw: bytes) -> dict[str, Any]:
        if not raw:
            return {"spent": [], "starts": [], "calls": []}
        try:
            # length-prefixed: what a longer earlier write left after it is not read
            size = int.from_bytes(raw[:4], "big")
            if len(raw) < 4 + size:
                raise ValueError("truncated")
            data = msgpack.unpackb(raw[4:4 + size], raw=False)
            if not isinstance(data, dict) or data.get("v") != _LEDGER_VERSION:
                raise ValueError("not a budget ledger of this version")
            spent = [(float(t), int(n)) for t, n in data["spent"]]
            starts = [float(t) for t in data["starts"]]
            calls: list[list[Any]] = [[str(o), int(c), float(t), int(r)] for o, c, t, r in data["calls"]]
        except Exception as exc:  # damaged: the hour's accounting is lost, never the service
            log.warning("prefetch budget: ignoring unreadable ledger %s (%s)", self._ledger, exc)
            return {"spent": [], "starts": [], "calls": []}
        # A call whose process is gone is spent at its reservation, and in flight no more.
        alive = {self.owner: True}
        kept = []
        for row in calls:
            owner = row[0]
            if owner not in alive:
                alive[owner] = self._is_alive(owner)
            if alive[owner]:
                kept.append(row)
            else:
                spent.append((row[2], row[3]))
        return {"spent": spent, "starts": starts, "calls": kept}

    def _is_alive(self, owner: str) -> bool:
        path = self._alive_path(owner)
        try:
            with open(path, "rb") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True  # its process holds it
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):
            path.unlink()
        return False

    def _adopt(self, state: dict[str, Any]) -> None:
        self._spent = deque(sorted(state["spent"]))
        self._spent_total = sum(n for _, n in self._spent)
        self._starts = deque(sorted(state["starts"]))
        self._calls = state["calls"]
        self.inflight = len(self._calls)
        self.reserved = sum(row[3] for row in self._calls)
        self._expire(self.clock())

    def _settle(self, call: int, spent: int) -> None:
        for i, row in enumerate(self._calls):
            if row[0] == self.owner and row[1] == call:
                del self._calls[i]
                self.inflight -= 1
                self.reserved -= row[3]
                break
        else:
            return  # already counted as spent (it outlived a ledger that was lost)
        if spent:
            self._spent.append((self.clock(), spent))
            self._spent_total += spent

    def _write(self, fd: int) -> None:
        # The hour's spending by the minute, each minute's at its end: an hour is 61 lines, not
        # a line per call (30 calls a minute made 1,800, and 3 ms per admission), and a token
        # counts up to a minute longer than it must, never shorter.
        by_minute: dict[float, int] = {}
        for at, tokens in self._spent:
            end = math.ceil(at / 60.0) * 60.0
            by_minute[end] = by_minute.get(end, 0) + tokens
        starts = list(self._starts)[-max(1, self.max_per_minute):]  # only the newest can refuse a call
        data = {"v": _LEDGER_VERSION, "spent": sorted(by_minute.items()), "starts": starts, "calls": self._calls}
        # In place, under the lock: a rename cost 0.7 ms of journal here, on the event loop.
        payload = msgpack.packb(data, use_bin_type=True)
        os.pwrite(fd, len(payload).to_bytes(4, "big") + payload, 0)
        if os.fstat(fd).st_size > 2 * (4 + len(payload)) + 4096:  # the prefix says where it ends
            os.ftruncate(fd, 4 + len(payload))

    # -- the limits ---------------------------------------------------------------------------
    def try_acquire(self, estimate: int) -> Grant | None:
        if not self.shared:
            return super().try_acquire(estimate)

        def admit() -> Grant | None:
            grant = Budget.try_acquire(self, estimate)
            if grant is not None:
                self._next_call += 1
                grant.call = self._next_call
                self._calls.append([self.owner, grant.call, grant.started, estimate])
            return grant

        try:
            grant = self._transaction(admit)
        except OSError as exc:
            log.warning("prefetch budget: ledger %s unusable (%s); prefetch refused", self._ledger, exc)
            grant = _BUSY
        if grant is _BUSY:
            self.refused["busy"] += 1
            return None
        return grant

    def release(self, grant: Grant, spent: int) -> None:
        if not self.shared:
            return super().release(grant, spent)
        if grant.released:
            return
        grant.released = True
        self._unsettled.append((grant.call, spent))
        with contextlib.suppress(OSError):  # written at the next admission or at close()
            self._transaction(lambda: None)

    def ledger(self) -> dict[str, list[list[float]]]:
        # Shared, the ledger file is what persists; saving it with a model would count it twice.
        return super().ledger() if not self.shared else {"spent": [], "starts": []}

    def restore(self, ledger: dict[str, list[list[float]]]) -> None:
        if not self.shared:
            super().restore(ledger)


_BUSY = object()

