"""An adapter so any aiocache ``BaseCache`` backend (memory, Redis, Memcached) serves as a tier.

Two traps of aiocache 0.12 are closed here:

* Every aiocache call runs under ``asyncio.wait_for`` with its default ``timeout=5`` (15-22 us
  per memory get). The adapter calls the backend with ``timeout=None`` and applies its own
  deadline (``timeout``, None = none) only where one is wanted (network backends).
* aiocache's Pickle serializer would run code read from a shared backend. The adapter always
  installs :class:`BytesSerializer` (bytes in, bytes out, no decoding) on the cache it wraps.

Keys are bytes: they go to aiocache as hex strings (its key builders expect ``str``). Values
are the key then the bytes given: a value found under another key (copied or renamed in a
shared backend) is a corrupt entry, a counted miss removed, never another question's answer.
Faults are misses or no-ops, counted; the adapter never raises to its caller.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from ..deadline import within
from ..errors import ConfigError
from .redis import CircuitBreaker, _refused_by_server

__all__ = ["AiocacheTier", "BytesSerializer"]

log = logging.getLogger("r1mw.tiers.aiocache")


def _base_serializer() -> type:
    from aiocache.serializers import BaseSerializer

    return BaseSerializer


try:
    _Base: type = _base_serializer()
except ImportError:  # pragma: no cover - aiocache is an optional extra
    _Base = object


class BytesSerializer(_Base):
    """Stores bytes as they are and reads them back undecoded (``encoding=None``): no pickle,
    no text decoding of binary values."""

    DEFAULT_ENCODING = None

    def __init__(self) -> None:
        if _Base is not object:
            super().__init__(encoding=None)
        self.encoding = None

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"BytesSerializer stores bytes, got {type(value).__name__}")
        return bytes(value)

    def loads(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"BytesSerializer read a {type(value).__name__}, not bytes")


class AiocacheTier:
    """Wrap an aiocache cache (``SimpleMemoryCache()``, ``RedisCache(...)``, ...) as a tier.

    The wrapped cache gets :class:`BytesSerializer` and ``timeout=None``; ``timeout`` here is
    this adapter's own per-call deadline in seconds (None: no deadline, right for memory).
    ``write_through=True`` makes the store write every entry here (a shared backend).
    """

    def __init__(self, cache: Any, *, name: str = "aiocache", timeout: float | None = None,
                 write_through: bool = False, breaker_failures: int = 3, breaker_cooldown: float = 5.0) -> None:
        from aiocache.serializers import PickleSerializer

        if isinstance(cache.serializer, PickleSerializer):
            log.info("%s: replacing aiocache's PickleSerializer with BytesSerializer", name)
        cache.serializer = BytesSerializer()
        cache.timeout = None  # aiocache's per-call wait_for costs more than a memory get
        self.cache = cache
        self.name = name
        self.timeout = timeout
        self.write_through = write_through  # True for a backend shared between processes
        self._memory = type(cache).__name__.startswith("SimpleMemory")
        self.hits = self.misses = self.sets = self.deletes = self.errors = self.timeouts = self.corrupt = 0
        # A network backend that is down or hangs is skipped after a few failures (as the
        # redis tier does), or every lookup of every request would wait the whole deadline.
        self.breaker = CircuitBreaker(breaker_failures, breaker_cooldown)
        self.skipped = 0

    @classmethod
    def from_backend(cls, backend: type, *, name: str = "aiocache", timeout: float | None = None,
                     namespace: str = "r1mw:v2:", write_through: bool = False, breaker_failures: int = 3,
                     breaker_cooldown: float = 5.0, **kwargs: Any) -> "AiocacheTier":
        """Build ``backend(**kwargs)`` the safe way (bytes serializer, no aiocache timeout)."""
        if "serializer" in kwargs:
            raise ConfigError(f"aiocache tier {name!r}: serializer is fixed to BytesSerializer; do not pass one")
        cache = backend(serializer=BytesSerializer(), timeout=None, namespace=namespace, **kwargs)
        return cls(cache, name=name, timeout=timeout, write_through=write_through,
                   breaker_failures=breaker_failures, breaker_cooldown=breaker_cooldown)

    async def _call(self, make: Callable[[], Any], default: Any) -> Any:
        breaker = self.breaker
        if not breaker.allow():
            self.skipped += 1
            return default
        probe = breaker.state == "half-open"
        try:
            if self.timeout is None:
                result = await make()
            else:
                result = await within(make(), self.timeout)  # never swallows a cancel
        except asyncio.TimeoutError:
            self.timeouts += 1
            breaker.failure()
            return default
        except asyncio.CancelledError:
            if probe:
                breaker.abandoned()
            raise
        except Exception as exc:  # noqa: BLE001 - a backend fault is a miss, counted
            self.errors += 1
            if _refused_by_server(exc):
                breaker.success()  # the server answered (see RedisTier): not an outage
            else:
                breaker.failure()
            if self.errors < 5:
                log.warning("%s: %s: %s (a miss)", self.name, type(exc).__name__, exc)
            return default
        breaker.success()
        return result

    async def get(self, key: bytes) -> bytes | None:
        value = await self._call(lambda: self.cache.get(key.hex(), timeout=None), None)
        if value is None:
            self.misses += 1
            return None
        if not value.startswith(key):  # another key's value (see the module's docstring)
            self.corrupt += 1
            self.misses += 1
            await self._call(lambda: self.cache.delete(key.hex(), timeout=None), 0)
            return None
        self.hits += 1
        return value[len(key):]

    async def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{self.name} stores bytes, got {type(value).__name__}")
        ok = await self._call(lambda: self.cache.set(key.hex(), key + value, ttl=float(ttl) if ttl else None,
                                                     timeout=None), False)
        if ok:
            self.sets += 1

    async def delete(self, key: bytes) -> bool:
        n = await self._call(lambda: self.cache.delete(key.hex(), timeout=None), 0)
        if n:
            self.deletes += 1
        return bool(n)

    async def exists(self, key: bytes) -> bool:
        return bool(await self._call(lambda: self.cache.exists(key.hex(), timeout=None), False))

    async def clear(self) -> None:
        """Clear this tier's namespace. A shared backend without a namespace is left alone
        (aiocache would flush the whole Redis database)."""
        namespace = self.cache.namespace
        if not namespace and not self._memory:
            log.warning("%s: clear() skipped: the backend has no namespace", self.name)
            return
        await self._call(lambda: self.cache.clear(namespace=namespace or None, timeout=None), False)

    async def close(self) -> None:
        await self._call(lambda: self.cache.close(timeout=None), None)

    def stats(self) -> dict[str, Any]:
        b = self.breaker
        return {"backend": type(self.cache).__name__, "up": b.state == "closed", "hits": self.hits,
                "misses": self.misses, "sets": self.sets, "deletes": self.deletes, "errors": self.errors,
                "corrupt": self.corrupt,
                "timeouts": self.timeouts, "skipped": self.skipped, "breaker": b.state,
                "breaker_opens": b.opens}
