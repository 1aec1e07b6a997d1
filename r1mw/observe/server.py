"""A tiny HTTP endpoint on the pipeline's own event loop: ``GET /metrics``.

Serving on the event loop (not prometheus_client's thread server) means a scrape reads the
recorder and the stages' stats from the same thread that writes them: no locks, no torn
reads. A scrape costs a few hundred microseconds of loop time every scrape interval.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

__all__ = ["MetricsServer"]

log = logging.getLogger("r1mw.metrics")

_MAX_REQUEST = 16 * 1024


class MetricsServer:
    """Serves ``render()`` (body, content type) at ``/metrics`` (and ``/``); 404 elsewhere."""

    def __init__(self, render: Callable[[], tuple[bytes, str]], host: str = "127.0.0.1", port: int = 0) -> None:
        self.render = render
        self.host = host
        self.port = port
        self.scrapes = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockets = self._server.sockets or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("r1mw metrics on http://%s:%d/metrics", self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
            if len(head) > _MAX_REQUEST:
                raise ValueError("request too large")
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = path.split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"method not allowed\n", "text/plain"
            elif path in ("/metrics", "/"):
                body, ctype = self.render()
                status = "200 OK"
                self.scrapes += 1
            else:
                status, body, ctype = "404 Not Found", b"not found: try /metrics\n", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError,
                ConnectionError):
            pass
        except Exception:  # a collector bug must not kill the server
            log.exception("r1mw metrics endpoint failed")
            try:
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except Exception:
                pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:
                pass
