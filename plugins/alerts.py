"""Built-in plugin r1mw.alerts: evaluates the R1MW_ALERT_* rules in the background and
logs each alert that fires or clears (other plugins receive them through ``r1mw_alert``).

The engine is published as ``pipeline.services["alerts"]`` (the metrics endpoint exports
``r1mw_alerts_firing`` from it). With no rule set, nothing runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

import r1mw
import r1mw.observe.alerts
from r1mw.observe.alerts import AlertEngine

log = logging.getLogger("r1mw.alerts")


async def _evaluate_forever(pipeline: r1mw.Pipeline, engine: AlertEngine, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            engine.tick(pipeline)
        except Exception:  # a broken rule or observer must not stop the others
            log.exception("r1mw: alert evaluation failed")


@r1mw.hookimpl
def r1mw_pipeline_started(pipeline: r1mw.Pipeline) -> None:
    engine = AlertEngine.from_settings(pipeline.settings)
    if engine is None:
        return
    pipeline.services["alerts"] = engine
    engine.observe(r1mw.observe.alerts.sample_pipeline(pipeline, engine.clock()))  # the window's base
    pipeline.spawn(_evaluate_forever(pipeline, engine, pipeline.settings.alert_interval_s), name="r1mw-alerts")


@r1mw.hookimpl
def r1mw_alert(pipeline: r1mw.Pipeline, alert: Mapping[str, Any]) -> None:
    if alert.get("state") == "firing":
        log.warning("r1mw alert FIRING: %s", alert.get("message"))
    else:
        log.warning("r1mw alert resolved: %s", alert.get("message"))
