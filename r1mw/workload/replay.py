"""Replay a workload through a pipeline and measure what the caller sees.

One :func:`replay` builds a :class:`~r1mw.Pipeline` with the given stages and tiers (plus a
probe stage, outermost, that records how each request was served), runs the workload's
sessions with several analysts at once (each session in order, the analyst reading each
answer for its think time, scaled by ``speed``), then a short burst of the same requests
from many clients for throughput. It returns a :class:`RunResult` with the figures.

Latency at R1 speed: the simulated upstream sleeps ``speed`` times its real latency. For
each request, the time it spent waiting on an upstream call (its own, a coalesced one or a
prefetch in flight) is known from the call's start and end, and counts as the same share
of the call's R1 latency (the simulator's, before ``speed``); time spent in r1mw is kept as
measured. Prefetch budgets per minute and per hour
hold in simulated time too (unless the run's settings name them).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

from ..adapters import wrap
from ..hookspecs import hookimpl
from ..manager import build_plugin_manager, registrations
from ..pipeline import Pipeline
from ..settings import Settings
from ..types import Reply, Request
from .generator import MODEL, Item, Workload
from .simulator import SimulatedR1, served_question_id

__all__ = ["DEFAULT_PRICES", "Outcome", "RunConfig", "RunResult", "available", "percentile", "replay"]

# USD per million tokens, deepseek-reasoner list prices (input on a cache miss, output).
DEFAULT_PRICES = (0.55, 2.19)

_CURRENT: contextvars.ContextVar["Outcome | None"] = contextvars.ContextVar("r1mw_replay_outcome", default=None)


@dataclass(slots=True)
class Outcome:
    """What happened to one request."""

    index: int
    question_id: str
    kind: str
    stream: bool = False
    source: str = "upstream"
    tier: str | None = None
    coalesced: bool = False
    latency_s: float = 0.0
    r1_latency_s: float = 0.0     # projected to R1 speed
    served_id: str | None = None  # the question the reply answers (None: unknown)
    reply_id: str = ""
    tokens: tuple[int, int] = (0, 0)  # (prompt, completion) of the reply received
    error: str | None = None

    @property
    def hit(self) -> bool:
        return self.error is None and (self.source != "upstream" or self.coalesced)

    @property
    def wrong(self) -> bool:
        """The reply answers another question, however it was served: a miss can be wrong
        too (a stage that rewrites what goes upstream), and a hit the probe did not see as
        one would otherwise escape the judge."""
        return self.error is None and self.served_id is not None and self.served_id != self.question_id

    @property
    def false_hit(self) -> bool:
        return self.hit and self.wrong


class _Probe:
    """Outermost stage: copies how the request was served into the caller's Outcome."""

    name = "probe"

    async def handle(self, request: Request, call_next: Any) -> Any:
        reply = await call_next(request)
        out = _CURRENT.get()
        if out is not None:
            out.source, out.tier, out.coalesced = request.source, request.tier, request.coalesced
        return reply


