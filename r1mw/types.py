"""The project's own request and reply types. Stages see only these, never an SDK object.

* :class:`Request` is one chat-completion call, normalized by an adapter: model, messages,
  the parameters that change the answer (``params``), the ones that do not (``passthrough``),
  the per-request cache control and a mutable ``meta`` dict where stages leave annotations
  for the stages after them (template id and slots, semantic similarity, outcome).
* :class:`Reply` is a complete reply: choices with ``content`` and R1's ``reasoning_content``
  (``<think>`` blocks inside ``content`` are kept as they came), usage, finish reason.
  Replies are shared between hits: treat them as read-only.
* :class:`StreamedReply` is what a streaming miss returns through the stages: the upstream's
  own chunks flow to the caller untouched while the reply is assembled; stages that store
  use :meth:`StreamedReply.on_complete`, which fires only when the stream ended normally.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from .errors import StreamIncomplete

__all__ = [
    "COMPLETE_FINISH_REASONS",
    "CacheControl",
    "Choice",
    "Delta",
    "Reply",
    "Request",
    "StreamedReply",
    "Usage",
    "split_think",
]

log = logging.getLogger("r1mw")

_THINK = re.compile(r"<think>(.*?)</think>\s*", re.S)


def split_think(content: str | None) -> tuple[str | None, str | None]:
    """Split an open-weight R1 ``content`` into (reasoning, answer).

    >>> split_think("<think>2+2 is 4</think>\\nFour.")
    ('2+2 is 4', 'Four.')
    """
    if not content or "<think>" not in content:
        return None, content
    parts = _THINK.findall(content)
    if not parts:
        return None, content
    return "\n".join(p.strip() for p in parts), _THINK.sub("", content).strip()


@dataclass(frozen=True, slots=True)
class CacheControl:
    """Per-request cache control, LiteLLM's spelling: ``cache={"no-cache": True, ...}``.

    ``no_cache`` skips lookups (the reply is still stored unless ``no_store``);
    ``no_store`` skips storing; ``ttl`` in seconds overrides the default (``ttl <= 0``:
    not stored; ``inf``: no expiry); ``max_age`` (LiteLLM's ``s-maxage``) is the oldest
    stored reply, in seconds, this caller accepts (an older one is fetched afresh and
    replaced; it sets no lifetime);
    ``namespace`` is the tenant boundary; ``session`` names the analyst's session for prefetch.
    """

    no_cache: bool = False
    no_store: bool = False
    ttl: float | None = None
    namespace: str | None = None
    session: str | None = None
    max_age: float | None = None

    def too_old(self, stored_at: float) -> bool:
        """Whether an entry stored at ``stored_at`` is older than this caller accepts."""
        max_age = self.max_age
        return max_age is not None and (max_age <= 0 or time.time() - stored_at > max_age)

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any] | None) -> "CacheControl":
        if not value:
            return _NO_CONTROL
        if len(value) == 1 and type(value) is dict:
            # The desk's every request: cache={"session": ...}. One object per session (they
            # are frozen), instead of parsing and building one per request (1.3 us).
            session = value.get("session")
            if type(session) is str:
                found = _SESSION_ONLY.get(session)
                if found is None:
                    if len(_SESSION_ONLY) >= 4096:
                        _SESSION_ONLY.clear()
                    found = _SESSION_ONLY[session] = cls(session=session)
                return found
        if not isinstance(value, Mapping):
            raise _control_error(f"cache={value!r:.60}: expected a dict such as {{'no-cache': True, 'ttl': 600}}; "
                                 f"keys: {', '.join(sorted(_CONTROL_KEYS))}")
        unknown = set(value) - _CONTROL_KEYS
        if unknown:
            raise _control_error(
                f"cache= has unknown keys {sorted(unknown, key=str)}; allowed: {sorted(_CONTROL_KEYS)}"
            )
        return cls(
            no_cache=_flag(value, "no-cache", "no_cache"),
            no_store=_flag(value, "no-store", "no_store"),
            # ttl <= 0 means "do not store", never "keep forever"; inf = no expiry.
            ttl=_seconds(value.get("ttl"), "ttl", "<= 0: not stored, inf: no expiry"),
            # LiteLLM's s-maxage: a lookup constraint ("no older than"), not a lifetime.
            max_age=_seconds(value.get("s-maxage"), "s-maxage", "the oldest cached reply accepted"),
            namespace=None if value.get("namespace") is None else str(value["namespace"]),
            session=None if value.get("session") is None else str(value["session"]),
        )


def _flag(value: Mapping[str, Any], name: str, alias: str) -> bool:
    # bool("false") is True: a string here is a mistake to report, not to guess at.
    raw = value.get(name, value.get(alias, False))
    if raw is None or isinstance(raw, bool) or (isinstance(raw, int) and raw in (0, 1)):
        return bool(raw)
    raise _control_error(f"cache={{'{name}': {raw!r:.60}}}: expected True or False")


def _seconds(raw: Any, name: str, meaning: str) -> float | None:
    """A number of seconds from a ``cache=`` dict (None when absent); anything else, NaN
    included, is a CacheControlError naming the key."""
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = math.nan
    if seconds != seconds:
        raise _control_error(f"cache={{'{name}': {raw!r:.60}}}: expected a number of seconds ({meaning})")
    return seconds


def _control_error(message: str) -> Exception:
    from .errors import CacheControlError  # only on the error path

    return CacheControlError(message)


_CONTROL_KEYS = frozenset(
    {"no-cache", "no_cache", "no-store", "no_store", "ttl", "s-maxage", "namespace", "session"}
)
_NO_CONTROL = CacheControl()
_SESSION_ONLY: dict[str, CacheControl] = {}


@dataclass(slots=True)
class Request:
    """One chat-completion request, as the stages see it.

    ``params`` holds every answer-changing parameter (temperature, max_tokens, tools, ...:
    anything not known to be harmless is treated as answer-changing), ``passthrough`` the
    rest (``user``, timeouts, headers), which reaches the upstream but never the key.
    ``upstream`` is the terminal call the adapter supplied; stages never call it directly.
    """

    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    passthrough: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    control: CacheControl = _NO_CONTROL
    namespace: str = ""
    user: str | None = None
    upstream: Callable[["Request"], Awaitable["Reply | StreamedReply"]] | None = None
    # Annotations by stages, for the stages after them: "template_id", "slots",
    # "key_messages" (canonical messages for the key), "prefetch", "session", ...
    meta: dict[str, Any] = field(default_factory=dict)
    # Outcome, filled by whichever stage answered: "upstream", "exact", "semantic", ...
    source: str = "upstream"
    tier: str | None = None
    coalesced: bool = False
    started: float = field(default_factory=time.perf_counter)
    # The exact-match key, set by the exact stage (other stages read it after call_next).
    key: bytes | None = None

    @property
    def question(self) -> str:
        """Text of the last user message (what a semantic stage embeds)."""
        for message in reversed(self.messages):
            if _field(message, "role") == "user":
                return _text_of(_field(message, "content"))
        return ""

    @property
    def hit(self) -> bool:
        """True when no upstream call was made for this request."""
        return self.source != "upstream" or self.coalesced

    def upstream_kwargs(self) -> dict[str, Any]:
        """The kwargs the upstream receives: r1mw's own ``cache=`` control is already gone."""
        kwargs: dict[str, Any] = {"model": self.model, "messages": self.messages}
        kwargs.update(self.params)
        kwargs.update(self.passthrough)
        if self.stream:
            kwargs["stream"] = True
        return kwargs


def _field(message: Any, name: str) -> Any:
    # A message is a dict, or an SDK object: a tool-calling loop appends the reply's own
    # message (the OpenAI SDK's ChatCompletionMessage, LiteLLM's Message) to the history.
    if type(message) is dict or isinstance(message, Mapping):
        return message.get(name)
    return getattr(message, name, None)


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: keep the text parts
        return "\n".join(
            str(_field(part, "text") or "") for part in content if isinstance(part, Mapping) or hasattr(part, "text")
        )
    return str(content)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts. ``reasoning_tokens`` and ``cached_tokens`` are read from the usage
    details, for the stages.

    ``extra``: the rest of the usage exactly as the upstream sent it, given back on a hit:
    DeepSeek's ``prompt_cache_hit_tokens``/``prompt_cache_miss_tokens``, other providers' own
    counts, and the two details (``None`` when the upstream sent none: not zeros). None when
    there is nothing beyond the plain form (both details holding just those two counts),
    which is also how usage stored before ``extra`` existed reads back.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    extra: Mapping[str, Any] | None = None
    # The keys of extra holding a dict or a list: each hit gets copies (callers may change
    # them); found once here rather than on every hit.
    containers: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.extra:
            object.__setattr__(self, "containers", tuple(
                name for name, value in self.extra.items() if type(value) is dict or type(value) is list))


@dataclass(frozen=True, slots=True)
class Choice:
    index: int = 0
    content: str | None = None
    reasoning_content: str | None = None
    finish_reason: str | None = "stop"
    role: str = "assistant"
    tool_calls: tuple[dict[str, Any], ...] | None = None


# The finish reasons of a complete reply (the OpenAI API's own set, which the SDK's
# ChatCompletion accepts). Others exist: "error", DeepSeek's "insufficient_system_resource",
# vLLM's "abort", or none at all: a failed or cut-short reply, served but never stored.
COMPLETE_FINISH_REASONS: frozenset[str | None] = frozenset(
    {"stop", "length", "tool_calls", "content_filter", "function_call"})


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete reply. Shared between hits: never mutate one that came from a stage."""

    choices: tuple[Choice, ...]
    model: str = ""
    id: str = ""
    created: int = 0
    usage: Usage | None = None
    system_fingerprint: str | None = None
    # The native type the reply came in ("dict", "openai", "litellm"), for diagnostics. Never
    # used to choose the class a hit is rebuilt in (that is learned from live objects only).
    native: str = "dict"
    # How a plain dict miss differed from the canonical dict (keys it lacked, keys it had beyond
    # it): a dict hit gives back the miss's keys (see r1mw.adapters.shapes.shape_of). None: none.
    shape: Mapping[str, Any] | None = None
    # The adapters' compiled form of ``shape``, made on the first hit and kept: never stored.
    compiled_shape: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def content(self) -> str | None:
        return self.choices[0].content if self.choices else None

    @property
    def reasoning_content(self) -> str | None:
        return self.choices[0].reasoning_content if self.choices else None

    @property
    def reasoning(self) -> str | None:
        """The reasoning part, wherever the server put it (field or ``<think>`` block)."""
        if not self.choices:
            return None
        choice = self.choices[0]
        return choice.reasoning_content or split_think(choice.content)[0]

    @property
    def answer(self) -> str | None:
        """The answer part, without any ``<think>`` block."""
        return split_think(self.content)[1]

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None

    @property
    def storable(self) -> bool:
        """Whether this reply may be cached: it has choices, each ended for one of the
        reasons of a complete reply (:data:`COMPLETE_FINISH_REASONS`) and carries something
        (content, reasoning or tool calls). Anything else is an upstream fault dressed as a
        reply: ``error`` (HTTP 200 with an error body), DeepSeek's
        ``insufficient_system_resource`` or vLLM's ``abort`` (an answer cut short), or no
        finish reason at all (a complete reply cannot be told from a cut one). Caching it
        would turn a transient failure into a permanent answer. A reply cut by max_tokens
        (``length``) is storable: max_tokens is in the key."""
        if not self.choices:
            return False
        for c in self.choices:
            if c.finish_reason not in COMPLETE_FINISH_REASONS or not (c.content or c.reasoning_content or c.tool_calls):
                return False
        return True

    # -- the stored form: plain msgpack-able structure, versioned by field order ---------
    def to_wire(self) -> dict[str, Any]:
        u = self.usage
        wire: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "created": self.created,
            "fp": self.system_fingerprint,
            "native": self.native,
            # five counts, then extra only when there is one (entries without it still read)
            "usage": None
            if u is None
            else [u.prompt_tokens, u.completion_tokens, u.total_tokens, u.reasoning_tokens, u.cached_tokens]
            if u.extra is None
            else [u.prompt_tokens, u.completion_tokens, u.total_tokens, u.reasoning_tokens, u.cached_tokens,
                  u.extra],
            "choices": [
                [c.index, c.content, c.reasoning_content, c.finish_reason, c.role,
                 None if c.tool_calls is None else list(c.tool_calls)]
                for c in self.choices
            ],
        }
        if self.shape is not None:  # (entries without it still read, and older versions ignore it)
            wire["shape"] = self.shape
        return wire

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "Reply":
        u = data.get("usage")
        return cls(
            id=data["id"],
            model=data["model"],
            created=int(data["created"]),
            system_fingerprint=data.get("fp"),
            native=data.get("native", "dict"),
            shape=data.get("shape"),
            usage=None if u is None else Usage(*u),
            choices=tuple(
                Choice(c[0], c[1], c[2], c[3], c[4], None if c[5] is None else tuple(c[5]))
                for c in data["choices"]
            ),
        )


@dataclass(frozen=True, slots=True)
class Delta:
    """One streamed increment, normalized (what a replay is made of)."""

    index: int = 0
    content: str | None = None
    reasoning_content: str | None = None
    role: str | None = None
    finish_reason: str | None = None
    tool_calls: tuple[dict[str, Any], ...] | None = None


_Callback = Callable[[Reply], Any]


class StreamedReply:
    """A streaming miss in flight.

    ``chunks`` yields the upstream's own chunk objects (opaque to the stages) as they come;
    ``assemble(chunk)`` feeds each one into the reply being built (the adapter supplies
    the function that turns a native chunk into :class:`Delta` objects and usage).
    When the upstream iterator ends normally, the assembled :class:`Reply` resolves
    :meth:`result` and the ``on_complete`` callbacks run. An error, a cancellation, an early
    ``aclose()`` or a stream with no ``finish_reason`` resolves :meth:`result` with
    :class:`~r1mw.StreamIncomplete` and runs no callback: nothing half-done is stored.
    """

    __slots__ = ("_source", "_to_deltas", "_builder", "_callbacks", "_future", "_closer",
                 "_consumed", "_check", "_progress")

    def __init__(
        self,
        source: AsyncIterator[Any],
        to_deltas: Callable[[Any], tuple[list[Delta], Usage | None, Mapping[str, Any]]],
        *,
        closer: Callable[[], Awaitable[Any]] | None = None,
        native: str = "dict",
        check: Callable[[Reply], bool] | None = None,
    ) -> None:
        self._source = source
        self._to_deltas = to_deltas
        self._builder = _ReplyBuilder(native)
        self._callbacks: list[_Callback] = []
        self._future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._closer = closer
        self._consumed = False
        # False for an assembled reply the adapter could not give back on a hit (in the
        # client's own type): it is treated as incomplete, so it is never stored.
        self._check = check
        self._progress = time.monotonic()  # when the last chunk passed (or the stream began)

    @property
    def idle_s(self) -> float:
        """Seconds since the last chunk passed to the consumer (or since the stream began)."""
        return time.monotonic() - self._progress

    def on_complete(self, callback: _Callback) -> None:
        """Run ``callback(reply)`` once the stream has ended normally (never otherwise)."""
        if self._future.done() and not self._future.cancelled() and self._future.exception() is None:
            callback(self._future.result())
        else:
            self._callbacks.append(callback)

    async def result(self) -> Reply:
        """The assembled reply; raises StreamIncomplete if the stream did not end normally."""
        return await asyncio.shield(self._future)

    @property
    def done(self) -> bool:
        return self._future.done()

    def add_done_callback(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` when the stream has ended, normally or not."""
        self._future.add_done_callback(lambda _f: callback())

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._consumed:
            raise RuntimeError("a streamed reply can be iterated once")
        self._consumed = True
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        ended = False
        readable = True
        try:
            async for chunk in self._source:
                if readable:
                    try:
                        deltas, usage, info = self._to_deltas(chunk)
                        self._builder.add(deltas, usage, info)
                    except Exception:
                        # A chunk r1mw cannot normalize is the caller's all the same: the
                        # stream goes on untouched, only nothing is assembled or stored.
                        readable = False
                        log.warning("a streamed chunk could not be read; this reply is not stored",
                                    exc_info=True)
                self._progress = time.monotonic()
                yield chunk
            ended = readable
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            if ended:
                self._finish()
            else:
                self._fail(None)

    def _finish(self) -> None:
        if self._future.done():
            return
        reply = self._builder.build()
        if reply is None:  # no finish_reason: a truncated stream
            self._fail(None)
            return
        if self._check is not None and reply.storable and not self._check(reply):
            self._fail(None, "the streamed reply cannot be rebuilt in the client's type; nothing was stored")
            return
        self._future.set_result(reply)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(reply)

    def _fail(self, exc: BaseException | None,
              why: str = "the upstream stream did not end normally; nothing was stored") -> None:
        if self._future.done():
            return
        err = StreamIncomplete(why)
        if exc is not None:
            err.__cause__ = exc
        self._future.set_exception(err)
        self._future.exception()  # mark retrieved: nobody may be waiting
        self._callbacks.clear()

    def abandon(self) -> None:
        """The consumer is gone before the end: resolve as incomplete (nothing is stored)."""
        self._fail(None)

    async def aclose(self) -> None:
        """Stop early: nothing is stored, the upstream connection is released."""
        self._fail(None)
        if self._closer is not None:
            closed = self._closer()
            if inspect.isawaitable(closed):  # some streams close synchronously
                await closed


class _ReplyBuilder:
    __slots__ = ("native", "content", "reasoning", "finish", "roles", "tools", "usage", "info")

    def __init__(self, native: str) -> None:
        self.native = native
        self.content: dict[int, list[str]] = {}
        self.reasoning: dict[int, list[str]] = {}
        self.finish: dict[int, str] = {}
        self.roles: dict[int, str] = {}
        self.tools: dict[int, dict[int, dict[str, Any]]] = {}
        self.usage: Usage | None = None
        self.info: dict[str, Any] = {}

    def add(self, deltas: list[Delta], usage: Usage | None, info: Mapping[str, Any]) -> None:
        for d in deltas:
            i = d.index
            if d.content:
                self.content.setdefault(i, []).append(d.content)
            if d.reasoning_content:
                self.reasoning.setdefault(i, []).append(d.reasoning_content)
            if d.role:
                self.roles[i] = d.role
            if d.finish_reason:
                self.finish[i] = d.finish_reason
            if d.tool_calls:
                calls = self.tools.setdefault(i, {})
                for call in d.tool_calls:
                    # "function" unless a delta says otherwise: several OpenAI-compatible servers
                    # stream tool calls without a type, which the SDK's ChatCompletion requires.
                    slot = calls.setdefault(int(call.get("index", 0)),
                                            {"type": "function", "function": {"arguments": ""}})
                    for k in ("id", "type"):
                        if call.get(k):
                            slot[k] = call[k]
                    fn = call.get("function") or {}
                    if fn.get("name"):
                        slot["function"]["name"] = fn["name"]
                    if fn.get("arguments"):
                        slot["function"]["arguments"] += fn["arguments"]
        if usage is not None:
            self.usage = usage
        for k, v in info.items():
            if v is not None:
                self.info.setdefault(k, v)

    def build(self) -> Reply | None:
        indexes = sorted(set(self.content) | set(self.reasoning) | set(self.finish) | set(self.roles))
        if not indexes or any(i not in self.finish for i in indexes):
            return None
        choices = tuple(
            Choice(
                index=i,
                content="".join(self.content.get(i, ())) if i in self.content or i not in self.tools else None,
                reasoning_content="".join(self.reasoning[i]) if i in self.reasoning else None,
                finish_reason=self.finish[i],
                role=self.roles.get(i, "assistant"),
                tool_calls=tuple(c for _, c in sorted(self.tools[i].items())) if i in self.tools else None,
            )
            for i in indexes
        )
        return Reply(
            choices=choices,
            model=str(self.info.get("model", "")),
            id=str(self.info.get("id", "")),
            created=int(self.info.get("created", 0) or 0),
            usage=self.usage,
            system_fingerprint=self.info.get("system_fingerprint"),
            native=self.native,
        )
