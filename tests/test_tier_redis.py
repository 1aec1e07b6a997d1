"""Redis tier: contract against a real server, the circuit breaker, and a throwaway server that
is stopped, paused (SIGSTOP) and restarted mid-run. Without any Redis these tests skip, except
under CI (CI=true), where a missing Redis fails them."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest

import r1mw
from r1mw.tiers.redis import CircuitBreaker, RedisTier

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("R1MW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def no_redis(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and Redis is missing: {reason}")
    pytest.skip(f"Redis tests skipped: {reason} (start redis-server on 127.0.0.1:6379 or set R1MW_TEST_REDIS_URL)")


@pytest.fixture
async def redis_url() -> str:
    try:
        from redis.asyncio import Redis
    except ImportError:
        no_redis("the redis package is not installed")
    client = Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001
        no_redis(f"no server answers at {REDIS_URL} ({exc})")
    finally:
        await client.aclose()
    return REDIS_URL


@pytest.fixture
async def tier(redis_url):
    t = RedisTier(redis_url, prefix=f"r1mwtest:{uuid.uuid4().hex}:", timeout=0.5)
    yield t
    await t.clear()
    await t.close()


def k(name: bytes) -> bytes:
    """A key of the store's length (16 bytes): what RedisTier.clear() removes."""
    return name.ljust(16, b".")


async def test_get_after_set_delete_exists_clear(tier):
    assert await tier.get(k(b"k")) is None
    await tier.set(k(b"k"), b"\x00\xffbinary\x80")
    assert await tier.get(k(b"k")) == b"\x00\xffbinary\x80"
    assert await tier.exists(k(b"k"))
    assert await tier.delete(k(b"k")) is True and await tier.delete(k(b"k")) is False
    assert await tier.get(k(b"k")) is None and not await tier.exists(k(b"k"))
    await tier.set(b"*glob?[chars]\\*?", b"1")  # keys with glob characters are still only ours
    await tier.clear()
    assert await tier.get(b"*glob?[chars]\\*?") is None
    s = tier.stats()
    assert s["errors"] == s["timeouts"] == s["breaker_opens"] == 0 and s["hits"] == 1


async def test_ttl_is_redis_expiry(tier):
    await tier.set(k(b"short"), b"x", ttl=0.1)
    await tier.set(k(b"long"), b"y", ttl=60)
    await asyncio.sleep(0.3)
    assert await tier.get(k(b"short")) is None and await tier.get(k(b"long")) == b"y"


async def test_shared_between_clients_and_clear_keeps_other_prefixes(tier, redis_url):
    other_process = RedisTier(redis_url, prefix=tier.prefix, timeout=0.5)
    stranger = RedisTier(redis_url, prefix=f"r1mwtest:{uuid.uuid4().hex}:", timeout=0.5)
    try:
        await tier.set(k(b"shared"), b"seen by all")
        assert await other_process.get(k(b"shared")) == b"seen by all"
        await stranger.set(k(b"shared"), b"someone else's")
        await tier.clear()
        assert await other_process.get(k(b"shared")) is None
        assert await stranger.get(k(b"shared")) == b"someone else's"
    finally:
        await stranger.clear()
        await stranger.close()
        await other_process.close()


@pytest.mark.parametrize("glob", ["", "*?[a-z]\\"])
async def test_clear_keeps_the_keys_of_a_tier_whose_prefix_extends_this_ones(redis_url, glob):
    base = f"r1mwtest:{uuid.uuid4().hex}:{glob}"
    ours = RedisTier(redis_url, prefix=base, timeout=0.5)
    theirs = RedisTier(redis_url, prefix=base + "teamB:", timeout=0.5)  # R1MW_REDIS_PREFIX of another team
    longer = RedisTier(redis_url, prefix=base + "x", timeout=0.5)  # one byte more than ours
    try:
        for t in (ours, theirs, longer):
            await t.set(k(b"same key"), t.prefix)
        await ours.clear()
        assert await ours.get(k(b"same key")) is None
        assert await theirs.get(k(b"same key")) == theirs.prefix
        assert await longer.get(k(b"same key")) == longer.prefix
        await theirs.clear()
        assert await theirs.get(k(b"same key")) is None and await longer.get(k(b"same key")) == longer.prefix
    finally:
        for t in (ours, theirs, longer):
            await t.clear()
            await t.close()


