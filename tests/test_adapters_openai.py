"""The real OpenAI SDK (AsyncOpenAI) against a DeepSeek-R1-shaped HTTP peer (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import gc
import json
import types

import httpx
import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import r1mw
from r1mw.testing import R1Peer

pytestmark = pytest.mark.anyio

MODEL = "deepseek-reasoner"
Q = [{"role": "system", "content": "You are a trading analyst."},
     {"role": "user", "content": "Is AAPL overbought at RSI(14)=72?"}]


def raw_client(peer: R1Peer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url="https://r1.test/v1", max_retries=0,
                              http_client=httpx.AsyncClient(transport=peer.transport()))


def pipeline() -> r1mw.Pipeline:
    return r1mw.Pipeline(r1mw.Settings(stages="exact"))


def joined(chunks: list[ChatCompletionChunk], field: str) -> str:
    return "".join(getattr(c.choices[0].delta, field, None) or "" for c in chunks if c.choices)


def stored(pipe: r1mw.Pipeline, messages=Q) -> r1mw.Entry | None:
    return pipe.store.get_nowait(r1mw.key_of("", MODEL, messages, {}))


async def settle() -> None:
    for _ in range(3):  # the store after a stream's end runs as a task
        await asyncio.sleep(0)


async def test_miss_and_hit_are_chat_completions_with_the_same_fields():
    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        miss = await client.chat.completions.create(model=MODEL, messages=Q)
        hit = await client.chat.completions.create(model=MODEL, messages=Q)
    assert len(peer.calls) == 1
    assert type(miss) is ChatCompletion and type(hit) is ChatCompletion
    m, h = miss.choices[0], hit.choices[0]
    assert h.message.content == m.message.content == peer.answer_for(Q[-1]["content"])
    assert h.message.reasoning_content == m.message.reasoning_content == peer.reasoning_for(Q[-1]["content"])
    assert h.finish_reason == m.finish_reason == "stop"
    assert (hit.id, hit.model, hit.created, hit.system_fingerprint) == \
        (miss.id, miss.model, miss.created, miss.system_fingerprint)
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert getattr(hit.usage, name) == getattr(miss.usage, name)
    assert hit.usage.completion_tokens_details.reasoning_tokens == 28
    assert hit.usage.prompt_tokens_details.cached_tokens == miss.usage.prompt_tokens_details.cached_tokens
    assert pipe.stats()["hits_by"] == {"exact:l1": 1}


async def test_stream_miss_yields_the_peer_chunks_and_stores_only_after_the_end():
    peer = R1Peer()
    direct = [c async for c in await raw_client(R1Peer()).chat.completions.create(
        model=MODEL, messages=Q, stream=True)]
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        stream = await client.chat.completions.create(model=MODEL, messages=Q, stream=True)
        live = []
        async for chunk in stream:
            live.append(chunk)
            if len(live) == 5:
                await settle()
                assert stored(pipe) is None  # nothing before the normal end
        await settle()
        entry = stored(pipe)
    assert entry is not None and len(peer.calls) == 1
    assert all(type(c) is ChatCompletionChunk for c in live)
    assert [c.model_dump() for c in live] == [c.model_dump() for c in direct]  # as the peer sent them
    assert entry.reply.content == joined(live, "content") == peer.answer_for(Q[-1]["content"])
    assert entry.reply.reasoning_content == joined(live, "reasoning_content")
    assert entry.reply.usage.reasoning_tokens == 28
    assert stream.response.status_code == 200  # the SDK stream's own attributes pass through


async def test_stream_hit_replays_chunks_byte_for_byte():
    peer = R1Peer(piece=3)
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        live = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
        await settle()
        replay = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
        with_usage = [c async for c in await client.chat.completions.create(
            model=MODEL, messages=Q, stream=True, stream_options={"include_usage": True})]
    assert len(peer.calls) == 1
    assert all(type(c) is ChatCompletionChunk for c in replay + with_usage)
    for field in ("content", "reasoning_content"):
        assert joined(replay, field) == joined(live, field) == joined(with_usage, field)
    assert replay[0].choices[0].delta.role == "assistant"
    assert replay[-1].choices[0].finish_reason == "stop"
    assert replay[-1].usage.total_tokens == live[-1].usage.total_tokens == 52  # where DeepSeek puts it
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens == 40  # where OpenAI does
    assert all(c.usage is None for c in with_usage[:-1])


async def test_replayed_stream_closes_and_works_as_a_context_manager():
    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        await client.chat.completions.create(model=MODEL, messages=Q)
        async with await client.chat.completions.create(model=MODEL, messages=Q, stream=True) as stream:
            first = await stream.__anext__()
        assert type(first) is ChatCompletionChunk
        assert [c async for c in stream] == []  # closed by the context manager
        stream = await client.chat.completions.create(model=MODEL, messages=Q, stream=True)
        await stream.close()
        assert [c async for c in stream] == []
        stream = await client.chat.completions.create(model=MODEL, messages=Q, stream=True)
        await stream.aclose()
        assert [c async for c in stream] == []
    assert len(peer.calls) == 1


async def test_a_live_stream_left_early_stores_nothing_and_releases_the_connection():
    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        async with await client.chat.completions.create(model=MODEL, messages=Q, stream=True) as stream:
            async for _ in stream:
                break
        await settle()
        assert stored(pipe) is None
        assert stream.response.is_closed
        peer.truncate = True  # no finish chunk, no [DONE]: a truncated reply is not a reply
        _ = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
        await settle()
        assert stored(pipe) is None
    assert len(peer.calls) == 2


async def test_a_stream_serves_a_plain_request_and_the_reverse():
    peer = R1Peer()
    other = [{"role": "user", "content": "And MSFT at RSI(14)=31?"}]
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        live = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
        await settle()
        plain = await client.chat.completions.create(model=MODEL, messages=Q)
        first = await client.chat.completions.create(model=MODEL, messages=other)
        replay = [c async for c in await client.chat.completions.create(model=MODEL, messages=other, stream=True)]
    assert len(peer.calls) == 2
    assert type(plain) is ChatCompletion
    assert plain.choices[0].message.content == joined(live, "content")
    assert plain.choices[0].message.reasoning_content == joined(live, "reasoning_content")
    assert plain.usage.total_tokens == 52
    assert joined(replay, "content") == first.choices[0].message.content
    assert joined(replay, "reasoning_content") == first.choices[0].message.reasoning_content


@pytest.mark.parametrize(("status", "error"), [(500, openai.InternalServerError), (429, openai.RateLimitError),
                                               (400, openai.BadRequestError)])
@pytest.mark.parametrize("stream", [False, True])
async def test_peer_errors_reach_every_caller_as_the_sdk_exception_and_are_not_cached(status, error, stream):
    peer = R1Peer()
    peer.status = status
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        results = await asyncio.gather(
            *(client.chat.completions.create(model=MODEL, messages=Q, stream=stream) for _ in range(3)),
            return_exceptions=True)
        assert all(type(r) is error for r in results)
        assert results[0].status_code == status
        assert stored(pipe) is None
        peer.status = None
        reply = await client.chat.completions.create(model=MODEL, messages=Q)
        assert reply.choices[0].message.content == peer.answer_for(Q[-1]["content"])
        assert pipe.stats()["errors"] == 3
    assert len(peer.calls) == 2  # one failed call shared by the three, then a real one


async def test_every_other_attribute_passes_through():
    peer = R1Peer()
    raw = raw_client(peer)
    async with pipeline() as pipe:
        client = r1mw.wrap(raw, pipe)
        assert isinstance(client, openai.AsyncOpenAI)
        assert client.models is raw.models and client.embeddings is raw.embeddings
        assert client.base_url == raw.base_url and client.api_key == "sk-test"
        assert client.chat.completions.with_raw_response is not None  # the SDK's own, uncached
        assert "models" in dir(client) and client.r1mw_pipeline is pipe
        faster = client.with_options(timeout=5.0)
        assert isinstance(faster, openai.AsyncOpenAI) and faster.timeout == 5.0
        await client.chat.completions.create(model=MODEL, messages=Q)
        hit = await faster.chat.completions.create(model=MODEL, messages=Q)  # same cache
        assert type(hit) is ChatCompletion
        await client.chat.completions.create(model=MODEL, messages=Q, user="alice", cache={"ttl": 60})
    assert len(peer.calls) == 1
    raw2 = raw_client(R1Peer())
    async with r1mw.wrap(raw2, pipe) as wrapped:  # the client's own context manager
        assert wrapped.api_key == "sk-test"
    assert raw2.is_closed()


async def test_cache_control_is_popped_and_passthrough_reaches_the_peer():
    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        await client.chat.completions.create(model=MODEL, messages=Q, user="alice", temperature=0.0,
                                             cache={"no-store": True}, extra_headers={"X-Desk": "a"})
    body = peer.calls[0]
    assert "cache" not in body and body["user"] == "alice" and body["temperature"] == 0.0


async def test_think_tags_inside_content_are_kept_and_split():
    peer = R1Peer(think_tags=True)
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        miss = await client.chat.completions.create(model=MODEL, messages=Q)
        hit = await client.chat.completions.create(model=MODEL, messages=Q)
        replay = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
        reply = stored(pipe).reply
    assert len(peer.calls) == 1
    assert hit.choices[0].message.content == miss.choices[0].message.content
    assert hit.choices[0].message.content.startswith("<think>\n")
    assert joined(replay, "content") == miss.choices[0].message.content
    assert reply.reasoning_content is None
    assert reply.reasoning == peer.reasoning_for(Q[-1]["content"])
    assert reply.answer == peer.answer_for(Q[-1]["content"])


async def test_a_sync_client_is_refused_with_a_clear_error():
    with pytest.raises(TypeError, match="needs an async client"):
        r1mw.wrap(openai.OpenAI(api_key="sk-test"), pipeline())


async def test_a_stream_dropped_unread_does_not_block_identical_requests():
    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        stream = await client.chat.completions.create(model=MODEL, messages=Q, stream=True)
        del stream  # never iterated, never closed
        gc.collect()
        async with asyncio.timeout(10):  # a hang guard, not a speed assertion
            reply = await client.chat.completions.create(model=MODEL, messages=Q)
        assert reply.choices[0].message.content == peer.answer_for(Q[-1]["content"])
        assert stored(pipe) is not None
    assert len(peer.calls) == 2


async def test_concurrent_identical_streams_make_one_call_and_read_the_same_text():
    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)

        async def read() -> list[ChatCompletionChunk]:
            return [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]

        streams = await asyncio.gather(*(read() for _ in range(5)))
        stats = pipe.stats()
    assert len(peer.calls) == 1 and stats["coalesced"] == 4
    for chunks in streams:
        assert joined(chunks, "content") == peer.answer_for(Q[-1]["content"])
        assert joined(chunks, "reasoning_content") == peer.reasoning_for(Q[-1]["content"])


async def test_the_sdk_not_given_sentinels_count_as_absent():
    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        await client.chat.completions.create(model=MODEL, messages=Q)
        hit = await client.chat.completions.create(model=MODEL, messages=Q, temperature=openai.NOT_GIVEN,
                                                   max_tokens=openai.omit)
    assert len(peer.calls) == 1 and type(hit) is ChatCompletion


async def test_the_task_holding_a_live_stream_can_ask_again_before_reading_it():
    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        stream = await client.chat.completions.create(model=MODEL, messages=Q, stream=True)
        async with asyncio.timeout(10):  # a hang guard: single-flight must not wait on our own stream
            plain = await client.chat.completions.create(model=MODEL, messages=Q)
        live = [c async for c in stream]
    assert len(peer.calls) == 2
    assert plain.choices[0].message.content == joined(live, "content")


async def test_patching_create_on_the_wrapped_client_wraps_the_cached_create():
    peer = R1Peer()
    seen = []
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        cached_create = client.chat.completions.create

        async def patched(**kwargs):  # what instrumentation libraries do
            seen.append(kwargs["model"])
            return await cached_create(**kwargs)

        client.chat.completions.create = patched
        client.max_retries = 0  # other attributes are set on the client itself
        await client.chat.completions.create(model=MODEL, messages=Q)
        await client.chat.completions.create(model=MODEL, messages=Q)
    assert seen == [MODEL, MODEL] and len(peer.calls) == 1


def tool_peer(calls: list) -> httpx.MockTransport:
    """A peer answering with a tool call (plain JSON, or streamed in argument pieces)."""
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_quote", "arguments": '{"ticker": "AAPL", "field": "close"}'}}

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls.append(body)
        head = {"id": "r1-tool", "created": 1_700_000_000, "model": body["model"]}
        if not body.get("stream"):
            return httpx.Response(200, json={**head, "object": "chat.completion", "choices": [{
                "index": 0, "finish_reason": "tool_calls", "logprobs": None,
                "message": {"role": "assistant", "content": None, "reasoning_content": "Need a quote.",
                            "tool_calls": [call]}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})
        args = call["function"]["arguments"]
        deltas = [{"role": "assistant", "reasoning_content": "Need a quote."},
                  {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "get_quote", "arguments": args[:10]}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": args[10:]}}]}]
        events = [{**head, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        events.append({**head, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        sse = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse)

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("first_stream", [False, True])
async def test_tool_calls_survive_a_hit_and_a_replay(first_stream):
    calls: list = []
    tools = [{"type": "function", "function": {"name": "get_quote", "parameters": {"type": "object"}}}]
    raw = openai.AsyncOpenAI(api_key="sk-test", base_url="https://r1.test/v1", max_retries=0,
                             http_client=httpx.AsyncClient(transport=tool_peer(calls)))
    async with pipeline() as pipe:
        client = r1mw.wrap(raw, pipe)
        if first_stream:
            _ = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, tools=tools,
                                                                     stream=True)]
            await settle()
        else:
            await client.chat.completions.create(model=MODEL, messages=Q, tools=tools)
        hit = await client.chat.completions.create(model=MODEL, messages=Q, tools=tools)
        replay = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, tools=tools,
                                                                      stream=True)]
    assert len(calls) == 1
    call = hit.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name) == ("call_1", "get_quote")
    assert json.loads(call.function.arguments) == {"ticker": "AAPL", "field": "close"}
    assert hit.choices[0].finish_reason == "tool_calls"
    assert hit.choices[0].message.reasoning_content == "Need a quote."
    pieces = [c.choices[0].delta.tool_calls for c in replay if c.choices and c.choices[0].delta.tool_calls]
    assert "".join(t[0].function.arguments for t in pieces) == call.function.arguments
    assert replay[-1].choices[0].finish_reason == "tool_calls"


class MyAsyncOpenAI(openai.AsyncOpenAI):
    """A caller's own subclass of the SDK client, in the caller's module (not openai's)."""


async def test_a_subclass_of_the_sdk_client_is_the_sdk_client():
    # Its replies are ChatCompletion; its stream chunks ChatCompletionChunk, known before any
    # live stream: the first stream after a stored reply is a replay, not an upstream call.
    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(MyAsyncOpenAI(api_key="sk-test", base_url="https://r1.test/v1", max_retries=0,
                                         http_client=httpx.AsyncClient(transport=peer.transport())), pipe)
        miss = await client.chat.completions.create(model=MODEL, messages=Q)
        replay = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
        hit = await client.chat.completions.create(model=MODEL, messages=Q)
        stats = pipe.stats()
    assert len(peer.calls) == 1 and stats["hits_by"] == {"exact:l1": 2} and stats["misses"] == 1
    assert type(miss) is type(hit) is ChatCompletion and {type(c) for c in replay} == {ChatCompletionChunk}
    assert joined(replay, "content") == hit.choices[0].message.content == miss.choices[0].message.content


class OtherSDKCompletion(pydantic.BaseModel):
    """Another SDK's own ChatCompletion class (as groq's or together's clients have)."""

    id: str
    model: str
    choices: list[dict]


class OtherSDKClient:
    """An OpenAI-compatible async client that is not the openai package."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.chat = types.SimpleNamespace(completions=types.SimpleNamespace(create=self._create))
        self.region = "eu"

    async def _create(self, **kwargs):
        self.calls.append(kwargs)
        return OtherSDKCompletion(id="o-1", model=kwargs["model"], choices=[
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hold."}}])


async def test_a_compatible_client_of_another_sdk_gets_its_own_class_back():
    other = OtherSDKClient()
    async with pipeline() as pipe:
        client = r1mw.wrap(other, pipe)
        miss = await client.chat.completions.create(model=MODEL, messages=Q)
        hit = await client.chat.completions.create(model=MODEL, messages=Q)
    assert len(other.calls) == 1 and client.region == "eu"
    assert type(miss) is OtherSDKCompletion and type(hit) is OtherSDKCompletion
    assert hit.choices[0]["message"]["content"] == "Hold."


def cut_peer(calls: list, first_finish: str | None) -> httpx.MockTransport:
    """A peer whose first answer ends with ``first_finish`` (DeepSeek's cut-short
    "insufficient_system_resource", vLLM's "abort", none at all), the next ones with "stop"."""
    partial = "The RSI(14) at 72 suggests AAPL is"

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls.append(body)
        finish, content = (first_finish, partial) if len(calls) == 1 else ("stop", partial + " overbought.")
        head = {"id": f"r1-{len(calls)}", "created": 1_700_000_000, "model": body["model"]}
        if not body.get("stream"):
            return httpx.Response(200, json={**head, "object": "chat.completion", "choices": [
                {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}]})
        deltas = [({"role": "assistant", "content": ""}, None), ({"content": content}, None), ({}, finish)]
        sse = b"".join(b"data: " + json.dumps({**head, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": d, "finish_reason": f}]}).encode() + b"\n\n" for d, f in deltas)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse + b"data: [DONE]\n\n")

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("finish", ["insufficient_system_resource", "abort", None])
@pytest.mark.parametrize("first_stream", [False, True])
async def test_a_reply_cut_short_is_served_but_not_cached(finish, first_stream):
    calls: list = []
    raw = openai.AsyncOpenAI(api_key="sk-test", base_url="https://r1.test/v1", max_retries=0,
                             http_client=httpx.AsyncClient(transport=cut_peer(calls, finish)))
    async with pipeline() as pipe:
        client = r1mw.wrap(raw, pipe)
        if first_stream:
            chunks = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
            assert chunks[-1].choices[0].finish_reason == finish  # the caller sees what the peer sent
        else:
            miss = await client.chat.completions.create(model=MODEL, messages=Q)
            assert miss.choices[0].finish_reason == finish
        await settle()
        assert stored(pipe) is None
        again = await client.chat.completions.create(model=MODEL, messages=Q)  # asks the peer again
        hit = await client.chat.completions.create(model=MODEL, messages=Q)
        replay = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
    assert len(calls) == 2
    assert again.choices[0].finish_reason == hit.choices[0].finish_reason == "stop"
    assert hit.choices[0].message.content == again.choices[0].message.content
    assert replay[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(("finish", "storable"), [
    ("stop", True), ("length", True), ("tool_calls", True), ("content_filter", True), ("function_call", True),
    ("error", False), ("insufficient_system_resource", False), ("abort", False), (None, False), ("", False)])
def test_only_the_finish_reasons_of_a_complete_reply_are_storable(finish, storable):
    reply = r1mw.Reply(choices=(r1mw.Choice(content="x", finish_reason=finish),))
    assert reply.storable is storable
    two = r1mw.Reply(choices=(r1mw.Choice(content="x"), r1mw.Choice(index=1, content="y", finish_reason=finish)))
    assert two.storable is storable  # every choice must be complete


def untyped_tool_peer(calls: list) -> httpx.MockTransport:
    """A peer whose tool calls carry no "type" (several OpenAI-compatible servers): the SDK
    builds its objects without validating, so the miss is fine; a validated rebuild is not."""
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls.append(body)
        head = {"id": f"r1-{len(calls)}", "created": 1_700_000_000, "model": body["model"]}
        call = {"id": "call_1", "function": {"name": "get_quote", "arguments": '{"ticker": "AAPL"}'}}
        if not body.get("stream"):
            return httpx.Response(200, json={**head, "object": "chat.completion", "choices": [{
                "index": 0, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]})
        deltas = [({"role": "assistant"}, None), ({"tool_calls": [{"index": 0, **call}]}, None), ({}, "tool_calls")]
        sse = b"".join(b"data: " + json.dumps({**head, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": d, "finish_reason": f}]}).encode() + b"\n\n" for d, f in deltas)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse + b"data: [DONE]\n\n")

    return httpx.MockTransport(handle)


async def test_a_streamed_tool_call_without_a_type_is_a_function_call_on_a_hit():
    calls: list = []
    raw = openai.AsyncOpenAI(api_key="sk-test", base_url="https://r1.test/v1", max_retries=0,
                             http_client=httpx.AsyncClient(transport=untyped_tool_peer(calls)))
    async with pipeline() as pipe:
        client = r1mw.wrap(raw, pipe)
        _ = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
        await settle()
        hit = await client.chat.completions.create(model=MODEL, messages=Q)
    assert len(calls) == 1 and type(hit) is ChatCompletion
    call = hit.choices[0].message.tool_calls[0]
    assert (call.type, call.id, call.function.name) == ("function", "call_1", "get_quote")


async def test_a_miss_the_sdk_accepted_but_a_hit_could_not_rebuild_is_served_and_not_stored(caplog):
    calls: list = []
    raw = openai.AsyncOpenAI(api_key="sk-test", base_url="https://r1.test/v1", max_retries=0,
                             http_client=httpx.AsyncClient(transport=untyped_tool_peer(calls)))
    async with pipeline() as pipe:
        client = r1mw.wrap(raw, pipe)
        with caplog.at_level("WARNING", logger="r1mw"):
            replies = [await client.chat.completions.create(model=MODEL, messages=Q) for _ in range(3)]
        assert stored(pipe) is None
    assert len(calls) == 3  # each one asked the peer: nothing was stored
    assert all(type(r) is ChatCompletion and r.choices[0].finish_reason == "tool_calls" for r in replies)
    assert [r.message for r in caplog.records].count(
        "a reply r1mw cannot rebuild in the client's type was served and not cached (logged once per wrapped client)") == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_an_entry_that_cannot_be_rebuilt_is_a_miss_not_an_error(stream, caplog):
    # An entry stored by an older version (which stored cut-short replies): the hit cannot be
    # a ChatCompletion; the caller gets the peer's answer, which replaces the entry.
    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        old = r1mw.Reply(choices=(r1mw.Choice(content="The RSI(14) at 72 suggests",
                                              finish_reason="insufficient_system_resource"),), model=MODEL)
        assert pipe.store.set_behind(r1mw.key_of("", MODEL, Q, {}), r1mw.Entry(old))
        with caplog.at_level("WARNING", logger="r1mw"):
            if stream:
                chunks = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
                content = joined(chunks, "content")
            else:
                content = (await client.chat.completions.create(model=MODEL, messages=Q)).choices[0].message.content
            await settle()
            hit = await client.chat.completions.create(model=MODEL, messages=Q)
    assert content == hit.choices[0].message.content == peer.answer_for(Q[-1]["content"])
    assert len(peer.calls) == 1 and hit.choices[0].finish_reason == "stop"
    assert sum("could not be rebuilt" in r.message for r in caplog.records) == 1


async def test_a_streamed_reply_that_cannot_be_rebuilt_is_served_and_not_stored():
    calls: list = []

    def handle(request: httpx.Request) -> httpx.Response:  # a tool call streamed without an id
        calls.append(json.loads(request.content))
        head = {"id": "r1-x", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": MODEL}
        deltas = [({"role": "assistant"}, None),
                  ({"tool_calls": [{"index": 0, "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, None),
                  ({}, "tool_calls")]
        sse = b"".join(b"data: " + json.dumps({**head, "choices": [{"index": 0, "delta": d, "finish_reason": f}]})
                       .encode() + b"\n\n" for d, f in deltas)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse + b"data: [DONE]\n\n")

    raw = openai.AsyncOpenAI(api_key="sk-test", base_url="https://r1.test/v1", max_retries=0,
                             http_client=httpx.AsyncClient(transport=httpx.MockTransport(handle)))
    async with pipeline() as pipe:
        client = r1mw.wrap(raw, pipe)
        chunks = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
        await settle()
        assert stored(pipe) is None
        again = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
    assert len(calls) == 2 and len(chunks) == len(again) == 3
    assert chunks[1].choices[0].delta.tool_calls[0].function.name == "f"


@pytest.mark.parametrize("first_stream", [False, True])
async def test_a_hit_is_the_miss_field_for_field_deepseek_usage_included(first_stream):
    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        if first_stream:
            _ = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
            await settle()
            miss = await raw_client(peer).chat.completions.create(model=MODEL, messages=Q)  # the plain shape
        else:
            miss = await client.chat.completions.create(model=MODEL, messages=Q)
        hit = await client.chat.completions.create(model=MODEL, messages=Q)
    assert hit.usage.prompt_cache_hit_tokens == 0 and hit.usage.prompt_cache_miss_tokens == 12  # DeepSeek's
    hit_fields, miss_fields = hit.model_dump(), miss.model_dump()
    if first_stream:  # the plain miss to compare with is the peer's second answer: its own id and time
        for fields in (hit_fields, miss_fields):
            fields.pop("id"), fields.pop("created")
    assert hit_fields == miss_fields


async def test_usage_details_the_peer_did_not_send_stay_none_on_a_hit():
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "r1-1", "object": "chat.completion", "created": 1, "model": MODEL,
                                         "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                             "role": "assistant", "content": "Four."}}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

    raw = openai.AsyncOpenAI(api_key="sk-test", base_url="https://r1.test/v1", max_retries=0,
                             http_client=httpx.AsyncClient(transport=httpx.MockTransport(handle)))
    async with pipeline() as pipe:
        client = r1mw.wrap(raw, pipe)
        miss = await client.chat.completions.create(model=MODEL, messages=Q)
        hit = await client.chat.completions.create(model=MODEL, messages=Q)
    assert miss.usage.completion_tokens_details is None and miss.usage.prompt_tokens_details is None
    assert hit.usage.completion_tokens_details is None and hit.usage.prompt_tokens_details is None
    assert hit.model_dump() == miss.model_dump()


async def test_a_tool_loop_appending_the_sdk_message_keys_as_the_json_the_peer_receives(caplog):
    # messages.append(completion.choices[0].message): an SDK object in the history. Every stage
    # reads it (no traceback logged), and it keys exactly as the dict the peer receives, so a
    # history saved as JSON and loaded again is the same request.
    calls: list = []
    tools = [{"type": "function", "function": {"name": "get_quote", "parameters": {"type": "object"}}}]
    raw = openai.AsyncOpenAI(api_key="sk-test", base_url="https://r1.test/v1", max_retries=0,
                             http_client=httpx.AsyncClient(transport=tool_peer(calls)))
    settings = r1mw.Settings(stages="metrics,prefetch,template,exact,semantic")
    async with r1mw.Pipeline(settings) as pipe:
        client = r1mw.wrap(raw, pipe)
        first = await client.chat.completions.create(model=MODEL, messages=Q, tools=tools)
        history = [*Q, first.choices[0].message, {"role": "tool", "tool_call_id": "call_1", "content": "190.1"}]
        with caplog.at_level("WARNING"):
            await client.chat.completions.create(model=MODEL, messages=history, tools=tools)
            for _ in range(5):
                await asyncio.sleep(0)  # the prefetch stage observes in the background
        as_json = json.loads(json.dumps(calls[-1]["messages"]))  # what the peer received
        assert as_json[2] != first.choices[0].message.model_dump()  # (not every field: what was set)
        again = await client.chat.completions.create(model=MODEL, messages=as_json, tools=tools)
    assert len(calls) == 2 and pipe.stats()["hits"] == 1
    assert again.choices[0].message.tool_calls[0].function.name == "get_quote"
    assert not [r for r in caplog.records if r.name.startswith("r1mw") and r.levelname in ("WARNING", "ERROR")]
    assert r1mw.key_of("", MODEL, history, {"tools": tools}) == r1mw.key_of("", MODEL, as_json, {"tools": tools})


def test_the_question_of_a_history_with_message_objects():
    from openai.types.chat import ChatCompletionMessage
    from litellm import Message

    reply = ChatCompletionMessage(role="assistant", content=None, tool_calls=[
        {"id": "call_1", "type": "function", "function": {"name": "get_quote", "arguments": "{}"}}])
    request = r1mw.Request(MODEL, [*Q, reply, {"role": "tool", "tool_call_id": "call_1", "content": "190"}])
    assert request.question == Q[-1]["content"]
    request = r1mw.Request(MODEL, [Message(role="user", content="And MSFT?"), reply])  # LiteLLM's object
    assert request.question == "And MSFT?"


@pytest.mark.parametrize("first_stream", [False, True])
async def test_deepseeks_own_streaming_loop_reads_a_replay_as_it_reads_a_live_stream(first_stream):
    # DeepSeek's documented loop reads delta.reasoning_content and delta.content on every chunk:
    # a live R1 stream sends both on each one (one of them null), so a replay must too.
    def deepseek_loop(chunks: list[ChatCompletionChunk]) -> tuple[str, str]:
        reasoning = content = ""
        for chunk in chunks:
            if not chunk.choices:
                continue
            if chunk.choices[0].delta.reasoning_content:
                reasoning += chunk.choices[0].delta.reasoning_content
            else:
                content += chunk.choices[0].delta.content or ""
        return reasoning, content

    peer = R1Peer()
    async with pipeline() as pipe:
        client = r1mw.wrap(raw_client(peer), pipe)
        if first_stream:
            live = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True)]
            assert deepseek_loop(live) == (peer.reasoning_for(Q[-1]["content"]), peer.answer_for(Q[-1]["content"]))
            await settle()
        else:
            await client.chat.completions.create(model=MODEL, messages=Q)
        for options in (None, {"include_usage": True}):
            extra = {} if options is None else {"stream_options": options}
            replay = [c async for c in await client.chat.completions.create(model=MODEL, messages=Q, stream=True,
                                                                             **extra)]
            assert deepseek_loop(replay) == (peer.reasoning_for(Q[-1]["content"]), peer.answer_for(Q[-1]["content"]))
    assert len(peer.calls) == 1
