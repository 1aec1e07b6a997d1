"""The semantic stage end to end, with the real offline model: paraphrases hit, near misses
miss, scopes never mix, evicted entries leave the index, the index survives a restart, and
bad input (empty, 1 MB, surrogates) breaks nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import r1mw
from r1mw.testing import FakeR1
from r1mw.tiers import MemoryTier

import semantic_helpers
from semantic_helpers import M, content, q

pytestmark = pytest.mark.anyio



def pipeline(plugins=(), **settings: Any) -> r1mw.Pipeline:
    settings.setdefault("l1_policy", "lru")  # eviction order the eviction test relies on
    return semantic_helpers.pipeline(plugins, **settings)


PARAPHRASES = [
    ("What is the RSI of AAPL on the daily chart?", "what's the RSI for AAPL on the daily chart"),
    ("Explain the difference between a stock and a bond", "Explain the difference between stocks and bonds"),
    ("Buy 1,000 shares of AAPL", "Buy 1000 shares of AAPL"),
    ("How do I reset my password?", "How can I reset my password?"),
]

NEAR_MISSES = [  # (stored, asked, what differs)
    ("What is the RSI of AAPL on the daily chart?", "What is the RSI of MSFT on the daily chart?", "ticker"),
    ("Set a stop loss 5% below entry", "Set a stop loss 15% below entry", "number"),
    ("Buy 1k shares of AAPL", "Buy 1.5k shares of AAPL", "number spelling"),
    ("What were NVDA earnings in Q1 2024?", "What were NVDA earnings in Q3 2024?", "period"),
    ("What was the close of SPY on March 3, 2024?", "What was the close of SPY on March 4, 2024?", "date"),
    ("Should I hedge my portfolio with puts?", "Should I not hedge my portfolio with puts?", "negation"),
    ("Buy 100 shares of TSLA at market", "Sell 100 shares of TSLA at market", "direction"),
    ("Is SPY trading above its 200-day moving average?", "Is SPY trading below its 200-day moving average?",
     "direction"),
    ("Convert 100 USD to EUR", "Convert 100 EUR to USD", "role swap"),
    ("Show flights from Boston to Denver", "Show flights from Denver to Boston", "role swap"),
    ("What are the side effects of ibuprofen?", "What are the side effects of aspirin?", "entity"),
]


async def test_paraphrases_of_a_stored_request_hit():
    fake = FakeR1()
    async with pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        for stored, asked in PARAPHRASES:
            await llm(model=M, messages=q(stored))
            reply = await llm(model=M, messages=q(asked))
            assert content(reply) == fake.answer_for(stored), (stored, asked)
        stats = pipe.stats()
    assert len(fake.calls) == len(PARAPHRASES)
    sem = stats["stages"]["semantic"]
    assert sem["hits"] == len(PARAPHRASES)
    assert stats["hits_by"] == {"semantic:l1": len(PARAPHRASES)}
    last = sem["recent_hits"][-1]
    assert last["asked"] == PARAPHRASES[-1][1] and last["stored"] == PARAPHRASES[-1][0]
    assert 0.0 < last["similarity"] <= 1.0 and len(last["served_by"]) == 32


async def test_hit_records_similarity_and_the_entry_that_served_it():
    fake = FakeR1()
    seen: list[r1mw.Request] = []

    class Spy:
        name = "spy"

        async def handle(self, request, call_next):
            reply = await call_next(request)
            seen.append(request)
            return reply

    class SpyPlugin:
        name = "spy-plugin"

        @r1mw.hookimpl
        def r1mw_register_stages(self):
            return {"spy": lambda p: Spy()}

    async with pipeline(plugins=[SpyPlugin()], stages="spy,exact,semantic") as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(PARAPHRASES[0][0]))
        await llm(model=M, messages=q(PARAPHRASES[0][1]))
    first, second = seen
    assert second.source == "semantic"
    assert second.meta["served_by"] == first.key.hex()
    assert 0.8 <= second.meta["similarity"] <= 1.0


@pytest.mark.parametrize("stored,asked,kind", NEAR_MISSES, ids=[n[2] + ":" + n[1][:30] for n in NEAR_MISSES])
async def test_near_misses_never_hit(stored, asked, kind):
    fake = FakeR1()
    async with pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(stored))
        reply = await llm(model=M, messages=q(asked))
        sem = pipe.stats()["stages"]["semantic"]
    assert content(reply) == fake.answer_for(asked), kind
    assert len(fake.calls) == 2
    assert sem["hits"] == 0


class Tagger:
    """A stand-in for the template stage: sets template id and slots from a table."""

    name = "tagger"

    def __init__(self, tags: dict[str, tuple[str, dict[str, Any]]]) -> None:
        self.tags = tags

    async def handle(self, request, call_next):
        tag = self.tags.get(request.question)
        if tag is not None:
            request.meta["template_id"], request.meta["slots"] = tag
        return await call_next(request)


def tagger_plugin(tags):
    class TaggerPlugin:
        name = "tagger-plugin"

        @r1mw.hookimpl
        def r1mw_register_stages(self):
            return {"tagger": lambda p: Tagger(tags)}

    return TaggerPlugin()


async def test_a_different_slot_value_misses_and_the_same_hits():
    stored = "Backtest the momentum strategy on the tech basket"
    same = "backtest the momentum strategy on the tech basket please"
    other = "Backtest the momentum strategy on the tech basket!"
    tags = {stored: ("backtest", {"basket": "tech", "window": "20"}),
            same: ("backtest", {"basket": "tech", "window": "20"}),
            other: ("backtest", {"basket": "tech", "window": "50"})}
    fake = FakeR1()
    async with pipeline(plugins=[tagger_plugin(tags)], stages="tagger,exact,semantic") as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(stored))
        assert content(await llm(model=M, messages=q(other))) == fake.answer_for(other)
        candidates_before = pipe.stats()["stages"]["semantic"]["candidates"]
        assert content(await llm(model=M, messages=q(same))) == fake.answer_for(stored)
        sem = pipe.stats()["stages"]["semantic"]
    # another slot value is another scope: never even a candidate (nothing for the guards to do)
    assert candidates_before == 0
    assert sem["vetoed_by"].get("slots", 0) == 0
    assert len(fake.calls) == 2


@pytest.mark.parametrize("change", ["model", "temperature", "namespace", "system", "earlier_turn"])
async def test_scopes_never_match(change):
    stored, asked = PARAPHRASES[0]
    base: dict[str, Any] = {"model": M, "messages": q(stored)}
    other: dict[str, Any] = {"model": M, "messages": q(asked)}
    if change == "model":
        other["model"] = "deepseek-chat"
    elif change == "temperature":
        base["temperature"], other["temperature"] = 0.0, 0.7
    elif change == "namespace":
        base["cache"], other["cache"] = {"namespace": "desk-a"}, {"namespace": "desk-b"}
    elif change == "system":
        base["messages"], other["messages"] = q(stored, "You are terse."), q(asked, "You are verbose.")
    else:
        turn = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        other["messages"] = turn + q(asked)
    fake = FakeR1()
    async with pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(**base)
        reply = await llm(**other)
        # the control: the same scope does hit
        same = dict(base, messages=base["messages"][:-1] + q(asked))
        control = await llm(**same)
    assert content(reply) == fake.answer_for(asked)
    assert content(control) == fake.answer_for(stored)
    assert len(fake.calls) == 2


async def test_eviction_removes_the_vector():
    fake = FakeR1()
    async with pipeline(l1_size=2) as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(PARAPHRASES[0][0]))
        await llm(model=M, messages=q(PARAPHRASES[1][0]))
        assert pipe.stats()["stages"]["semantic"]["index"]["entries"] == 2
        await llm(model=M, messages=q(PARAPHRASES[2][0]))  # evicts the first from the only tier
        sem = pipe.stats()["stages"]["semantic"]
        assert sem["index"]["entries"] == 2 and sem["dropped"] == 1
        reply = await llm(model=M, messages=q(PARAPHRASES[0][1]))
    assert content(reply) == fake.answer_for(PARAPHRASES[0][1])


class SharedTierPlugin:
    """A tier that outlives a pipeline, standing in for a disk tier across a restart."""

    name = "shared-tier"

    def __init__(self) -> None:
        self.tier = MemoryTier("shared", max_entries=100)

    @r1mw.hookimpl
    def r1mw_register_tiers(self):
        return {"shared": lambda p: self.tier}


async def test_restart_reloads_the_index(tmp_path):
    plugin = SharedTierPlugin()
    fake = FakeR1()
    stored, asked = PARAPHRASES[0]
    async with pipeline(plugins=[plugin], tiers="shared", cache_dir=tmp_path) as pipe:
        await pipe.wait_ready()
        await r1mw.wrap(fake, pipe)(model=M, messages=q(stored))
    assert (tmp_path / "semantic" / "tokenlearn-static-model" / "vectors.npy").exists()
    async with pipeline(plugins=[plugin], tiers="shared", cache_dir=tmp_path) as pipe:
        await pipe.wait_ready()
        sem = pipe.stats()["stages"]["semantic"]
        assert sem["reloaded"] == 1 and sem["ready"]
        reply = await r1mw.wrap(fake, pipe)(model=M, messages=q(asked))
    assert content(reply) == fake.answer_for(stored)
    assert len(fake.calls) == 1


async def test_a_reloaded_entry_the_store_lost_is_a_miss_and_is_removed(tmp_path):
    fake = FakeR1()
    stored, asked = PARAPHRASES[0]
    async with pipeline(cache_dir=tmp_path) as pipe:  # RAM only: the entry dies with the process
        await pipe.wait_ready()
        await r1mw.wrap(fake, pipe)(model=M, messages=q(stored))
    async with pipeline(cache_dir=tmp_path) as pipe:
        await pipe.wait_ready()
        reply = await r1mw.wrap(fake, pipe)(model=M, messages=q(asked))
        sem = pipe.stats()["stages"]["semantic"]
    assert content(reply) == fake.answer_for(asked)
    assert sem["stale"] == 1 and sem["hits"] == 0


async def test_a_corrupt_persisted_index_is_a_cold_start(tmp_path):
    directory = tmp_path / "semantic" / "tokenlearn-static-model"
    directory.mkdir(parents=True)
    (directory / "vectors.npy").write_bytes(b"\x93NUMPY garbage")
    (directory / "records.msgpack").write_bytes(b"\xc1\xc1\xc1")
    fake = FakeR1()
    async with pipeline(cache_dir=tmp_path) as pipe:
        await pipe.wait_ready()
        reply = await r1mw.wrap(fake, pipe)(model=M, messages=q("hello there"))
        assert pipe.stats()["stages"]["semantic"]["reloaded"] == 0
    assert content(reply) == fake.answer_for("hello there")


async def test_requests_before_the_model_is_ready_skip_the_stage_and_are_counted():
    fake = FakeR1()
    async with pipeline() as pipe:
        stage = pipe.stage("semantic")
        llm = r1mw.wrap(fake, pipe)
        if not stage.ready:  # the load runs in a thread: the first request usually beats it
            await llm(model=M, messages=q(PARAPHRASES[0][0]))
            assert pipe.stats()["stages"]["semantic"]["skipped_not_ready"] == 1
            assert pipe.stats()["ready"]["semantic"] is False
        await pipe.wait_ready()
        assert pipe.stats()["ready"]["semantic"] is True
        await llm(model=M, messages=q(PARAPHRASES[1][0]))
        reply = await llm(model=M, messages=q(PARAPHRASES[1][1]))
    assert content(reply) == fake.answer_for(PARAPHRASES[1][0])


@pytest.mark.parametrize("text", ["", "   ", "x" * (1 << 20), "What is \udcff the RSI of \ud800 AAPL?",
                                  "\x00\x01 \u202e AAPL", "🚀🚀🚀"])
async def test_odd_prompts_break_nothing(text):
    fake = FakeR1()
    async with pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        first = await llm(model=M, messages=q(text))
        again = await llm(model=M, messages=q(text))
        stats = pipe.stats()
    assert content(first) == content(again) == fake.answer_for(text)
    if stats["stages"]["exact"].get("store_errors"):
        # a reply the store cannot encode (lone surrogates) is a cache fault: asked again, not broken
        assert len(fake.calls) == 2 and stats["stages"]["semantic"]["hits"] == 0
    else:
        assert len(fake.calls) == 1  # the exact stage serves the repeat


async def test_unembeddable_and_nan_vectors_never_win():
    fake = FakeR1()
    async with pipeline() as pipe:
        await pipe.wait_ready()
        stage = pipe.stage("semantic")
        import numpy as np

        from r1mw.semantic.index import Record

        nan = np.full(stage.index.dim, np.nan, dtype=np.float32)
        zero = np.zeros(stage.index.dim, dtype=np.float32)
        assert not stage.index.add(Record(b"k" * 16, b"s" * 16, "x"), nan)
        assert not stage.index.add(Record(b"z" * 16, b"s" * 16, "x"), zero)
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q("zzqxj vbnmk"))  # tokens the model may not know
        await llm(model=M, messages=q(PARAPHRASES[0][0]))
        assert stage.index.search(b"s" * 16, nan, 0.0) == []
        reply = await llm(model=M, messages=q(PARAPHRASES[0][1]))
    assert content(reply) == fake.answer_for(PARAPHRASES[0][0])


async def test_a_streamed_miss_is_indexed_once_complete_and_serves_a_plain_paraphrase():
    fake = FakeR1()
    stored, asked = PARAPHRASES[0]
    async with pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        stream = await llm(model=M, messages=q(stored), stream=True)
        async for _ in stream:
            pass
        for _ in range(5):
            await asyncio.sleep(0)
        reply = await llm(model=M, messages=q(asked))
    assert content(reply).strip() == fake.answer_for(stored)


async def test_a_truncated_stream_is_not_indexed():
    fake = FakeR1()
    fake.truncate = True
    stored, asked = PARAPHRASES[0]
    async with pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        stream = await llm(model=M, messages=q(stored), stream=True)
        async for _ in stream:
            pass
        await asyncio.sleep(0)
        assert pipe.stats()["stages"]["semantic"]["index"]["entries"] == 0
        fake.truncate = False
        reply = await llm(model=M, messages=q(asked))
    assert content(reply) == fake.answer_for(asked)


async def test_dedup_alias_serves_a_repeated_paraphrase_without_a_search():
    fake = FakeR1()
    stored, asked = PARAPHRASES[0]
    async with pipeline(stages="semantic") as pipe:  # no exact stage: the alias answers repeats
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(stored))
        await llm(model=M, messages=q(asked))
        reply = await llm(model=M, messages=q(asked))
        sem = pipe.stats()["stages"]["semantic"]
    assert content(reply) == fake.answer_for(stored)
    assert sem["hits"] == 2 and sem["alias_hits"] == 1 and sem["dedup"]["aliases"] == 1
    assert len(fake.calls) == 1


async def test_concurrent_paraphrases_store_one_copy_and_count_the_bytes_saved():
    fake = FakeR1(latency=0.05)
    stored, asked = PARAPHRASES[0]
    async with pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        first = asyncio.ensure_future(llm(model=M, messages=q(stored)))
        await asyncio.sleep(0.02)  # both are in flight: neither can hit the other yet
        second = await llm(model=M, messages=q(asked))
        await first
        sem = pipe.stats()["stages"]["semantic"]
        tiers = pipe.stats()["tiers"]
        again = await llm(model=M, messages=q(asked))
    assert len(fake.calls) == 2
    assert content(second) == fake.answer_for(asked)  # its own reply, not stored twice
    assert sem["dedup"]["deduplicated"] == 1 and sem["dedup"]["bytes_saved"] > 0
    assert tiers["l1"]["entries"] == 1
    assert content(again) == fake.answer_for(stored)


async def test_dedup_off_stores_both_copies():
    fake = FakeR1(latency=0.05)
    stored, asked = PARAPHRASES[0]
    async with pipeline(semantic_dedup_enabled=False) as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        first = asyncio.ensure_future(llm(model=M, messages=q(stored)))
        await asyncio.sleep(0.02)
        await llm(model=M, messages=q(asked))
        await first
        assert pipe.stats()["tiers"]["l1"]["entries"] == 2
        assert pipe.stats()["stages"]["semantic"]["dedup"]["aliases"] == 0


async def test_threshold_user_value_wins_and_stats_say_which():
    async with pipeline(similarity_threshold=0.95) as pipe:
        sem = pipe.stats()["stages"]["semantic"]
        assert sem["threshold"] == 0.95 and sem["threshold_source"] == "SIMILARITY_THRESHOLD"
    async with pipeline() as pipe:
        sem = pipe.stats()["stages"]["semantic"]
        assert sem["threshold_source"] == "calibrated for tokenlearn-static-model"


async def test_requests_arriving_together_are_embedded_in_one_batch():
    fake = FakeR1()
    async with pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        # a question in their scope first: a lookup of an empty scope embeds nothing (deferred)
        await llm(model=M, messages=q("What is a moving average?"))
        texts = [f"Explain the {w} indicator in simple terms" for w in ("MACD", "RSI", "ATR", "OBV", "VWAP")]
        await asyncio.gather(*(llm(model=M, messages=q(t)) for t in texts))
        emb = pipe.stats()["stages"]["semantic"]["embedder"]
    assert emb["max_batch"] == len(texts)


async def test_a_bad_model_name_fails_wait_ready_with_a_config_error(tmp_path):
    async with pipeline(embed_model=str(tmp_path / "no-such-model")) as pipe:
        with pytest.raises(r1mw.ConfigError, match="R1MW_EMBED_MODEL"):
            await pipe.wait_ready()
        reply = await r1mw.wrap(FakeR1(), pipe)(model=M, messages=q("still works"))
        assert content(reply) == "Answer to: still works"
        assert pipe.stats()["stages"]["semantic"]["skipped_not_ready"] == 1


async def test_a_large_scope_switches_to_the_ann_index_in_the_background():
    fake = FakeR1()
    async with pipeline(semantic_ann_min=3) as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        for stored, _ in PARAPHRASES:
            await llm(model=M, messages=q(stored))
        stage = pipe.stage("semantic")
        for _ in range(200):
            if stage.stats()["ann_builds"]:
                break
            await asyncio.sleep(0.01)
        assert stage.stats()["index"]["partitions"] == {"usearch": 1}
        reply = await llm(model=M, messages=q(PARAPHRASES[0][1]))
        near = await llm(model=M, messages=q(NEAR_MISSES[0][1]))
    assert content(reply) == fake.answer_for(PARAPHRASES[0][0])
    assert content(near) == fake.answer_for(NEAR_MISSES[0][1])


async def test_without_the_exact_stage_streamed_misses_are_stored_and_served():
    fake = FakeR1()
    stored, asked = PARAPHRASES[0]
    async with pipeline(stages="semantic") as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        stream = await llm(model=M, messages=q(stored), stream=True)
        async for _ in stream:
            pass
        for _ in range(5):
            await asyncio.sleep(0)
        reply = await llm(model=M, messages=q(asked))
    assert content(reply).strip() == fake.answer_for(stored)
    assert len(fake.calls) == 1


def test_the_cli_explains_a_decision(capsys):
    from r1mw.cli import main

    assert main(["semantic", "Convert 100 USD to EUR", "Convert 100 EUR to USD"]) == 0
    out = capsys.readouterr().out
    assert "threshold 0.82 (calibrated for tokenlearn-static-model)" in out
    assert "roles      VETOES" in out and "not served: roles" in out
    assert main(["semantic", PARAPHRASES[0][0], PARAPHRASES[0][1]]) == 0
    assert "served from cache" in capsys.readouterr().out


async def test_a_no_cache_refetch_replaces_the_stored_reply_and_is_never_deduplicated():
    answers = iter(["first", "fresh"])

    async def upstream(**kwargs):
        return {"id": "x", "object": "chat.completion", "created": 1, "model": kwargs["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": next(answers)}}]}

    stored, asked = PARAPHRASES[0]
    async with pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(upstream, pipe)
        await llm(model=M, messages=q(stored))
        await llm(model=M, messages=q(stored), cache={"no-cache": True})
        again = await llm(model=M, messages=q(stored))
        para = await llm(model=M, messages=q(asked))
        sem = pipe.stats()["stages"]["semantic"]
    assert content(again) == content(para) == "fresh"
    assert sem["dedup"]["deduplicated"] == 0


async def test_with_the_template_stage_in_front_slot_changes_still_miss():
    fake = FakeR1()
    stored = "Analyze AAPL using RSI(14) mean reversion"
    async with pipeline(stages="template,exact,semantic") as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(stored))
        other = await llm(model=M, messages=q("Analyze MSFT using RSI(14) mean reversion"))
        reworded = await llm(model=M, messages=q("analyze AAPL using RSI(14) mean reversion please"))
        risk = await llm(model=M, messages=q("Assess risk for 500 shares of AAPL"))
        bigger = await llm(model=M, messages=q("Assess risk for 5,000 shares of AAPL"))
    assert content(other) == fake.answer_for("Analyze MSFT using RSI(14) mean reversion")
    assert content(reworded) == fake.answer_for(stored)
    assert content(risk) != content(bigger)
    assert content(bigger) == fake.answer_for("Assess risk for 5,000 shares of AAPL")


class ThirdPartyGuards:
    """A team's own guard, registered like any plugin: refuses anything about crypto."""

    name = "team-guards"

    class NoCrypto:
        name = "no-crypto"

        def allows(self, asked, stored, info):
            return "crypto" not in asked.lower()

    @r1mw.hookimpl
    def r1mw_register_guards(self, pipeline):
        return [self.NoCrypto()]