class _ProbePlugin:
    name = "r1mw-replay-probe"

    @hookimpl
    def r1mw_register_stages(self) -> dict[str, Any]:
        return {"probe": lambda pipeline: _Probe()}


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One configuration to replay: a name, the stages and tiers, extra plugins."""

    name: str
    stages: tuple[str, ...]
    tiers: tuple[str, ...]
    plugins: tuple[Any, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)


def _simulated_time_budgets(speed: float) -> dict[str, int]:
    """Prefetch budgets per minute and per hour, held in the simulated desk's time: at
    ``speed`` a minute of the day lasts ``60 * speed`` seconds, so the same rate allows
    ``1 / speed`` times the calls per wall-clock minute."""
    defaults = Settings()
    return {"prefetch_max_per_minute": math.ceil(defaults.prefetch_max_per_minute / speed),
            "prefetch_token_budget": math.ceil(defaults.prefetch_token_budget / speed)}


def available(plugins: Iterable[Any] = ()) -> tuple[set[str], set[str]]:
    """Names of the stages and tiers the installed plugins (and ``plugins``) register."""
    s = Settings()
    pm = build_plugin_manager(plugins=s.plugins, disable=s.disable_plugins, extra=plugins)
    return set(registrations(pm, "stages")[0]), set(registrations(pm, "tiers")[0])


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(slots=True)
class RunResult:
    config: RunConfig
    outcomes: list[Outcome]
    wall_s: float
    upstream: dict[str, int]
    stats: dict[str, Any]
    speed: float
    burst: dict[str, float]
    prices: tuple[float, float] = DEFAULT_PRICES

    def figures(self) -> dict[str, Any]:
        """The demo's figures as a plain dict (what ``--json`` writes)."""
        done = [o for o in self.outcomes if o.error is None]
        hits = [o for o in done if o.hit]
        false = [o for o in hits if o.false_hit]
        wrong_misses = [o for o in done if o.wrong and not o.hit]
        ms = 1000.0
        # Cache hits: served from a tier; a coalesced request waited on a call in flight.
        hit_lat = [o.latency_s for o in hits if not o.coalesced]
        all_r1 = [o.r1_latency_s for o in done]
        stored_tier, stored = _stored_bytes(self.stats.get("tiers", {}))
        raw = self.upstream.get("raw_bytes", 0)
        cost = (self.upstream.get("prompt_tokens", 0) * self.prices[0]
                + self.upstream.get("completion_tokens", 0) * self.prices[1]) / 1e6
        return {
            "name": self.config.name,
            "stages": [s for s in self.config.stages if s != "probe"],
            "tiers": list(self.config.tiers),
            "settings": {k: str(v) for k, v in self.config.settings.items()},
            "requests": len(self.outcomes),
            "errors": len(self.outcomes) - len(done),
            "hits": len(hits),
            "coalesced": sum(o.coalesced for o in hits),
            "hit_rate": len(hits) / len(done) if done else 0.0,
            "hits_by": dict(Counter(f"{o.source}:{o.tier}" if o.tier else
                                    ("coalesced" if o.coalesced and o.source == "upstream" else o.source)
                                    for o in hits)),
            "false_hits": len(false),
            "false_hit_examples": [{"asked": o.question_id, "served": o.served_id, "source": o.source}
                                   for o in false[:5]],
            "wrong_misses": len(wrong_misses),
            "wrong_miss_examples": [{"asked": o.question_id, "served": o.served_id} for o in wrong_misses[:5]],
            "unverified_hits": sum(1 for o in hits if o.served_id is None),
            "hit_ms": {"p50": _scaled(percentile(hit_lat, 0.5), ms), "p99": _scaled(percentile(hit_lat, 0.99), ms)},
            "all_ms_r1": {"p50": _scaled(percentile(all_r1, 0.5), ms), "p99": _scaled(percentile(all_r1, 0.99), ms),
                          "mean": _scaled(sum(all_r1) / len(all_r1) if all_r1 else None, ms)},
            "all_ms_measured": {"p50": _scaled(percentile([o.latency_s for o in done], 0.5), ms),
                                "p99": _scaled(percentile([o.latency_s for o in done], 0.99), ms)},
            "upstream_calls": self.upstream.get("calls", 0),
            "upstream_errors": self.upstream.get("errors", 0),
            "tokens_billed": self.upstream.get("prompt_tokens", 0) + self.upstream.get("completion_tokens", 0),
            "cost_usd": cost,
            "raw_bytes": raw,
            "stored_bytes": stored,
            "stored_tier": stored_tier,
            "stored_vs_raw": stored / raw if raw and stored is not None else None,
            "wall_s": self.wall_s,
            "replay_rps": len(self.outcomes) / self.wall_s if self.wall_s else 0.0,
            "burst": self.burst,
            "speed": self.speed,
        }


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _stored_bytes(tiers: Mapping[str, Any]) -> tuple[str | None, int | None]:
    # The lowest tier holds every entry (write-through): its bytes are what the cache costs.
    found: tuple[str | None, int | None] = (None, None)
    for name, stats in tiers.items():
        if isinstance(stats, Mapping) and isinstance(stats.get("bytes"), int):
            found = (name, int(stats["bytes"]))
    return found