async def test_keys_of_any_length_with_key_len_none(redis_url):
    t = RedisTier(redis_url, prefix=f"r1mwtest:{uuid.uuid4().hex}:", timeout=0.5, key_len=None)
    try:
        for key in (b"k", k(b"k"), b"a much longer key than the store's"):
            await t.set(key, b"v")
            assert await t.get(key) == b"v"
        await t.clear()
        for key in (b"k", k(b"k"), b"a much longer key than the store's"):
            assert await t.get(key) is None
    finally:
        await t.close()


def test_circuit_breaker_opens_cools_down_and_probes():
    now = [100.0]
    b = CircuitBreaker(failures=3, cooldown=5.0, clock=lambda: now[0])
    assert b.allow()
    b.failure()
    b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and b.opens == 1 and not b.allow()
    now[0] += 5.0
    assert b.allow() and b.state == "half-open"
    assert not b.allow()  # one probe at a time
    b.failure()  # the probe failed: open again, same outage
    assert b.state == "open" and b.opens == 1 and not b.allow()
    now[0] += 5.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.outage_seconds == 10.0
    b.success()
    assert b.outage_seconds == 10.0


def test_a_cancelled_probe_frees_the_probe_slot():
    now = [100.0]
    b = CircuitBreaker(failures=1, cooldown=5.0, clock=lambda: now[0])
    b.failure()
    now[0] += 5.0
    assert b.allow() and b.state == "half-open"
    b.abandoned()  # the probe's caller went away: no answer either way
    assert b.state == "open" and not b.allow()  # the cooldown starts again
    now[0] += 5.0
    assert b.allow() and b.state == "half-open"  # a later call probes again
    b.success()
    assert b.state == "closed" and b.opens == 1
    b.abandoned()  # a call cancelled while closed changes nothing
    assert b.state == "closed"


async def test_a_cancelled_probe_does_not_leave_redis_skipped_forever(tier):
    now = [100.0]
    tier.breaker.clock = lambda: now[0]
    await tier.set(b"k" * 16, b"v")
    for _ in range(tier.breaker.failures):  # a short outage opens the breaker
        tier.breaker.failure()
    now[0] += tier.breaker.cooldown  # cooled down; Redis is up again
    probe = asyncio.create_task(tier.get(b"k" * 16))
    await asyncio.sleep(0)  # the probe is on its way to Redis
    assert tier.breaker.state == "half-open"
    probe.cancel()  # its caller went away (client disconnect, an outer deadline)
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert tier.breaker.state == "open"
    now[0] += tier.breaker.cooldown
    assert await tier.get(b"k" * 16) == b"v"  # the next call after the cooldown probes, and closes it
    assert tier.breaker.state == "closed"


async def test_a_key_of_another_type_is_a_counted_corrupt_miss_not_an_outage(tier, redis_url):
    from redis.asyncio import Redis

    raw = Redis.from_url(redis_url)
    good = [b"good-%011d" % i for i in range(3)]
    bad = [b"bad-%012d" % i for i in range(6)]
    try:
        for k in good:
            await tier.set(k, b"value of " + k)
        # Lists, hashes, sets under the tier's prefix (another program, a typo in its prefix):
        # more of them than it takes failures to open the breaker.
        for k in bad[0::3]:
            await raw.rpush(tier.prefix + k, b"x")
        for k in bad[1::3]:
            await raw.hset(tier.prefix + k, b"f", b"v")
        for k in bad[2::3]:
            await raw.sadd(tier.prefix + k, b"m")
        for k in bad:
            assert await tier.get(k) is None
            assert not await raw.exists(tier.prefix + k)  # removed: it costs one lookup, once
        s = tier.stats()
        assert s["corrupt"] == len(bad) and s["misses"] == len(bad)
        assert s["errors"] == 0 and s["breaker"] == "closed" and s["breaker_opens"] == 0
        for k in good:  # the good entries are still served
            assert await tier.get(k) == b"value of " + k
    finally:
        await raw.aclose()