async def test_a_plugin_guard_vetoes_and_is_counted():
    fake = FakeR1()
    async with pipeline(plugins=[ThirdPartyGuards()]) as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q("How do I store crypto safely?"))
        reply = await llm(model=M, messages=q("How can I store crypto safely?"))
        sem = pipe.stats()["stages"]["semantic"]
    assert content(reply) == fake.answer_for("How can I store crypto safely?")
    assert "no-crypto" in sem["guards"] and sem["vetoed_by"].get("no-crypto") == 1


async def test_a_broken_guard_registration_fails_at_start():
    class Bad:
        name = "bad-guards"

        @r1mw.hookimpl
        def r1mw_register_guards(self, pipeline):
            return [object()]

    with pytest.raises(r1mw.PluginError, match="allows"):
        async with pipeline(plugins=[Bad()]):
            pass


async def test_a_third_party_embedder_with_only_the_protocol_methods_works():
    import numpy as np

    class Letters:
        """A toy embedder: letter counts. Enough to show the stage needs only the protocol."""

        name = "letters"
        dim = 26
        ready = True

        async def load(self):
            return None

        def embed(self, texts):
            out = np.zeros((len(texts), 26), dtype=np.float32)
            for i, t in enumerate(texts):
                for c in t.lower():
                    if "a" <= c <= "z":
                        out[i, ord(c) - 97] += 1
            return out

    class LettersPlugin:
        name = "letters-plugin"

        @r1mw.hookimpl
        def r1mw_register_embedders(self):
            return {"letters": lambda p: Letters()}

    fake = FakeR1()
    async with pipeline(plugins=[LettersPlugin()], embedder="letters", similarity_threshold=0.9) as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q("How do I reset my password?"))
        hit = await llm(model=M, messages=q("How can I reset my password?"))
        swap = await llm(model=M, messages=q("Convert 100 USD to EUR"))
        swapped = await llm(model=M, messages=q("Convert 100 EUR to USD"))
        sem = pipe.stats()["stages"]["semantic"]
    assert content(hit) == fake.answer_for("How do I reset my password?")
    assert content(swapped) == fake.answer_for("Convert 100 EUR to USD") != content(swap)
    assert sem["threshold_source"] == "SIMILARITY_THRESHOLD"


