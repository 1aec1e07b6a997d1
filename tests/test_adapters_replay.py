"""A replayed stream reassembles to the stored reply, byte for byte, in every client's chunk type."""

from __future__ import annotations

import json
import os
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import r1mw  # noqa: E402
from r1mw.adapters.callable import DictNative, ModelNative  # noqa: E402
from r1mw.adapters.litellm import LiteLLMNative  # noqa: E402
from r1mw.adapters.openai import _native as openai_native  # noqa: E402
from r1mw.types import COMPLETE_FINISH_REASONS, _ReplyBuilder  # noqa: E402

NATIVES = [DictNative(), openai_native(), LiteLLMNative()]

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)  # any unicode, incl. newlines
replies = st.builds(
    lambda content, reasoning, finish, usage: r1mw.Reply(
        choices=(r1mw.Choice(content=content, reasoning_content=reasoning, finish_reason=finish),),
        model="deepseek-reasoner", id="r1-x", created=1_700_000_000, usage=usage),
    text, st.one_of(st.none(), text.filter(bool)), st.sampled_from(["stop", "length"]),
    st.one_of(st.none(), st.builds(r1mw.Usage, *(st.integers(0, 10**6) for _ in range(5)))))


@settings(max_examples=60, deadline=None)
@given(replies, st.booleans(), st.sampled_from(range(len(NATIVES))))
def test_replay_reassembles_to_the_reply(reply, include_usage, which):
    native = NATIVES[which]
    builder = _ReplyBuilder(native.kind)
    for chunk in native.replay_chunks(reply, include_usage):
        builder.add(*native.chunk_deltas(chunk))
    again = builder.build()
    assert again is not None
    assert again.content == reply.content
    assert again.reasoning_content == reply.reasoning_content
    assert again.finish_reason == reply.finish_reason
    assert (again.id, again.model, again.created) == (reply.id, reply.model, reply.created)
    assert again.usage == reply.usage


@settings(max_examples=60, deadline=None)
@given(replies, st.sampled_from(range(len(NATIVES))))
def test_a_hit_object_reads_back_as_the_reply(reply, which):
    native = NATIVES[which]
    expected = {**reply.to_wire(), "native": native.kind}
    if native.kind == "litellm" and reply.usage is None:  # LiteLLM's responses always have one
        expected["usage"] = [0, 0, 0, 0, 0, {"completion_tokens_details": None, "prompt_tokens_details": None}]
    assert native.to_reply(native.from_reply(reply)).to_wire() == expected


def test_the_openai_native_builds_sdk_objects():
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    native = openai_native()
    assert isinstance(native, ModelNative)
    reply = r1mw.Reply(choices=(r1mw.Choice(content="a", reasoning_content="b"),))
    assert type(native.from_reply(reply)) is ChatCompletion
    assert {type(c) for c in native.replay_chunks(reply, True)} == {ChatCompletionChunk}


counts = st.integers(0, 10**6)
details = st.one_of(st.none(), st.builds(lambda n: {"reasoning_tokens": n}, counts),
                    st.builds(lambda n, a: {"reasoning_tokens": n, "audio_tokens": a}, counts, counts))
prompt_details = st.one_of(st.none(), st.builds(lambda n: {"cached_tokens": n}, counts))
raw_usages = st.builds(
    lambda p, c, done, pd, deepseek, drop: {k: v for k, v in {
        "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
        "completion_tokens_details": done, "prompt_tokens_details": pd,
        **({"prompt_cache_hit_tokens": deepseek, "prompt_cache_miss_tokens": p - deepseek} if deepseek <= p else {}),
    }.items() if k not in drop},
    counts, counts, details, prompt_details, counts,
    st.sets(st.sampled_from(["completion_tokens_details", "prompt_tokens_details"])))


