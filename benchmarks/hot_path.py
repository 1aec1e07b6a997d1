"""Hot path: an exact RAM (L1) hit through the whole pipeline, every default stage on;
then what the pipeline adds to a miss.

Prints p50/p99 per call (perf_counter_ns around each awaited call, after warm-up) and
hits/s (a loop timed as a whole, yielding to the event loop every 100 calls so background
work such as the prefetch learner is paid for), through a wrapped async callable returning
dicts and through a wrapped AsyncOpenAI client (R1Peer behind httpx.MockTransport), then a
breakdown of what one hit costs, then the miss overhead: distinct prompts through the
wrapped callable against a zero-latency upstream, minus the upstream called directly.
Run: ``python benchmarks/hot_path.py [--calls 20000] [--misses 2000]``.

The stage list is ``Settings().stages`` (the defaults), so the benchmark grows with them;
``--stages metrics,exact`` measures another chain; ``--user analyst-1`` sends an OpenAI ``user``
with every hit, so the prefetch stage's learner observes each one (without a session or user a
hit skips it); ``--desk`` measures the trading desk's own case: the bundled templates loaded,
a templated prompt, and a ``user`` and a session on every hit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import shutil
import tempfile
import time
from typing import Any, Awaitable, Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import r1mw  # noqa: E402
from r1mw.adapters.callable import DictNative  # noqa: E402
from r1mw.adapters.shapes import dict_of_reply  # noqa: E402
from r1mw.keys import key_of, split_params  # noqa: E402
from r1mw.testing import FakeR1, R1Peer  # noqa: E402
from r1mw.types import CacheControl  # noqa: E402

MODEL = "deepseek-reasoner"
MESSAGES = [
    {"role": "system", "content": "You are a senior equity analyst. Answer with numbers."},
    {"role": "user", "content": "Analyze AAPL with RSI(14)=71.2 and MACD crossing up; 2-week outlook?"},
]
PARAMS = {"temperature": 0.6, "max_tokens": 4096}


def pct(samples_ns: list[int], q: float) -> float:
    ordered = sorted(samples_ns)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


async def per_call(call: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float, float, float]:
    """p50, p99 (us, each call timed), calls/s (the loop timed as a whole) and calls per
    CPU-second of this process (what it sustains with a core to itself: the machine is shared)."""
    clock = time.perf_counter_ns
    samples = [0] * n
    gc.collect()
    gc.disable()  # collections land on random calls; p99 is reported with gc on below
    try:
        for i in range(n):
            t0 = clock()
            await call()
            samples[i] = clock() - t0
        t0, c0 = clock(), time.process_time_ns()
        for i in range(n):
            await call()
            if i % 100 == 99:
                await asyncio.sleep(0)  # a server yields between requests: background work runs
        rate = n / ((clock() - t0) / 1e9)
        cpu_rate = n / max((time.process_time_ns() - c0) / 1e9, 1e-9)
    finally:
        gc.enable()
    return pct(samples, 0.50), pct(samples, 0.99), rate, cpu_rate


async def p99_with_gc(call: Callable[[], Awaitable[Any]], n: int) -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        await call()
        samples.append(clock() - t0)
    return pct(samples, 0.99)


def micro(fn: Callable[[], Any], n: int) -> float:
    """Mean us per call of a synchronous function."""
    clock = time.perf_counter_ns
    for _ in range(min(n, 1000)):
        fn()
    t0 = clock()
    for _ in range(n):
        fn()
    return (clock() - t0) / n / 1000.0


async def amicro(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    clock = time.perf_counter_ns
    for _ in range(min(n, 1000)):
        await fn()
    t0 = clock()
    for _ in range(n):
        await fn()
    return (clock() - t0) / n / 1000.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--misses", type=int, default=2_000, help="distinct prompts for the miss overhead (0: skip)")
    parser.add_argument("--yield-between", action="store_true",
                        help="misses: give the event loop one turn after each timed miss (as a server does between "
                             "requests), so background work (the semantic indexer, L2 writes) runs during the window")
    parser.add_argument("--stages", default=None,
                        help="comma-separated stages (default: the R1MW_STAGES default, which grows with the project)")
    parser.add_argument("--user", default=None,
                        help="send this OpenAI user with every hit (the prefetch learner then observes each one)")
    parser.add_argument("--desk", action="store_true",
                        help="the trading desk's case: bundled templates, a templated prompt, a user and a session")
    args = parser.parse_args()
    extra: dict[str, Any] = {"stages": args.stages} if args.stages else {}
    if args.desk:
        global MESSAGES
        from r1mw.templating import BUNDLED

        extra["templates"] = str(BUNDLED)
        MESSAGES = [MESSAGES[0], {"role": "user", "content": "Analyze AAPL using RSI(14) mean reversion"}]
    # A fresh cache dir each run: entries left by an earlier run would turn the first call into a hit.
    cache_dir = tempfile.mkdtemp(prefix="r1mw-bench-hot-")
    try:
        await run(args, cache_dir, extra)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


async def run(args: argparse.Namespace, cache_dir: str, extra: dict[str, Any]) -> None:
    n = args.calls
    settings = r1mw.Settings(cache_dir=cache_dir, **extra)
    stages = ",".join(settings.stages)
    # Misses are measured first: LiteLLM, once called, leaves logging work on the event loop.
    miss_lines = await miss_overhead(settings, args.misses, args.yield_between) if args.misses > 0 else []
    print(f"r1mw {r1mw.__version__} | CPython {platform.python_version()} | {platform.machine()} | "
          f"{os.cpu_count()} cores | stages={stages} tiers={','.join(settings.tiers)} | {n} calls"
          + (f" | user={args.user}" if args.user else "") + (" | desk: templated prompt, user, session" if args.desk else ""))

    who: dict[str, Any] = {"user": args.user} if args.user else {}
    if args.desk:
        who = {"user": args.user or "analyst-1", "cache": {"session": "s-bench"}}
    async with r1mw.Pipeline(settings) as pipe:
        await pipe.wait_ready()
        fake = FakeR1()
        llm = r1mw.wrap(fake, pipe)

        async def callable_hit() -> Any:
            return await llm(model=MODEL, messages=MESSAGES, **PARAMS, **who)

        await callable_hit()
        for _ in range(1000):
            await callable_hit()
        p50, p99, rate, cpu_rate = await per_call(callable_hit, n)
        p99gc = await p99_with_gc(callable_hit, n)
        assert len(fake.calls) == 1, "the benchmark must measure hits only"
        print(f"\nwrapped async callable (dict)   p50 {p50:6.2f} us   p99 {p99:6.2f} us "
              f"(gc on: {p99gc:6.2f})   {rate:10,.0f} hits/s ({cpu_rate:,.0f} per CPU-second)")

        import httpx
        import openai

        peer = R1Peer()
        client = r1mw.wrap(openai.AsyncOpenAI(api_key="bench", base_url="https://r1.test/v1", max_retries=0,
                                              http_client=httpx.AsyncClient(transport=peer.transport())), pipe)

        async def openai_hit() -> Any:
            return await client.chat.completions.create(model=MODEL, messages=MESSAGES, **PARAMS, **who, seed=7)

        await openai_hit()  # its own key (seed=7): this entry comes from the SDK
        for _ in range(1000):
            await openai_hit()
        o50, o99, orate, _ = await per_call(openai_hit, n)
        assert len(peer.calls) == 1
        print(f"wrapped AsyncOpenAI (ChatCompl.) p50 {o50:6.2f} us   p99 {o99:6.2f} us "
              f"{'':17}{orate:10,.0f} hits/s")

        lrate = None
        try:
            import litellm
        except ImportError:
            print("wrapped litellm.acompletion      (litellm not installed)")
        else:
            acompletion = r1mw.wrap(litellm.acompletion, pipe)

            async def litellm_hit() -> Any:
                return await acompletion(model="deepseek/deepseek-reasoner", messages=MESSAGES, **PARAMS, **who,
                                         mock_response="Overbought; expect a pullback.")

            await litellm_hit()
            for _ in range(500):
                await litellm_hit()
            l50, l99, lrate, _ = await per_call(litellm_hit, max(n // 4, 1000))
            print(f"wrapped litellm.acompletion (MR) p50 {l50:6.2f} us   p99 {l99:6.2f} us "
                  f"{'':17}{lrate:10,.0f} hits/s")

        # -- breakdown: what one hit is made of --------------------------------------------
        m = max(n, 20_000)
        from openai.types.chat import ChatCompletion

        kwargs = {"model": MODEL, "messages": MESSAGES, **PARAMS, **who}

        def adapter_in() -> Any:
            k = dict(kwargs)
            control = CacheControl.from_mapping(k.pop("cache", None))
            model, messages = k.pop("model"), k.pop("messages")
            stream = bool(k.pop("stream", False))
            params, passthrough = split_params(k)
            return pipe.request(model, list(messages), params, passthrough, stream=stream, control=control,
                                upstream=None)

        async def through_pipeline() -> Any:
            return await pipe.handle(adapter_in())

        async def bare_await() -> None:
            return None

        probe = adapter_in()
        await pipe.handle(probe)  # the entry's key as the stages made it (a template re-keys it)
        key = probe.key
        entry = pipe.store.get_nowait(key)
        assert entry is not None
        reply = entry.reply
        dicts = DictNative()

        rows = [
            ("key: key_of (msgpack + xxh3-128)", micro(lambda: key_of("", MODEL, MESSAGES, PARAMS), m)),
            ("adapter in: kwargs -> Request", micro(adapter_in, m)),
            ("pipeline: Request in -> Reply out (incl. key)", await amicro(through_pipeline, m) - micro(adapter_in, m)),
            # (as the dict adapter builds it: with the keys the miss had, see shapes.shape_of)
            ("adapter out: Reply -> dict", micro(lambda: dicts.from_reply(reply), m)),
            ("adapter out: Reply -> ChatCompletion", micro(lambda: ChatCompletion.model_validate(dict_of_reply(reply)), m)),
            *([("adapter out: Reply -> litellm ModelResponse",
                micro(lambda: litellm.ModelResponse(**dict_of_reply(reply)), m // 4))] if lrate else []),
            ("L1 get_nowait", micro(lambda: pipe.store.get_nowait(key), m)),
            ("one bare await of a coroutine", await amicro(bare_await, m)),
        ]
        print("\nbreakdown (mean us per call)")
        for label, us in rows:
            print(f"  {label:48} {us:6.2f}")
        stats = pipe.stats()
        print(f"\npipeline: {stats['hits']} hits, {stats['misses']} misses, hits_by {stats['hits_by']}")
    print(f"targets: p50 <= 10 us, p99 <= 50 us, >= 100,000 hits/s (callable): "
          f"{'met' if p50 <= 10 and p99 <= 50 and rate >= 100_000 else 'NOT met'}"
          f"{'' if rate >= 100_000 else f' (hits per CPU-second: {cpu_rate:,.0f})'}")
    print("\n".join(miss_lines))


def miss_prompt(i: int) -> list[dict[str, Any]]:
    """Distinct prompts of one shape (the template miner learns it after a few: as traffic would)."""
    return [MESSAGES[0], {"role": "user", "content": f"Analyze T{i:07d} with RSI(14)={i % 97}.2 and MACD "
                                                     f"crossing up; {i % 7 + 1}-week outlook?"}]


def declared_prompt(i: int) -> list[dict[str, Any]]:
    """Distinct prompts of a declared template of the bundled set (a new ticker each)."""
    ticker = "Q" + "".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i // 26 ** k % 26] for k in range(4))
    return [MESSAGES[0], {"role": "user", "content": f"Predict movement for {ticker} over the next week"}]


async def miss_overhead(settings: r1mw.Settings, m: int, yield_between: bool = False) -> list[str]:
    """What the pipeline adds to a miss: every call a new prompt, zero-latency upstream."""
    lines = []
    clock = time.perf_counter_ns
    fake = FakeR1()
    direct = []
    for i in range(m):
        messages = miss_prompt(50_000_000 + i)
        t0 = clock()
        await fake(model=MODEL, messages=messages, **PARAMS)
        direct.append(clock() - t0)
    d50 = pct(direct, 0.5)
    lines.append(f"\nmiss overhead ({m} distinct prompts, zero-latency upstream; upstream called directly: "
          f"p50 {d50:.2f} us)")
    from r1mw.templating import BUNDLED

    tiers_runs = [",".join(settings.tiers)] + (["l1"] if list(settings.tiers) != ["l1"] else [])
    runs = [(tiers, "mined", miss_prompt, {}) for tiers in tiers_runs]
    runs += [(tiers, "declared", declared_prompt, {"templates": str(BUNDLED)}) for tiers in tiers_runs]
    for tiers, family, prompt, extra in runs:
        cache_dir = tempfile.mkdtemp(prefix="r1mw-bench-miss-")
        try:
            async with r1mw.Pipeline(r1mw.Settings(cache_dir=cache_dir, stages=",".join(settings.stages),
                                                   tiers=tiers, **extra)) as pipe:
                await pipe.wait_ready()
                upstream = FakeR1()
                llm = r1mw.wrap(upstream, pipe)
                for i in range(200):  # warm-up (and the miner's first template)
                    await llm(model=MODEL, messages=prompt(i), **PARAMS)
                samples = []
                c0, p0 = time.thread_time_ns(), time.process_time_ns()
                for i in range(m):
                    messages = prompt(1_000 + i)
                    t0 = clock()
                    await llm(model=MODEL, messages=messages, **PARAMS)
                    samples.append(clock() - t0)
                    if yield_between:
                        await asyncio.sleep(0)
                cpu = (time.thread_time_ns() - c0) / m / 1000  # the loop's own thread (not the L2 writer's)
                stats = pipe.stats()
                deferred = (stats["stages"].get("semantic") or {}).get("deferred")
                # what is still queued is indexed now, and its cost counted in the process CPU
                sem = pipe.stage("semantic")
                if sem is not None and getattr(sem, "_pending", None) and sem.index is not None:
                    await sem._drain_once(sem.index, len(sem._pending))
                pcpu = (time.process_time_ns() - p0) / m / 1000  # every thread (worker embeds, L2 writer)
                assert stats["misses"] == len(upstream.calls) == m + 200, "the miss benchmark must measure misses only"
                p50, p99 = pct(samples, 0.5), pct(samples, 0.99)
                lines.append(f"  tiers {tiers:6} {family:8} template  miss p50 {p50:8.2f} us  p99 {p99:9.2f} us  "
                             f"overhead p50 {p50 - d50:8.2f} us"
                             f"  (event-loop thread CPU {cpu:7.2f} us/miss, process {pcpu:7.2f})"
                             + (f"  [semantic queue at the end {deferred['pending']}, "
                                f"{deferred['background_batches']} background batches]" if deferred else ""))
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
    lines.append("(mined: a shape the miner learnt, keyed by its raw text, so the semantic stage looks it up; "
                 "declared: a template of the bundled set, keyed by its canonical form, so it does not)")
    lines.append("target: overhead p50 <= 300 us with every stage on")
    return lines


if __name__ == "__main__":
    asyncio.run(main())
