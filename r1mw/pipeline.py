"""The Pipeline: builds the stage chain once from the plugin manager, runs requests through it.

::

    async with r1mw.Pipeline(r1mw.Settings.from_env()) as pipe:
        client = r1mw.wrap(AsyncOpenAI(), pipe)

Building happens once, at start: plugins are loaded, the selected tiers and stages are
constructed and linked into a plain chain of coroutines (stage 1 calls stage 2 ... calls the
upstream). No pluggy call, environment read or flag check happens per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import replace
from itertools import islice
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Sequence

from .errors import ConfigError, PipelineStateError, PluginError
from .events import EventBus
from .keys import NOT_REPLAYABLE, replayable
from .manager import build_plugin_manager, call_each, raise_as_plugin_error, registrations, select
from .protocols import Handler, Stage
from .settings import Settings
from .singleflight import SingleFlight
from .tiers import TieredStore
from .types import CacheControl, Reply, Request, StreamedReply

if TYPE_CHECKING:
    from .context import ContextCache

__all__ = ["Pipeline"]

log = logging.getLogger("r1mw")

_NO_CONTROL = CacheControl()
_clock = time.perf_counter
_LATENCY_WINDOW = 10_000  # recent latencies kept per outcome for stats() percentiles


async def _terminal(request: Request) -> Reply | StreamedReply:
    upstream = request.upstream
    if upstream is None:
        raise PipelineStateError("request has no upstream: build requests through r1mw.wrap()")
    return await upstream(request)


def _link(stage: Stage, call_next: Handler) -> Handler:
    handle = stage.handle

    # A plain function returning the stage's coroutine, not a coroutine of its own: one
    # coroutine per stage per request instead of two (about 0.15 us saved per stage).
    def step(request: Request) -> Awaitable[Reply | StreamedReply]:
        return handle(request, call_next)

    step.__qualname__ = f"stage:{stage.name}"
    return step


class Pipeline:
    """An ordered chain of stages over a tiered store, configured by :class:`Settings`.

    ``plugins`` are extra plugin objects or modules registered next to the entry points
    (handy in tests and for in-process plugins).
    """

    def __init__(self, settings: Settings | None = None, *, plugins: Iterable[Any] = ()) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self._namespace: str = self.settings.namespace
        self._scope_by_user: bool = self.settings.scope_by_user
        self._extra_plugins = tuple(plugins)
        self.pm: Any = None
        self.store: TieredStore | None = None
        self.stages: list[Stage] = []
        self.singleflight = SingleFlight(stall_timeout=self.settings.stream_stall_timeout_s)
        self.events = EventBus(None)
        self.services: dict[str, Any] = {}  # shared objects stages publish for each other
        self._chain: Handler | None = None
        self._registries: dict[str, dict[str, Callable[..., Any]]] = {}
        self._owners: dict[str, str] = {}  # "stages:exact" -> the plugin that registered it
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._closed = False
        self._start_error: BaseException | None = None
        self._closing: asyncio.Future[None] | None = None  # set while close() tears down
        self._torn_down = False
        self._loop_guard: asyncio.Task[None] | None = None  # see close_with_loop
        self._background: set[asyncio.Task[Any]] = set()
        self._counts: Counter[str] = Counter()
        self._hits_by: dict[tuple[str, str | None], int] = {}  # (source, tier) -> hits
        self._hit_latency: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._miss_latency: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._latency: dict[str, deque[float]] = {"hit": self._hit_latency, "miss": self._miss_latency}
        self._tokens_saved = 0
        self._since = time.time()
        self._context_cache: ContextCache | None = None  # made on first use of .context_cache

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> "Pipeline":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def start(self) -> None:
        """Build and start the stages (once). Raises PipelineStateError once closed."""
        if self._started and not self._closed:
            return
        # Concurrent first requests of a lazily started pipeline (r1mw.wrap(fn) without a
        # pipeline) must build it once: stage start() methods await.
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started and not self._closed:
                try:
                    await self._start()
                except BaseException as exc:
                    # Release what had started (tasks spawned, stages, tiers); the pipeline
                    # is unusable after a failed start, like a closed one.
                    self._start_error = exc
                    self._started = self._closed = True
                    self._chain = None
                    await self._teardown()
                    raise
        if self._closed:  # before, or while, this start ran: close() releases what it started
            raise self._closed_error()

    async def _start(self) -> None:
        s = self.settings
        logging.getLogger("r1mw").setLevel(s.log_level.upper())
        self.pm = build_plugin_manager(plugins=s.plugins, disable=s.disable_plugins, extra=self._extra_plugins)
        # The bus exists before tiers and stages are built: they may keep a reference to it.
        if self.pm.hook.r1mw_events.get_hookimpls():
            self.events = EventBus(lambda batch: self.notify("r1mw_events", events=batch))
        tiers = [self._make(n, f, "R1MW_TIERS")
                 for n, f in select(self.registry("tiers"), s.tiers, "R1MW_TIERS", s.disable_plugins)]
        self.store = TieredStore(tiers, self.build("codecs", s.codec, "R1MW_CODEC"))
        # A factory returns None when the stage's own switch is off (R1_CONTEXT_PREFETCH_ENABLED...).
        built = [(n, self._make(n, f, "R1MW_STAGES"))
                 for n, f in select(self.registry("stages"), s.stages, "R1MW_STAGES", s.disable_plugins)]
        names = [name for name, stage in built if stage is not None]
        self.stages = [stage for _, stage in built if stage is not None]
        for i, stage in enumerate(self.stages):
            start = getattr(stage, "start", None)
            if start is not None:
                try:
                    await start()
                except BaseException as exc:
                    self.stages = self.stages[:i]  # close() closes those that started
                    if isinstance(exc, Exception) and not isinstance(exc, ConfigError):
                        raise PluginError(self._fault("R1MW_STAGES", "stages", names[i], "failed to start", exc)) from exc
                    raise
        chain: Handler = _terminal
        for stage in reversed(self.stages):
            chain = _link(stage, chain)
        if not self._closed:  # closed during the start: no request may run on it
            self._chain = chain
        self.events.start()
        self._started = True
        call_each(self.pm.hook.r1mw_pipeline_started, raise_as_plugin_error("r1mw_pipeline_started()"), pipeline=self)

    async def close(self) -> None:
        """Refuse requests from now on, and release what the pipeline started: background
        tasks, stages, tiers (flushing the write-behind). A start in progress (a lazy first
        request) is waited for, then torn down; a pipeline never started is just closed."""
        if self._closed:
            if self._closing is not None:  # another close() is tearing down: return after it
                await asyncio.shield(self._closing)
            return
        self._closed = True
        self._chain = None  # requests after close are refused, not run on closed tiers
        self._closing = asyncio.get_running_loop().create_future()
        guard = self._loop_guard
        if guard is not None and guard is not asyncio.current_task():
            guard.cancel()  # closed by hand: the guard's own close() returns after this one
        try:
            if self._start_lock is not None:
                async with self._start_lock:  # a start in progress finishes first
                    pass
            if self._started:
                await self._teardown()
        finally:
            self._closing.set_result(None)

    async def _teardown(self) -> None:
        # Once: a start that fails while close() waits for it tears down before close() looks.
        if self._torn_down:
            return
        self._torn_down = True
        self._chain = None
        if self.pm is not None:
            self.notify("r1mw_pipeline_closing")
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.singleflight.close()
        if self._context_cache is not None:
            await self._context_cache.close()
        for stage in reversed(self.stages):
            close = getattr(stage, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("stage %s failed to close", stage.name)
        if self.store is not None:
            await self.store.close()
        await self.events.close()

    def close_with_loop(self) -> "asyncio.Task[None]":
        """Close this pipeline when the running event loop shuts down, for a pipeline nobody
        closes (the one ``r1mw.wrap(fn)`` makes): its write-behind would be lost otherwise.

        A guard task waits until cancelled, then awaits :meth:`close`: ``asyncio.run`` (and
        ``asyncio.Runner``) cancel the tasks left when the main coroutine returns and run the
        loop until they end, so the close runs while the loop is still up. A loop closed
        without cancelling its tasks never runs it. An explicit ``close()`` ends the guard.
        """
        loop = asyncio.get_running_loop()

        async def guard() -> None:
            try:
                await loop.create_future()  # never set: only the loop's shutdown ends this
            finally:
                await self.close()

        # Kept here: the loop holds tasks weakly, and a pending guard nobody refers to is collected.
        self._loop_guard = task = loop.create_task(guard(), name="r1mw-close-with-loop")
        return task

    async def wait_ready(self) -> None:
        """Return once lazily loaded parts (the embedder) are ready, starting their load."""
        for stage in self.stages:
            wait = getattr(stage, "wait_ready", None)
            if wait is not None:
                await wait()

    @property
    def context_cache(self) -> "ContextCache":
        """The :class:`~r1mw.ContextCache` over this pipeline's store (``@r1mw.cached`` uses it):
        ``await pipe.context_cache.get(key)`` / ``.set(key, value, ttl=...)`` / ``.delete(key)``."""
        if self._context_cache is None:
            from .context import ContextCache

            self._context_cache = ContextCache(self)
        return self._context_cache

    # -- plugin registries ---------------------------------------------------------------
    def registry(self, kind: str) -> dict[str, Callable[..., Any]]:
        """``{name: factory}`` of a registration hook (``stages``, ``tiers``, ``codecs``,
        ``embedders``), collected once."""
        found = self._registries.get(kind)
        if found is None:
            found, owners = registrations(self.pm, kind)
            self._registries[kind] = found
            self._owners.update((f"{kind}:{name}", plugin) for name, plugin in owners.items())
        return found

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call an observer or lifecycle hook (``r1mw_events``, ``r1mw_alert``, ...): each
        implementation on its own, so one that raises is logged, naming its plugin, and the
        others still get the call."""
        call_each(getattr(self.pm.hook, hook), lambda plugin, exc: log.error(
            "plugin %r: %s failed", plugin, hook, exc_info=exc), pipeline=self, **kwargs)

    def _fault(self, flag: str, kind: str, name: str, what: str, exc: BaseException) -> str:
        # One line: the flag, the component, the plugin that registered it, what went wrong.
        owner = self._owners.get(f"{kind}:{name}")
        by = f" (plugin {owner!r})" if owner else ""
        return f"{flag}: {name!r}{by} {what}: {type(exc).__name__}: {exc}".replace("\n", " ")

    def build(self, kind: str, name: str, flag: str) -> Any:
        """Build one registered component by name, e.g. ``build("codecs", "msgpack+lz4", "R1MW_CODEC")``."""
        (_, factory), = select(self.registry(kind), [name], flag)
        return self._make(name, factory, flag)

    def _make(self, name: str, factory: Callable[..., Any], flag: str) -> Any:
        # A plugin's factory failing is reported as that plugin's fault, in one line; its own
        # ConfigError (a flag it reads) already names the flag and passes through.
        try:
            return factory(self)
        except ConfigError:
            raise
        except Exception as exc:
            kind = next((k for k, found in self._registries.items() if found.get(name) is factory), "")
            raise PluginError(self._fault(flag, kind, name, "failed to build", exc)) from exc

    def stage(self, name: str) -> Stage | None:
        for stage in self.stages:
            if stage.name == name:
                return stage
        return None

    def spawn(self, coro: Any, name: str | None = None) -> asyncio.Task[Any]:
        """Run a background task owned by the pipeline (cancelled at close; after close,
        cancelled before it starts)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        if self._closed:  # e.g. the store of a stream that ended after close: never runs
            task.cancel()
            return task
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- the request path ----------------------------------------------------------------
    def request(self, model: str, messages: list[dict[str, Any]], params: dict[str, Any],
                passthrough: dict[str, Any], *, stream: bool = False, control: CacheControl | None = None,
                upstream: Any = None) -> Request:
        """Build a :class:`Request` with its namespace resolved (adapters call this)."""
        if control is None:
            control = _NO_CONTROL
        namespace = control.namespace
        if namespace is None:
            namespace = self._namespace
        user = passthrough.get("user") if passthrough else None
        if user and self._scope_by_user:
            namespace = f"{namespace}\x00user:{user}"
        # logprobs, audio, web search: a hit could not give them back (the set test first: 50 ns)
        if params and not NOT_REPLAYABLE.isdisjoint(params) and not replayable(params):
            control = replace(control, no_cache=True, no_store=True)
        # Positional: this runs on every request (the settings were read once, in __init__).
        return Request(model, messages, params, passthrough, stream, control, namespace, user, upstream)

    async def handle(self, request: Request) -> Reply | StreamedReply:
        """Run one request through the chain. Upstream errors propagate unchanged."""
        chain = self._chain
        if chain is None:
            await self.start()  # a lazy first request; PipelineStateError once closed
            chain = self._chain
            if chain is None:
                raise self._closed_error()
        try:
            reply = await chain(request)
        except asyncio.CancelledError:
            # The caller gave up (a timeout, a closed connection): not an upstream error, and
            # must not feed the error-rate alert.
            self._counts["cancelled"] += 1
            raise
        except BaseException:
            self._counts["errors"] += 1
            raise
        elapsed = _clock() - request.started
        source = request.source
        if source != "upstream":
            # One counter per (stage, tier): no per-request string is built (stats() names them).
            by_source = self._hits_by
            where = (source, request.tier)
            by_source[where] = by_source.get(where, 0) + 1
            self._hit_latency.append(elapsed)
            usage = reply.usage if isinstance(reply, Reply) else None
            if usage is not None:
                self._tokens_saved += usage.total_tokens
        elif request.coalesced:
            self._counts["coalesced"] += 1
            self._hit_latency.append(elapsed)
        else:
            self._counts["misses"] += 1
            self._miss_latency.append(elapsed)
        if self.events.enabled:
            self.events.emit("served", source=request.source, tier=request.tier, coalesced=request.coalesced,
                             latency=elapsed, model=request.model, namespace=request.namespace,
                             template=request.meta.get("template_id"), stream=request.stream)
        return reply

    def _closed_error(self) -> PipelineStateError:
        failed = self._start_error
        if failed is not None:  # a lazily started pipeline: say why, on every request
            err = PipelineStateError(f"the pipeline failed to start ({type(failed).__name__}: {failed}); "
                                     "build a new one")
            err.__cause__ = failed
            return err
        return PipelineStateError("the pipeline is closed")

    # -- stats -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """A plain dict: hits per stage and tier, misses, coalesced, errors (an exception
        reached the caller), cancelled (the caller cancelled), latency percentiles, tokens
        saved, stream stalls (waiters that gave up on a stream that stopped moving), and each
        stage's and tier's own figures.
        ``requests == hits + coalesced + misses + errors + cancelled``."""
        c = self._counts
        by_source: dict[str, int] = {}
        for (source, tier), n in list(self._hits_by.items()):
            name = f"{source}:{tier}" if tier else source
            by_source[name] = by_source.get(name, 0) + n
        hits, coalesced, misses = sum(by_source.values()), c["coalesced"], c["misses"]
        served = hits + coalesced + misses
        out: dict[str, Any] = {
            "requests": served + c["errors"] + c["cancelled"],
            "hits": hits,
            "coalesced": coalesced,
            "misses": misses,
            "errors": c["errors"],
            "cancelled": c["cancelled"],
            "hit_rate": (hits + coalesced) / served if served else 0.0,
            "hits_by": by_source,
            "latency_ms": {k: _percentiles(v) for k, v in self._latency.items()},
            "tokens_saved": self._tokens_saved,
            "uptime_s": time.time() - self._since,
            "ready": {s.name: bool(getattr(s, "ready", True)) for s in self.stages},
            "stages": {s.name: s.stats() for s in self.stages if hasattr(s, "stats")},
            "tiers": self.store.stats() if self.store is not None else {},
            "events": {"delivered": self.events.delivered, "dropped": self.events.dropped},
            # Waiters that stopped waiting on a stream that passed no chunk for the stall timeout.
            "stream_stalls": self.singleflight.stalled,
        }
        if self._context_cache is not None:
            out["context"] = self._context_cache.stats()
        return out

    def latency_counts(self) -> dict[str, int]:
        """``{"hit": n, "miss": n}``: how many latencies of each kind were ever recorded (hits
        include coalesced requests). With :meth:`recent_latencies`, a reader that remembers
        these counts can tell which of the kept latencies arrived since it last looked."""
        return {"hit": sum(self._hits_by.values()) + self._counts["coalesced"], "miss": self._counts["misses"]}

    def recent_latencies(self, kind: str, n: int) -> list[float]:
        """The newest ``n`` latencies (seconds) of ``kind`` (``hit`` or ``miss``), oldest first;
        fewer when fewer are kept (the last 10,000 of each, what stats() percentiles read)."""
        kept = self._latency[kind]
        n = min(n, len(kept))
        return list(islice(reversed(kept), n))[::-1] if n > 0 else []


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] * 1000.0

    return {"count": n, "p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1] * 1000.0}
