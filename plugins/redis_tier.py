"""Built-in ``redis`` tier: a cache shared by every process pointed at R1MW_REDIS_URL, with a
hard deadline (R1MW_REDIS_TIMEOUT_MS) and a circuit breaker, so Redis down is a miss."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlparse

import r1mw
from r1mw.codec import ZstdCodec
from r1mw.tiers.redis import RedisTier

_SCHEMES = ("redis", "rediss", "unix")


def _redis(pipeline: r1mw.Pipeline) -> RedisTier:
    s = pipeline.settings
    url = s.redis_url
    if urlparse(url).scheme not in _SCHEMES:
        raise r1mw.ConfigError(f"R1MW_REDIS_URL={url!r} is invalid: expected a redis://, rediss:// or unix:// URL "
                               "(needed because R1MW_TIERS includes redis)")
    try:
        import redis.asyncio  # noqa: F401  (an optional extra: say so at start-up, not per call)
    except ImportError:
        raise r1mw.ConfigError("R1MW_TIERS includes redis, which needs the redis package: "
                               "pip install 'r1mw[redis]'") from None
    tier = RedisTier(url, name="redis", prefix=s.redis_prefix, timeout=s.redis_timeout_ms / 1000.0,
                     breaker_failures=s.redis_breaker_failures, breaker_cooldown=s.redis_breaker_cooldown_s)
    if s.codec == "msgpack+zstd+dict":
        # Redis is shared with other machines, which do not see this one's zstd dictionaries:
        # plain zstd there (42 % of raw JSON; a network round trip dwarfs its decode).
        tier.entry_codec = ZstdCodec(s.compression_threshold)
    return tier


@r1mw.hookimpl
def r1mw_register_tiers() -> dict[str, Callable[[r1mw.Pipeline], r1mw.Tier]]:
    return {"redis": _redis}
