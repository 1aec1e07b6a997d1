"""A replayed stream reassembles to the stored reply, byte for byte, in every client's chunk type."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import r1mw  # noqa: E402
from r1mw.adapters.callable import DictNative, ModelNative  # noqa: E402
from r1mw.adapters.litellm import LiteLLMNative  # noqa: E402
from r1mw.adapters.openai import _native as openai_native  # noqa: E402
from r1mw.types import _ReplyBuilder  # noqa: E402

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
    assert native.to_reply(native.from_reply(reply)).to_wire() == \
        {**reply.to_wire(), "native": native.kind}


def test_the_openai_native_builds_sdk_objects():
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    native = openai_native()
    assert isinstance(native, ModelNative)
    reply = r1mw.Reply(choices=(r1mw.Choice(content="a", reasoning_content="b"),))
    assert type(native.from_reply(reply)) is ChatCompletion
    assert {type(c) for c in native.replay_chunks(reply, True)} == {ChatCompletionChunk}
