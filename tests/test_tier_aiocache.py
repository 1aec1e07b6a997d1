"""The aiocache adapter: any aiocache backend as a tier, with bytes in and bytes out, no
aiocache timeout on the call path, never its Pickle serializer, faults as misses."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

aiocache = pytest.importorskip("aiocache")
from aiocache import RedisCache, SimpleMemoryCache  # noqa: E402
from aiocache.serializers import PickleSerializer  # noqa: E402

from r1mw.tiers.aiocache import AiocacheTier, BytesSerializer  # noqa: E402

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("R1MW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
async def memory():
    t = AiocacheTier(SimpleMemoryCache(), name="mem")
    yield t
    await t.close()


async def test_memory_backend_contract(memory):
    key = b"\x00\xffkey"
    assert await memory.get(key) is None
    await memory.set(key, b"\x80\x81 binary")
    assert await memory.get(key) == b"\x80\x81 binary"
    assert await memory.exists(key)
    assert await memory.delete(key) is True and await memory.delete(key) is False
    assert await memory.get(key) is None
    await memory.set(b"a", b"1")
    await memory.clear()
    assert await memory.get(b"a") is None
    assert memory.stats()["hits"] == 1 and memory.stats()["errors"] == 0


async def test_ttl(memory):
    await memory.set(b"short", b"x", ttl=0.05)
    await memory.set(b"long", b"y", ttl=60)
    await asyncio.sleep(0.15)
    assert await memory.get(b"short") is None and await memory.get(b"long") == b"y"


async def test_no_aiocache_timeout_and_never_pickle():
    cache = SimpleMemoryCache(serializer=PickleSerializer())  # as a user might have it
    assert cache.timeout == 5.0
    t = AiocacheTier(cache)
    assert cache.timeout is None and isinstance(cache.serializer, BytesSerializer)
    # Something that is not bytes in the backend (written by another client) is a counted
    # miss, never an object rebuilt from its content.
    await cache.set(b"other".hex(), "a str written by someone else", dumps_fn=lambda v: v)
    assert await t.get(b"other") is None and t.stats()["errors"] == 1
    with pytest.raises(TypeError, match="stores bytes"):
        await t.set(b"k", {"not": "bytes"})


async def test_from_backend_refuses_a_serializer():
    with pytest.raises(ValueError, match="serializer is fixed"):
        AiocacheTier.from_backend(SimpleMemoryCache, serializer=PickleSerializer())


async def test_backend_faults_are_misses():
    dead = AiocacheTier.from_backend(RedisCache, endpoint="127.0.0.1", port=1, timeout=0.5)
    assert await dead.get(b"k") is None
    await dead.set(b"k", b"v")
    assert await dead.delete(b"k") is False
    assert dead.stats()["errors"] + dead.stats()["timeouts"] == 3
    await dead.close()


async def test_redis_backend_roundtrip_and_namespaced_clear():
    from urllib.parse import urlparse

    u = urlparse(REDIS_URL)
    ns = f"r1mwtest-aio-{uuid.uuid4().hex}"
    t = AiocacheTier.from_backend(RedisCache, endpoint=u.hostname, port=u.port or 6379,
                                  db=int((u.path or "/0").lstrip("/") or 0), namespace=ns, timeout=1.0)
    if not await t.exists(b"probe") and t.stats()["errors"]:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and Redis is missing at {REDIS_URL}")
        pytest.skip(f"Redis tests skipped: no server at {REDIS_URL}")
    other = AiocacheTier.from_backend(RedisCache, endpoint=u.hostname, port=u.port or 6379,
                                      db=int((u.path or "/0").lstrip("/") or 0), namespace=ns + "-other")
    try:
        await t.set(b"\x00bin", b"\xff\x00value", ttl=30)
        await other.set(b"\x00bin", b"theirs")
        assert await t.get(b"\x00bin") == b"\xff\x00value"
        await t.clear()
        assert await t.get(b"\x00bin") is None
        assert await other.get(b"\x00bin") == b"theirs"
    finally:
        await other.clear()
        await other.close()
        await t.close()


async def test_conforms_to_the_tier_protocol(memory):
    from r1mw.protocols import Tier

    assert isinstance(memory, Tier)
    assert callable(memory.close) and memory.write_through is False


async def test_a_value_found_under_another_key_is_a_counted_corrupt_miss(memory):
    # As in the Redis tier: the value carries its key, so one copied under another key in a
    # shared backend is never another question's answer.
    one, two = b"1" * 16, b"2" * 16
    await memory.set(one, b"answer to one")
    await memory.cache.set(two.hex(), await memory.cache.get(one.hex()))
    assert await memory.get(two) is None and await memory.get(one) == b"answer to one"
    assert memory.stats()["corrupt"] == 1 and not await memory.exists(two)


async def test_a_caller_cancelled_as_its_backend_call_fails_is_cancelled():
    # As for the Redis tier (tests/test_tier_redis.py): before Python 3.12, asyncio.wait_for
    # lost a cancel arriving in the loop turn the backend call ended in.
    gate = asyncio.Event()

    class Failing(SimpleMemoryCache):
        async def get(self, *args, **kwargs):
            await gate.wait()
            raise ConnectionError("connection reset by peer")

    t = AiocacheTier(Failing(), name="gated", timeout=5.0)
    task = asyncio.create_task(t.get(b"k" * 16))
    for _ in range(3):
        await asyncio.sleep(0)
    gate.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
