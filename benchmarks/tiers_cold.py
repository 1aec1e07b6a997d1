"""Cold tiers: get/set p50/p99 for L3 (segments), L4 (archive), Redis, and Redis down.

    python benchmarks/tiers_cold.py [--n 3000]

Prints one table (microseconds). Values are what the store hands these tiers: R1-shaped
replies (benchmarks/r1_replies.py: reasoning 2-6 KB, answer 1-3 KB of real prose) as entries
encoded by the default codec (msgpack+lz4 envelope). L3/L4 live in a temporary directory
(page cache warm: this measures the code path, not the disk). L4's stored bytes are reported
against the replies' raw JSON. Redis: R1MW_TEST_REDIS_URL or redis://127.0.0.1:6379/15, keys
under a throwaway prefix; "stopped" and "paused" use a throwaway redis-server on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Awaitable, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from r1_replies import replies  # noqa: E402

from r1mw.adapters.shapes import reply_of_dict  # noqa: E402
from r1mw.codec import Lz4Codec  # noqa: E402
from r1mw.tiers import Entry  # noqa: E402
from r1mw.tiers.archive import ArchiveTier  # noqa: E402
from r1mw.tiers.redis import RedisTier  # noqa: E402
from r1mw.tiers.segment import SegmentTier  # noqa: E402

RAW_JSON: list[int] = []  # bytes of each reply as JSON
ENCODED: list[bytes] = []  # the same replies as the store encodes them


def load(n: int) -> None:
    codec = Lz4Codec()
    for r in replies(n):
        RAW_JSON.append(len(json.dumps(r).encode()))
        ENCODED.append(codec.encode(Entry(reply_of_dict(r)).to_wire()))


def reply(i: int, size: int = 0) -> bytes:
    return ENCODED[i % len(ENCODED)]


def pct(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return s[len(s) // 2] * 1e6, s[min(len(s) - 1, int(len(s) * 0.99))] * 1e6


async def timed(op: Callable[[Any], Awaitable[Any]], items: list[Any]) -> list[float]:
    out = []
    for item in items:
        t0 = time.perf_counter()
        await op(item)
        out.append(time.perf_counter() - t0)
    return out


ROWS: list[tuple[str, str, float, float, str]] = []


def row(tier: str, op: str, samples: list[float], note: str = "") -> None:
    p50, p99 = pct(samples)
    ROWS.append((tier, op, p50, p99, note))
    print(f"{tier:<28} {op:<6} p50 {p50:9.1f} us   p99 {p99:9.1f} us   {note}", flush=True)


async def bench_l3(n: int, size: int, inline: bool) -> None:
    d = tempfile.mkdtemp(prefix="r1mw-bench-l3-")
    try:
        t = SegmentTier(d, max_entries=n * 2, inline_reads=inline, fsync=True, segment_bytes=2**20)
        keys = [uuid.uuid4().bytes for _ in range(n)]
        values = [reply(i, size) for i in range(n)]
        label = "L3 inline" if inline else "L3 thread"
        row(label, "set", await timed(lambda i: t.set(keys[i], values[i]), list(range(n))))
        order = random.Random(1).sample(range(n), n)
        row(label, "get", await timed(lambda i: t.get(keys[i]), order), "random keys, page cache warm")
        row(label, "miss", await timed(lambda i: t.get(b"absent-%d" % i), list(range(min(n, 2000)))))
        for i in range(0, n, 2):
            await t.delete(keys[i])
        t0 = time.perf_counter()
        await t.compact()
        took = time.perf_counter() - t0
        print(f"{'':<28} compaction after deleting half: {took:.3f} s; {t.stats()['segments']} segments")
        await t.close()
        t0 = time.perf_counter()
        t2 = SegmentTier(d, max_entries=n * 2)
        print(f"{'':<28} reopen {len(t2)} entries from hints: {(time.perf_counter() - t0) * 1000:.1f} ms")
        await t2.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_l3_reopen(n: int) -> None:
    """Start-up at the default CACHE_L3_SIZE: hints only, no value read."""
    d = tempfile.mkdtemp(prefix="r1mw-bench-l3-reopen-")
    try:
        t = SegmentTier(d, max_entries=n, segment_bytes=4 * 2**20, fsync=False)
        value = ENCODED[0][:200]  # small values: this measures the index, not the disk
        for i in range(n):
            t.set_sync(uuid.uuid4().bytes, value)
        t.close_sync()
        t0 = time.perf_counter()
        t = SegmentTier(d, max_entries=n)
        took = time.perf_counter() - t0
        print(f"{'L3 reopen':<28} {len(t)} entries in {t.stats()['segments']} segments from hints: "
              f"{took * 1000:.0f} ms ({took / n * 1e6:.1f} us per entry)")
        t.close_sync()
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def bench_l4(n: int, size: int, codec: str) -> None:
    d = tempfile.mkdtemp(prefix="r1mw-bench-l4-")
    try:
        t = ArchiveTier(d, codec=codec, inline_reads=True)
        keys = [uuid.uuid4().bytes for _ in range(n)]
        values = [reply(i, size) for i in range(n)]
        label = f"L4 {codec} inline"
        row(label, "set", await timed(lambda i: t.set(keys[i], values[i]), list(range(n))),
            "p99 = a 64 KiB block compressed and appended")
        await t.flush()
        order = random.Random(2).sample(range(n), n)
        row(label, "get", await timed(lambda i: t.get(keys[i]), order), "random keys: mostly a block decode")
        seq = list(range(n))
        row(label, "get", await timed(lambda i: t.get(keys[i]), seq), "in write order: decoded block reused")
        await t.close()
        disk = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".arc"))
        raw = sum(RAW_JSON[i % len(RAW_JSON)] for i in range(n))
        enc = sum(len(v) for v in values)
        print(f"{'':<28} on disk {disk / n:,.0f} B per reply = {disk / raw * 100:.1f} % of its raw JSON "
              f"(the store's msgpack+lz4 entries: {enc / raw * 100:.1f} %)")
        t = ArchiveTier(d, codec=codec)
        row(f"L4 {codec} thread", "get", await timed(lambda i: t.get(keys[i]), order[:2000]))
        await t.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def bench_l4_blocks() -> None:
    """Block size: stored bytes against the cost of a random get (a block decode)."""
    n = len(ENCODED)
    raw = sum(RAW_JSON)
    for codec in ("zstd", "lz4"):
        for block in (16 * 1024, 32 * 1024, 64 * 1024):
            d = tempfile.mkdtemp(prefix="r1mw-bench-l4-blocks-")
            try:
                t = ArchiveTier(d, codec=codec, block_bytes=block, inline_reads=True, fsync=False)
                for i, v in enumerate(ENCODED):
                    t.set_sync(b"k%d" % i, v)
                t.flush_sync()
                order = random.Random(3).sample(range(n), n)
                p50, _ = pct(await timed(lambda i: t.get(b"k%d" % i), order))
                t.close_sync()
                disk = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".arc"))
                print(f"{'L4 blocks':<28} {codec:<5} {block // 1024:>2} KiB: {disk / raw * 100:5.1f} % of raw JSON, "
                      f"random get p50 {p50:6.1f} us")
            finally:
                shutil.rmtree(d, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench_redis(n: int, size: int) -> None:
    url = os.environ.get("R1MW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    t = RedisTier(url, prefix=f"r1mwbench:{uuid.uuid4().hex}:", timeout=0.05)
    if not await t.ping():
        print(f"Redis at {url} does not answer: skipped")
    else:
        keys = [uuid.uuid4().bytes for _ in range(n)]
        values = [reply(i, size) for i in range(n)]
        row("Redis (loopback)", "set", await timed(lambda i: t.set(keys[i], values[i]), list(range(n))))
        row("Redis (loopback)", "get", await timed(lambda i: t.get(keys[i]), list(range(n))))
        await t.clear()
    await t.close()

    exe = shutil.which("redis-server")
    if exe is None:
        print("redis-server not on PATH: outage figures skipped")
        return
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="r1mw-bench-redis-")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.025)
        # Breaker effectively off (failures=10**9) to time every call against the dead server.
        raw = RedisTier(f"redis://127.0.0.1:{port}/0", timeout=0.05, breaker_failures=10**9)
        guarded = RedisTier(f"redis://127.0.0.1:{port}/0", timeout=0.05, breaker_failures=3, breaker_cooldown=5.0)
        await raw.set(b"k", b"v")
        await guarded.set(b"k", b"v")
        proc.send_signal(signal.SIGSTOP)
        row("Redis paused (SIGSTOP)", "get", await timed(lambda _: raw.get(b"k"), list(range(20))),
            "deadline 50 ms, breaker off")
        row("Redis paused, breaker", "get", await timed(lambda _: guarded.get(b"k"), list(range(200))),
            "3 timeouts, then skipped")
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait()
        row("Redis stopped", "get", await timed(lambda _: raw.get(b"k"), list(range(200))),
            "connection refused, breaker off")
        guarded2 = RedisTier(f"redis://127.0.0.1:{port}/0", timeout=0.05, breaker_failures=3, breaker_cooldown=5.0)
        row("Redis stopped, breaker", "get", await timed(lambda _: guarded2.get(b"k"), list(range(2000))),
            "breaker open: skipped")
        print(f"{'':<28} stats while stopped: {guarded2.stats()}")
        for t_ in (raw, guarded, guarded2):
            await t_.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    args.size = 0
    load(min(args.n, 2000))
    mean = sum(map(len, ENCODED)) / len(ENCODED)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, n={args.n}, {len(ENCODED)} distinct "
          f"R1-shaped replies, {mean:,.0f} B encoded on average\n")
    await bench_l3(args.n, args.size, inline=True)
    await bench_l3(args.n, args.size, inline=False)
    bench_l3_reopen(100_000)
    await bench_l4_blocks()
    await bench_l4(args.n, args.size, "zstd")
    await bench_l4(args.n, args.size, "lz4")
    await bench_redis(args.n, args.size)
    print("\n| tier | op | p50 us | p99 us | note |\n| --- | --- | --- | --- | --- |")
    for tier, op, p50, p99, note in ROWS:
        print(f"| {tier} | {op} | {p50:.1f} | {p99:.1f} | {note} |")


if __name__ == "__main__":
    asyncio.run(main())