# -- a throwaway server we can stop, pause and restart ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class ThrowawayRedis:
    def __init__(self, exe: str, port: int, workdir: str) -> None:
        self.exe, self.port, self.workdir = exe, port, workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if answers(self.port):
                return
            time.sleep(0.025)
        raise RuntimeError("throwaway redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def server(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        no_redis("redis-server is not on PATH")
    srv = ThrowawayRedis(exe, free_port(), str(tmp_path))
    srv.start()
    yield srv
    srv.stop()


async def recovered(t: RedisTier, tries: int = 100) -> bool:
    """Keep using the tier (as requests would) until Redis serves it again."""
    for _ in range(tries):
        await t.set(b"probe", b"back")
        if await t.get(b"probe") == b"back":
            return True
        await asyncio.sleep(0.05)
    return False


async def test_server_stopped_means_misses_then_recovery_after_restart(server):
    t = RedisTier(server.url, timeout=0.05, breaker_failures=2, breaker_cooldown=0.2)
    await t.set(b"k", b"v")
    assert await t.get(b"k") == b"v"
    server.stop()
    for _ in range(10):
        assert await t.get(b"k") is None  # a miss, never an exception
        await t.set(b"k2", b"lost")  # a no-op, never an exception
        assert await t.delete(b"k") is False
    s = t.stats()
    assert s["errors"] + s["timeouts"] >= 2 and s["breaker_opens"] == 1 and s["skipped"] > 0
    assert s["breaker"] in ("open", "half-open")
    server.start()  # same port, empty (no persistence)
    assert await recovered(t)
    s = t.stats()
    assert s["breaker"] == "closed" and s["outage_s"] > 0
    assert await t.get(b"k") is None  # what the old server held is gone, not wrong
    await t.close()


async def test_server_paused_means_deadline_misses_then_recovery(server):
    t = RedisTier(server.url, timeout=0.05, breaker_failures=2, breaker_cooldown=0.2)
    await t.set(b"k", b"v")
    server.pause()
    try:
        for _ in range(5):
            assert await t.get(b"k") is None
        s = t.stats()
        assert s["timeouts"] >= 2 and s["breaker_opens"] == 1  # our deadline fired, the call did not hang
    finally:
        server.resume()
    assert await recovered(t)
    assert await t.get(b"k") == b"v"  # the paused server kept its data: served again
    await t.close()


async def test_pipeline_builds_the_redis_tier_from_settings(redis_url):
    s = r1mw.Settings(tiers="l1,redis", redis_url=redis_url, redis_timeout_ms=20, redis_prefix="r1mwtest:pipe:",
                      redis_breaker_failures=7, redis_breaker_cooldown_s=1.5)
    async with r1mw.Pipeline(s) as pipe:
        tier = pipe.store.tiers[1]
        assert isinstance(tier, RedisTier)
        assert (tier.timeout, tier.prefix, tier.breaker.failures, tier.breaker.cooldown) == \
            (0.02, b"r1mwtest:pipe:", 7, 1.5)
        assert pipe.stats()["tiers"]["redis"]["breaker"] == "closed"


async def test_redis_tier_without_url_is_a_config_error():
    with pytest.raises(r1mw.ConfigError, match="R1MW_REDIS_URL=''"):
        async with r1mw.Pipeline(r1mw.Settings(tiers="l1,redis")):
            pass


def test_conforms_to_the_tier_protocol():
    from r1mw.protocols import Tier

    t = RedisTier("redis://127.0.0.1:1/0")  # builds without connecting
    assert isinstance(t, Tier) and t.stats()["breaker"] == "closed"


async def test_no_server_at_all_is_misses_and_no_ops():
    t = RedisTier(f"redis://127.0.0.1:{free_port()}/0", timeout=0.05, breaker_failures=2, breaker_cooldown=60)
    assert await t.get(b"k") is None
    await t.set(b"k", b"v")
    assert await t.delete(b"k") is False and await t.exists(b"k") is False
    await t.clear()
    assert not await t.ping()
    s = t.stats()
    assert s["errors"] + s["timeouts"] == 2 and s["skipped"] == 4 and s["breaker"] == "open"
    assert s["outage_s"] >= 0
    await t.close()


# -- under the real store and exact stage ------------------------------------------------------

from r1mw.testing import FakeR1  # noqa: E402


def question(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Is the spread on T{i} calendar options wide today?"}]


def redis_pipeline(cache_dir, url, prefix, **kw):
    return r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l1,l2,redis", cache_dir=cache_dir, redis_url=url,
                                       redis_prefix=prefix, **kw))


