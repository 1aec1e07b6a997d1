"""@r1mw.cached and pipe.context_cache: keys, TTL, namespaces, single-flight, errors, values."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import zlib

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

import r1mw
from r1mw.context import canonical, normalize

pytestmark = pytest.mark.anyio


def pipeline(**kw):
    kw.setdefault("stages", "exact")
    kw.setdefault("tiers", "l1")
    return r1mw.Pipeline(r1mw.Settings(**kw))


class Counter:
    """An expensive async function that records every real call."""

    def __init__(self, latency: float = 0.0):
        self.calls: list[tuple] = []
        self.latency = latency

    async def __call__(self, query, k=3, *, style="plain"):
        self.calls.append((query, k, style))
        if self.latency:
            await asyncio.sleep(self.latency)
        return {"query": query, "k": k, "style": style, "chunks": [f"{query}-{i}" for i in range(k)]}


def build(counter, pipe, **options):
    async def build_context(query, k=3, *, style="plain"):
        return await counter(query, k, style=style)

    return r1mw.cached(pipeline=pipe, **options)(build_context)


async def test_repeated_arguments_call_the_function_once():
    counter = Counter()
    async with pipeline() as pipe:
        f = build(counter, pipe)
        first = await f("AAPL earnings")
        again = await f("AAPL earnings")
        positional = await f("AAPL earnings", 3)
        keywords = await f(k=3, query="AAPL earnings")
        explicit = await f("AAPL earnings", k=3, style="plain")
        other = await f("MSFT earnings")
        stats = pipe.stats()["context"]
    assert counter.calls == [("AAPL earnings", 3, "plain"), ("MSFT earnings", 3, "plain")]
    assert first == again == positional == keywords == explicit
    assert first["chunks"] == ["AAPL earnings-0", "AAPL earnings-1", "AAPL earnings-2"]
    assert other["query"] == "MSFT earnings"
    assert stats["hits"] == 4 and stats["misses"] == 2 and stats["hits_by_tier"] == {"l1": 4}


async def test_kwargs_order_of_a_dict_argument_does_not_matter():
    calls = []
    async with pipeline() as pipe:
        @r1mw.cached(pipeline=pipe)
        async def search(filters: dict, limit: int = 5):
            calls.append(filters)
            return sorted(filters)

        await search({"ticker": "AAPL", "year": 2024})
        await search(limit=5, filters={"year": 2024, "ticker": "AAPL"})
        await search({"ticker": "AAPL", "year": 2025})
    assert len(calls) == 2


async def test_ttl_expiry_recomputes():
    counter = Counter()
    async with pipeline() as pipe:
        f = build(counter, pipe, ttl=0.05)
        await f("q")
        await f("q")
        await asyncio.sleep(0.12)
        await f("q")
        # per-call ttl overrides the decorator's
        await f("long", cache={"ttl": 3600})
        await asyncio.sleep(0.12)
        await f("long")
    assert [c[0] for c in counter.calls] == ["q", "q", "long"]


async def test_namespaces_isolate():
    counter = Counter()
    async with pipeline() as pipe:
        a = build(counter, pipe, namespace="desk-a")
        b = build(counter, pipe, namespace="desk-b")
        await a("q")
        await b("q")
        await a("q")
        await a("q", cache={"namespace": "desk-b"})  # per-call namespace: desk-b's entry
        await a("q", cache={"namespace": "desk-c"})
        ctx = pipe.context_cache
        await ctx.set("shared-key", "for a", namespace="desk-a")
        assert await ctx.get("shared-key", namespace="desk-b") is None
        assert await ctx.get("shared-key", namespace="desk-a") == "for a"
    assert len(counter.calls) == 3


async def test_no_cache_and_no_store_per_call():
    counter = Counter()
    async with pipeline() as pipe:
        f = build(counter, pipe)
        await f("q", cache={"no-store": True})
        await f("q")  # nothing was stored: computed again, and stored now
        await f("q")
        await f("q", cache={"no-cache": True})  # fresh, and the fresh value is stored
        with pytest.raises(TypeError, match="unknown keys"):
            await f("q", cache={"no_cache_typo": True})
    assert len(counter.calls) == 3


async def test_s_maxage_is_the_oldest_value_the_caller_accepts_not_a_lifetime():
    counter = Counter()
    async with pipeline() as pipe:
        f = build(counter, pipe)
        await f("q")
        await f("q", cache={"s-maxage": 0})  # too old for this caller: computed afresh, replacing it
        await f("q", cache={"s-maxage": 3600})  # young enough
        await f("q")  # s-maxage gave the fresh value no lifetime of its own
    assert len(counter.calls) == 2


async def test_fifty_concurrent_calls_run_the_function_once():
    counter = Counter(latency=0.05)
    async with pipeline() as pipe:
        f = build(counter, pipe)
        results = await asyncio.gather(*(f("hot query") for _ in range(50)))
        stats = pipe.stats()["context"]
    assert len(counter.calls) == 1
    assert all(r == results[0] for r in results)
    assert stats["coalesced"] == 49 and stats["misses"] == 1


async def test_exception_reaches_every_waiter_and_is_not_cached():
    calls = 0
    boom = RuntimeError("index unavailable")

    async with pipeline() as pipe:
        @r1mw.cached(pipeline=pipe)
        async def flaky(query):
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            if calls == 1:
                raise boom
            return f"context for {query}"

        results = await asyncio.gather(*(flaky("q") for _ in range(10)), return_exceptions=True)
        assert all(r is boom for r in results)
        assert await flaky("q") == "context for q"
        assert await flaky("q") == "context for q"
        assert pipe.stats()["context"]["errors"] == 1
    assert calls == 2


class Opaque:
    pass


@pytest.mark.parametrize(
    "bad, where",
    [
        (Opaque(), "Opaque"),
        ({"tags": {"a", "b"}}, "set at ['tags']"),
        ([1, lambda x: x], "function at [1]"),
        ({1: "int key"}, "int key"),
        (2**70, "64-bit"),
        (np.array([object()], dtype=object), "plain dtype"),
    ],
)
async def test_unencodable_values_are_refused_clearly_and_not_stored(bad, where):
    calls = 0
    async with pipeline() as pipe:
        @r1mw.cached(pipeline=pipe)
        async def returns_bad(query):
            nonlocal calls
            calls += 1
            return bad

        for _ in range(2):
            with pytest.raises(r1mw.UnencodableValueError, match="never pickle|keys must be str|nested") as info:
                await returns_bad("q")
            assert where in str(info.value)
            assert isinstance(info.value, TypeError)  # UnencodableValueError is also a TypeError
        with pytest.raises(r1mw.UnencodableValueError):
            await pipe.context_cache.set("k", bad)
        assert await pipe.context_cache.get("k", "absent") == "absent"
        assert pipe.stats()["context"]["refused"] == 3
    assert calls == 2  # refused at each call: nothing was stored


async def test_numpy_arrays_and_bytes_round_trip_exactly():
    emb = np.random.default_rng(7).standard_normal((4, 64)).astype(np.float32)
    ids = np.arange(10, dtype=np.int64)[::2]  # not contiguous
    blob = bytes(range(256)) * 4
    async with pipeline() as pipe:
        @r1mw.cached(pipeline=pipe)
        async def embed(query):
            return {"embedding": emb, "ids": ids, "raw": blob, "pair": ("a", 1), "scalar": np.float32(0.5),
                    "buf": bytearray(b"xy")}

        miss = await embed("q")
        hit = await embed("q")
    for value in (miss, hit):
        assert value["embedding"].dtype == np.float32 and value["embedding"].shape == (4, 64)
        assert np.array_equal(value["embedding"], emb)
        assert value["embedding"].tobytes() == emb.tobytes()
        assert np.array_equal(value["ids"], [0, 2, 4, 6, 8]) and value["ids"].dtype == np.int64
        assert value["raw"] == blob and type(value["raw"]) is bytes
        assert value["pair"] == ["a", 1]  # tuples come back as lists, on a miss as on a hit
        assert value["scalar"] == np.float32(0.5) and value["scalar"].dtype == np.float32
        assert value["buf"] == b"xy" and type(value["buf"]) is bytes
        assert not value["embedding"].flags.writeable  # the cached array cannot be changed in place
    emb[0, 0] = 99.0  # the caller's own array stays theirs
    assert hit["embedding"][0, 0] != 99.0


async def test_explicit_get_set_delete_and_get_or_set():
    async with pipeline() as pipe:
        ctx = pipe.context_cache
        assert ctx is pipe.context_cache
        assert await ctx.get(("doc", 1)) is None
        stored = await ctx.set(("doc", 1), {"text": "long context", "ids": (1, 2)}, ttl=60)
        assert stored == {"text": "long context", "ids": [1, 2]}
        assert await ctx.get(("doc", 1)) == stored
        assert await ctx.get(["doc", 1]) is None  # a list key is not the tuple key
        await ctx.set("none", None)
        assert await ctx.get("none", "absent") is None  # a stored None is a value
        assert await ctx.delete(("doc", 1)) is True
        assert await ctx.delete(("doc", 1)) is False
        assert await ctx.get(("doc", 1)) is None
        made = []

        async def factory():
            made.append(1)
            await asyncio.sleep(0.02)
            return "built"

        got = await asyncio.gather(*(ctx.get_or_set("lazy", factory) for _ in range(5)))
        assert got == ["built"] * 5 and made == [1]
        assert await ctx.get_or_set("lazy", factory) == "built" and made == [1]


async def test_context_keys_never_meet_reply_keys_and_replies_still_work():
    from r1mw.testing import FakeR1

    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        q = [{"role": "user", "content": "hi"}]
        await llm(model="m", messages=q)
        await pipe.context_cache.set("hi", "context")
        hit = await llm(model="m", messages=q)
    assert hit["choices"][0]["message"]["content"] == "Answer to: hi"
    assert len(fake.calls) == 1


async def test_key_callable_ignore_and_unkeyable_arguments():
    calls = []

    class Retriever:  # an object argument: not keyable by itself
        def __init__(self, name):
            self.name = name

    async with pipeline() as pipe:
        @r1mw.cached(pipeline=pipe, ignore=("retriever",))
        async def with_ignore(retriever, query):
            calls.append(("ignore", retriever.name, query))
            return query

        @r1mw.cached(pipeline=pipe, key=lambda retriever, query: (retriever.name, query.lower()))
        async def with_key(retriever, query):
            calls.append(("key", retriever.name, query))
            return query

        @r1mw.cached(pipeline=pipe)
        async def unkeyable(retriever, query):
            calls.append(("never",))
            return query

        await with_ignore(Retriever("a"), "Q")
        await with_ignore(Retriever("b"), "Q")
        await with_key(Retriever("a"), "Q")
        await with_key(Retriever("a"), "q")
        await with_key(Retriever("b"), "q")
        with pytest.raises(r1mw.UnencodableValueError, match=r"key from a .*Retriever.*retriever=.*key=\.\.\."):
            await unkeyable(Retriever("a"), "q")
        with pytest.raises(TypeError, match="missing a required argument"):
            await with_ignore(Retriever("a"))
    assert calls == [("ignore", "a", "Q"), ("key", "a", "Q"), ("key", "b", "q")]


async def test_name_override_and_invalidate():
    counter = Counter()
    async with pipeline() as pipe:
        v1 = build(counter, pipe, name="build_context/v1")
        also_v1 = build(counter, pipe, name="build_context/v1")
        await v1("q")
        await also_v1("q")  # a second function under the same name shares the entries
        assert await v1.invalidate("q") is True
        await also_v1("q")
    assert len(counter.calls) == 2


def test_decoration_errors_are_clear():
    with pytest.raises(TypeError, match="async function"):
        r1mw.cached(lambda q: q)
    with pytest.raises(r1mw.ConfigError, match="parameter named 'cache'"):
        @r1mw.cached
        async def has_cache_param(q, cache=None):
            return q
    with pytest.raises(r1mw.ConfigError, match="no parameter"):
        @r1mw.cached(ignore=("nope",))
        async def f(q):
            return q


async def test_default_pipeline_from_env(monkeypatch):
    monkeypatch.setenv("R1MW_NAMESPACE", "from-env")
    calls = []

    @r1mw.cached  # no pipeline: Settings.from_env(), started on first use
    async def answer(q):
        calls.append(q)
        return q.upper()

    assert await answer("x") == "X"
    assert await answer("x") == "X"
    pipe = r1mw.context.default_pipeline()
    assert pipe.settings.namespace == "from-env"
    assert pipe.stats()["context"]["hits"] == 1
    await r1mw.context.close_default_pipeline()
    assert calls == ["x"]


async def test_closed_pipeline_refuses():
    pipe = pipeline()
    async with pipe:
        await pipe.context_cache.set("k", 1)
    with pytest.raises(r1mw.PipelineStateError):
        await pipe.context_cache.get("k")


# -- properties -----------------------------------------------------------------------------

json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@hsettings(max_examples=60, deadline=None)
@given(json_like | st.tuples(json_like, json_like))
def test_normalized_values_come_back_from_the_codec_unchanged(value):
    from r1mw.codec import Lz4Codec, decode

    norm = normalize(value)
    assert normalize(norm) == norm
    stored = r1mw.Entry(norm, 0.0, {"context": "t"})
    back = r1mw.Entry.from_wire(decode(Lz4Codec(threshold=16).encode(stored.to_wire())))
    assert back.value == norm and type(back.value) is type(norm)


@hsettings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=6), max_size=6), st.randoms())
def test_canonical_ignores_dict_order(d, rnd):
    items = list(d.items())
    rnd.shuffle(items)
    assert canonical(dict(items)) == canonical(d)


def test_canonical_tells_apart_what_differs():
    class Side(enum.Enum):
        BUY = 1
        SELL = 2

    @dataclasses.dataclass
    class Q:
        ticker: str
        n: int

    distinct = [1, 1.0, True, "1", b"1", [1], (1,), {1}, {"1": 1}, Side.BUY, Side.SELL, Q("A", 1), Q("A", 2),
                np.array([1], dtype=np.int32), np.array([1], dtype=np.int64), np.array([[1]], dtype=np.int32), None]
    packed = {msgpack.packb(canonical(v), use_bin_type=True) for v in distinct}
    assert len(packed) == len(distinct)
    assert canonical(np.arange(6)[::2]) == canonical(np.array([0, 2, 4]))


# -- through the disk tier -----------------------------------------------------------------


def _big_context(query: str) -> dict:
    rng = np.random.default_rng(zlib.crc32(query.encode()))
    text = "\n".join(f"[{query} / section {i}] " + "revenue grew while margins held; " * 20 for i in range(200))
    return {"query": query, "text": text, "embedding": rng.standard_normal((32, 64)).astype(np.float32),
            "raw": b"\x00\xff" * 100, "meta": {"sections": 200, "score": 0.25, "tags": ("a", "b")}}


async def test_survives_a_restart_through_the_disk_tiers(tmp_path):
    calls = []

    async def build_context(query):
        calls.append(query)
        return _big_context(query)

    settings = dict(tiers="l1,l2", cache_dir=str(tmp_path / "shared"))
    async with pipeline(**settings) as first:
        f = r1mw.cached(pipeline=first, name="build_context")(build_context)
        original = await f("AAPL 10-K")
        l2 = first.stats()["tiers"]["l2"]
        assert l2["entries"] == 1
        stored = l2["bytes"]
    raw_size = len(original["text"]) + original["embedding"].nbytes
    assert stored < raw_size  # the text compresses (lz4 above COMPRESSION_THRESHOLD)

    async with pipeline(**settings) as second:  # a new process, in effect: empty RAM tier
        g = r1mw.cached(pipeline=second, name="build_context")(build_context)
        again = await g("AAPL 10-K")
        stats = second.stats()["context"]
        assert await g("AAPL 10-K") is not None
        assert second.stats()["context"]["hits_by_tier"] == {"l2": 1, "l1": 1}  # promoted to RAM
    assert calls == ["AAPL 10-K"]
    assert stats["hits"] == 1 and stats["misses"] == 0
    assert again["text"] == original["text"]
    assert again["embedding"].dtype == np.float32 and again["embedding"].tobytes() == original["embedding"].tobytes()
    assert again["raw"] == original["raw"] and again["meta"] == original["meta"] == {
        "sections": 200, "score": 0.25, "tags": ["a", "b"]}


async def test_a_corrupt_disk_entry_is_a_miss_and_is_recomputed(tmp_path):
    calls = []

    async def build_context(query):
        calls.append(query)
        return _big_context(query)

    settings = dict(tiers="l1,l2", cache_dir=str(tmp_path / "shared"))
    async with pipeline(**settings) as first:
        await r1mw.cached(pipeline=first, name="bc")(build_context)("q")
    files = [p for p in (tmp_path / "shared" / "l2").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(files) == 1
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[0].write_bytes(bytes(data))
    async with pipeline(**settings) as second:
        value = await r1mw.cached(pipeline=second, name="bc")(build_context)("q")
        assert second.stats()["tiers"]["l2"]["corrupt"] == 1
    assert calls == ["q", "q"]
    assert value["text"] == _big_context("q")["text"]


async def test_large_values_count_their_real_size_in_ram():
    async with pipeline(l1_max_bytes="3MB") as pipe:
        ctx = pipe.context_cache
        for i in range(5):
            await ctx.set(i, "x" * 1_000_000)
        l1 = pipe.stats()["tiers"]["l1"]
    assert l1["bytes"] <= 3_000_000 and l1["entries"] < 5


async def test_methods_with_ignored_self_share_entries_across_instances():
    async with pipeline() as pipe:
        class Retriever:
            def __init__(self):
                self.built = []

            @r1mw.cached(pipeline=pipe, ignore=("self",))
            async def context(self, query: str) -> str:
                self.built.append(query)
                return f"context for {query}"

        a, b = Retriever(), Retriever()
        assert await a.context("q") == "context for q"
        assert await b.context(query="q") == "context for q"
        assert a.built == ["q"] and b.built == []


# -- what a function is bound to is part of its key ---------------------------------------------


def scaled_by(factor: int, pipe):
    """A factory of cached functions: one qualified name, a different function each time."""
    @r1mw.cached(pipeline=pipe)
    async def scaled(text: str) -> str:
        return text * factor

    return scaled


async def test_closures_of_one_factory_do_not_share_entries():
    async with pipeline() as pipe:
        twice, thrice = scaled_by(2, pipe), scaled_by(3, pipe)
        assert await twice("ab") == "abab"
        assert await thrice("ab") == "ababab"
        assert await scaled_by(2, pipe)("ab") == "abab" and pipe.context_cache.stats()["hits"] == 1


async def test_a_nonlocal_counter_in_a_closure_does_not_change_its_key():
    calls = 0
    async with pipeline() as pipe:
        @r1mw.cached(pipeline=pipe)
        async def counted(query):
            nonlocal calls
            calls += 1
            return query

        assert [await counted("q") for _ in range(3)] == ["q"] * 3
    assert calls == 1


@dataclasses.dataclass
class Index:
    name: str

    async def search(self, query: str) -> str:
        return f"{self.name}:{query}"


async def search(query: str, index: str) -> str:
    return f"{index}:{query}"


async def test_bound_methods_and_partials_are_keyed_by_what_they_are_bound_to():
    import functools

    async with pipeline() as pipe:
        a, b = r1mw.cached(Index("a").search, pipeline=pipe), r1mw.cached(Index("b").search, pipeline=pipe)
        assert (await a("q"), await b("q")) == ("a:q", "b:q")
        pa = r1mw.cached(functools.partial(search, index="a"), pipeline=pipe)
        pb = r1mw.cached(functools.partial(search, index="b"), pipeline=pipe)
        assert (await pa("q"), await pb("q")) == ("a:q", "b:q")
        assert await r1mw.cached(Index("a").search, pipeline=pipe)("q") == "a:q"
        assert pipe.context_cache.stats()["hits"] == 1

    class Client:  # an instance that cannot be keyed: refused when decorated, name= settles it
        async def fetch(self, query):
            return query

    with pytest.raises(r1mw.WrapError, match=r"Client.fetch.*bound instance.*name="):
        r1mw.cached(Client().fetch)
    r1mw.cached(Client().fetch, name="client-a.fetch")


def _vandalize(value):
    """What a careless caller does to what it got: every list and dict changed in place."""
    if isinstance(value, list):
        for v in value:
            _vandalize(v)
        value.append("appended by a caller")
    elif isinstance(value, dict):
        for v in list(value.values()):
            _vandalize(v)
        value["added"] = "by a caller"


async def test_a_caller_changing_what_it_got_never_changes_what_the_cache_answers_next():
    counter = Counter(latency=0.02)
    async with pipeline() as pipe:
        f = build(counter, pipe)
        expected = {"query": "q", "k": 3, "style": "plain", "chunks": ["q-0", "q-1", "q-2"]}
        waiters = await asyncio.gather(*(f("q") for _ in range(3)))  # a miss and two coalesced
        for got in waiters:
            assert got == expected
            _vandalize(got)
        hit = await f("q")  # from L1
        assert hit == expected
        _vandalize(hit)
        assert await f("q") == expected
        assert await f("q", cache={"no-cache": True}) == expected  # recomputed, stored, handed out
        ctx = pipe.context_cache
        stored = await ctx.set("doc", {"ids": [1, 2], "meta": {"tags": ["a"]}})
        _vandalize(stored)
        got = await ctx.get("doc")
        assert got == {"ids": [1, 2], "meta": {"tags": ["a"]}}
        _vandalize(got)
        assert await ctx.get("doc") == {"ids": [1, 2], "meta": {"tags": ["a"]}}
        assert await ctx.get_or_set("doc", counter) == {"ids": [1, 2], "meta": {"tags": ["a"]}}
    assert len(counter.calls) == 2


@hsettings(max_examples=60, deadline=None)
@given(json_like)
def test_a_fresh_copy_equals_the_value_and_shares_no_list_or_dict_with_it(value):
    from r1mw.context import _fresh

    norm = normalize(value)
    copy = _fresh(norm)
    assert copy == norm

    def containers(v):
        if isinstance(v, (list, dict)):
            yield id(v)
            for child in (v.values() if isinstance(v, dict) else v):
                yield from containers(child)

    assert not set(containers(copy)) & set(containers(norm))
