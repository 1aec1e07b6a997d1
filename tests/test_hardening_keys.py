"""Hardening: the exact key is exactly as fine as what the upstream sees.

Two properties, over random requests (hypothesis):

* requests the upstream would see differently (their JSON differs) never share a key;
* requests that differ only in what cannot change the answer (dict order, tuples for lists,
  parameters of NOT_KEYED, explicit None for "not given") always share one.
"""

from __future__ import annotations

import json

from hypothesis import given, settings as hsettings, strategies as st

from r1mw.keys import NOT_KEYED, key_of, split_params

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False, width=64) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=8,
)
_content = st.text(max_size=12) | st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=6)}),
    min_size=1, max_size=2)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": _content},
    optional={"name": st.text(max_size=3), "tool_call_id": st.text(max_size=3), "tool_calls": _json},
)
_ANSWER_CHANGING = ["temperature", "top_p", "max_tokens", "seed", "n", "stop", "tools", "tool_choice",
                    "response_format", "reasoning_effort", "extra_body", "presence_penalty", "frequency_penalty",
                    "logit_bias", "parallel_tool_calls", "thinking"]
_params = st.dictionaries(st.sampled_from(_ANSWER_CHANGING), _json, max_size=4)
_request = st.tuples(st.sampled_from(["", "desk-a", "desk-b"]), st.sampled_from(["deepseek-reasoner", "deepseek-chat"]),
                     st.lists(_message, min_size=1, max_size=3), _params)


def _seen_by_upstream(request) -> str:
    namespace, model, messages, params = request
    return json.dumps([namespace, model, messages, params], sort_keys=True)


@hsettings(max_examples=200, deadline=None)
@given(_request, _request)
def test_requests_the_upstream_sees_differently_never_share_a_key(a, b):
    if _seen_by_upstream(a) != _seen_by_upstream(b):
        assert key_of(*a) != key_of(*b)
    else:
        assert key_of(*a) == key_of(*b)


@hsettings(max_examples=200, deadline=None)
@given(_request, st.data())
def test_one_changed_answer_changing_part_changes_the_key(a, data):
    namespace, model, messages, params = a
    which = data.draw(st.sampled_from(["namespace", "model", "message", "param"]))
    if which == "namespace":
        other = (namespace + "x", model, messages, params)
    elif which == "model":
        other = (namespace, model + "-0528", messages, params)
    elif which == "message":
        i = data.draw(st.integers(0, len(messages) - 1))
        changed = dict(messages[i])
        changed["content"] = json.dumps(changed["content"]) + "."
        other = (namespace, model, [*messages[:i], changed, *messages[i + 1:]], params)
    else:
        name = data.draw(st.sampled_from(_ANSWER_CHANGING))
        value = data.draw(_json.filter(lambda v: json.dumps(v) != json.dumps(params.get(name, object()), default=str)))
        other = (namespace, model, messages, {**params, name: value})
    assert key_of(*a) != key_of(*other)


def _reordered(value):
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return tuple(_reordered(v) for v in value)
    return value


@hsettings(max_examples=150, deadline=None)
@given(_request, st.dictionaries(st.sampled_from(sorted(NOT_KEYED)), _json, max_size=4),
       st.lists(st.sampled_from(_ANSWER_CHANGING), max_size=3))
def test_what_cannot_change_the_answer_never_changes_the_key(a, harmless, not_given):
    namespace, model, messages, params = a
    params = {k: v for k, v in params.items() if v is not None}
    # The same call as an SDK user writes it: extra transport kwargs, explicit None for
    # "not given", keys in another order, tuples where JSON has lists.
    kwargs = {**harmless, **{n: None for n in not_given if n not in params}, **_reordered(params)}
    keyed, passthrough = split_params(kwargs)
    assert set(passthrough) == set(harmless)
    assert key_of(namespace, model, _reordered(messages), keyed) == key_of(namespace, model, messages, params)


def test_what_a_stored_reply_cannot_give_back_is_not_replayable():
    from r1mw.keys import replayable

    assert replayable({}) and replayable({"temperature": 0.6})
    assert replayable({"logprobs": False}) and replayable({"logprobs": None})
    assert not replayable({"logprobs": True}) and not replayable({"top_logprobs": 5, "logprobs": True})
    assert not replayable({"web_search_options": {}})  # empty options still turn search on
    assert not replayable({"audio": {"voice": "alloy", "format": "wav"}})


def test_a_mapping_and_a_list_never_share_a_key():
    q = [{"role": "user", "content": "q"}]
    assert key_of("", "m", q, {"extra_body": {"x": {}}}) != key_of("", "m", q, {"extra_body": {"x": []}})
    assert key_of("", "m", q, {"tools": [{"k": 1}]}) != key_of("", "m", q, {"tools": [[["k", 1]]]})
    # the common shape keeps its fast path and its key
    assert key_of("", "m", q, {"temperature": 0.6, "max_tokens": 10}) == key_of("", "m", q, {"max_tokens": 10, "temperature": 0.6})