async def test_two_processes_share_answers_through_redis(tmp_path, redis_url):
    prefix = f"r1mwtest:{uuid.uuid4().hex}:"
    fake = FakeR1()
    try:
        async with redis_pipeline(tmp_path / "a", redis_url, prefix) as a, \
                redis_pipeline(tmp_path / "b", redis_url, prefix) as b:
            first = await r1mw.wrap(fake, a)(model="deepseek-reasoner", messages=question(1))
            await a.store.flush()  # written behind: another process sees it once it lands
            second = await r1mw.wrap(fake, b)(model="deepseek-reasoner", messages=question(1))
            stats = b.stats()
        assert len(fake.calls) == 1  # b never saw the question: Redis answered it
        assert second["choices"][0]["message"] == first["choices"][0]["message"]
        assert stats["hits_by"] == {"exact:redis": 1}
    finally:
        await RedisTier(redis_url, prefix=prefix).clear()


async def test_requests_succeed_while_redis_is_down_and_it_is_used_again_after(tmp_path, server):
    fake = FakeR1()
    async with redis_pipeline(tmp_path, server.url, "r1mw:v2:", redis_timeout_ms=50,
                              redis_breaker_failures=2, redis_breaker_cooldown_s=0.2) as pipe:
        llm = r1mw.wrap(fake, pipe)
        server.stop()
        for i in range(6):
            reply = await llm(model="deepseek-reasoner", messages=question(i))
            assert reply["choices"][0]["message"]["content"] == fake.answer_for(question(i)[0]["content"])
        tier = pipe.store.tiers[2]
        down = tier.stats()
        assert down["errors"] + down["timeouts"] >= 2 and down["breaker_opens"] == 1 and not down["up"]
        assert pipe.stats()["errors"] == 0
        server.start()
        assert await recovered(tier)
        await llm(model="deepseek-reasoner", messages=question(99))
        assert tier.stats()["up"]
    # Another process sees what was stored after the restart.
    async with redis_pipeline(tmp_path / "other", server.url, "r1mw:v2:") as other:
        await r1mw.wrap(fake, other)(model="deepseek-reasoner", messages=question(99))
        assert other.stats()["hits_by"] == {"exact:redis": 1}
    assert len(fake.calls) == 7


