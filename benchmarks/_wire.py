"""Round trips counted on the wire: a TCP proxy in front of Postgres that reads the
frontend (client -> server) half of the protocol.

A round trip is a message after which the client waits for the server's answer:
`Sync` (ends every extended-protocol exchange: Bind/Execute/Sync to run a
statement), `Flush` (asyncpg prepares a statement it has not cached with
Parse/Describe/Flush and waits for the description) or `Query` (the simple
protocol). asyncpg never sends the next before the answer to the last (bar
`executemany`, which the store does not use), so this counts exactly the waits a
cycle pays, whatever the driver does above the socket: statement cache misses,
pool resets, transactions. Connection start-ups are counted apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


@dataclass
class WireCounts:
    round_trips: int = 0  # Sync + Flush + Query messages
    syncs: int = 0
    flushes: int = 0
    queries: int = 0
    connections: int = 0  # start-up messages


class _FrontendReader:
    """Splits one connection's client -> server bytes into messages."""

    def __init__(self, counts: WireCounts) -> None:
        self._counts = counts
        self._buffer = b""
        self._started = False  # the start-up message (which has no type byte) is done

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if not self._started:
                if len(self._buffer) < 8:
                    return
                length, code = struct.unpack("!ii", self._buffer[:8])
                if len(self._buffer) < length:
                    return
                self._buffer = self._buffer[length:]
                if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    self._started = True
                    self._counts.connections += 1
                continue
            if len(self._buffer) < 5:
                return
            kind = self._buffer[:1]
            (length,) = struct.unpack("!i", self._buffer[1:5])
            if len(self._buffer) < 1 + length:
                return
            self._buffer = self._buffer[1 + length :]
            if kind == b"S":
                self._counts.syncs += 1
                self._counts.round_trips += 1
            elif kind == b"H":
                self._counts.flushes += 1
                self._counts.round_trips += 1
            elif kind == b"Q":
                self._counts.queries += 1
                self._counts.round_trips += 1


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frontend: _FrontendReader | None
) -> None:
    try:
        while data := await reader.read(65536):
            if frontend is not None:
                frontend.feed(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def counting_proxy(dsn: str) -> AsyncIterator[tuple[str, WireCounts]]:
    """(a DSN through the proxy, its live counts). The server is reached over TCP or
    its Unix socket (`?host=/dir`); SSL is off on the proxied DSN so the messages
    can be read."""
    target = urlparse(dsn)
    query = dict(parse_qsl(target.query))
    socket_dir = query.pop("host", None) or (None if target.hostname else "/var/run/postgresql")
    counts = WireCounts()
    pipes: set[asyncio.Task[None]] = set()

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if socket_dir is not None:  # a Unix socket (an embedded pgserver)
            return await asyncio.open_unix_connection(
                f"{socket_dir}/.s.PGSQL.{target.port or 5432}"
            )
        return await asyncio.open_connection(target.hostname, target.port or 5432)

    async def accept(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await connect()
        frontend = _FrontendReader(counts)
        for task in (
            asyncio.create_task(_pipe(client_r, server_w, frontend)),
            asyncio.create_task(_pipe(server_r, client_w, None)),
        ):
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    netloc = f"{target.username or 'postgres'}@127.0.0.1:{port}"
    if target.password:
        netloc = f"{target.username}:{target.password}@127.0.0.1:{port}"
    query["sslmode"] = "disable"
    proxied = urlunparse(target._replace(netloc=netloc, query=urlencode(query)))
    try:
        yield proxied, counts
    finally:
        server.close()
        for task in list(pipes):
            task.cancel()
        await server.wait_closed()
