"""The key's fast paths give exactly the key of the generic canonical form."""

from __future__ import annotations

import msgpack
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from r1mw.keys import _canon, _canon_messages, key_of, split_params


def reference_key(namespace, model, messages, params):
    blob = msgpack.packb((1, namespace, model, _canon_messages(messages), _canon(params) if params else None),
                         use_bin_type=True)
    return xxhash.xxh3_128_digest(blob)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                    st.floats(allow_nan=False), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=6)
params = st.dictionaries(st.one_of(st.text(max_size=12), st.integers(0, 9)), values, max_size=5)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                           "content": st.text(max_size=40)}), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=8), st.text(max_size=12), messages, params)
def test_key_of_matches_the_generic_canonical_form(namespace, model, msgs, prms):
    assert key_of(namespace, model, msgs, prms) == reference_key(namespace, model, msgs, prms)


def test_parameter_order_and_names_matter_as_they_should():
    msgs = [{"role": "user", "content": "q"}]
    assert key_of("", "m", msgs, {"a": 1, "b": 2}) == key_of("", "m", msgs, {"b": 2, "a": 1})
    assert key_of("", "m", msgs, {"a": 1}) != key_of("", "m", msgs, {"a": 1.5})
    assert key_of("", "m", msgs, {"a": "1"}) != key_of("", "m", msgs, {"a": 1})
    assert key_of("", "m", msgs, {1: "x"}) == key_of("", "m", msgs, {"1": "x"})  # names are text


def test_parameters_that_do_not_change_the_answer_are_not_keyed():
    # OpenAI's safety_identifier (its replacement for `user`) and the prompt-caching hints
    for name, values in (("safety_identifier", ("analyst-1", "analyst-2")),
                         ("prompt_cache_key", ("desk-a", "desk-b")),
                         ("prompt_cache_retention", ("in_memory", "24h")),
                         ("prompt_cache_options", ({"mode": "implicit"}, {"mode": "explicit", "ttl": "1h"})),
                         ("user", ("alice", "bob"))):
        keys = set()
        for value in values:
            params, passthrough = split_params({name: value, "temperature": 0.2})
            assert passthrough == {name: value}  # still reaches the upstream
            keys.add(key_of("", "m", [{"role": "user", "content": "q"}], params))
        assert len(keys) == 1, name
