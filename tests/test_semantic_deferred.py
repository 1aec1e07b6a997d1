"""Deferred indexing in the semantic stage, with the real offline model: a miss whose scope is
empty is not embedded on the request path; it is queued and a background indexer embeds queued
questions in batches. A lookup (or a twin search) of a scope indexes that scope's queued
questions first, so nothing is missed for being queued; close() indexes and saves the queue;
the queue is capped (oldest dropped, counted)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import r1mw
from r1mw.testing import FakeR1
from r1mw.tiers import MemoryTier

from semantic_helpers import M, content, pipeline, q

pytestmark = pytest.mark.anyio

STORED, ASKED = "What is the RSI of AAPL on the daily chart?", "what's the RSI for AAPL on the daily chart"
INDEXER = "r1mw-semantic-indexer"


class EmbedCalls:
    """Wraps the stage's embedder: records every embed()/embed_one() call and where it ran
    ("request" = the caller's task, "indexer" = the background indexer, "thread" = a worker)."""

    def __init__(self, stage: Any) -> None:
        self.calls: list[tuple[str, str, int]] = []
        embedder = stage.embedder
        embed, embed_one = embedder.embed, embedder.embed_one
        loop_thread = threading.current_thread()

        def where() -> str:
            if threading.current_thread() is not loop_thread:
                return "thread"
            task = asyncio.current_task()
            return "indexer" if task is not None and task.get_name() == INDEXER else "request"

        def spy_embed(texts):
            self.calls.append(("embed", where(), len(texts)))
            return embed(texts)

        def spy_embed_one(text):
            self.calls.append(("embed_one", where(), 1))
            return embed_one(text)

        embedder.embed, embedder.embed_one = spy_embed, spy_embed_one
        stage._embed_one = spy_embed_one

    def on(self, where: str) -> list[tuple[str, str, int]]:
        return [c for c in self.calls if c[1] == where]


def hold_indexer(stage: Any) -> asyncio.Future[None]:
    """Keep the background indexer from starting (a placeholder in its slot): queued questions
    stay queued until released, whatever the loop's timing."""
    placeholder: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stage._indexer = placeholder
    return placeholder


def release_indexer(stage: Any, pipe: r1mw.Pipeline) -> None:
    stage._indexer.cancel()
    stage._indexer = pipe.spawn(stage._background_indexer(), name=INDEXER)


async def drained(stage: Any) -> None:
    for _ in range(1000):  # polls until the indexer is done; no time limit is asserted
        if not stage._pending and stage._indexer is None:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the background indexer never drained the queue")


async def test_an_empty_scope_miss_is_not_embedded_on_the_request_path():
    fake = FakeR1()
    async with pipeline() as pipe:
        await pipe.wait_ready()
        stage = pipe.stage("semantic")
        spy = EmbedCalls(stage)
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(STORED))
        assert spy.on("request") == []  # neither the lookup nor the indexing embedded it
        sem = pipe.stats()["stages"]["semantic"]
        assert sem["deferred"]["empty_scope_lookups"] == 1 and sem["deferred"]["queued"] == 1
        await drained(stage)
        assert spy.on("request") == [] and len(spy.calls) == 1  # the indexer embedded it, once
        assert spy.calls[0][1] == ("thread" if stage.embedder.thread_safe else "indexer")
        assert stage.index.stats()["entries"] == 1
        reply = await llm(model=M, messages=q(ASKED))  # its scope holds it now: looked up as before
    assert content(reply) == fake.answer_for(STORED)
    assert len(fake.calls) == 1


async def test_a_paraphrase_right_after_a_miss_of_its_scope_still_hits():
    fake = FakeR1()
    async with pipeline() as pipe:
        await pipe.wait_ready()
        stage = pipe.stage("semantic")
        hold_indexer(stage)
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(STORED))
        assert pipe.stats()["stages"]["semantic"]["deferred"]["pending"] == 1
        assert stage.index.stats()["entries"] == 0  # still queued
        reply = await llm(model=M, messages=q(ASKED))
        sem = pipe.stats()["stages"]["semantic"]
    assert content(reply) == fake.answer_for(STORED)
    assert len(fake.calls) == 1
    assert sem["hits"] == 1 and sem["deferred"]["flushed_on_demand"] == 1 and sem["deferred"]["pending"] == 0


