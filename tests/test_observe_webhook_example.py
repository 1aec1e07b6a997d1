"""The example plugin examples/alert_webhook.py posts alerts to a (local) webhook."""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

import r1mw
from r1mw.observe.alerts import AlertEngine
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "alert_webhook.py"


def load_example():
    spec = importlib.util.spec_from_file_location("alert_webhook_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's spelling)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "type": self.headers["Content-Type"], "alert": json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/r1mw", received
    server.shutdown()
    server.server_close()


async def test_example_plugin_posts_firing_and_resolved_alerts(webhook):
    url, received = webhook
    plugin = load_example().AlertWebhook(url)
    settings = r1mw.Settings(stages="metrics,exact", alert_hit_rate_below=0.5, alert_min_requests=4,
                             alert_window_s=10)
    async with r1mw.Pipeline(settings, plugins=[plugin]) as pipe:
        llm = r1mw.wrap(FakeR1(), pipe)
        now = [0.0]
        engine = AlertEngine.from_settings(pipe.settings, clock=lambda: now[0])
        engine.tick(pipe)
        for i in range(4):
            await llm(model="m", messages=[{"role": "user", "content": f"q{i}"}])
        now[0] = 1.0
        engine.tick(pipe)  # 0 % hits: firing
        for _ in range(3):
            for i in range(4):
                await llm(model="m", messages=[{"role": "user", "content": f"q{i}"}])
        now[0] = 20.0
        engine.tick(pipe)  # window holds the 12 hits only: resolved
        await plugin.drain()
    assert [r["alert"]["state"] for r in received] == ["firing", "resolved"]
    assert all(r["path"] == "/hooks/r1mw" and r["type"] == "application/json" for r in received)
    assert received[0]["alert"]["name"] == "hit_rate_low" and received[0]["alert"]["threshold"] == 0.5
    assert plugin.sent == 2 and plugin.failed == 0


async def test_a_webhook_that_is_down_is_logged_not_raised(caplog):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plugin = load_example().AlertWebhook(f"http://127.0.0.1:{port}/", timeout=1)
    async with r1mw.Pipeline(r1mw.Settings(stages="exact"), plugins=[plugin]) as pipe:
        pipe.pm.hook.r1mw_alert(pipeline=pipe, alert={"name": "x", "state": "firing", "message": "m"})
        await plugin.drain()
    assert plugin.failed == 1 and "alert webhook" in caplog.text
