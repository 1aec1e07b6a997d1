"""LiteLLM-native switch-on: r1mw serves ``litellm.acompletion`` as LiteLLM's own cache.

::

    import r1mw.integrations.litellm as r1mw_litellm
    r1mw_litellm.enable("litellm_config.yaml")        # once, at start-up
    reply = await litellm.acompletion(model=..., messages=[...])   # call sites unchanged

Where it plugs in (LiteLLM 1.110): ``litellm.cache`` is a :class:`litellm.caching.Cache`
built with ``_backend=`` set to :class:`R1mwCacheBackend`, a LiteLLM ``BaseCache``. LiteLLM's
own client wrapper then asks that backend before every ``acompletion`` and hands it every
result, so every call site, ``from litellm import acompletion`` included, goes through r1mw
without being wrapped. LiteLLM keeps doing what it does on a hit (rebuilding a
``ModelResponse``, replaying it as a stream for ``stream=True``, logging ``cache_hit``); r1mw
decides what is a hit: the request runs through the r1mw pipeline (template, exact, semantic,
prefetch stages, tiers, single-flight), so ``pipe.stats()`` counts it.

How a miss is stored: LiteLLM's cache interface splits a call into a lookup and a later
write, while an r1mw pipeline wants the upstream call inside it. So the lookup starts the
request in the pipeline with an upstream that waits for the result; when the pipeline reaches
that upstream (a miss) the lookup answers "miss" and LiteLLM calls the provider. The result
comes back through the backend's write, or through a LiteLLM callback (:class:`_Outcomes`,
which also sees failures and ``no-store`` calls), and the waiting pipeline request stores it.
Identical calls arriving meanwhile wait in r1mw's single-flight and are answered from that
one provider call. If the provider fails or the call is cancelled, the waiters make their own
calls (LiteLLM treats a lookup error as a miss); if nothing is reported within
``pending_timeout`` seconds, the same. A stream LiteLLM reports nothing for when its caller
abandons it: r1mw watches the stream a streaming miss returns, and when it is closed
(``aclose()``, leaving ``async with``) or garbage collected before its end, the waiters make
their own calls at once.

LiteLLM traps handled: ``caching=False`` skips the lookup but LiteLLM still writes; r1mw
stores only results of calls it looked up, so ``caching=False`` really means no caching.
A ``cache={"no-cache": True}`` call is not looked up by LiteLLM; r1mw still stores its fresh
result, as r1mw's no-cache does. ``s-maxage`` is checked against the stored entry's age.
LiteLLM's ``max_messages`` default (4) would silently skip longer conversations: r1mw sets
None. Its cache-hit path imports ``fastapi``, ``orjson`` and ``soundfile``: the ``litellm``
extra of r1mw installs them. Only ``acompletion`` is served: the sync ``completion`` is not
cached while r1mw is LiteLLM's cache. ``litellm.Router`` calls are served when the Router has
``cache_responses=True`` (otherwise it passes ``caching=False``).

Configuration: a LiteLLM config YAML (the proxy's format) with ``litellm_settings.cache`` and
``cache_params``, plus an ``r1_optimizations`` block; :mod:`r1mw.integrations.litellm_config`
maps it onto r1mw's flags. Environment values are read as LiteLLM does:
``host: os.environ/REDIS_HOST``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, cast

from ..adapters import _PipelinePerLoop
from ..adapters.shapes import dict_of_reply, reply_of_dict
from ..errors import ConfigError, R1mwError
from ..keys import split_params
from ..pipeline import Pipeline
from ..types import CacheControl, Reply, Request
from .litellm_config import OPTIMIZATIONS, LiteLLMConfig, load_config, settings_from_config

if TYPE_CHECKING:
    from litellm.caching.base_cache import BaseCache

__all__ = [
    "LiteLLMConfig",
    "LiteLLMIntegration",
    "LiteLLMResultMissing",
    "OPTIMIZATIONS",
    "R1mwCacheBackend",
    "disable",
    "enable",
    "load_config",
    "settings_from_config",
]

log = logging.getLogger("r1mw.litellm")


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-map download at import
    try:
        import litellm
    except ImportError:
        raise ConfigError("the LiteLLM integration needs litellm: pip install 'r1mw[litellm]'") from None
    return litellm


class LiteLLMResultMissing(R1mwError):
    """LiteLLM reported neither a result nor a failure for a call r1mw was waiting on."""


# -- the backend LiteLLM calls --------------------------------------------------------------


class _Pending:
    """One looked-up miss whose result LiteLLM has yet to report."""

    __slots__ = ("asked", "result", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.asked: asyncio.Future[None] = loop.create_future()
        self.result: asyncio.Future[Any] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None

    def resolve(self, response: Any) -> None:
        if not self.result.done():
            self.result.set_result(response)
        self._stop()

    def fail(self, exc: BaseException) -> None:
        if not self.result.done():
            self.result.set_exception(exc)
            self.result.exception()  # retrieved: nobody may be waiting any more
        self._stop()

    def _stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _response_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping) and "response" in value and "timestamp" in value:
        value = value["response"]  # LiteLLM's stored form: {"timestamp", "response": json}
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if not isinstance(value, Mapping):
        raise TypeError(f"unexpected LiteLLM result of type {type(value).__name__}")
    return dict(value)


def _base_cache() -> type:
    from litellm.caching.base_cache import BaseCache

    return BaseCache


def _custom_logger() -> type:
    from litellm.integrations.custom_logger import CustomLogger

    return CustomLogger


class R1mwCacheBackend:
    """The ``BaseCache`` LiteLLM's ``Cache`` calls; instances are made by :func:`enable`
    (the class is rebuilt on LiteLLM's ``BaseCache`` there, so importing r1mw never imports
    litellm)."""

    def __init__(self, pipeline: Pipeline, *, pending_timeout: float = 600.0) -> None:
        self.pipeline = pipeline
        self.pending_timeout = pending_timeout
        self.default_ttl = int(pipeline.settings.default_ttl or 0)
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counts = {"lookups": 0, "served": 0, "misses": 0, "reported": 0, "failed": 0, "timeouts": 0,
                       "ignored_writes": 0, "lookup_errors": 0, "too_old": 0}
        litellm = _litellm()
        from litellm.litellm_core_utils.model_param_helper import ModelParamHelper
        from litellm.types.utils import is_litellm_owned_kwarg

        self._api_params = frozenset(ModelParamHelper.get_all_llm_api_params())
        self._owned = is_litellm_owned_kwarg
        self._litellm = litellm

    # -- request building --------------------------------------------------------------
    def _request(self, kwargs: Mapping[str, Any], pending: _Pending, fresh: bool = False) -> Request:
        control = kwargs.get("cache")
        control = {k: v for k, v in control.items() if k in _CONTROL_KEYS} if isinstance(control, Mapping) else {}
        if fresh:
            control["no-cache"] = True
        rest: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name in ("model", "messages", "cache", "stream", "cache_key", "preset_cache_key", "parent_otel_span"):
                continue
            if self._owned(name) and name not in self._api_params:
                continue  # LiteLLM's own plumbing (call id, logging object, mock_response, ...)
            rest[name] = value
        params, passthrough = split_params(rest)

        async def upstream(request: Request) -> Reply:
            if not pending.asked.done():
                pending.asked.set_result(None)
            return reply_of_dict(_response_dict(await pending.result), "litellm")

        # stream is LiteLLM's business: it replays a hit as a stream itself.
        return self.pipeline.request(str(kwargs["model"]), list(kwargs["messages"]), params, passthrough,
                                     control=CacheControl.from_mapping(control), upstream=upstream)

    # -- BaseCache ------------------------------------------------------------------------
    async def async_get_cache(self, key: str, **kwargs: Any) -> Any:
        call_id = kwargs.get("litellm_call_id")
        if not call_id or "messages" not in kwargs or "model" not in kwargs:
            return None
        self.counts["lookups"] += 1
        return await self._lookup(call_id, kwargs, fresh=False)

    async def _lookup(self, call_id: str, kwargs: Mapping[str, Any], fresh: bool) -> Any:
        pending = _Pending(asyncio.get_running_loop())
        try:
            request = self._request(kwargs, pending, fresh)
        except Exception as exc:  # a malformed cache= or messages: LiteLLM itself decides
            self.counts["lookup_errors"] += 1
            log.warning("r1mw could not read a LiteLLM call for lookup: %s", exc)
            return None
        self._pending[call_id] = pending
        task = asyncio.ensure_future(self.pipeline.handle(request))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait((task, pending.asked), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._abandon(call_id, pending, "the LiteLLM call was cancelled during its lookup")
            raise
        if pending.asked.done():  # a miss: LiteLLM calls the provider, the pipeline waits for it
            self.counts["misses"] += 1
            pending.timer = loop.call_later(self.pending_timeout, self._timed_out, call_id, pending)
            # A stream its caller abandons reports nothing either: watch the stream itself.
            streamed = bool(kwargs.get("stream")) and self._watch_stream(call_id, pending, kwargs)
            caller = asyncio.current_task()
            if caller is not None:
                # A cancelled call reports nothing to LiteLLM's callbacks (CancelledError is no
                # Exception): without this, identical calls would wait for pending_timeout.
                caller.add_done_callback(lambda t: self._caller_done(t, call_id, pending, streamed))
            return None
        self._pending.pop(call_id, None)
        if task.cancelled() or task.exception() is not None:
            return None  # e.g. the identical call we waited on failed: make our own call
        stored_at = self._stored_at(request)
        max_age = _max_age(kwargs)
        if max_age is not None and not fresh and stored_at is not None and time.time() - stored_at > max_age:
            # LiteLLM's s-maxage: too old for this caller. Fetch afresh through the pipeline
            # (no-cache: the fresh reply replaces the old one for everybody).
            self.counts["too_old"] += 1
            return await self._lookup(call_id, kwargs, fresh=True)
        self.counts["served"] += 1
        # A Reply: the request does not stream, and its upstream answers with one.
        return {"timestamp": stored_at or time.time(), "response": dict_of_reply(cast(Reply, task.result()))}

    def _stored_at(self, request: Request) -> float | None:
        # A hit below RAM was promoted, and a coalesced reply was just stored: both are in L1.
        store = self.pipeline.store
        entry = store.get_nowait(request.key) if store is not None and request.key is not None else None
        return entry.stored_at if entry is not None else None

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("r1mw request for a LiteLLM call ended with %r", task.exception())

    def _abandon(self, call_id: str, pending: _Pending, why: str) -> None:
        if self._pending.get(call_id) is pending:
            del self._pending[call_id]
        pending.fail(LiteLLMResultMissing(f"{why} (call {call_id})"))

    def _timed_out(self, call_id: str, pending: _Pending) -> None:
        self.counts["timeouts"] += 1
        self._abandon(call_id, pending, f"LiteLLM reported no result within {self.pending_timeout:g} s")

    def _caller_done(self, caller: asyncio.Task[Any], call_id: str, pending: _Pending, streamed: bool) -> None:
        if pending.result.done():
            return
        if caller.cancelled():
            self._abandon(call_id, pending, "the LiteLLM call was cancelled")
            return
        if streamed:
            return  # the stream it returned may be read by another task, for minutes: it is watched
        # Ended otherwise: LiteLLM's write or callback runs in a task of its own, soon; if it
        # does not come (an error no callback reported), give up shortly.
        self._grace(call_id, pending)

    def _grace(self, call_id: str, pending: _Pending) -> None:
        pending._stop()
        pending.timer = asyncio.get_running_loop().call_later(_GRACE, self._timed_out, call_id, pending)

    # -- the stream a looked-up streaming miss returns ----------------------------------
    def _watch_stream(self, call_id: str, pending: _Pending, kwargs: Mapping[str, Any]) -> bool:
        """Have the stream LiteLLM returns for this call watched (see :class:`_StreamWatch`).

        LiteLLM hands each streamed result to the call's own caching handler
        (``wrap_streaming_result_for_cache``) on its way to the caller; that handler is
        reachable from the logging object in the lookup's kwargs. False if this LiteLLM has
        no such hook: then only pending_timeout ends the wait for an abandoned stream."""
        handler = getattr(kwargs.get("litellm_logging_obj"), "llm_caching_handler", None)
        wrap = getattr(handler, "wrap_streaming_result_for_cache", None)
        if handler is None or not callable(wrap):
            return False

        def watched(*args: Any, **kw: Any) -> Any:
            result = wrap(*args, **kw)
            try:
                _StreamWatch(self, call_id, pending, result)
            except Exception as exc:  # never the caller's problem: the wait ends by timeout
                log.warning("r1mw could not watch a LiteLLM stream: %s", exc)
            return result

        try:
            handler.wrap_streaming_result_for_cache = watched  # this call's own handler only
        except (AttributeError, TypeError):
            return False
        return True

    def _stream_ended(self, call_id: str, pending: _Pending, at_its_end: bool) -> None:
        if pending.result.done():
            return
        if at_its_end:
            # LiteLLM closes a stream itself at its end, just after scheduling the report of
            # its result; the caller may also close it right after its last chunk, before the
            # end (then no report comes): wait a little, not pending_timeout.
            self._grace(call_id, pending)
        else:
            self._abandon(call_id, pending, "the LiteLLM stream was closed or dropped before its end")

    def report(self, call_id: Any, response: Any) -> None:
        """A result for a looked-up miss (from the cache write or the success callback)."""
        pending = self._pending.pop(call_id, None) if call_id else None
        if pending is None:
            return
        try:
            pending.resolve(_response_dict(response))
        except Exception as exc:
            pending.fail(exc)
            return
        self.counts["reported"] += 1

    def report_failure(self, call_id: Any, exc: BaseException | None) -> None:
        pending = self._pending.pop(call_id, None) if call_id else None
        if pending is not None:
            self.counts["failed"] += 1
            pending.fail(exc if isinstance(exc, BaseException) else R1mwError("the LiteLLM call failed"))

    async def async_set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        call_id = kwargs.get("litellm_call_id")
        if call_id in self._pending:
            self.report(call_id, value)
            return
        control = kwargs.get("cache")
        if (isinstance(control, Mapping) and control.get("no-cache") is True and kwargs.get("caching") is not False
                and "messages" in kwargs and "model" in kwargs):
            # LiteLLM skips the lookup of a no-cache call; r1mw's no-cache means "fresh, and
            # stored": run it through the pipeline with its result as the upstream.
            await self._store_fresh(kwargs, value)
            return
        # Not looked up by us (caching=False still writes, an embedding): r1mw stores only
        # what went through its pipeline.
        self.counts["ignored_writes"] += 1

    async def _store_fresh(self, kwargs: Mapping[str, Any], value: Any) -> None:
        pending = _Pending(asyncio.get_running_loop())
        try:
            pending.resolve(_response_dict(value))
            await self.pipeline.handle(self._request(kwargs, pending))
        except Exception as exc:
            self.counts["lookup_errors"] += 1
            log.warning("r1mw could not store a no-cache LiteLLM result: %s", exc)

    async def async_set_cache_pipeline(self, cache_list: Any, **kwargs: Any) -> None:
        self.counts["ignored_writes"] += 1  # embeddings: not served by r1mw

    async def batch_cache_write(self, key: str, value: Any, **kwargs: Any) -> None:
        await self.async_set_cache(key, value, **kwargs)

    def get_cache(self, key: str, **kwargs: Any) -> None:
        return None  # the sync completion() is not served (the pipeline is async)

    def set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        return None

    async def disconnect(self) -> None:
        await self.pipeline.close()

    async def test_connection(self) -> dict[str, Any]:
        return {"status": "success", "message": "r1mw pipeline", "error": None}

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "pending": len(self._pending)}


class _StreamWatch:
    """Tells the backend when a streaming miss's stream is closed (``aclose()``/``close()``,
    leaving ``async with``, LiteLLM's own close at the end) or garbage collected unclosed, so
    that identical calls waiting on it make their own call at once instead of waiting for
    pending_timeout. Holds the stream weakly: dropping it must free it."""

    __slots__ = ("backend", "call_id", "pending", "loop", "ref", "finalizer", "__weakref__")

    def __init__(self, backend: R1mwCacheBackend, call_id: str, pending: _Pending, stream: Any) -> None:
        aclose, close = getattr(type(stream), "aclose", None), getattr(type(stream), "close", None)
        if not callable(aclose):
            raise TypeError(f"{type(stream).__name__} has no aclose()")
        self.backend, self.call_id, self.pending = backend, call_id, pending
        self.loop = asyncio.get_running_loop()
        self.ref = weakref.ref(stream)
        watch = weakref.ref(self)  # the stream holds its hooks, the hooks hold no stream

        async def aclose_watched() -> Any:
            w = watch()
            if w is not None:
                w.closed()
            s = w.ref() if w is not None else None
            return None if s is None else await aclose(s)

        def close_watched() -> Any:
            w = watch()
            if w is not None:
                w.closed()
            s = w.ref() if w is not None else None
            return None if s is None or close is None else close(s)

        # Instance attributes: ``async with`` and LiteLLM's own end-of-stream call self.aclose().
        stream.aclose = aclose_watched
        stream.close = close_watched
        stream._r1mw_watch = self  # lives as long as the stream
        self.finalizer = weakref.finalize(stream, _stream_dropped, backend, call_id, pending, self.loop)

    def closed(self) -> None:
        self.finalizer.detach()
        stream = self.ref()
        # sent_last_chunk: LiteLLM's flag that the finish chunk has been handed out.
        at_its_end = bool(getattr(stream, "sent_last_chunk", False))
        self.backend._stream_ended(self.call_id, self.pending, at_its_end)


def _stream_dropped(backend: R1mwCacheBackend, call_id: str, pending: _Pending,
                    loop: asyncio.AbstractEventLoop) -> None:
    # Garbage collection runs anywhere (another thread, a closed loop): hand it to the loop.
    try:
        loop.call_soon_threadsafe(backend._stream_ended, call_id, pending, False)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


# Per-call control passed on to r1mw. LiteLLM's s-maxage is a lookup constraint (not r1mw's
# ttl alias): the backend checks it against the entry's age itself.
_CONTROL_KEYS = frozenset({"no-cache", "no-store", "ttl", "namespace"})


def _max_age(kwargs: Mapping[str, Any]) -> float | None:
    control = kwargs.get("cache")
    if not isinstance(control, Mapping):
        return None
    value = control.get("s-max-age", control.get("s-maxage"))
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
_GRACE = 5.0  # seconds a finished call's result may take to reach the cache


def _make_backend(pipeline: Pipeline, pending_timeout: float) -> R1mwCacheBackend:
    cls = type("R1mwLiteLLMBackend", (R1mwCacheBackend, _base_cache()), {})
    return cls(pipeline, pending_timeout=pending_timeout)


def _make_outcomes(backend: R1mwCacheBackend) -> Any:
    class _Outcomes(_custom_logger()):  # type: ignore[misc]
        """LiteLLM callback: results and failures of the calls r1mw is waiting on."""

        async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                          end_time: Any) -> None:
            if not kwargs.get("cache_hit"):
                backend.report(kwargs.get("litellm_call_id"), response_obj)

        async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                          end_time: Any) -> None:
            backend.report_failure(kwargs.get("litellm_call_id"), kwargs.get("exception"))

    return _Outcomes()


# -- switch on / off -------------------------------------------------------------------------


@dataclass(slots=True)
class LiteLLMIntegration:
    """r1mw installed as LiteLLM's cache: ``pipeline`` serves, ``cache`` is ``litellm.cache``.

    ``pipeline`` is the one given to :func:`enable`; else one made per event loop and closed
    when that loop ends (inside a loop it behaves as that loop's :class:`~r1mw.Pipeline`).
    """

    pipeline: Any
    backend: R1mwCacheBackend
    cache: Any
    outcomes: Any
    config: LiteLLMConfig
    previous_cache: Any

    def stats(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline.stats(), "litellm": self.backend.stats()}

    async def close(self) -> None:
        """Uninstall and close the pipeline."""
        disable()
        await self.pipeline.close()


_active: LiteLLMIntegration | None = None


def enable(config: str | os.PathLike[str] | Mapping[str, Any] | None = None, *,
           pipeline: Pipeline | None = None, pending_timeout: float = 600.0) -> LiteLLMIntegration | None:
    """Make r1mw LiteLLM's cache, from a LiteLLM config YAML (path or parsed mapping).

    With ``pipeline`` given, that pipeline serves and the config's r1mw mapping is not applied
    (its ``litellm_settings.cache`` still decides whether to switch on). Returns None when the
    config has ``cache: false``. Calling it again replaces the previous installation.
    Without ``pipeline``, each event loop gets a pipeline of its own on its first call, closed
    when the loop ends (``asyncio.run`` returning, a proxy shutting down): the last answers
    reach the disk tiers even if nobody calls :meth:`LiteLLMIntegration.close`.
    """
    global _active
    litellm = _litellm()
    data = load_config(config) if isinstance(config, (str, os.PathLike)) else dict(config or {})
    if config is None:
        data = {"litellm_settings": {"cache": True}}
    settings, parsed = settings_from_config(data, base=pipeline.settings if pipeline is not None else None)
    if not parsed.enabled:
        log.info("LiteLLM config has litellm_settings.cache false: r1mw not enabled")
        return None
    if _active is not None:
        disable()
    def configure(p: Pipeline) -> None:
        if parsed.max_context_expansion is not None:
            p.services["max_context_expansion"] = parsed.max_context_expansion

    pipe: Any
    if pipeline is not None:
        pipe = pipeline
        configure(pipe)
    else:
        # Nobody but us can close a pipeline made here, and a proxy or script rarely calls
        # close(): one per event loop, closed when its loop ends (write-behind written).
        pipe = _PipelinePerLoop(settings, setup=configure)
    backend = _make_backend(pipe, pending_timeout)
    from litellm.caching.caching import Cache, CacheMode

    # The backend's class derives from LiteLLM's BaseCache too (made at run time: _make_backend).
    cache = Cache(_backend=cast("BaseCache", backend), mode=CacheMode(parsed.mode), max_messages=None,
                  supported_call_types=["acompletion"])
    outcomes = _make_outcomes(backend)
    previous = litellm.cache
    litellm.cache = cache
    litellm.logging_callback_manager.add_litellm_callback(outcomes)
    _active = LiteLLMIntegration(pipe, backend, cache, outcomes, parsed, previous)
    return _active


def disable() -> None:
    """Give LiteLLM back the cache it had before :func:`enable` (the pipeline stays open)."""
    global _active
    active, _active = _active, None
    if active is None:
        return
    litellm = _litellm()
    if litellm.cache is active.cache:
        litellm.cache = active.previous_cache
    litellm.logging_callback_manager.remove_callback_from_all_lists(active.outcomes)
