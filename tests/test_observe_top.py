"""`r1mw top` renders a frame from a live endpoint; a clear one-line message when it is down."""

from __future__ import annotations

import asyncio
import socket

import pytest

import r1mw
from r1mw.cli import main
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_top_once_renders_a_frame_from_a_live_endpoint(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    port = free_port()
    settings = r1mw.Settings(stages="metrics,exact", metrics_port=port, alert_hit_rate_below=0.99)
    async with r1mw.Pipeline(settings) as pipe:
        llm = r1mw.wrap(FakeR1(), pipe)
        for i in range(4):
            await llm(model="deepseek-reasoner", messages=[{"role": "user", "content": f"q{i % 2}"}])
        engine = pipe.services["alerts"]
        engine.min_requests = 1
        engine.tick(pipe)  # 2 hits of 4: below 0.99 -> firing
        # the CLI blocks on HTTP: run it in a thread while this loop serves the endpoint
        code = await asyncio.to_thread(main, ["top", "--once", "--url", f"http://127.0.0.1:{port}/metrics"])
    out = capsys.readouterr().out
    assert code == 0
    assert "r1mw top" in out
    assert "hit rate" in out and "50.0%" in out
    assert "exact" in out and "l1" in out and "miss" in out
    assert "p50" in out and "p99" in out
    assert "req/s" in out and "saved" in out
    assert "FIRING" in out and "hit_rate_low" in out


def test_top_against_a_closed_port_prints_one_clear_line(capsys):
    port = free_port()  # nothing listens there
    code = main(["top", "--once", "--url", f"http://127.0.0.1:{port}/metrics", "--timeout", "1"])
    out = capsys.readouterr().out.strip()
    assert code == 1
    assert len(out.splitlines()) == 1
    assert out.startswith("r1mw top: cannot reach the metrics endpoint") and str(port) in out
    assert "Traceback" not in out


async def test_top_against_a_server_that_is_not_r1mw(capsys):
    async def serve(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot_r1mw 1")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        code = await asyncio.to_thread(main, ["top", "--once", "--url", f"http://127.0.0.1:{port}/"])
    assert code == 1
    assert "serves no r1mw metrics" in capsys.readouterr().out


async def test_a_negative_interval_is_a_usage_error_not_a_traceback(capsys):
    port = free_port()
    async with r1mw.Pipeline(r1mw.Settings(stages="metrics,exact", metrics_port=port)):
        url = f"http://127.0.0.1:{port}/metrics"
        with pytest.raises(SystemExit) as exited:  # was: ValueError from time.sleep(-1), after the first frame
            await asyncio.to_thread(main, ["top", "--url", url, "--interval", "-1"])
    assert exited.value.code == 2
    assert "--interval: '-1' is invalid: expected a number of seconds > 0" in capsys.readouterr().err


@pytest.mark.parametrize("flag, raw", [("--interval", "0"), ("--interval", "inf"), ("--interval", "nan"),
                                       ("--timeout", "0"), ("--timeout", "-2"), ("--timeout", "soon")])
def test_intervals_and_timeouts_must_be_positive_seconds(capsys, flag, raw):
    # 0 s between refreshes scraped the process in a busy loop; a 0 s timeout said "cannot reach"
    with pytest.raises(SystemExit) as exited:
        main(["top", "--once", "--url", f"http://127.0.0.1:{free_port()}/metrics", flag, raw])
    assert exited.value.code == 2
    assert f"{flag}: {raw!r} is invalid" in capsys.readouterr().err
