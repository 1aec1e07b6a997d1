"""OpenAI-shaped dicts <-> Reply / Delta: the one translation every adapter shares.

SDK objects (OpenAI's pydantic models, LiteLLM's ModelResponse) are dumped to this dict
shape first, and rebuilt from it on a hit.
"""

from __future__ import annotations

from collections.abc import Mapping  # not typing.Mapping: its isinstance is 4x slower
from typing import Any, Callable, Iterable, Iterator

from ..types import Choice, Delta, Reply, Usage

__all__ = ["built_chunks", "chunk_dicts", "delta_of_chunk", "reply_of_dict", "dict_of_reply", "shape_of",
           "reshape", "shaped_dict_of_reply", "usage_dict", "usage_of"]


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if type(obj) is dict or isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


_TOTALS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})
_DETAILS = {"completion_tokens_details": "reasoning_tokens", "prompt_tokens_details": "cached_tokens"}


def usage_of(raw: Any) -> Usage | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        dump = getattr(raw, "model_dump", None)  # an SDK's usage object (a streamed chunk's)
        if dump is None:
            return _counts_only(raw)
        raw = dump()
    counts: dict[str, int] = {}
    rest: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _TOTALS:
            continue
        if name in _DETAILS:
            value = _plain(value)
            if isinstance(value, dict):
                # An SDK object dumped pads the details with None fields: they say nothing.
                value = {k: v for k, v in value.items() if v is not None}
                counts[name] = int(value.get(_DETAILS[name], 0) or 0)
            rest[name] = value  # None kept: no details is not zero details
        elif value is not None:
            rest[name] = _plain(value)
    reasoning = counts.get("completion_tokens_details", 0)
    cached = counts.get("prompt_tokens_details", 0)
    plain = {"completion_tokens_details": {"reasoning_tokens": reasoning},
             "prompt_tokens_details": {"cached_tokens": cached}}
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens", 0) or 0),
        completion_tokens=int(raw.get("completion_tokens", 0) or 0),
        total_tokens=int(raw.get("total_tokens", 0) or 0),
        reasoning_tokens=reasoning,
        cached_tokens=cached,
        extra=None if rest == plain else rest,
    )


def _counts_only(raw: Any) -> Usage:
    details = _get(raw, "completion_tokens_details")
    prompt_details = _get(raw, "prompt_tokens_details")
    return Usage(
        prompt_tokens=int(_get(raw, "prompt_tokens", 0) or 0),
        completion_tokens=int(_get(raw, "completion_tokens", 0) or 0),
        total_tokens=int(_get(raw, "total_tokens", 0) or 0),
        reasoning_tokens=int((_get(details, "reasoning_tokens", 0) if details is not None else 0) or 0),
        cached_tokens=int((_get(prompt_details, "cached_tokens", 0) if prompt_details is not None else 0) or 0),
    )


def _plain(value: Any) -> Any:
    # What the codec stores: dicts, lists and scalars (an SDK object nested in usage is dumped).
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return _plain(dump())
    return value


def usage_dict(u: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                           "total_tokens": u.total_tokens}
    extra = u.extra
    if extra is None:  # both details, zeros included, as OpenAI and DeepSeek send them
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
        out["prompt_tokens_details"] = {"cached_tokens": u.cached_tokens}
    else:  # as the upstream sent it (fresh containers: the caller may change them)
        out.update(extra)
        for name in u.containers:
            out[name] = out[name].copy()
    return out


def _copy(value: Any) -> Any:
    # Tool calls are nested dicts: a cached reply must share none of them with a caller,
    # who may parse ``arguments`` in place (on a miss's object as on a hit's).
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


def _tool_calls(raw: Any) -> tuple[dict[str, Any], ...] | None:
    if not raw:
        return None
    calls = []
    for call in raw:
        if not isinstance(call, Mapping):
            call = call.model_dump() if hasattr(call, "model_dump") else dict(call)
        calls.append({k: _copy(v) for k, v in call.items() if v is not None})
    return tuple(calls)


def reply_of_dict(data: Mapping[str, Any], native: str = "dict") -> Reply:
    """A Reply from an OpenAI-shaped completion (dict or object with the same attributes)."""
    choices = []
    for i, raw in enumerate(_get(data, "choices") or ()):
        message = _get(raw, "message") or {}
        choices.append(Choice(
            index=int(_get(raw, "index", i) or 0),
            content=_get(message, "content"),
            reasoning_content=_get(message, "reasoning_content"),
            finish_reason=_get(raw, "finish_reason"),
            role=_get(message, "role") or "assistant",
            tool_calls=_tool_calls(_get(message, "tool_calls")),
        ))
    return Reply(
        choices=tuple(choices),
        model=_get(data, "model") or "",
        id=_get(data, "id") or "",
        created=int(_get(data, "created", 0) or 0),
        usage=usage_of(_get(data, "usage")),
        system_fingerprint=_get(data, "system_fingerprint"),
        native=native,
    )