# -- the replay ---------------------------------------------------------------------------------


Caller = Callable[..., Awaitable[Any]]


async def replay(workload: Workload, config: RunConfig, *, cache_dir: str | os.PathLike[str],
                 speed: float = 0.001, concurrency: int = 8, think_scale: float = 1.0,
                 stream_share: float = 0.0, error_rate: float = 0.0, seed: int = 0,
                 upstream: Any = None, model: str = MODEL, burst_clients: int = 64,
                 burst_requests: int = 0, prices: tuple[float, float] = DEFAULT_PRICES,
                 in_order: bool = False, on_done: Callable[[Outcome], None] | None = None) -> RunResult:
    """Replay ``workload`` through a pipeline configured by ``config``.

    ``upstream`` is an ``AsyncOpenAI``-compatible client for a real endpoint; without it a
    :class:`SimulatedR1` at ``speed`` answers. ``on_done`` is called after each request
    (progress bars). ``in_order`` sends every request in the workload's time order from one
    client (for side-by-side runs with other caches).
    """
    sim = SimulatedR1(speed=speed, seed=seed, error_rate=error_rate) if upstream is None else None
    given = dict(config.settings)
    if sim is not None and speed > 0:
        given = {**_simulated_time_budgets(speed), **given}
    settings = Settings(**{**given, "stages": ("probe", *config.stages),
                           "tiers": config.tiers, "cache_dir": str(cache_dir)})
    origin: dict[str, str] = {}   # reply id -> question id it was made for (real upstreams)
    outcomes: list[Outcome] = []
    async with Pipeline(settings, plugins=(_ProbePlugin(), *config.plugins)) as pipe:
        await pipe.wait_ready()
        if sim is not None:
            llm = wrap(sim, pipe, returns=dict)
            call: Caller = llm
        else:
            client = wrap(upstream, pipe)
            call = client.chat.completions.create
        stream_every = round(1 / stream_share) if stream_share > 0 else 0

        async def one(item: Item, session: bool = True) -> Outcome:
            stream = bool(stream_every) and item.index % stream_every == 0
            out = Outcome(item.index, item.question_id, item.kind, stream=stream)
            kwargs = item.kwargs(model)
            if not session:  # anonymous clients: nothing to learn a session from
                kwargs.pop("cache", None)
                kwargs.pop("user", None)
            if stream:
                kwargs["stream"] = True
                kwargs["stream_options"] = {"include_usage": True}
            token = _CURRENT.set(out)
            t0 = time.perf_counter()
            try:
                result = await call(**kwargs)
                content, out.reply_id, out.tokens = (await _drain(result)) if stream else _parts(result)
            except Exception as exc:  # upstream errors reach the caller: count them
                out.error = type(exc).__name__
                content = None
            finally:
                _CURRENT.reset(token)
            t1 = time.perf_counter()
            out.latency_s = t1 - t0
            out.r1_latency_s = out.latency_s
            if out.error is None:
                if sim is not None:
                    out.served_id = served_question_id(content or "")
                    c = sim.by_id.get(out.reply_id)
                    if c is not None and speed > 0:
                        waited = max(0.0, min(c.ended, t1) - max(c.started, t0))
                        out.r1_latency_s = out.latency_s - waited + _r1_wait(waited, c)
                else:
                    if not out.hit:
                        origin[out.reply_id] = item.question_id
                    out.served_id = origin.get(out.reply_id)
            return out

        sessions = [workload.items] if in_order else workload.sessions()
        if in_order:
            concurrency = 1
        queue: asyncio.Queue[list[Item]] = asyncio.Queue()
        for s in sessions:
            queue.put_nowait(s)

        async def analyst() -> None:
            while not queue.empty():
                for item in queue.get_nowait():
                    out = await one(item)
                    outcomes.append(out)
                    if on_done is not None:
                        on_done(out)
                    if think_scale and speed:
                        await asyncio.sleep(item.think_s * speed * think_scale)

        t0 = time.perf_counter()
        await asyncio.gather(*(analyst() for _ in range(max(1, concurrency))))
        wall = time.perf_counter() - t0
        stats = pipe.stats()
        if sim is not None:
            upstream_totals = sim.totals()
        else:  # a real endpoint: what the misses were billed (prefetch spend is not seen here)
            misses = [o for o in outcomes if o.error is None and not o.hit]
            upstream_totals = {"calls": len(misses) + sum(1 for o in outcomes if o.error),
                               "errors": sum(1 for o in outcomes if o.error),
                               "prompt_tokens": sum(o.tokens[0] for o in misses),
                               "completion_tokens": sum(o.tokens[1] for o in misses)}
        burst = await _burst(one, workload.items, burst_clients, burst_requests) if burst_requests else {}
    outcomes.sort(key=lambda o: o.index)
    return RunResult(config, outcomes, wall, upstream_totals, stats, speed, burst, prices)