async def test_the_full_chain_with_redis_last(tmp_path, redis_url):
    prefix = f"r1mwtest:{uuid.uuid4().hex}:"
    fake = FakeR1()
    kw = dict(stages="exact", tiers="l1,l2,l3,l4,redis", redis_url=redis_url, redis_prefix=prefix,
              l1_size=2, l2_size=2, l3_size=2, l3_inline_reads=True)
    try:
        async with r1mw.Pipeline(r1mw.Settings(cache_dir=tmp_path / "a", **kw)) as a:
            llm = r1mw.wrap(fake, a)
            for i in range(10):
                await llm(model="deepseek-reasoner", messages=question(i))
            await a.store.flush()  # disk writes are write-behind: let demotions settle
            for i in range(10):
                await llm(model="deepseek-reasoner", messages=question(i))
            local = a.stats()
        async with r1mw.Pipeline(r1mw.Settings(cache_dir=tmp_path / "b", **kw)) as b:
            llm = r1mw.wrap(fake, b)
            for i in range(10):
                await llm(model="deepseek-reasoner", messages=question(i))
            shared = b.stats()
        assert len(fake.calls) == 10
        assert "exact:redis" not in local["hits_by"]  # the local chain kept everything
        assert local["tiers"]["l4"]["demotions"] > 0
        assert shared["hits_by"] == {"exact:redis": 10}
    finally:
        await RedisTier(redis_url, prefix=prefix).clear()


async def test_a_value_copied_under_another_key_is_never_served_as_its_answer(tmp_path, redis_url):
    # Values were the entry's bytes alone: one copied or renamed under another key (ops
    # tooling, COPY/RENAME, a proxy's bug) answered the other question. L2 and L3 keep the key
    # inside the record and refuse a mismatch; Redis values now do too.
    from redis.asyncio import Redis

    prefix = f"r1mwtest:{uuid.uuid4().hex}:"
    fake = FakeR1()
    raw = Redis.from_url(redis_url)
    try:
        async with redis_pipeline(tmp_path / "a", redis_url, prefix) as a:
            for i in (1, 2):
                await r1mw.wrap(fake, a)(model="deepseek-reasoner", messages=question(i))
            await a.store.flush()
        one, two = (prefix.encode() + r1mw.key_of("", "deepseek-reasoner", question(i), {}) for i in (1, 2))
        assert await raw.copy(one, two, replace=True)  # question 1's answer under question 2's key
        async with redis_pipeline(tmp_path / "b", redis_url, prefix) as b:  # b's own L1 and L2 are empty
            reply = await r1mw.wrap(fake, b)(model="deepseek-reasoner", messages=question(2))
            redis = next(t for t in b.store.tiers if t.name == "redis").stats()
        assert reply["choices"][0]["message"]["content"] == fake.answer_for(question(2)[0]["content"])
        assert len(fake.calls) == 3 and redis["corrupt"] == 1  # a counted miss, asked again
        assert (await raw.get(two)).startswith(two[len(prefix):])  # the right answer replaced it
    finally:
        await raw.aclose()
        await RedisTier(redis_url, prefix=prefix).clear()


# -- a caller cancelled as its Redis call ends --------------------------------------------------


class _GatedClient:
    """A redis client whose calls wait for ``gate``, then fail (a connection reset) or answer."""

    def __init__(self, fail: bool) -> None:
        self.gate = asyncio.Event()
        self.fail = fail

    async def get(self, key):
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("connection reset by peer")
        return key[-16:] + b"v"

    async def aclose(self):
        pass


@pytest.mark.parametrize("fail", [True, False])
async def test_a_caller_cancelled_as_its_redis_call_ends_is_cancelled(fail):
    # Found by the chaos soak (tests/test_chaos_soak.py): asyncio.wait_for before Python 3.12
    # returns the inner call's outcome when the caller is cancelled in the loop turn that call
    # ends in. The cancel was lost: the request went on (upstream, at a cost) and returned to a
    # caller that had cancelled it (an asyncio.timeout around it never fired); a failed call's
    # error was logged as "Task exception was never retrieved".
    client = _GatedClient(fail)
    t = RedisTier(client=client, timeout=5.0)
    task = asyncio.create_task(t.get(b"k" * 16))
    for _ in range(3):
        await asyncio.sleep(0)  # the call waits on Redis
    client.gate.set()  # Redis answers (or the connection drops) on the next loop turn...
    task.cancel()  # ...as the caller is cancelled (its deadline, a client gone)
    with pytest.raises(asyncio.CancelledError):
        await task