def dict_of_reply(reply: Reply) -> dict[str, Any]:
    """A fresh OpenAI-shaped ``chat.completion`` dict (callers may mutate it)."""
    choices = []
    for c in reply.choices:
        message: dict[str, Any] = {"role": c.role, "content": c.content}
        if c.reasoning_content is not None:
            message["reasoning_content"] = c.reasoning_content
        if c.tool_calls is not None:
            message["tool_calls"] = [_copy(t) for t in c.tool_calls]
        choices.append({"index": c.index, "message": message, "finish_reason": c.finish_reason, "logprobs": None})
    out: dict[str, Any] = {"id": reply.id, "object": "chat.completion", "created": reply.created,
                           "model": reply.model, "choices": choices}
    u = reply.usage
    if u is not None:  # usage_dict(u), inlined: this runs on every hit
        extra = u.extra
        if extra is None:
            out["usage"] = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                            "total_tokens": u.total_tokens,
                            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
                            "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}
        else:
            usage = out["usage"] = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                                    "total_tokens": u.total_tokens, **extra}
            for name in u.containers:
                usage[name] = usage[name].copy()
    if reply.system_fingerprint is not None:
        out["system_fingerprint"] = reply.system_fingerprint
    return out


# What the canonical dict builds from the reply's own fields, per level: a miss's shape may say
# only that such a key was absent, or present as null (never its value: a stage may have
# changed the reply, and the value is the reply's). Every other key is kept as the miss had it.
_TOP_FIELDS = frozenset({"choices", "id", "model", "created", "system_fingerprint"})
_CHOICE_FIELDS = frozenset({"message", "finish_reason", "index"})
_MESSAGE_FIELDS = frozenset({"role", "content", "reasoning_content", "tool_calls"})


def shape_of(data: Any, reply: Reply) -> dict[str, Any] | None:
    """How the plain dict ``data`` (a miss) differs from :func:`dict_of_reply` of its reply:
    ``{"top": [drop, put], "choices": [[drop, put, message drop, message put], ...]}``, or
    None when it does not. Computed once per miss (a few microseconds), so that a hit gives
    back the keys the miss had: none the upstream did not send (``logprobs``, ``object``), and
    those it sent beyond them (``service_tier``, ``refusal``, ``system_fingerprint`` as null)."""
    if not isinstance(data, Mapping):
        return None
    canonical = dict_of_reply(reply)
    shape: dict[str, Any] = {}
    top = _diff(data, canonical, _TOP_FIELDS)
    if top is not None:
        shape["top"] = top
    raw_choices = data.get("choices")
    if isinstance(raw_choices, (list, tuple)) and len(raw_choices) == len(canonical["choices"]):
        choices = []
        for raw, built in zip(raw_choices, canonical["choices"]):
            if not isinstance(raw, Mapping):
                return shape or None
            choice = _diff(raw, built, _CHOICE_FIELDS) or [[], {}]
            message = raw.get("message")
            inner = _diff(message, built["message"], _MESSAGE_FIELDS) if isinstance(message, Mapping) else None
            choices.append(choice + (inner or [[], {}]))
        if any(c != [[], {}, [], {}] for c in choices):
            shape["choices"] = choices
    return shape or None


def _diff(sent: Mapping[str, Any], built: Mapping[str, Any],
          fields: frozenset[str]) -> list[Any] | None:
    """[keys ``built`` has and ``sent`` lacks, {key: value} ``sent`` has beyond ``built``]."""
    drop = [k for k in built if k not in sent]
    put: dict[str, Any] = {}
    for k, v in sent.items():
        if k in built and type(built[k]) is type(v) and built[k] == v:
            continue
        if k in fields and (v is not None or k in built):
            continue  # its value is the reply's own (only a null the canonical form omits is shape)
        put[str(k)] = _plain(v)
    return [drop, put] if drop or put else None


def shaped_dict_of_reply(reply: Reply) -> dict[str, Any]:
    """:func:`dict_of_reply` with the keys of the miss it was stored from (see :func:`shape_of`)."""
    out = dict_of_reply(reply)
    if reply.shape is not None:
        reshape(out, reply)
    return out


# One step of a compiled shape: (choice index, or -1 for the top; in its message; keys to drop;
# (key, value, is a container) to put).
_Step = tuple[int, bool, tuple[str, ...], tuple[tuple[str, Any, bool], ...]]


def reshape(out: dict[str, Any], reply: Reply) -> None:
    """Give ``out`` (:func:`dict_of_reply` of ``reply``) the keys of the miss ``reply`` came from.
    Runs on every hit of such a reply: the shape is compiled once, into flat steps."""
    steps: tuple[_Step, ...] | None = reply.compiled_shape
    if steps is None:
        steps = _compile(reply.shape or {})
        object.__setattr__(reply, "compiled_shape", steps)  # a cache, as Usage.containers
    choices = out["choices"]
    for i, in_message, drop, put in steps:
        target = out if i < 0 else choices[i]["message"] if in_message else choices[i]
        for k in drop:
            target.pop(k, None)
        for k, v, container in put:
            target[k] = _copy(v) if container else v  # fresh containers: the caller may change them


