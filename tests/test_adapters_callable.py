"""Any async callable: dicts, objects, returns=, streaming callables."""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import r1mw
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio

Q = [{"role": "user", "content": "Backtest a 20/50 SMA crossover on SPY"}]


def pipeline() -> r1mw.Pipeline:
    return r1mw.Pipeline(r1mw.Settings(stages="exact"))


def completion(question: str, n: int = 1) -> dict[str, Any]:
    return {"id": f"c-{n}", "object": "chat.completion", "created": 1_700_000_000, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": f"<think>weigh {question}</think>\nDone: {question}"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}


class MyMessage(pydantic.BaseModel):
    role: str
    content: str | None = None


class MyChoice(pydantic.BaseModel):
    index: int
    message: MyMessage
    finish_reason: str | None


class MyCompletion(pydantic.BaseModel):
    """A caller's own response model (not the SDK's)."""

    id: str
    model: str
    choices: list[MyChoice]


async def settle():
    for _ in range(3):
        await asyncio.sleep(0)


async def test_dict_hits_are_fresh_dicts():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        miss = await llm(model="m", messages=Q)
        hit = await llm(model="m", messages=Q)
        hit["choices"][0]["message"]["content"] = "scribbled on by the caller"
        again = await llm(model="m", messages=Q)
    assert type(miss) is dict and type(hit) is dict
    assert again["choices"][0]["message"]["content"] == miss["choices"][0]["message"]["content"]
    assert len(fake.calls) == 1


@pytest.mark.parametrize("cls", [MyCompletion, ChatCompletion])
async def test_object_hits_have_the_class_of_the_miss(cls):
    calls = []

    async def llm(**kwargs):
        calls.append(kwargs)
        return cls.model_validate(completion(kwargs["messages"][-1]["content"], len(calls)))

    async with pipeline() as pipe:
        cached = r1mw.wrap(llm, pipe)
        miss = await cached(model="m", messages=Q)
        hit = await cached(model="m", messages=Q)
    assert len(calls) == 1
    assert type(miss) is cls and type(hit) is cls
    assert hit.choices[0].message.content == miss.choices[0].message.content
    assert hit.choices[0].message.content.startswith("<think>weigh")
    assert hit.id == miss.id == "c-1"


async def test_returns_fixes_the_type_before_any_miss():
    async with pipeline() as pipe:
        warm = r1mw.wrap(FakeR1(), pipe)  # another wrapper fills the shared cache
        await warm(model="m", messages=Q)
        cold = FakeR1()
        as_model = r1mw.wrap(cold, pipe, returns=ChatCompletion)
        as_factory = r1mw.wrap(cold, pipe, returns=lambda d: ("built", d["choices"][0]["message"]["content"]))
        learning = r1mw.wrap(cold, pipe)
        model_hit = await as_model(model="m", messages=Q)
        factory_hit = await as_factory(model="m", messages=Q)
        learning_hit = await learning(model="m", messages=Q)
    assert cold.calls == []
    assert type(model_hit) is ChatCompletion
    assert model_hit.choices[0].message.reasoning_content == "Reasoning about: " + Q[0]["content"]
    assert factory_hit == ("built", cold.answer_for(Q[0]["content"]))
    assert type(learning_hit) is dict  # nothing learned yet, and stored from dicts: a dict needs no class


def test_returns_a_class_r1mw_cannot_build_is_refused():
    class Plain:
        pass

    with pytest.raises(TypeError, match="returns='Plain'.*pydantic model class, dict"):
        r1mw.wrap(FakeR1(), pipeline(), returns=Plain)


async def test_an_object_r1mw_cannot_rebuild_is_passed_through_uncached_with_a_warning():
    class Reply:  # attribute-shaped, but no way to rebuild it
        def __init__(self, content):
            self.choices = [type("C", (), {"message": {"role": "assistant", "content": content},
                                           "finish_reason": "stop", "index": 0})()]

    calls = []

    async def llm(**kwargs):
        calls.append(kwargs)
        return Reply("fine")

    async with pipeline() as pipe:
        cached = r1mw.wrap(llm, pipe)
        with pytest.warns(RuntimeWarning, match="returns=") as warned:
            first = await cached(model="m", messages=Q)
        second = await cached(model="m", messages=Q, cache={"ttl": 5})
    assert len(warned) == 1
    assert type(first) is Reply and type(second) is Reply  # never a dict in its place
    assert len(calls) == 2 and "cache" not in calls[1]


async def test_a_streaming_callable_async_generator_of_dict_chunks():
    fake = FakeR1()

    async def llm(**kwargs):  # an async generator function: calling it returns the stream
        async for chunk in await fake(**kwargs):
            yield chunk

    async with pipeline() as pipe:
        cached = r1mw.wrap(llm, pipe)
        live = [c async for c in await cached(model="m", messages=Q, stream=True)]
        await settle()
        replay_stream = await cached(model="m", messages=Q, stream=True)
        replay = [c async for c in replay_stream]
        plain = await cached(model="m", messages=Q)
    assert len(fake.calls) == 1
    assert all(type(c) is dict for c in live + replay)

    def text(chunks, field):
        return "".join(c["choices"][0]["delta"].get(field) or "" for c in chunks if c["choices"])

    for field in ("content", "reasoning_content"):
        assert text(replay, field) == text(live, field)
    assert plain["choices"][0]["message"]["content"] == text(live, "content")
    assert type(plain) is dict


async def test_a_streaming_callable_of_sdk_chunks_replays_sdk_chunks():
    fake = FakeR1()

    async def llm(**kwargs):
        async def chunks():
            async for chunk in await fake(**kwargs):
                yield ChatCompletionChunk.model_validate(chunk)
        return chunks()

    async with pipeline() as pipe:
        cached = r1mw.wrap(llm, pipe)
        live = [c async for c in await cached(model="m", messages=Q, stream=True)]
        await settle()
        replay = [c async for c in await cached(model="m", messages=Q, stream=True)]
    assert len(fake.calls) == 1
    assert all(type(c) is ChatCompletionChunk for c in live + replay)
    assert "".join(c.choices[0].delta.content or "" for c in replay) == \
        "".join(c.choices[0].delta.content or "" for c in live)


async def test_a_sync_callable_gets_a_clear_error():
    def llm(**kwargs):
        return {"choices": []}

    async with pipeline() as pipe:
        with pytest.raises(TypeError, match="not an awaitable; wrap an async function"):
            await r1mw.wrap(llm, pipe)(model="m", messages=Q)


async def test_missing_model_or_messages_is_a_type_error():
    async with pipeline() as pipe:
        with pytest.raises(TypeError, match="missing required argument 'messages'"):
            await r1mw.wrap(FakeR1(), pipe)(model="m")


async def test_a_stream_with_a_synchronous_close_is_closed_early():
    fake = FakeR1()

    class Stream:  # an iterator with a plain close(), as some SDKs have
        def __init__(self, source):
            self.source, self.closed = source, False

        def __aiter__(self):
            return self

        async def __anext__(self):
            return await self.source.__anext__()

        def close(self):
            self.closed = True

    streams = []

    async def llm(**kwargs):
        if not kwargs.get("stream"):
            return await fake(**kwargs)
        streams.append(Stream(await fake(**kwargs)))
        return streams[-1]

    async with pipeline() as pipe:
        cached = r1mw.wrap(llm, pipe)
        stream = await cached(model="m", messages=Q, stream=True)
        async for _ in stream:
            break
        await stream.aclose()
        await settle()
        await cached(model="m", messages=Q)
    assert streams[0].closed and len(fake.calls) == 2  # the closed stream stored nothing


async def test_a_callable_that_ignores_stream_is_replayed_as_chunks():
    calls = []

    async def llm(**kwargs):  # no streaming support: always a complete reply
        calls.append(kwargs)
        return completion(kwargs["messages"][-1]["content"])

    async with pipeline() as pipe:
        cached = r1mw.wrap(llm, pipe)
        chunks = [c async for c in await cached(model="m", messages=Q, stream=True)]
        plain = await cached(model="m", messages=Q)
    assert len(calls) == 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"] == completion(Q[0]["content"])["choices"][0]["message"]["content"]


async def test_a_callable_that_always_streams_serves_a_plain_request():
    fake = FakeR1()

    async def llm(**kwargs):
        async for chunk in await fake(**{**kwargs, "stream": True}):
            yield chunk

    async with pipeline() as pipe:
        cached = r1mw.wrap(llm, pipe)
        plain = await cached(model="m", messages=Q)
        hit = await cached(model="m", messages=Q)
    assert len(fake.calls) == 1 and type(plain) is dict and hit == plain
    assert plain["choices"][0]["message"]["content"].strip() == fake.answer_for(Q[0]["content"])
    assert plain["choices"][0]["message"]["reasoning_content"].strip() == "Reasoning about: " + Q[0]["content"]


async def test_chunk_and_completion_classes_are_learned_independently():
    fake = FakeR1()

    async def llm(**kwargs):
        if kwargs.get("stream"):
            async def chunks():
                async for chunk in await fake(**kwargs):
                    yield ChatCompletionChunk.model_validate(chunk)
            return chunks()
        return ChatCompletion.model_validate(await fake(**kwargs))

    other = [{"role": "user", "content": "And QQQ?"}]
    async with pipeline() as pipe:
        cached = r1mw.wrap(llm, pipe)
        _ = [c async for c in await cached(model="m", messages=Q, stream=True)]  # learns the chunk class
        await settle()
        await cached(model="m", messages=other)  # learns the completion class
        hit = await cached(model="m", messages=Q)
        replay = [c async for c in await cached(model="m", messages=other, stream=True)]
    assert len(fake.calls) == 2
    assert type(hit) is ChatCompletion
    assert {type(c) for c in replay} == {ChatCompletionChunk}


def sdk_client(peer) -> Any:
    import httpx
    import openai

    return openai.AsyncOpenAI(api_key="sk-test", base_url="https://r1.test/v1", max_retries=0,
                              http_client=httpx.AsyncClient(transport=peer.transport()))


async def test_after_a_restart_a_stored_reply_never_comes_back_in_a_guessed_type(tmp_path):
    # The common wrapper: a function around the SDK call. A new process has learned nothing
    # yet when its first call finds the reply the previous process stored on disk (L2).
    from r1mw.testing import R1Peer

    peer = R1Peer()
    raw = sdk_client(peer)

    async def llm(**kwargs):
        return await raw.chat.completions.create(**kwargs)

    def settings() -> r1mw.Settings:
        return r1mw.Settings(stages="exact", tiers="l1,l2", cache_dir=str(tmp_path))

    async with r1mw.Pipeline(settings()) as pipe:
        first = await r1mw.wrap(llm, pipe)(model="m", messages=Q)
    async with r1mw.Pipeline(settings()) as pipe:  # "process 2"
        cached = r1mw.wrap(llm, pipe)
        after_restart = await cached(model="m", messages=Q)
        hit = await cached(model="m", messages=Q)
        stats = pipe.stats()
    assert type(first) is type(after_restart) is type(hit) is ChatCompletion
    assert hit.choices[0].message.content == after_restart.choices[0].message.content
    # The first call after the restart went upstream: a miss, never a hit as well.
    assert len(peer.calls) == 2 and stats["hits_by"] == {"exact:l1": 1} and stats["misses"] == 1
    assert stats["requests"] == 2


async def test_a_stream_is_replayed_in_the_chunk_class_only_once_a_live_stream_showed_it():
    from r1mw.testing import R1Peer

    peer = R1Peer()
    raw = sdk_client(peer)

    async def llm(**kwargs):
        return await raw.chat.completions.create(**kwargs)

    async with pipeline() as pipe:
        await r1mw.wrap(llm, pipe)(model="m", messages=Q)  # stored by a plain call
        cached = r1mw.wrap(llm, pipe, returns=ChatCompletion)  # completion class known, chunk class not
        live = [c async for c in await cached(model="m", messages=Q, stream=True)]
        await settle()
        replay = [c async for c in await cached(model="m", messages=Q, stream=True)]
    assert len(peer.calls) == 2  # the first stream was the peer's own
    assert {type(c) for c in live} == {type(c) for c in replay} == {ChatCompletionChunk}
    assert "".join(c.choices[0].delta.content or "" for c in replay if c.choices) == \
        "".join(c.choices[0].delta.content or "" for c in live if c.choices)


async def test_a_learning_wrapper_still_makes_one_call_for_identical_concurrent_requests():
    calls = []

    async def llm(**kwargs):
        calls.append(kwargs)
        await asyncio.sleep(0.01)
        return MyCompletion.model_validate(completion(kwargs["messages"][-1]["content"], len(calls)))

    async with pipeline() as pipe:
        cached = r1mw.wrap(llm, pipe)
        replies = await asyncio.gather(*(cached(model="m", messages=Q) for _ in range(10)))
        assert pipe.stats()["coalesced"] == 9
    assert len(calls) == 1 and {type(r) for r in replies} == {MyCompletion}


async def test_a_compatible_client_of_another_sdk_is_not_answered_from_a_warm_cache_before_its_first_miss():
    from test_adapters_openai import OtherSDKClient, OtherSDKCompletion

    other = OtherSDKClient()
    async with pipeline() as pipe:
        await r1mw.wrap(FakeR1(), pipe)(model="m", messages=Q)  # another wrapper fills the cache
        client = r1mw.wrap(other, pipe)
        first = await client.chat.completions.create(model="m", messages=Q)
        hit = await client.chat.completions.create(model="m", messages=Q)
    assert type(first) is type(hit) is OtherSDKCompletion and len(other.calls) == 1


async def test_a_dict_hit_has_the_keys_of_the_miss_after_a_restart_too(tmp_path):
    # A server that sends no logprobs nor object, and service_tier and a null fingerprint: the
    # hit is the miss, from RAM and from disk in the next process; never a key it did not send.
    async def llm(**kwargs):
        return {"id": "c-1", "created": 1_700_000_000, "model": "m", "service_tier": "default",
                "system_fingerprint": None,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Hold.", "refusal": None}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}

    def settings() -> r1mw.Settings:
        return r1mw.Settings(stages="exact", tiers="l1,l2", cache_dir=str(tmp_path))

    async with r1mw.Pipeline(settings()) as pipe:
        cached = r1mw.wrap(llm, pipe, returns=dict)
        miss = await cached(model="m", messages=Q)
        hit = await cached(model="m", messages=Q)
    async with r1mw.Pipeline(settings()) as pipe:  # "process 2": from the disk tier
        from_disk = await r1mw.wrap(llm, pipe, returns=dict)(model="m", messages=Q)
        assert pipe.stats()["hits_by"] == {"exact:l2": 1}
    assert hit == from_disk == miss and hit is not miss
    assert "logprobs" not in hit["choices"][0] and "object" not in hit


def sdk_function(peer) -> Any:
    raw = sdk_client(peer)

    async def llm(**kwargs):  # the common wrapper: a function around the SDK call
        return await raw.chat.completions.create(**kwargs)

    return llm


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("target", ["sdk function", "other SDK client"])
async def test_a_stored_reply_a_wrapper_cannot_take_yet_is_counted_a_miss_only(target, stream):
    # Before a wrapper has learned what its misses return, a stored reply is not served and
    # the request goes upstream: one request, one miss, for the core counters and the metrics
    # stage alike (it used to count a hit and then a miss). Identical calls in flight still
    # share one upstream call (test_a_learning_wrapper_still_makes_one_call...).
    from r1mw.testing import R1Peer
    from test_adapters_openai import OtherSDKClient

    peer, other = R1Peer(), OtherSDKClient()
    async with r1mw.Pipeline(r1mw.Settings(stages="metrics,exact")) as pipe:
        # Another wrapper fills the cache, in a type the new wrapper cannot be assumed to take.
        await r1mw.wrap(sdk_function(peer), pipe, returns=ChatCompletion)(model="m", messages=Q)
        before = pipe.stats()
        if target == "sdk function":
            create, calls = r1mw.wrap(sdk_function(peer), pipe), peer.calls
        else:
            create, calls = r1mw.wrap(other, pipe).chat.completions.create, other.calls
        upstream_before = len(calls)
        result = await create(model="m", messages=Q, stream=stream)
        if stream:
            [c async for c in result]
        stats = pipe.stats()
    assert len(calls) == upstream_before + 1  # it went upstream ...
    delta = {k: stats[k] - before[k] for k in ("requests", "hits", "coalesced", "misses")}
    assert delta == {"requests": 1, "hits": 0, "coalesced": 0, "misses": 1}  # ... and is counted so
    outcomes = stats["stages"]["metrics"]["outcomes"]
    assert outcomes["hit"] == 0 and outcomes["miss"] == 2


async def test_chunk_type_fixes_the_chunk_class_before_any_live_stream():
    fake = FakeR1()
    async with pipeline() as pipe:
        await r1mw.wrap(fake, pipe)(model="m", messages=Q)  # stored by a plain call
        cached = r1mw.wrap(fake, pipe, returns=ChatCompletion, chunk_type=ChatCompletionChunk)
        replay = [c async for c in await cached(model="m", messages=Q, stream=True)]
    assert len(fake.calls) == 1 and {type(c) for c in replay} == {ChatCompletionChunk}
    with pytest.raises(TypeError, match="chunk_type='Plain'"):
        r1mw.wrap(fake, pipe, chunk_type=type("Plain", (), {}))


def test_what_wrap_cannot_wrap_is_an_r1mw_error_and_a_type_error():
    with pytest.raises(r1mw.WrapError) as raised:
        r1mw.wrap(42)
    assert isinstance(raised.value, r1mw.R1mwError) and isinstance(raised.value, TypeError)