async def test_near_misses_of_a_queued_question_still_miss():
    fake = FakeR1()
    async with pipeline() as pipe:
        await pipe.wait_ready()
        hold_indexer(pipe.stage("semantic"))
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(STORED))
        reply = await llm(model=M, messages=q("What is the RSI of MSFT on the daily chart?"))
    assert content(reply) == fake.answer_for("What is the RSI of MSFT on the daily chart?")
    assert len(fake.calls) == 2


async def test_the_background_indexer_embeds_several_queued_questions_in_one_call():
    fake = FakeR1()
    systems = [f"You are analyst number {i}." for i in range(5)]  # five scopes, empty at first
    async with pipeline() as pipe:
        await pipe.wait_ready()
        stage = pipe.stage("semantic")
        spy = EmbedCalls(stage)
        hold_indexer(stage)
        llm = r1mw.wrap(fake, pipe)
        for system in systems:
            await llm(model=M, messages=q(STORED, system))
        assert pipe.stats()["stages"]["semantic"]["deferred"]["pending"] == 5 and spy.calls == []
        release_indexer(stage, pipe)
        await drained(stage)
        sem = pipe.stats()["stages"]["semantic"]
        assert [c[2] for c in spy.calls] == [5]  # one embed() call for the five
        assert spy.on("request") == []
        assert sem["deferred"]["background_batches"] == 1 and sem["index"]["entries"] == 5
        replies = [await llm(model=M, messages=q(ASKED, system)) for system in systems]
    assert all(content(r) == fake.answer_for(STORED) for r in replies)
    assert len(fake.calls) == 5


async def test_close_indexes_and_saves_what_is_queued_and_leaves_no_task(tmp_path):
    tier = MemoryTier("shared", max_entries=100)

    class SharedTier:
        name = "shared-tier"

        @r1mw.hookimpl
        def r1mw_register_tiers(self):
            return {"shared": lambda p: tier}

    fake = FakeR1()
    systems = [f"Desk {i}" for i in range(3)]
    async with pipeline(plugins=[SharedTier()], tiers="shared", cache_dir=tmp_path) as pipe:
        await pipe.wait_ready()
        stage = pipe.stage("semantic")
        hold_indexer(stage)
        llm = r1mw.wrap(fake, pipe)
        for system in systems:
            await llm(model=M, messages=q(STORED, system))
        assert pipe.stats()["stages"]["semantic"]["deferred"]["pending"] == 3
    assert stage._indexer is None and not stage._pending
    assert not [t for t in asyncio.all_tasks() if t.get_name() == INDEXER and not t.done()]
    assert stage.index.stats()["entries"] == 3
    async with pipeline(plugins=[SharedTier()], tiers="shared", cache_dir=tmp_path) as pipe:
        await pipe.wait_ready()
        assert pipe.stats()["stages"]["semantic"]["reloaded"] == 3
        llm = r1mw.wrap(fake, pipe)
        replies = [await llm(model=M, messages=q(ASKED, system)) for system in systems]
    assert all(content(r) == fake.answer_for(STORED) for r in replies)
    assert len(fake.calls) == 3


async def test_close_with_a_running_indexer_leaves_no_task(tmp_path):
    fake = FakeR1()
    async with pipeline(cache_dir=tmp_path) as pipe:
        await pipe.wait_ready()
        stage = pipe.stage("semantic")
        llm = r1mw.wrap(fake, pipe)
        for i in range(20):
            await llm(model=M, messages=q(STORED, f"Desk {i}"))
        # closes while the indexer is (probably) waiting for its batch or embedding it
    assert stage._indexer is None and not stage._pending
    assert not [t for t in asyncio.all_tasks() if t.get_name() == INDEXER and not t.done()]
    assert stage.index.stats()["entries"] == 20


