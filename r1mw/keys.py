"""Cache keys: a 16-byte hash of the canonical request.

What goes in: namespace, model, the messages (or the canonical form a template stage left in
``request.meta["key_messages"]``) and every answer-changing parameter. What never goes in:
the parameters of :data:`NOT_KEYED` (``stream``, ``user``, timeouts, headers, keys...).
Unknown parameters count as answer-changing: a missed hit costs money, a wrong one costs trust.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack
import xxhash

__all__ = ["NOT_KEYED", "NOT_REPLAYABLE", "key_of", "replayable", "split_params"]

NOT_KEYED: frozenset[str] = frozenset(
    {
        # transport and identity: never change the answer
        "stream", "stream_options", "user", "timeout", "request_timeout", "extra_headers",
        "extra_query", "api_key", "api_base", "base_url", "api_version", "organization",
        "headers", "max_retries", "metadata", "store", "service_tier", "cache", "caching",
        "num_retries", "litellm_logging_obj", "litellm_call_id", "custom_llm_provider",
        "logger_fn", "proxy_server_request", "acompletion", "client",
        # OpenAI's replacement for `user` (abuse detection) and its prompt-caching hints:
        # they route and bill the request, they do not change the answer
        "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options",
    }
)


# Parameters asking for reply parts a stored Reply does not keep (token logprobs, audio,
# web-search annotations): a hit could not reproduce them, so such requests go to the
# upstream, uncached.
NOT_REPLAYABLE: frozenset[str] = frozenset({"logprobs", "top_logprobs", "audio", "web_search_options"})


def replayable(params: Mapping[str, Any]) -> bool:
    """False when ``params`` ask for something a cached reply cannot give back
    (``logprobs=False`` asks for nothing; ``web_search_options={}`` does)."""
    if params.keys().isdisjoint(NOT_REPLAYABLE):
        return True
    return all(params.get(name) in (None, False) for name in NOT_REPLAYABLE)


def split_params(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split call kwargs (minus model/messages) into (answer-changing, passthrough)."""
    params: dict[str, Any] = {}
    passthrough: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in NOT_KEYED:
            passthrough[name] = value
        elif value is not None:  # an explicit None is the SDK's "not given"
            params[name] = value
    return params, passthrough


def _canon(value: Any) -> Any:
    # Dict order never matters to the upstream; sort so it never matters to the key. A
    # mapping stays a msgpack map (insertion order = sorted order): as a list of pairs,
    # {"a": {}} and {"a": []} (or {"k": 1} and [["k", 1]]) would share a key.
    if isinstance(value, Mapping):
        return {str(k): _canon(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, (str, int, float, bool, bytes)) or value is None:
        return value
    if isinstance(value, type):
        # A pydantic class as response_format (LiteLLM takes one): its schema is what the
        # upstream sees. Its repr would make every class named alike share one key.
        schema = getattr(value, "model_json_schema", None)
        if schema is not None:
            return ["\x00schema", _canon(schema())]
        return f"\x00type:{value.__module__}.{value.__qualname__}"
    dump = getattr(value, "model_dump", None)  # pydantic objects (messages, tools, response_format)
    if dump is not None:
        return _canon(_as_sent(value, dump))
    if type(value).__repr__ is object.__repr__:
        # The default repr is an address, which another object may reuse after this one is
        # gone: key the object's fields instead.
        fields = getattr(value, "__dict__", None)
        if fields is None:
            fields = {n: getattr(value, n, None) for c in type(value).__mro__ for n in getattr(c, "__slots__", ())}
        return ["\x00obj", f"{type(value).__module__}.{type(value).__qualname__}", _canon(fields)]
    return repr(value)


def _as_sent(value: Any, dump: Any) -> Any:
    # What the OpenAI SDK sends for a model object (a reply's message appended to the history
    # by a tool-calling loop): the fields it was given, as JSON. So it keys exactly as the dict
    # the upstream receives, or that history saved as JSON and loaded again.
    try:
        return dump(exclude_unset=True, mode="json", exclude=getattr(value, "__api_exclude__", None))
    except Exception:  # not JSON-able, or another model_dump: every field
        return dump()


def _canon_messages(messages: Any) -> Any:
    # Fast path for the common shape: [{"role": ..., "content": "..."}].
    out = []
    for m in messages:
        if type(m) is dict and len(m) == 2:  # exact types first: cheaper than isinstance
            content = m.get("content")
            if type(content) is str and "role" in m:
                out.append((m["role"], content))
                continue
        if isinstance(m, dict) and len(m) == 2 and isinstance(m.get("content"), str) and "role" in m:
            out.append((m["role"], m["content"]))
        else:
            out.append(_canon(m))
    return out


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _canon_params(params: Mapping[str, Any]) -> Any:
    # Fast path for the common shape (str names, scalar values): the very map _canon builds
    # (sorted by name), without its per-value dispatch. 0.3 us instead of 1.7 us.
    try:
        items = sorted(params.items())
    except TypeError:  # names of mixed types
        return _canon(params)
    for name, value in items:
        if type(name) is not str or type(value) not in _SCALARS:
            return _canon(params)
    return dict(items)


# The packer's buffer is reused (half the cost of packb). Safe: pack() runs entirely in C
# under the GIL, with no Python callback (there is no default= hook).
_pack = msgpack.Packer(use_bin_type=True).pack


def key_of(namespace: str, model: str, messages: Any, params: Mapping[str, Any]) -> bytes:
    """The exact-match key of a request.

    >>> key_of("", "m", [{"role": "user", "content": "hi"}], {}) == \\
    ...     key_of("", "m", [{"content": "hi", "role": "user"}], {})
    True
    """
    canonical = (1, namespace, model, _canon_messages(messages), _canon_params(params) if params else None)
    try:
        blob = _pack(canonical)
    except UnicodeEncodeError:  # lone surrogates (a broken client or decoder): still one key each
        blob = _pack(_surrogates_escaped(canonical))
    return xxhash.xxh3_128_digest(blob)


def _surrogates_escaped(value: Any) -> Any:
    # Strings that are not valid UTF-8 become an ext type: distinct from every str and bytes.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return msgpack.ExtType(1, value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (list, tuple)):
        return [_surrogates_escaped(v) for v in value]
    if isinstance(value, dict):
        return {_surrogates_escaped(k): _surrogates_escaped(v) for k, v in value.items()}
    return value