def _compile(shape: Mapping[str, Any]) -> tuple[_Step, ...]:
    steps: list[_Step] = []

    def step(i: int, in_message: bool, drop: list[str], put: Mapping[str, Any]) -> None:
        if drop or put:
            steps.append((i, in_message, tuple(drop), tuple(
                (k, v, isinstance(v, (dict, list))) for k, v in put.items())))

    top = shape.get("top")
    if top is not None:
        step(-1, False, top[0], top[1])
    for i, (drop, put, message_drop, message_put) in enumerate(shape.get("choices", ())):
        step(i, False, drop, put)
        step(i, True, message_drop, message_put)
    return tuple(steps)


def delta_of_chunk(chunk: Any) -> tuple[list[Delta], Usage | None, dict[str, Any]]:
    """Normalize one ``chat.completion.chunk`` (dict or object)."""
    deltas = []
    for i, raw in enumerate(_get(chunk, "choices") or ()):
        d = _get(raw, "delta") or {}
        deltas.append(Delta(
            index=int(_get(raw, "index", i) or 0),
            content=_get(d, "content"),
            reasoning_content=_get(d, "reasoning_content"),
            role=_get(d, "role"),
            finish_reason=_get(raw, "finish_reason"),
            tool_calls=_tool_calls(_get(d, "tool_calls")),
        ))
    info = {"id": _get(chunk, "id"), "model": _get(chunk, "model"), "created": _get(chunk, "created"),
            "system_fingerprint": _get(chunk, "system_fingerprint")}
    return deltas, usage_of(_get(chunk, "usage")), info


PIECE = 48  # characters per replayed chunk: small enough to look like a live stream


def _pieces(text: str) -> Iterator[str]:
    for start in range(0, len(text), PIECE):
        yield text[start:start + PIECE]


def chunk_dicts(reply: Reply, *, include_usage: bool = False) -> Iterator[dict[str, Any]]:
    """Replay a Reply as ``chat.completion.chunk`` dicts: role, reasoning, content, finish.
    Concatenating the deltas gives back content and reasoning byte for byte.

    Usage rides on the last finish chunk, as DeepSeek sends it; with ``include_usage``
    (``stream_options={"include_usage": True}``) it comes instead in a final chunk with empty
    ``choices``, as the OpenAI API sends it."""
    head = {"id": reply.id, "object": "chat.completion.chunk", "created": reply.created, "model": reply.model}
    if reply.system_fingerprint is not None:
        head["system_fingerprint"] = reply.system_fingerprint

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    last = len(reply.choices) - 1
    for n, c in enumerate(reply.choices):
        if c.reasoning_content is None:
            yield chunk(c.index, {"role": c.role, "content": ""})
            if c.content:
                for piece in _pieces(c.content):
                    yield chunk(c.index, {"content": piece})
            if c.tool_calls:
                yield chunk(c.index, {"tool_calls": [{"index": n, **_copy(t)} for n, t in enumerate(c.tool_calls)]})
            final = chunk(c.index, {}, c.finish_reason)
        else:
            # As DeepSeek streams R1: every delta carries both content and reasoning_content
            # (one of them null), so a loop reading `delta.reasoning_content` on each chunk, as
            # DeepSeek's own example does, reads a replay as it reads a live stream.
            yield chunk(c.index, {"role": c.role, "content": "", "reasoning_content": ""})
            for piece in _pieces(c.reasoning_content):
                yield chunk(c.index, {"content": None, "reasoning_content": piece})
            if c.content:
                for piece in _pieces(c.content):
                    yield chunk(c.index, {"content": piece, "reasoning_content": None})
            if c.tool_calls:
                yield chunk(c.index, {"content": None, "reasoning_content": None, "tool_calls": [
                    {"index": n, **_copy(t)} for n, t in enumerate(c.tool_calls)]})
            final = chunk(c.index, {"content": "", "reasoning_content": None}, c.finish_reason)
        if n == last and not include_usage and reply.usage is not None:
            final["usage"] = usage_dict(reply.usage)
        yield final
    if include_usage and reply.usage is not None:
        yield {**head, "choices": [], "usage": usage_dict(reply.usage)}


def _text_only(chunk: dict[str, Any]) -> bool:
    choices = chunk["choices"]
    if not choices or choices[0]["finish_reason"] is not None:
        return False
    delta = choices[0]["delta"]
    if len(delta) == 2:  # an R1 reply's piece: both keys, one of them null
        return "content" in delta and "reasoning_content" in delta and (
            delta["content"] is None or delta["reasoning_content"] is None)
    return len(delta) == 1 and ("content" in delta or "reasoning_content" in delta)


def built_chunks(build: Callable[[dict[str, Any]], Any], chunks: Iterable[dict[str, Any]]) -> Iterator[Any]:
    """``build(chunk)`` for each chunk dict, in order; raises now if any cannot be built.

    What a chunk class can refuse sits in the chunks other than the text pieces (the role chunk
    carries the head every chunk repeats; then tool calls, finish reason, usage): those are
    built now, so a hit that cannot be rebuilt fails before the caller has read anything. The
    text pieces (about 4 us each) are built as they are read, not all before the first."""
    ready = [(c, False) if _text_only(c) else (build(c), True) for c in chunks]
    return (c if done else build(c) for c, done in ready)