async def test_the_queue_is_capped_dropping_the_oldest_and_counting_it():
    fake = FakeR1()
    systems = ["Desk A", "Desk B", "Desk C"]
    async with pipeline() as pipe:
        await pipe.wait_ready()
        stage = pipe.stage("semantic")
        stage.max_pending = 2
        hold_indexer(stage)
        llm = r1mw.wrap(fake, pipe)
        for system in systems:
            await llm(model=M, messages=q(STORED, system))
        deferred = pipe.stats()["stages"]["semantic"]["deferred"]
        assert deferred["pending"] == 2 and deferred["pending_dropped"] == 1
        lost = await llm(model=M, messages=q(ASKED, "Desk A"))  # the dropped one: a miss, no error
        kept = await llm(model=M, messages=q(ASKED, "Desk C"))
    assert content(lost) == fake.answer_for(ASKED)
    assert content(kept) == fake.answer_for(STORED)
    assert len(fake.calls) == 4


async def test_concurrent_paraphrases_of_an_empty_scope_are_still_deduplicated():
    # Both look up an empty scope (no embedding); the first reply is queued; the second finds
    # its scope non-empty, so it indexes the queued one first and finds it as its twin.
    fake = FakeR1(latency=0.05)
    async with pipeline() as pipe:
        await pipe.wait_ready()
        stage = pipe.stage("semantic")
        hold_indexer(stage)
        llm = r1mw.wrap(fake, pipe)
        first = asyncio.ensure_future(llm(model=M, messages=q(STORED)))
        await asyncio.sleep(0.02)
        second = await llm(model=M, messages=q(ASKED))
        await first
        sem = pipe.stats()["stages"]["semantic"]
        entries = pipe.stats()["tiers"]["l1"]["entries"]
        again = await llm(model=M, messages=q(ASKED))
    assert content(second) == fake.answer_for(ASKED)
    assert sem["deferred"]["empty_scope_lookups"] == 2 and sem["deferred"]["flushed_on_demand"] == 1
    assert sem["dedup"]["deduplicated"] == 1 and entries == 1
    assert content(again) == fake.answer_for(STORED)
    assert len(fake.calls) == 2


async def test_no_store_misses_are_not_queued_and_dropped_entries_leave_the_queue():
    fake = FakeR1()
    async with pipeline(l1_size=1) as pipe:
        await pipe.wait_ready()
        stage = pipe.stage("semantic")
        hold_indexer(stage)
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(STORED), cache={"no-store": True})
        assert pipe.stats()["stages"]["semantic"]["deferred"]["queued"] == 0
        await llm(model=M, messages=q(STORED, "Desk A"))
        await llm(model=M, messages=q(STORED, "Desk B"))  # evicts Desk A's entry (l1_size=1)
        assert [p.scope for p in stage._pending.values()] == [next(iter(stage._pending_by_scope))]
        assert pipe.stats()["stages"]["semantic"]["deferred"]["pending"] == 1
        reply = await llm(model=M, messages=q(ASKED, "Desk A"))
    assert content(reply) == fake.answer_for(ASKED)


async def test_a_streamed_miss_of_an_empty_scope_is_queued_once_complete_and_serves_a_paraphrase():
    fake = FakeR1()
    async with pipeline() as pipe:
        await pipe.wait_ready()
        stage = pipe.stage("semantic")
        hold_indexer(stage)
        llm = r1mw.wrap(fake, pipe)
        stream = await llm(model=M, messages=q(STORED), stream=True)
        assert pipe.stats()["stages"]["semantic"]["deferred"]["queued"] == 0  # not complete yet
        async for _ in stream:
            pass
        for _ in range(5):
            await asyncio.sleep(0)
        assert pipe.stats()["stages"]["semantic"]["deferred"]["pending"] == 1
        reply = await llm(model=M, messages=q(ASKED))
    assert content(reply).strip() == fake.answer_for(STORED)
    assert len(fake.calls) == 1
