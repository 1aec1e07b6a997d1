"""Built-in plugin r1mw.metrics: the ``metrics`` stage (outermost), its Prometheus endpoint,
periodic snapshots, and the ``r1mw top`` / ``r1mw report`` commands.

The stage records per request what the core's counters do not (latency histograms per
outcome, tokens and cost saved, per template and namespace); everything else (Prometheus
families, tier bytes, compression ratios, snapshots) is computed when read, off the
request path. See docs/metrics.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import r1mw
from r1mw import Request
from r1mw.observe.prices import PriceTable
from r1mw.observe.recorder import MetricsRecorder
from r1mw.observe.snapshots import SnapshotWriter

log = logging.getLogger("r1mw.metrics")


class MetricsStage:
    """Outermost stage: times the request and records its outcome (see r1mw.observe.recorder)."""

    name = "metrics"

    def __init__(self, pipeline: r1mw.Pipeline) -> None:
        s = pipeline.settings
        self.pipeline = pipeline
        self.recorder = MetricsRecorder(PriceTable(s.prices), top_n=s.metrics_top_n)
        pipeline.services["metrics"] = self.recorder
        self._record = self.recorder.record
        self._record_error = self.recorder.record_error
        self.server: Any = None
        self.snapshots = SnapshotWriter(s.metrics_snapshot, s.metrics_snapshot_max_bytes) if s.metrics_snapshot else None
        # Snapshot files are written in a thread of their own: an append, and the trim that
        # rewrites up to the whole budget (16 MiB), are blocking file I/O the event loop must
        # not wait on. One thread: the lines are written in the order they were taken.
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="r1mw-snapshots") if self.snapshots else None
        self.registry: Any = None
        if s.metrics_port:
            from r1mw.observe.prometheus import registry_for

            self.registry = registry_for(pipeline, self.recorder)  # fails now if prometheus_client is missing

    async def handle(self, request: Request, call_next: r1mw.Handler) -> Any:
        try:
            reply = await call_next(request)
        except Exception:
            self._record_error(request, time.perf_counter() - request.started)
            raise
        except BaseException:
            self._record_error(request, time.perf_counter() - request.started, True)
            raise
        self._record(request, reply, time.perf_counter() - request.started)
        return reply

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.pipeline.settings
        if self.registry is not None:
            from r1mw.observe.prometheus import exposition
            from r1mw.observe.server import MetricsServer

            registry = self.registry
            server = MetricsServer(lambda: exposition(registry), s.metrics_host, s.metrics_port)
            try:
                await server.start()
            except OSError as exc:
                raise r1mw.ConfigError(f"R1MW_METRICS_PORT={s.metrics_port} is invalid: cannot listen on "
                                       f"{s.metrics_host}:{s.metrics_port} ({exc.strerror or exc}); "
                                       "expected a free port or 0 (off)") from exc
            self.server = server
        if self.snapshots is not None:
            self.pipeline.spawn(self._snapshot_forever(s.metrics_snapshot_interval_s), name="r1mw-metrics-snapshots")

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self._writes is not None:
            try:
                await self.write_snapshot()  # the last figures are not lost at shutdown
            finally:
                self._writes.shutdown(wait=False)  # what is queued still runs; nothing new comes

    async def _snapshot_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.write_snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The recorder's figures plus tier state and firing alerts, JSON-able."""
        snap = self.recorder.snapshot()
        store = self.pipeline.store
        tiers = store.stats() if store is not None else {}
        snap["tiers"] = {name: {k: v for k, v in stats.items() if isinstance(v, (int, float, bool, str))}
                         for name, stats in tiers.items() if isinstance(stats, dict)}
        engine = self.pipeline.services.get("alerts")
        snap["alerts_firing"] = engine.firing if engine is not None else []
        return snap

    async def write_snapshot(self) -> None:
        """Take a snapshot now and return once the snapshot thread has appended it."""
        if self.snapshots is None or self._writes is None:
            return
        # Taken here, on the loop (the recorder is only touched from it), and queued in the same
        # step: no await in between, so the queue holds the snapshots in the order they were taken.
        done = self._writes.submit(self._append, self.snapshot())
        # Shielded: a cancelled caller (the periodic task, at close) must not drop a queued line.
        await asyncio.shield(asyncio.wrap_future(done))

    def _append(self, snapshot: dict[str, Any]) -> None:  # in the snapshot thread
        assert self.snapshots is not None
        try:
            self.snapshots.append(snapshot)
        except OSError as exc:  # a full disk must not take the pipeline down
            log.warning("r1mw: cannot write metrics snapshot to %s: %s", self.snapshots.path, exc)

    @property
    def url(self) -> str | None:
        return self.server.url if self.server is not None else None

    def stats(self) -> dict[str, Any]:
        return {"outcomes": self.recorder.by_outcome(), "savings": self.recorder.savings(),
                "endpoint": self.url, "snapshots_written": self.snapshots.written if self.snapshots else 0}


@r1mw.hookimpl
def r1mw_register_stages() -> dict[str, Callable[[r1mw.Pipeline], r1mw.Stage | None]]:
    return {"metrics": MetricsStage}


@r1mw.hookimpl
def r1mw_pipeline_started(pipeline: r1mw.Pipeline) -> None:
    s = pipeline.settings
    if (s.metrics_port or s.metrics_snapshot) and pipeline.stage("metrics") is None:
        log.warning("r1mw: R1MW_METRICS_PORT / R1MW_METRICS_SNAPSHOT need the `metrics` stage in R1MW_STAGES; "
                    "nothing is served")


@r1mw.hookimpl
def r1mw_add_cli_commands(subparsers: argparse._SubParsersAction) -> None:
    from r1mw.observe import report, top

    top.add_parser(subparsers)
    report.add_parser(subparsers)
