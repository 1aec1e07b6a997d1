"""r1mw.wrap(target) without a pipeline: one pipeline per event loop, closed (its write-behind
written) when the loop ends, since nobody else can close it.

These tests run asyncio.run() themselves: what they check is what happens at a loop's end.
"""

from __future__ import annotations

import asyncio

import r1mw
from r1mw.testing import FakeR1

N = 30


def question(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Analyze ticker T{i} using RSI(14)"}]


def record_pipelines(monkeypatch) -> list[r1mw.Pipeline]:
    """The pipelines started, in order (the lazy ones are not reachable otherwise)."""
    made: list[r1mw.Pipeline] = []
    real_start = r1mw.Pipeline.start

    async def start(self):
        if self not in made:
            made.append(self)
        await real_start(self)

    monkeypatch.setattr(r1mw.Pipeline, "start", start)
    return made


def test_a_script_ending_without_close_keeps_every_answer_and_the_next_run_gets_a_new_pipeline(monkeypatch):
    monkeypatch.setenv("R1MW_STAGES", "metrics,prefetch,exact")
    monkeypatch.setenv("R1MW_L2_FSYNC", "file")  # L2 writes in a thread, a backlog at the end
    pipes = record_pipelines(monkeypatch)
    fake = FakeR1()
    llm = r1mw.wrap(fake)  # Pipeline(Settings.from_env()), made on first use

    async def script():
        await asyncio.gather(*(llm(model="m", messages=question(i)) for i in range(N)))
        # returns with the last answers still queued for the disk tier; nobody calls close()

    asyncio.run(script())
    assert len(fake.calls) == N and pipes[0]._closed  # closed at the loop's end

    asyncio.run(script())  # a second run: a pipeline of its own, which finds every answer on disk
    assert len(pipes) == 2 and pipes[1]._closed
    assert len(fake.calls) == N
    assert pipes[1].stats()["hits_by"] == {"exact:l2": N}
    assert llm.__r1mw_pipeline__.stats()["hits"] == N  # outside a loop: the latest pipeline's

    async def elsewhere():  # a pipeline of another program on the same cache directory
        other = FakeR1()
        async with r1mw.Pipeline(r1mw.Settings.from_env()) as pipe:
            cached = r1mw.wrap(other, pipe)
            for i in range(N):
                await cached(model="m", messages=question(i))
        return other.calls

    assert asyncio.run(elsewhere()) == []


def test_closing_the_lazy_pipeline_by_hand_leaves_no_task(monkeypatch):
    monkeypatch.setenv("R1MW_STAGES", "prefetch,exact")
    pipes = record_pipelines(monkeypatch)
    fake = FakeR1()
    llm = r1mw.wrap(fake)

    async def main():
        before = set(asyncio.all_tasks())
        await llm(model="m", messages=question(0))
        await llm.__r1mw_pipeline__.close()  # the current loop's pipeline
        for _ in range(5):
            await asyncio.sleep(0)
        left = {t for t in asyncio.all_tasks() if not t.done()} - before
        await llm(model="m", messages=question(0))  # a new pipeline, which finds it on disk
        return left

    assert asyncio.run(main()) == set()  # the guard waiting for the loop's end went with close()
    assert len(pipes) == 2 and pipes[0]._closed and pipes[1]._closed
    assert len(fake.calls) == 1 and pipes[1].stats()["hits_by"] == {"exact:l2": 1}


def test_the_litellm_integration_s_own_pipeline_is_closed_with_its_loop(monkeypatch, tmp_path):
    # enable() without a pipeline: a LiteLLM proxy or script seldom calls close(), and the
    # answers still queued for the disk tier were lost at exit.
    litellm = __import__("pytest").importorskip("litellm")
    from r1mw.integrations import litellm as r1mw_litellm

    monkeypatch.setenv("R1MW_STAGES", "metrics,exact")
    monkeypatch.setenv("R1MW_L2_FSYNC", "file")  # L2 writes in a thread, a backlog at the end
    pipes = record_pipelines(monkeypatch)
    config = {"litellm_settings": {"cache": True, "cache_params": {"type": "disk"}}}
    calls: list[str] = []

    async def script():
        async def one(i: int) -> str:
            reply = await litellm.acompletion(model="deepseek/deepseek-reasoner", messages=question(i),
                                              mock_response=f"answer {i}")
            if not reply._hidden_params.get("cache_hit"):
                calls.append(reply.choices[0].message.content)
            return reply.choices[0].message.content

        answers = await asyncio.gather(*(one(i) for i in range(N)))
        for _ in range(20):  # LiteLLM hands results to its cache in tasks of its own
            await asyncio.sleep(0.01)
        return answers

    active = r1mw_litellm.enable(config)
    try:
        first = asyncio.run(script())  # returns with nobody calling close()
        assert pipes[0]._closed
        r1mw_litellm.disable()
        active = r1mw_litellm.enable(config)  # a new process, in effect: only the disk is shared
        second = asyncio.run(script())
    finally:
        r1mw_litellm.disable()
    assert first == second == [f"answer {i}" for i in range(N)]
    assert len(calls) == N  # every answer of the second run came from the disk tier
    assert len(pipes) == 2 and pipes[1].stats()["hits_by"] == {"exact:l2": N}