def _r1_wait(waited: float, call: Any) -> float:
    """``waited`` seconds spent waiting on ``call``, at R1 speed: the same share of the call's
    R1 latency. Not ``waited / speed``: the measured call also holds the event loop's delays
    (a sleep's overshoot, other tasks, a stream's consumer), which 1/speed would blow up into
    seconds of R1 time (+5 % on a plain miss, +50 % on a streamed one at speed 0.0005)."""
    span = call.ended - call.started
    return call.real_s * min(1.0, waited / span) if span > 0 else 0.0


async def _burst(one: Callable[..., Awaitable[Outcome]], items: Sequence[Item], clients: int,
                 count: int) -> dict[str, float]:
    """The workload's requests again, from ``clients`` clients with no think time:
    requests per second, measured and at R1 speed (Little's law on projected latencies)."""
    todo = list(items[:count])
    it = iter(todo)
    done: list[Outcome] = []

    async def client() -> None:
        for item in it:
            done.append(await one(item, session=False))

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    ok = [o for o in done if o.error is None]
    # At R1 speed the waits on the upstream would be 1/speed longer: spread over the clients,
    # that extra time adds to the wall time (time in r1mw is CPU-bound and stays as measured).
    extra = sum(o.r1_latency_s - o.latency_s for o in ok)
    wall_r1 = wall + extra / clients
    return {"clients": clients, "requests": len(done), "wall_s": wall, "wall_s_r1": wall_r1,
            "rps": len(done) / wall if wall else 0.0,
            "rps_r1": len(ok) / wall_r1 if wall_r1 else 0.0,
            "hit_rate": sum(o.hit for o in ok) / len(ok) if ok else 0.0}


def _tokens(usage: Any) -> tuple[int, int]:
    if usage is None:
        return (0, 0)
    if not isinstance(usage, Mapping):
        usage = {"prompt_tokens": getattr(usage, "prompt_tokens", 0),
                 "completion_tokens": getattr(usage, "completion_tokens", 0)}
    return int(usage.get("prompt_tokens", 0) or 0), int(usage.get("completion_tokens", 0) or 0)


def _parts(result: Any) -> tuple[str | None, str, tuple[int, int]]:
    if isinstance(result, Mapping):
        choices = result.get("choices") or [{}]
        return ((choices[0].get("message") or {}).get("content"), str(result.get("id", "")),
                _tokens(result.get("usage")))
    if isinstance(result, Reply):
        return result.content, result.id, _tokens(result.usage)
    message = result.choices[0].message
    return message.content, str(getattr(result, "id", "")), _tokens(getattr(result, "usage", None))


async def _drain(stream: Any) -> tuple[str, str, tuple[int, int]]:
    parts: list[str] = []
    reply_id = ""
    tokens = (0, 0)
    async for chunk in stream:
        data = chunk if isinstance(chunk, Mapping) else chunk.model_dump()
        reply_id = reply_id or str(data.get("id") or "")
        for choice in data.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                parts.append(piece)
        usage = data.get("usage")
        if usage:
            tokens = _tokens(usage)
    return "".join(parts), reply_id, tokens