async def test_a_request_keyed_by_a_declared_template_skips_the_semantic_lookup(tmp_path):
    # Its candidates would share its template and need equal slots: the very key the exact
    # stage just missed. So no embedding, no search, no vector kept; other requests as before.
    path = tmp_path / "t.json"
    path.write_text('{"templates": [{"id": "risk", "template": "Assess risk for {size:money} in {symbol:ticker}"}]}')
    fake = FakeR1()
    async with pipeline(stages="template,exact,semantic", templates=str(path)) as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q("Assess risk for $50,000 in AAPL"))
        await llm(model=M, messages=q("assess risk for $50k in aapl"))  # same key: an exact hit
        await llm(model=M, messages=q("Assess risk for $60,000 in AAPL"))  # another question
        stats = pipe.stats()["stages"]["semantic"]
        assert stats["skipped_templated"] == 2 and stats["lookups"] == 0 and stats["indexed"] == 0
        assert len(fake.calls) == 2 and pipe.stats()["hits"] == 1
        await llm(model=M, messages=q("What is the RSI of AAPL on the daily chart?"))
        await llm(model=M, messages=q("what's the RSI for AAPL on the daily chart"))
        stats = pipe.stats()["stages"]["semantic"]
        assert stats["lookups"] == 2 and stats["hits"] == 1  # untemplated: looked up as before
