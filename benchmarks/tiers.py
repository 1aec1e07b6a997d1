"""Tier figures: per-tier get/set latency, eviction policy hit ratios, stored bytes per reply.

    python benchmarks/tiers.py            # everything (about a minute on 2 cores)
    python benchmarks/tiers.py --quick    # smaller traces and fewer samples
    python benchmarks/tiers.py latency|policy|codec|default

Prints the figures; docs/benchmarks.md ("Tiers") keeps the latest. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import r1mw  # noqa: E402
from r1mw.adapters.shapes import reply_of_dict  # noqa: E402
from r1mw.codec import Lz4Codec, MsgpackCodec, ZstdCodec, decode, pack  # noqa: E402
from r1mw.testing import FakeR1  # noqa: E402
from r1mw.tiers import DiskTier, Entry, MemoryTier, TieredStore  # noqa: E402
from r1mw.tiers.policy import POLICIES  # noqa: E402
from r1mw.zstd_dict import AutoDictZstdCodec  # noqa: E402
from r1_replies import replies  # noqa: E402


def pct(samples: list[float]) -> str:
    s = sorted(samples)
    n = len(s)
    return f"p50 {s[n // 2] * 1e6:8.2f} us   p99 {s[min(n - 1, int(n * 0.99))] * 1e6:8.2f} us"


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


async def atimed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        await fn()
        out.append(clock() - t0)
    return out


def entries(n: int) -> list[Entry]:
    return [Entry(reply_of_dict(d), 0.0, {"question": "q"}) for d in replies(n, seed=11)]


# -- latency -------------------------------------------------------------------------------------


async def latency(n: int) -> None:
    print("== per-tier latency (one process, warm; R1-shaped entries of ~6.5 KB JSON) ==")
    data = entries(200)
    keys = [i.to_bytes(16, "big") for i in range(len(data))]
    codec = Lz4Codec(1000)

    l1 = MemoryTier("l1", max_entries=1000)
    for k, e in zip(keys, data):
        l1.set_nowait(k, e)
    it = iter(range(10**9))
    print(f"l1 get_nowait hit        {pct(timed(lambda: l1.get_nowait(keys[next(it) % 200]), n))}")
    print(f"l1 get_nowait miss       {pct(timed(lambda: l1.get_nowait(b'absent-key-00000'), n))}")
    small = MemoryTier("l1", max_entries=100)
    print(f"l1 set_nowait (evicting) {pct(timed(lambda: small.set_nowait(next(it).to_bytes(16, 'big'), data[0]), n))}")

    with tempfile.TemporaryDirectory(dir=os.environ.get("R1MW_BENCH_DIR")) as tmp:
        encoded = [codec.encode(e.to_wire()) for e in data]
        l2 = DiskTier(Path(tmp) / "l2", max_entries=100_000)
        for k, b in zip(keys, encoded):
            await l2.set(k, b)
        print(f"l2 get hit (bytes)       {pct(await atimed(lambda: l2.get(keys[next(it) % 200]), n))}")
        print(f"l2 get miss              {pct(await atimed(lambda: l2.get(b'absent-key-00000'), n))}")

        async def get_decode() -> None:
            Entry.from_wire(decode(await l2.get(keys[next(it) % 200])))

        print(f"l2 get hit + decode      {pct(await atimed(get_decode, n))}")
        store = TieredStore([DiskTier(Path(tmp) / "l2", max_entries=100_000)], codec)
        print(f"store.get hit from l2    {pct(await atimed(lambda: store.get(keys[next(it) % 200]), n))}")
        # The default codec once its dictionary is trained (on other replies than these).
        zcodec = AutoDictZstdCodec(Path(tmp) / "dicts", 1000, train_after=300)
        for d in replies(300, seed=2, part="train"):  # other source documents than ``data``
            zcodec.encode(Entry(reply_of_dict(d)).to_wire())
        zcodec.wait_trained()
        zkeys = [b"z" + k[1:] for k in keys]
        zl2 = DiskTier(Path(tmp) / "l2", max_entries=100_000)
        for k, e in zip(zkeys, data):
            await zl2.set(k, zcodec.encode(e.to_wire()))
        zblobs = [zcodec.encode(e.to_wire()) for e in data]
        print(f"decode only, lz4         {pct(timed(lambda: decode(encoded[next(it) % 200]), n))}")
        print(f"decode only, zstd+dict   {pct(timed(lambda: decode(zblobs[next(it) % 200]), n))}")

        async def zget_decode() -> None:
            Entry.from_wire(decode(await zl2.get(zkeys[next(it) % 200])))

        print(f"l2 get hit + decode zd   {pct(await atimed(zget_decode, n))}")
        zstore = TieredStore([zl2], zcodec)
        print(f"store.get hit l2 zd      {pct(await atimed(lambda: zstore.get(zkeys[next(it) % 200]), n))}")
        l2w = DiskTier(Path(tmp) / "w", max_entries=100_000, inline_writes=True)
        print(f"l2 set inline, no fsync  {pct(await atimed(lambda: l2w.set(next(it).to_bytes(16, 'big'), encoded[0]), n // 4))}")
        l2t = DiskTier(Path(tmp) / "t", max_entries=100_000)
        print(f"l2 set thread, no fsync  {pct(await atimed(lambda: l2t.set(next(it).to_bytes(16, 'big'), encoded[0]), n // 4))}")
        l2f = DiskTier(Path(tmp) / "f", max_entries=100_000, fsync="file")
        print(f"l2 set fsync=file        {pct(await atimed(lambda: l2f.set(next(it).to_bytes(16, 'big'), encoded[0]), min(n // 10, 300)))}")

        # Start-up: names and sizes only, no entry read.
        many = DiskTier(Path(tmp) / "many", max_entries=100_000)
        for i in range(10_000):
            many.set_sync(i.to_bytes(4, "big") * 4, encoded[i % 200])
        t0 = time.perf_counter()
        reopened = DiskTier(Path(tmp) / "many", max_entries=100_000)
        print(f"l2 open, {len(reopened):,} entries    {(time.perf_counter() - t0) * 1e3:8.1f} ms (scan, no reads)")

        # The exact stage end to end: a hit from l1, and one from l2 (tiers=l2 only).
        fake = FakeR1()
        q = [{"role": "user", "content": "Analyze AAPL using RSI(14) mean reversion"}]
        for tiers, label in (("l1,l2", "l1"), ("l2", "l2")):
            settings = r1mw.Settings(stages="exact", tiers=tiers, cache_dir=Path(tmp) / f"p-{label}")
            async with r1mw.Pipeline(settings) as pipe:
                llm = r1mw.wrap(fake, pipe)
                await llm(model="deepseek-reasoner", messages=q)
                samples = await atimed(lambda: llm(model="deepseek-reasoner", messages=q), n // 2)
                assert pipe.stats()["hits_by"] == {f"exact:{label}": n // 2}
            print(f"pipeline exact hit {label}    {pct(samples)}  (FakeR1's short reply, not compressed)")


# -- the default settings, end to end --------------------------------------------------------


class R1Upstream:
    """An upstream returning R1-shaped replies (the benchmark's text), one per question."""

    def __init__(self, part: str, n: int, seed: int) -> None:
        self.replies = replies(n, seed=seed, part=part)
        self.by_question: dict[str, dict[str, Any]] = {}

    async def __call__(self, **kwargs: Any) -> dict[str, Any]:
        q = kwargs["messages"][-1]["content"]
        if q not in self.by_question:
            self.by_question[q] = self.replies[len(self.by_question) % len(self.replies)]
        return self.by_question[q]


async def default_settings(n: int) -> None:
    """Stored bytes per reply and the L2 hit with the default codec, after warm-up."""
    print("== default settings (R1MW_CODEC default, tiers l1,l2): warm-up, stored bytes, L2 hit ==")
    defaults = r1mw.Settings()
    print(f"R1MW_CODEC={defaults.codec}  R1MW_ZSTD_TRAIN_AFTER={defaults.zstd_train_after}")
    codecs = ("msgpack+lz4", defaults.codec)
    with tempfile.TemporaryDirectory(dir=os.environ.get("R1MW_BENCH_DIR")) as tmp:
        test = R1Upstream("test", 100, seed=1)
        questions = [[{"role": "user", "content": f"question {i}"}] for i in range(len(test.replies))]
        raw = sum(len(json.dumps(d, ensure_ascii=False).encode()) for d in test.replies)
        for codec_name in codecs:
            cache = Path(tmp) / codec_name
            warm = R1Upstream("train", 250, seed=2)  # a desk's day: the dictionary is trained (or retrained)
            settings = r1mw.Settings(stages="exact", tiers="l1,l2", cache_dir=cache, codec=codec_name)
            async with r1mw.Pipeline(settings) as pipe:
                t0 = time.perf_counter()
                llm = r1mw.wrap(warm, pipe)
                wait = getattr(pipe.store.codec, "wait_trained", None)
                for i in range(len(warm.replies)):
                    await llm(model="deepseek-reasoner", messages=[{"role": "user", "content": f"warm-up {i}"}])
                    if wait is not None:
                        # R1 replies come seconds apart: a training (0.1-0.3 s) is over before
                        # the next one. Back to back, the second would start only at the test.
                        wait()
                await pipe.store.flush()  # L2 writes are write-behind: let them land
                warm_s = time.perf_counter() - t0
                l2 = pipe.store.tiers[1]
                before = set(Path(l2.directory).glob("*/*"))
                llm = r1mw.wrap(test, pipe)
                for q in questions:
                    await llm(model="deepseek-reasoner", messages=q)
                await pipe.store.flush()
                stats = pipe.stats()["tiers"]["l2"]
                # The test replies' files, whatever order the write-behind batches wrote them in.
                files = sorted(set(Path(l2.directory).glob("*/*")) - before)
                assert len(files) == len(questions), f"{len(files)} files for {len(questions)} replies"
                stored = sum(len(decode_free_value(l2, f)) for f in files)
                on_disk = sum(f.stat().st_size for f in files)
            print(f"{codec_name:<18} warm-up {len(warm.replies)} replies in {warm_s:.2f} s; "
                  f"then {len(questions)} new replies store {stored / raw:.1%} of raw JSON "
                  f"({on_disk / raw:.1%} with L2's file header and key)")
            if stats.get("codec_stats"):
                cs = stats["codec_stats"]
                print(f"{'':<18} dictionary {cs['dictionary']}, trainings {cs['trainings']}, "
                      f"next training after {cs['next_training_at']} entries")
        # Every hit from L2: pipelines whose only tier is L2, on the same directories; measured
        # in alternating rounds so that both codecs see the same background load.
        pipes = [r1mw.Pipeline(r1mw.Settings(stages="exact", tiers="l2", cache_dir=Path(tmp) / c, codec=c))
                 for c in codecs]
        samples: list[list[float]] = [[] for _ in codecs]
        for pipe in pipes:
            await pipe.start()
        llms = [r1mw.wrap(test, pipe) for pipe in pipes]
        it = iter(range(10**9))
        for _ in range(20):
            for k, llm in enumerate(llms):
                samples[k] += await atimed(lambda: llm(model="deepseek-reasoner",
                                                       messages=questions[next(it) % len(questions)]), n // 20)
        for pipe in pipes:
            assert pipe.stats()["hits_by"] == {"exact:l2": n // 20 * 20}
            await pipe.close()
        for codec_name, timing in zip(codecs, samples):
            print(f"{codec_name:<18} pipeline exact hit l2 (R1-sized entry)  {pct(timing)}")


def decode_free_value(tier: DiskTier, path: Path) -> bytes:
    """The stored envelope of an L2 file (its value), without decoding it."""
    key = bytes.fromhex(path.name)
    value = tier.get_sync(key)
    assert value is not None
    return value


# -- policy --------------------------------------------------------------------------------------


def zipf_trace(keys: int, n: int, alpha: float, seed: int = 1) -> list[int]:
    rng = np.random.default_rng(seed)
    p = np.arange(1, keys + 1, dtype=np.float64) ** -alpha
    p /= p.sum()
    perm = rng.permutation(keys)  # hot keys are not the small integers
    return perm[rng.choice(keys, size=n, p=p)].tolist()


def policy(keys: int, n: int) -> None:
    print(f"== hit ratio on Zipf traces ({keys:,} keys, {n:,} requests, cache = 1 % / 10 % of keys) ==")
    names = list(POLICIES)
    print(f"{'alpha':>5} {'cache':>6} " + " ".join(f"{name:>9}" for name in names) + "   best vs lru")
    for alpha in (0.8, 1.0):
        trace = zipf_trace(keys, n, alpha)
        for frac in (0.01, 0.1):
            cap = int(keys * frac)
            ratios = {}
            for name in names:
                pol = POLICIES[name](cap)
                get, put = pol.get, pol.put
                hits = 0
                for key in trace:
                    if get(key) is not None:
                        hits += 1
                    else:
                        put(key, True)
                ratios[name] = hits / n
            best = max(ratios, key=ratios.get)  # type: ignore[arg-type]
            print(f"{alpha:>5} {frac:>6.0%} " + " ".join(f"{ratios[k]:>9.4f}" for k in names)
                  + f"   {best} +{(ratios[best] - ratios['lru']) * 100:.1f} pts")
    print("-- a scan through a hot set: 1 request in 4 for 50 hot keys, the rest never repeat (cache 100) --")
    import random

    for name in names:
        pol = POLICIES[name](100)
        rng = random.Random(1)
        hot_hits = hot_requests = 0
        for i in range(200_000):
            key = rng.randrange(50) if i % 4 == 0 else 1_000 + i
            hit = pol.get(key) is not None
            if not hit:
                pol.put(key, True)
            if key < 50:
                hot_requests += 1
                hot_hits += hit
        print(f"{name:>9}: hot-key hit ratio {hot_hits / hot_requests:.3f}")
    print("-- cost of one L1 hit per policy (MemoryTier.get_nowait, 1,000 entries, Zipf 1.0 keys) --")
    trace = zipf_trace(1000, 20_000, 1.0, seed=5)
    keys_b = [k.to_bytes(16, "big") for k in trace]
    entry = Entry({"a": 1})
    for name in names:
        tier = MemoryTier("l1", max_entries=1000, policy=name)
        for k in set(keys_b):
            tier.set_nowait(k, entry)
        it = iter(keys_b * 3)
        print(f"{name:>9}: {pct(timed(lambda: tier.get_nowait(next(it)), 20_000))}")


# -- codec ---------------------------------------------------------------------------------------


def codec(n: int) -> None:
    test = replies(n, seed=1, part="test")
    train = replies(max(n, 400), seed=2, part="train")
    raw = [len(json.dumps(d, ensure_ascii=False).encode()) for d in test]
    reasoning = statistics.mean(len(d["choices"][0]["message"]["reasoning_content"]) for d in test)
    answer = statistics.mean(len(d["choices"][0]["message"]["content"]) for d in test)
    print(f"== stored bytes per R1-shaped reply ({n} replies: reasoning {reasoning:,.0f} chars, "
          f"answer {answer:,.0f} chars, raw JSON {statistics.mean(raw):,.0f} bytes on average) ==")
    wires = [Entry(reply_of_dict(d), 0.0, {"question": "What does this package do?"}).to_wire() for d in test]
    samples = [pack(Entry(reply_of_dict(d)).to_wire()) for d in train]
    t0 = time.perf_counter()
    dictionary = ZstdCodec.train(samples, 64 * 1024)
    train_s = time.perf_counter() - t0
    codecs: list[tuple[str, Any]] = [
        ("msgpack", MsgpackCodec(1000)), ("msgpack+lz4", Lz4Codec(1000)),
        ("msgpack+zstd level 3", ZstdCodec(1000, level=3)), ("msgpack+zstd level 9", ZstdCodec(1000, level=9)),
        ("zstd + 64 KiB dict, level 3", ZstdCodec(1000, level=3, dictionary=dictionary)),  # the default
        ("zstd + 64 KiB dict, level 9", ZstdCodec(1000, level=9, dictionary=dictionary)),
    ]
    print(f"{'codec':<30} {'stored/raw':>10} {'bytes':>7} {'encode':>10} {'decode':>10}")
    for name, c in codecs:
        t0 = time.perf_counter()
        blobs = [c.encode(w) for w in wires]
        enc = (time.perf_counter() - t0) / len(wires)
        t0 = time.perf_counter()
        for b in blobs:
            c.decode(b)
        dec = (time.perf_counter() - t0) / len(wires)
        ratio = sum(map(len, blobs)) / sum(raw)
        print(f"{name:<30} {ratio:>9.1%} {statistics.mean(map(len, blobs)):>7,.0f} {enc * 1e6:>7.1f} us {dec * 1e6:>7.1f} us")
    print(f"(dictionary trained in {train_s:.2f} s on {len(samples)} replies from other source documents)")
    # R1's own redundancy: what a pass removing the answer's sentences restated from the
    # reasoning could save at most (drop them), and what everything but the texts costs.
    zd = ZstdCodec(1000, level=3, dictionary=dictionary)

    def stored(dicts: list[dict[str, Any]]) -> int:
        return sum(len(zd.encode(Entry(reply_of_dict(d), 0.0, {"question": "What does this package do?"}).to_wire()))
                   for d in dicts)

    base = stored(test)
    deduped, notext, restated = [], [], 0
    for d in test:
        msg = d["choices"][0]["message"]
        head, _, rest = msg["content"].partition("\n\n")
        same = bool(head) and head.split(". ")[0][:40] in msg["reasoning_content"]
        restated += len(head) if same else 0
        deduped.append({**d, "choices": [{**d["choices"][0], "message": {**msg, "content": rest if same else msg["content"]}}]})
        notext.append({**d, "choices": [{**d["choices"][0], "message": {**msg, "content": "", "reasoning_content": ""}}]})
    print(f"zstd+dict: {base / sum(raw):.2%} of raw JSON; with the answer's restated sentences "
          f"({restated / len(test):.0f} chars per reply) removed: {stored(deduped) / sum(raw):.2%}; "
          f"everything but the two texts: {stored(notext) / len(test):.0f} of {base / len(test):.0f} bytes per entry")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", nargs="?", choices=["latency", "policy", "codec", "default"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}")
    if args.part in (None, "latency"):
        await latency(2000 if args.quick else 20_000)
    if args.part in (None, "policy"):
        policy(*((20_000, 200_000) if args.quick else (100_000, 1_000_000)))
    if args.part in (None, "codec"):
        codec(100 if args.quick else 300)
    if args.part in (None, "default"):
        await default_settings(2000 if args.quick else 20_000)


if __name__ == "__main__":
    asyncio.run(main())
