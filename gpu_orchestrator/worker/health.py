"""A tiny HTTP/1.1 health endpoint for the worker agent (`GET /health`).

It answers one request per connection from a probe callback the agent supplies,
so a pod's liveness can be checked without touching the database (seed
"Prevention 2"). No framework: the agent must not grow dependencies for this.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from ..httpwire import read_request

# (healthy, body): healthy picks 200 or 503.
Probe = Callable[[], tuple[bool, dict[str, Any]]]

_READ_TIMEOUT_SEC = 5.0


class HealthServer:
    """Serves `GET /health` on `port` (0 picks a free one; see `port` once started)."""

    def __init__(self, probe: Probe, port: int, host: str = "0.0.0.0") -> None:
        self._probe = probe
        self._host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._requested_port)

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_SEC):
                method, path = await read_request(reader)
            status, body = self._route(method, path)
            writer.write(_response(status, body, head_only=method == "HEAD"))
            await writer.drain()
        except (TimeoutError, ValueError, ConnectionError):
            pass  # a slow or malformed client gets the connection closed, nothing more
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _route(self, method: str, path: str) -> tuple[HTTPStatus, dict[str, Any]]:
        if path.split("?", 1)[0] != "/health":
            return HTTPStatus.NOT_FOUND, {"error": "not found"}
        if method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, {"error": "method not allowed"}
        healthy, body = self._probe()
        return (HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE), body


def _response(status: HTTPStatus, body: dict[str, Any], head_only: bool = False) -> bytes:
    payload = json.dumps(body, default=str).encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + payload
