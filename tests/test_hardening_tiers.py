"""Third review of the storage tiers: one test per bug found (docs/design.md, "Hardening notes").
Real files, a real Redis, real processes where the fault allows it."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

import anyio
import pytest

from r1mw.tiers.archive import ArchiveTier
from r1mw.tiers.disk import DiskTier
from r1mw.tiers.redis import RedisTier
from r1mw.tiers.segment import SegmentTier

from test_tier_redis import server  # noqa: F401  (a fixture: a throwaway redis-server)

pytestmark = pytest.mark.anyio

K1, K2, K3 = b"1" * 16, b"2" * 16, b"3" * 16


def _cold(kind: str, path: Path):
    if kind == "l3":
        return SegmentTier(path, inline_reads=True, refresh_interval=0.0, fsync=False, segment_bytes=4096)
    return ArchiveTier(path, inline_reads=True, refresh_interval=0.0, fsync=False, block_bytes=64)


@pytest.mark.parametrize("kind", ["l3", "l4"])
async def test_cold_tier_whose_directory_is_removed_keeps_working_and_writes_only_its_own_files(tmp_path, kind):
    """`rm -rf` of the cache directory under a running process: lookups are misses (no
    exception), the tier's records never land in a file that is not its own (its old write
    descriptor number is reused by the next open), and it stores again in a new directory
    that the next process reads."""
    d = tmp_path / "cold"
    t = _cold(kind, d)
    await t.set(K1, b"v1" * 40)
    assert await t.get(K1) == b"v1" * 40
    shutil.rmtree(d)
    assert await t.get(K1) in (None, b"v1" * 40)  # an open descriptor may still read it
    bystander = tmp_path / "bystander"
    fd = os.open(bystander, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        await t.set(K2, b"v2" * 40)
        await t.set(K3, b"v3" * 40)
        assert await t.get(K2) == b"v2" * 40
    finally:
        os.close(fd)
    assert bystander.read_bytes() == b""
    await t.close()
    again = _cold(kind, d)
    try:
        assert await again.get(K2) == b"v2" * 40 and await again.get(K3) == b"v3" * 40
        assert await again.get(K1) is None
    finally:
        await again.close()


@contextlib.contextmanager
def read_only(directory: Path):
    """Opens for writing under ``directory`` fail with EROFS, as on a read-only mount (the
    tests may run as root, for whom permission bits refuse nothing)."""
    real_open = os.open
    prefix = str(directory)

    def refusing(path, flags, *args, **kw):
        if str(path).startswith(prefix) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", refusing)
        yield


@pytest.mark.parametrize("kind", ["l3", "l4"])
async def test_cold_tier_on_a_read_only_directory_serves_what_it_holds(tmp_path, kind):
    """A cache directory that cannot be written (a read-only mount, a snapshot shared between
    machines): the tier opens (it was a start-up failure), serves what it holds, and refuses
    writes as counted no-ops."""
    d = tmp_path / "cold"
    t = _cold(kind, d)
    await t.set(K1, b"v1" * 40)
    await t.close()
    with read_only(d):
        t = _cold(kind, d)
        assert await t.get(K1) == b"v1" * 40
        await t.set(K2, b"v2" * 40)
        await t.close()
        assert t.stats()["write_errors"] >= 1
    again = _cold(kind, d)
    try:
        assert await again.get(K1) == b"v1" * 40 and await again.get(K2) is None
    finally:
        await again.close()


async def test_l2_whose_directory_is_removed_misses_clears_and_stores_again(tmp_path):
    """`rm -rf` of L2's directory under a running process: a miss, then ``clear()`` (it raised
    FileNotFoundError from the rescan) and a rescan after writes work, and entries land again."""
    d = tmp_path / "l2"
    t = DiskTier(d, rescan_every=1, rescan_interval=0)
    await t.set(K1, b"v1")
    shutil.rmtree(d)
    assert await t.get(K1) is None
    await t.clear()
    shutil.rmtree(d, ignore_errors=True)
    await t.set(K2, b"v2")  # the rescan after it finds a directory made again by the write
    assert await t.get(K2) == b"v2"
    assert DiskTier(d).get_sync(K2) == b"v2"


async def test_a_redis_refusing_writes_still_serves_reads(server):
    """Redis at maxmemory with noeviction (Redis's default policy) answers every SET with an OOM
    error, and a replica promoted read-only answers READONLY: the server is up and serves reads.
    Those refusals counted as outages opened the breaker, and every read was skipped with it."""
    from redis.asyncio import Redis

    raw = Redis.from_url(server.url)
    tier = RedisTier(server.url, prefix=b"t:", timeout=1.0, breaker_failures=2, breaker_cooldown=3600)
    try:
        await tier.set(K1, b"stored before the server filled up")
        await raw.config_set("maxmemory", 1)  # below what it uses: full from now on
        for k in (K2, K3, K2, K3):
            await tier.set(k, b"refused")
        assert await tier.get(K1) == b"stored before the server filled up"
        s = tier.stats()
        assert s["breaker"] == "closed" and s["breaker_opens"] == 0 and s["sets"] == 1
        assert s["errors"] == 4  # counted, as before
    finally:
        await raw.config_set("maxmemory", 0)
        await raw.aclose()
        await tier.close()


async def test_an_aiocache_redis_tier_that_hangs_is_skipped_then_used_again(server):
    """An aiocache backend (Redis) that stops answering: the adapter had a deadline but no
    breaker, so every lookup of every request waited the whole deadline for as long as the
    outage lasted. Now it is skipped after ``breaker_failures`` timeouts, and used again once
    it answers a probe."""
    pytest.importorskip("aiocache")
    from aiocache import RedisCache

    from r1mw.tiers.aiocache import AiocacheTier

    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    t = AiocacheTier.from_backend(RedisCache, endpoint="127.0.0.1", port=port, namespace="hardening:",
                                  timeout=0.05, breaker_failures=2, breaker_cooldown=5.0)
    now = [0.0]
    t.breaker.clock = lambda: now[0]  # the cooldown passes when the test says so, not with the load
    await t.set(K1, b"v1")
    server.pause()
    try:
        for _ in range(6):
            assert await t.get(K1) is None
        s = t.stats()
        assert s["timeouts"] == 2 and s["skipped"] == 4 and s["breaker_opens"] == 1 and not s["up"]
    finally:
        server.resume()
    assert await t.get(K1) is None and t.stats()["skipped"] == 5  # still cooling down
    now[0] += 5.0
    for _ in range(100):  # the next call after the cooldown probes (a resumed server may lag)
        if await t.get(K1) == b"v1":
            break
        now[0] += 5.0
        await anyio.sleep(0.02)
    assert t.stats()["up"] and await t.get(K1) == b"v1"
    await t.close()
