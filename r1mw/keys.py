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

__all__ = ["NOT_KEYED", "key_of", "split_params"]

NOT_KEYED: frozenset[str] = frozenset(
    {
        # transport and identity: never change the answer
        "stream", "stream_options", "user", "timeout", "request_timeout", "extra_headers",
        "extra_query", "api_key", "api_base", "base_url", "api_version", "organization",
        "headers", "max_retries", "metadata", "store", "service_tier", "cache", "caching",
        "num_retries", "litellm_logging_obj", "litellm_call_id", "custom_llm_provider",
        "logger_fn", "proxy_server_request", "acompletion", "client",
    }
)


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
    # Dict order never matters to the upstream; sort so it never matters to the key.
    if isinstance(value, Mapping):
        return [(str(k), _canon(v)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, (str, int, float, bool, bytes)) or value is None:
        return value
    dump = getattr(value, "model_dump", None)  # pydantic objects (tools, response_format)
    if dump is not None:
        return _canon(dump())
    return repr(value)


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
    # Fast path for the common shape (str names, scalar values): the very list _canon builds
    # (pairs sorted by name), without its per-value dispatch. 0.2 us instead of 1.7 us.
    try:
        items = sorted(params.items())
    except TypeError:  # names of mixed types
        return _canon(params)
    for name, value in items:
        if type(name) is not str or type(value) not in _SCALARS:
            return _canon(params)
    return items


# The packer's buffer is reused (half the cost of packb). Safe: pack() runs entirely in C
# under the GIL, with no Python callback (there is no default= hook).
_pack = msgpack.Packer(use_bin_type=True).pack


def key_of(namespace: str, model: str, messages: Any, params: Mapping[str, Any]) -> bytes:
    """The exact-match key of a request.

    >>> key_of("", "m", [{"role": "user", "content": "hi"}], {}) == \\
    ...     key_of("", "m", [{"content": "hi", "role": "user"}], {})
    True
    """
    blob = _pack((1, namespace, model, _canon_messages(messages), _canon_params(params) if params else None))
    return xxhash.xxh3_128_digest(blob)
