"""L2 faults: restart, truncation, bit flips, deleted files, ENOSPC, SIGKILL mid-write,
two processes on one directory. A damaged entry is a counted miss, never an exception."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from r1mw.tiers import DiskTier

pytestmark = pytest.mark.anyio


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


def value(i: int, tag: str = "v") -> bytes:
    return f"{tag}:{i}:".encode() + bytes([i % 251]) * (100 + i % 700)


def files(directory) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs)


async def test_restart_finds_entries_without_reading_them(tmp_path, monkeypatch):
    tier = DiskTier(tmp_path, max_entries=100)
    for i in range(30):
        await tier.set(key(i), value(i))
    size = tier.stats()["bytes"]

    real_open = os.open

    def no_entry_reads(path, flags, *args):
        if not os.path.isdir(path):
            raise AssertionError(f"start-up opened {path}")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_entry_reads)
    reopened = DiskTier(tmp_path, max_entries=100)
    monkeypatch.undo()
    assert reopened.stats()["entries"] == 30 and reopened.stats()["bytes"] == size
    assert all([await reopened.get(key(i)) == value(i) for i in range(30)])


async def test_restart_with_smaller_bounds_evicts_the_excess(tmp_path):
    tier = DiskTier(tmp_path, max_entries=100)
    for i in range(30):
        await tier.set(key(i), value(i))
    smaller = DiskTier(tmp_path, max_entries=10)
    assert smaller.stats()["entries"] == 10 == len(files(tmp_path))


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip-head", "flip-body", "flip-sum", "append",
                                    "other-key", "garbage"])
async def test_damaged_entry_is_a_counted_miss_and_removed(tmp_path, damage):
    tier = DiskTier(tmp_path)
    await tier.set(key(1), value(1))
    await tier.set(key(2), value(2))
    path = tier._path(key(1))
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    elif damage.startswith("flip"):
        at = {"flip-head": 5, "flip-body": len(data) // 2, "flip-sum": len(data) - 1}[damage]
        data[at] ^= 0x04
    elif damage == "append":
        data += b"\x00"
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    if damage == "other-key":
        os.replace(tier._path(key(2)), path)  # a file under the wrong name
    else:
        open(path, "wb").write(bytes(data))
    assert await tier.get(key(1)) is None
    assert tier.stats()["corrupt"] == 1
    assert not os.path.exists(path)
    assert await tier.get(key(1)) is None


async def test_deleted_files_are_misses(tmp_path):
    tier = DiskTier(tmp_path)
    for i in range(5):
        await tier.set(key(i), value(i))
    for path in files(tmp_path):
        os.unlink(path)
    assert [await tier.get(key(i)) for i in range(5)] == [None] * 5
    assert tier.stats()["corrupt"] == 0 and tier.stats()["entries"] == 0


async def test_byte_bound_holds(tmp_path):
    tier = DiskTier(tmp_path, max_entries=1000, max_bytes=5000)
    for i in range(60):
        await tier.set(key(i), value(i))
        assert tier.stats()["bytes"] <= 5000
        assert sum(os.path.getsize(p) for p in files(tmp_path)) <= 5000


async def test_disk_full_stores_nothing_and_loses_nothing(tmp_path, monkeypatch, caplog):
    tier = DiskTier(tmp_path)
    await tier.set(key(1), value(1, "old"))
    real_write = os.write

    def full_disk(fd, data):
        real_write(fd, bytes(data[: len(data) // 3]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    await tier.set(key(1), value(1, "new"))  # no exception
    await tier.set(key(2), value(2))
    monkeypatch.undo()
    assert tier.stats()["write_errors"] == 2
    assert await tier.get(key(1)) == value(1, "old")  # the previous entry is intact
    assert await tier.get(key(2)) is None
    assert not [p for p in files(tmp_path) if ".tmp-" in p]  # no half-written leftovers
    assert "No space left" in caplog.text


_CHILD = textwrap.dedent("""
    import os, sys, time, asyncio
    from r1mw.tiers import DiskTier
    directory, mode = sys.argv[1], sys.argv[2]
    tier = DiskTier(directory, max_entries=100_000)
    def key(i): return i.to_bytes(16, "big")
    def value(i, tag="v"): return f"{tag}:{i}:".encode() + bytes([i % 251]) * (100 + i % 700)
    for i in range(20):
        tier.set_sync(key(i), value(i))
    if mode == "hang":
        real_write = os.write
        def half_then_hang(fd, data):
            real_write(fd, bytes(data[: len(data) // 2]))
            print("midwrite", flush=True)
            time.sleep(60)
        os.write = half_then_hang
        tier.set_sync(key(5), value(5, "new"))
    else:
        print("writing", flush=True)
        i = 20
        while True:
            tier.set_sync(key(i % 400), value(i % 400, "w%d" % (i // 400)) * 20)
            i += 1
""")


def _child(tmp_path, mode):
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), mode], stdout=subprocess.PIPE, text=True)


async def test_writer_killed_mid_write_leaves_old_entry_and_no_garbage(tmp_path):
    child = _child(tmp_path, "hang")
    try:
        assert child.stdout.readline().strip() == "midwrite"
        assert [p for p in files(tmp_path) if ".tmp-" in p]  # the half-written temp file exists
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    tier = DiskTier(tmp_path)  # reopen: the dead writer's temp file is reaped
    assert not [p for p in files(tmp_path) if ".tmp-" in p]
    assert await tier.get(key(5)) == value(5)
    assert all([await tier.get(key(i)) == value(i) for i in range(20)])
    assert tier.stats()["corrupt"] == 0


@pytest.mark.parametrize("delay", [0.05, 0.2])
async def test_writer_killed_at_a_random_point_every_entry_is_whole(tmp_path, delay):
    child = _child(tmp_path, "loop")
    try:
        assert child.stdout.readline().strip() == "writing"
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    tier = DiskTier(tmp_path, max_entries=100_000)
    found = 0
    for i in range(400):
        got = await tier.get(key(i))
        if got is not None:
            found += 1
            tag = got.split(b":", 1)[0].decode()
            expected = value(i) if tag == "v" else value(i, tag) * 20
            assert got == expected
    assert found >= 20 and tier.stats()["corrupt"] == 0


def test_rescans_happen_at_most_once_per_interval(tmp_path):
    tier = DiskTier(tmp_path, max_entries=100, rescan_every=2, rescan_interval=3600)
    scans = []
    scan = tier._scan
    tier._scan = lambda: (scans.append(1), scan())[1]
    tier._scanned_at -= 7200  # the tier has been open for two hours
    for i in range(8):
        tier.set_sync(i.to_bytes(16, "big"), b"x" * 100)
    assert len(scans) == 1  # due after 2 writes, then not again within the hour
    assert all(tier.get_sync(i.to_bytes(16, "big")) == b"x" * 100 for i in range(8))


_SHARER = textwrap.dedent("""
    import os, sys, random
    from r1mw.tiers import DiskTier
    directory, me, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tier = DiskTier(directory, max_entries=150, rescan_every=200, rescan_interval=0)
    rng = random.Random(me)
    def key(i): return i.to_bytes(16, "big")
    def value(i, who, n): return f"{who}:{i}:{n}:".encode() + bytes([i % 251]) * (50 + (i * n) % 3000)
    bad = 0
    for n in range(rounds):
        i = rng.randrange(200)
        if rng.random() < 0.5:
            tier.set_sync(key(i), value(i, me, n))
        else:
            got = tier.get_sync(key(i))
            if got is not None:
                who, k, m, _ = got.split(b":", 3)
                if int(k) != i or got != value(i, who.decode(), int(m)):
                    bad += 1
    print(bad, tier.corrupt, flush=True)
""")


async def test_two_processes_share_a_directory(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _SHARER, str(tmp_path), who, "1500"],
                              stdout=subprocess.PIPE, text=True) for who in ("a", "b")]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs == [["0", "0"], ["0", "0"]]  # no wrong value read, no corrupt entry seen
    assert not [p for p in files(tmp_path) if ".tmp-" in p]
    tier = DiskTier(tmp_path, max_entries=150)
    assert tier.stats()["entries"] <= 150


async def test_live_writers_temp_files_survive_a_neighbours_start_up(tmp_path):
    sub = tmp_path / "ab"
    sub.mkdir(parents=True)
    mine = sub / f".tmp-{os.getpid()}-0"
    dead = sub / ".tmp-999999999-0"
    mine.write_bytes(b"half")
    dead.write_bytes(b"half")
    DiskTier(tmp_path)
    assert mine.exists() and not dead.exists()


async def test_threaded_reads_for_slow_disks(tmp_path):
    tier = DiskTier(tmp_path, inline_reads=False, fsync="file")
    await asyncio.gather(*(tier.set(key(i), value(i)) for i in range(10)))
    assert await asyncio.gather(*(tier.get(key(i)) for i in range(10))) == [value(i) for i in range(10)]


async def test_a_key_too_long_for_a_file_name_is_not_stored_and_never_raises(tmp_path):
    tier = DiskTier(tmp_path)
    long_key = b"k" * 300  # 600 hex characters: longer than a file name may be
    await tier.set(long_key, b"value")
    assert await tier.get(long_key) is None
    assert not await tier.exists(long_key) and await tier.delete(long_key) is False
    assert tier.stats()["write_errors"] == 1 and tier.stats()["entries"] == 0


async def test_damage_while_reading_gives_misses_never_wrong_values(tmp_path):
    import random
    import threading

    tier = DiskTier(tmp_path, max_entries=1000)
    for i in range(50):
        await tier.set(key(i), value(i))
    with open(tier._path(key(0)), "r+b") as f:  # at least one damaged entry, whatever the timing
        f.seek(30)
        f.write(b"\xff")
    stop = threading.Event()

    def vandal():
        rng = random.Random(4)
        while not stop.is_set():
            paths = files(tmp_path)
            if not paths:
                continue
            path = rng.choice(paths)
            try:
                data = bytearray(open(path, "rb").read())
                how = rng.randrange(3)
                if how == 0 and data:
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                    open(path, "r+b").write(bytes(data))  # in place: readers may see it mid-write
                elif how == 1:
                    os.truncate(path, rng.randrange(len(data) + 1))
                else:
                    os.unlink(path)
            except OSError:
                pass

    thread = threading.Thread(target=vandal)
    thread.start()
    try:
        wrong = 0
        for n in range(3000):
            i = n % 50
            got = await tier.get(key(i))
            if got is not None and got != value(i):
                wrong += 1
            if got is None and n % 7 == 0:
                await tier.set(key(i), value(i))
    finally:
        stop.set()
        thread.join()
    assert wrong == 0
    assert tier.stats()["corrupt"] >= 1  # damage was seen, and served as a miss