def _completion(usage: dict) -> dict:
    return {"id": "r1-x", "object": "chat.completion", "created": 1_700_000_000, "model": "deepseek-reasoner",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": "Four."}}], "usage": usage}


@settings(max_examples=60, deadline=None)
@given(raw_usages, st.sampled_from(range(len(NATIVES))))
def test_a_hit_has_the_usage_of_the_miss(raw, which):
    # DeepSeek's prompt_cache_hit/miss_tokens, details that were None or absent, richer details:
    # as the miss had them, through the stored form.
    import litellm
    from openai.types.chat import ChatCompletion

    native = NATIVES[which]
    miss = [_completion(raw), ChatCompletion.model_validate(_completion(raw)),
            litellm.ModelResponse(**_completion(raw))][which]
    stored = r1mw.Reply.from_wire(native.to_reply(miss).to_wire())
    hit = native.from_reply(stored)
    if which == 0:
        assert hit["usage"] == miss["usage"]
    else:
        assert hit.usage.model_dump() == miss.usage.model_dump()
    for name in ("prompt_cache_hit_tokens", "prompt_cache_miss_tokens"):
        if name in raw:
            assert (hit["usage"] if which == 0 else hit.usage.model_dump())[name] == raw[name]
    # and a replayed stream carries it too
    builder = _ReplyBuilder(native.kind)
    for chunk in native.replay_chunks(stored, False):
        builder.add(*native.chunk_deltas(chunk))
    assert builder.build().usage == stored.usage


def test_usage_stored_before_extra_existed_still_reads():
    old = {"id": "r1", "model": "m", "created": 1, "fp": None, "native": "openai",
           "usage": [12, 40, 52, 28, 3], "choices": [[0, "Four.", "2+2", "stop", "assistant", None]]}
    reply = r1mw.Reply.from_wire(old)
    assert reply.usage == r1mw.Usage(12, 40, 52, 28, 3) and reply.usage.extra is None
    assert reply.to_wire() == old  # and is written as before
    hit = DictNative().from_reply(reply)
    assert hit["usage"]["completion_tokens_details"] == {"reasoning_tokens": 28}
    assert hit["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}


def test_a_hit_shares_no_usage_container_with_the_stored_reply():
    native = DictNative()
    reply = native.to_reply(_completion({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                                         "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0}}))
    native.from_reply(reply)["usage"]["completion_tokens_details"]["reasoning_tokens"] = 99
    assert native.from_reply(reply)["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.text(max_size=6),
                         st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=6)
tool_calls = st.lists(st.builds(lambda n: {"id": f"call_{n}", "type": "function",
                                           "function": {"name": "get_quote", "arguments": '{"t": "AAPL"}'}},
                                st.integers(0, 9)), min_size=1, max_size=2)
messages = st.fixed_dictionaries({}, optional={
    "role": st.just("assistant"), "content": st.one_of(st.none(), text), "reasoning_content": st.one_of(st.none(), text),
    "tool_calls": st.one_of(st.none(), tool_calls), "refusal": st.none(), "annotations": st.just([]),
    "audio": st.none(), "function_call": st.none(), "x_message": json_values})


@st.composite
def dict_misses(draw: st.DrawFn) -> dict:
    """A plain completion dict as some OpenAI-compatible server sends it: any of the optional
    keys present or not (logprobs, object, service_tier, system_fingerprint as null, ...)."""
    choices = []
    for i in range(draw(st.integers(1, 2))):
        choice = draw(st.fixed_dictionaries(
            {"message": messages, "finish_reason": st.sampled_from(sorted(COMPLETE_FINISH_REASONS))},
            optional={"index": st.just(i), "logprobs": st.none(), "stop_reason": st.one_of(st.none(), st.integers(0, 9)),
                      "x_choice": json_values}))
        choices.append(choice)
    return draw(st.fixed_dictionaries({"choices": st.just(choices)}, optional={
        "id": st.text(max_size=8), "object": st.just("chat.completion"), "created": st.integers(0, 2**40),
        "model": st.text(max_size=8), "system_fingerprint": st.one_of(st.none(), st.text(max_size=8)),
        "service_tier": st.one_of(st.none(), st.sampled_from(["default", "flex"])),
        "usage": st.one_of(st.none(), raw_usages), "prompt_logprobs": st.none(), "x_top": json_values}))


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@settings(max_examples=200, deadline=None)
@given(dict_misses())
def test_a_dict_hit_is_the_dict_miss_as_json(miss):
    # Through the stored form (msgpack, as every tier below RAM holds it): the keys the miss
    # had, with its values, and no others; each hit a fresh dict sharing nothing.
    from r1mw.codec import pack, unpack

    native = DictNative()
    sent = _json(miss)
    stored = r1mw.Reply.from_wire(unpack(pack(native.to_reply(miss).to_wire())))
    hit = native.from_reply(stored)
    assert _json(hit) == sent
    _scribble(hit)
    assert _json(native.from_reply(stored)) == sent and _json(miss) == sent


def _scribble(value: Any) -> None:
    # A caller changing what it got, at every depth.
    if isinstance(value, dict):
        for v in list(value.values()):
            _scribble(v)
        value["scribbled"] = True
    elif isinstance(value, list):
        for v in value:
            _scribble(v)
        value.append("scribbled")
