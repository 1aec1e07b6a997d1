"""The Redis tier: a cache shared by every process pointed at the same server.

Redis down, slow or restarting must make requests slower, never broken:

* **No retries inside redis-py** (its defaults turn one call to a dead server into 3-4 s).
  Each call has our own deadline (``timeout`` seconds, R1MW_REDIS_TIMEOUT_MS) on top of the
  socket timeouts; past it the call is a miss (get) or a no-op (set, delete), counted.
* **A circuit breaker**: after ``breaker_failures`` failures in a row Redis is skipped (a miss
  in ~1 us) for ``breaker_cooldown`` seconds; then one call probes it: success closes the
  breaker, failure opens it again, and so does a probe cancelled by its caller (client gone,
  outer deadline), with the cooldown restarted. ``stats()`` shows errors, timeouts, breaker
  opens, skipped calls and the seconds of outage seen.
* **Reconnects by itself**: redis-py's pool opens a new connection on the next call after one
  broke; a timed-out call drops its connection, so no late reply is read by another call.

Keys are ``prefix + key`` (binary-safe), values ``key + the bytes given``, TTL is Redis's own
expiry. The key inside the value binds it to its key, as L2 and L3 do: a value copied or
renamed under another key (ops tooling, ``COPY``/``RENAME``, a proxy's bug) would otherwise be
served as the answer to another question; it is a corrupt entry instead. Nothing read from
Redis is unpickled or run: the store's codec decodes the bytes. A key of another type under
the prefix (WRONGTYPE) is a corrupt entry too: a counted miss, unlinked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

if TYPE_CHECKING:
    from ..protocols import Codec

from ..deadline import within

__all__ = ["CircuitBreaker", "RedisTier"]

log = logging.getLogger("r1mw.tiers.redis")

T = TypeVar("T")


class CircuitBreaker:
    """Closed -> (``failures`` in a row) -> open -> (``cooldown`` s) -> half-open: one probe."""

    def __init__(self, failures: int = 3, cooldown: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self.state = "closed"
        self.opens = 0
        self._streak = 0
        self._opened_at = 0.0
        self._streak_start = 0.0
        self._outage_start: float | None = None
        self._outage_total = 0.0
        self._probing = False

    def allow(self) -> bool:
        """May a call go to Redis now? (In half-open state, only the one probe may.)"""
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock() - self._opened_at >= self.cooldown:
            self.state = "half-open"
            self._probing = True
            return True
        return False

    def success(self) -> None:
        if self._outage_start is not None:
            self._outage_total += self.clock() - self._outage_start
            self._outage_start = None
        self.state = "closed"
        self._streak = 0
        self._probing = False

    def failure(self) -> None:
        now = self.clock()
        if self._streak == 0:
            self._streak_start = now
        self._streak += 1
        if self.state == "half-open" or (self.state == "closed" and self._streak >= self.failures):
            if self.state == "closed":
                self.opens += 1
                self._outage_start = self._streak_start
            self.state = "open"
            self._opened_at = now
            self._probing = False

    def abandoned(self) -> None:
        """The probe was cancelled by its caller before Redis answered: it proved nothing, so
        back to open with the cooldown restarted, and the next call after it probes again."""
        if self.state == "half-open":
            self.state = "open"
            self._opened_at = self.clock()
            self._probing = False

    @property
    def outage_seconds(self) -> float:
        """Seconds Redis was (or still is) unusable, from the first failure of each outage."""
        current = self.clock() - self._outage_start if self._outage_start is not None else 0.0
        return self._outage_total + current


class RedisTier:
    """A :class:`~r1mw.protocols.Tier` over ``redis.asyncio`` that never raises to its caller.

    ``client`` may be given (tests, shared pools); otherwise one is built from ``url`` with
    retries off and socket timeouts equal to the deadline. ``write_through``: the store writes
    every entry here when it is stored (a shared tier must not wait for a local eviction).
    Redis bounds and evicts by itself (``maxmemory``), so there is no ``on_evict``.

    ``key_len``: the length of every key (the store's are 16-byte hashes). ``clear()`` removes
    exactly ``prefix`` + that many bytes, so a tier whose prefix extends this one's
    (``r1mw:v2:`` and ``r1mw:v2:teamB:``) keeps its keys. None: keys of any length, and
    ``clear()`` removes everything under the prefix, nested prefixes included.
    """

    write_through = True
    # Set by the redis plugin when the store's codec is not one other machines can read (the
    # store then encodes this tier's entries with it): see TieredStore.
    entry_codec: Codec | None = None

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, name: str = "redis",
                 prefix: bytes | str = b"r1mw:v2:", timeout: float = 0.05, breaker_failures: int = 3,
                 breaker_cooldown: float = 5.0, max_connections: int = 64, client: Any = None,
                 key_len: int | None = 16) -> None:
        self.name = name
        self.url = url
        self.prefix = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        self.timeout = timeout
        self.key_len = key_len
        self._odd_key_seen = False
        self.breaker = CircuitBreaker(breaker_failures, breaker_cooldown)
        self._client = client if client is not None else _client(url, timeout, max_connections)
        self.hits = self.misses = self.sets = self.deletes = 0
        self.errors = self.timeouts = self.skipped = self.corrupt = 0

    async def _call(self, make: Callable[[], Awaitable[T]], default: T, deadline: float | None = None) -> T:
        breaker = self.breaker
        if not breaker.allow():
            self.skipped += 1
            return default
        probe = breaker.state == "half-open"  # allow() let this call through as the one probe
        try:
            result = await within(make(), deadline or self.timeout)  # never swallows a cancel
        except asyncio.TimeoutError:
            self.timeouts += 1
            breaker.failure()
            return default
        except asyncio.CancelledError:
            if probe:  # or the breaker would wait for this probe's answer forever
                breaker.abandoned()
            raise
        except Exception as exc:  # noqa: BLE001 - any Redis fault is a miss, counted
            self.errors += 1
            if _refused_by_server(exc):
                # The server is up and said no to this command (OOM at maxmemory under
                # noeviction, READONLY after a failover, an ACL): not an outage. Opening the
                # breaker would skip the reads it still serves.
                breaker.success()
            else:
                breaker.failure()
            if self.errors < 5 or self.errors % 1000 == 0:
                log.warning("%s: %s: %s (a miss; errors so far: %d)", self.name, type(exc).__name__, exc, self.errors)
            return default
        breaker.success()
        return result

    async def get(self, key: bytes) -> bytes | None:
        rkey = self.prefix + key
        value = await self._call(lambda: self._get(rkey), None)
        if value is None:
            self.misses += 1
            return None
        if not value.startswith(key):  # another key's value, or one written before the binding
            self.corrupt += 1
            self.misses += 1
            if self.corrupt < 5 or self.corrupt % 1000 == 0:
                log.warning("%s: the value under %r is not this key's (copied or renamed, or written by "
                            "an r1mw before 2026-11-27 under the same prefix): removed", self.name, rkey)
            await self._call(lambda: self._client.unlink(rkey), 0)
            return None
        self.hits += 1
        return value[len(key):]

    async def _get(self, rkey: bytes) -> bytes | None:
        try:
            return await self._client.get(rkey)
        except Exception as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
        # A list, hash, set... under our prefix: not something we wrote. The server answered,
        # so this is a damaged entry (a counted miss, removed), not an outage for the breaker.
        self.corrupt += 1
        if self.corrupt < 5 or self.corrupt % 1000 == 0:
            log.warning("%s: %r is not a string value (WRONGTYPE): removed; another program writes "
                        "under the prefix %r, give this tier its own (R1MW_REDIS_PREFIX)",
                        self.name, rkey, self.prefix)
        await self._client.unlink(rkey)
        return None

    async def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{self.name} stores bytes, got {type(value).__name__}")
        if self.key_len is not None and len(key) != self.key_len and not self._odd_key_seen:
            self._odd_key_seen = True
            log.warning("%s: a key of %d bytes, not %d: clear() will not remove it; build "
                        "RedisTier(key_len=None) to store keys of any length", self.name, len(key), self.key_len)
        px = max(1, int(ttl * 1000)) if ttl else None
        ok = await self._call(lambda: self._client.set(self.prefix + key, key + value, px=px), False)
        if ok:
            self.sets += 1

    async def delete(self, key: bytes) -> bool:
        n = await self._call(lambda: self._client.delete(self.prefix + key), 0)
        if n:
            self.deletes += 1
        return bool(n)

    async def exists(self, key: bytes) -> bool:
        return bool(await self._call(lambda: self._client.exists(self.prefix + key), 0))

    async def clear(self) -> None:
        """Delete every key of this tier (SCAN + UNLINK, never FLUSHDB): the prefix and exactly
        ``key_len`` more bytes, not the keys of a tier whose prefix merely starts with ours."""
        match = _glob_escape(self.prefix) + (b"?" * self.key_len if self.key_len is not None else b"*")

        async def scan_and_unlink() -> int:
            n = 0
            batch: list[bytes] = []
            async for k in self._client.scan_iter(match=match, count=1000):
                batch.append(k)
                if len(batch) >= 1000:
                    n += await self._client.unlink(*batch)
                    batch.clear()
            if batch:
                n += await self._client.unlink(*batch)
            return n

        await self._call(scan_and_unlink, 0, deadline=max(5.0, 100 * self.timeout))

    async def ping(self) -> bool:
        """True when Redis answered within the deadline (goes through the breaker)."""
        return bool(await self._call(lambda: self._client.ping(), False))

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception:  # noqa: BLE001 - closing a broken connection is not an error
            pass

    def stats(self) -> dict[str, Any]:
        b = self.breaker
        return {"up": b.state == "closed", "hits": self.hits, "misses": self.misses, "sets": self.sets,
                "deletes": self.deletes,
                "corrupt": self.corrupt, "errors": self.errors, "timeouts": self.timeouts, "skipped": self.skipped,
                "breaker": b.state, "breaker_opens": b.opens, "outage_s": round(b.outage_seconds, 3),
                "timeout_ms": self.timeout * 1000.0}


def _client(url: str, timeout: float, max_connections: int) -> Any:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                          retry=Retry(NoBackoff(), 0), retry_on_timeout=False, retry_on_error=[],
                          health_check_interval=0, max_connections=max_connections)


def _refused_by_server(exc: BaseException) -> bool:
    """Whether ``exc`` is an error reply of a server that answered (redis-py's ResponseError),
    not a connection fault or a cluster that is down. redis is imported only once it raised."""
    if not type(exc).__module__.startswith("redis"):
        return False
    from redis.exceptions import ClusterDownError, ResponseError

    return isinstance(exc, ResponseError) and not isinstance(exc, ClusterDownError)


def _glob_escape(raw: bytes) -> bytes:
    out = bytearray()
    for b in raw:
        if b in b"*?[]\\":
            out += b"\\"
        out.append(b)
    return bytes(out)
