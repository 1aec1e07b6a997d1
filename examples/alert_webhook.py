"""Example third-party plugin: post every r1mw alert (firing and resolved) to a webhook.

Use it from your own code, or by module path (copy this file next to your app, or put
``examples/`` on ``PYTHONPATH``)::

    R1MW_PLUGINS=alert_webhook  ALERT_WEBHOOK_URL=https://hooks.example/r1mw  python app.py

    # or
    plugin = AlertWebhook("https://hooks.example/r1mw")
    async with r1mw.Pipeline(settings, plugins=[plugin]) as pipe: ...

The body is the alert as JSON (name, state, value, threshold, message, at, window_s).
The hook is called on the event loop, so the POST runs in a worker thread (standard
library only: urllib); a webhook that is down is logged and never slows requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import urllib.request
from typing import Any, Mapping

import r1mw

log = logging.getLogger("r1mw.alert_webhook")


class AlertWebhook:
    """An r1mw plugin object: ``r1mw_alert`` posts the alert to ``url``."""

    def __init__(self, url: str, *, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> None:
        self.__name__ = f"alert-webhook:{url}"
        self.url = url
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.sent = 0
        self.failed = 0
        self._pending: set[Any] = set()
        # One worker: posts leave in the order the alerts fired (a "resolved" must never
        # overtake its "firing").
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="r1mw-webhook")

    def post(self, alert: Mapping[str, Any]) -> int:
        """POST one alert now (blocking); returns the HTTP status."""
        body = json.dumps(dict(alert), default=str).encode()
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (configured URL)
            return int(response.status)

    def _post_logged(self, alert: Mapping[str, Any]) -> None:
        try:
            self.post(alert)
            self.sent += 1
        except Exception as exc:  # the webhook being down must not break anything else
            self.failed += 1
            log.warning("alert webhook %s failed: %s", self.url, exc)

    @r1mw.hookimpl
    def r1mw_alert(self, pipeline: r1mw.Pipeline, alert: Mapping[str, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._post_logged(alert)
            return
        future = loop.run_in_executor(self._executor, self._post_logged, dict(alert))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the posts still in flight (tests, shutdown)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


# Loaded by module path (R1MW_PLUGINS=alert_webhook): configured from the environment.
_url = os.environ.get("ALERT_WEBHOOK_URL")
if _url:
    _plugin = AlertWebhook(_url)

    @r1mw.hookimpl
    def r1mw_alert(pipeline: r1mw.Pipeline, alert: Mapping[str, Any]) -> None:
        _plugin.r1mw_alert(pipeline, alert)
