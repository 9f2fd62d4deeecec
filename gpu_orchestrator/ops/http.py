"""The daemon's HTTP endpoints on `PORT` (no framework: `asyncio.start_server`).

- `GET /livez`: the loop ticked recently. No dependency is checked, so a database
  outage never gets a healthy loop restarted.
- `GET /readyz`: the database answers `select 1`, the last cycle's lease call
  answered (leader or standby), and fewer than three cycles in a row failed. One
  line per named check. Use it as Railway's
  health-check path: a new deployment goes live only once it can reach the
  database and has run a cycle; a standby is ready too, so overlapping deploys
  pass while the old instance still holds the lease.
- `GET /metrics`: Prometheus text format (see `ops.metrics`).
- `GET /`: the status page (`ops.page`): the health report as HTML with a timeline.
- `GET /status`: the health report JSON of `gpu-orchestrator status --json`,
  observed fresh (exact queue depth).

`HEAD` is answered like `GET` without a body; other methods get 405, unknown
paths 404. One request per connection (`Connection: close`). Every request is
read, handled and written under timeouts in its own task, so a slow client or a
slow database never blocks the loop, and nothing raises out of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import structlog

from ..config import Settings
from ..errors import StoreError
from ..httpwire import read_request
from ..models import Snapshot
from .health import judge
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .page import render_page

log = structlog.get_logger()

_READ_TIMEOUT_SEC = 5.0  # request line and headers
_WRITE_TIMEOUT_SEC = 5.0  # a client that does not read its response is dropped
_STATUS_TIMEOUT_SEC = 10.0  # the /status observation
_HANDLER_TIMEOUT_SEC = 15.0  # any handler, whatever it awaits
_MAX_LINE_BYTES = 8192
_MAX_ERROR_CHARS = 300
_FAILING_CYCLES = 3  # this many failed cycles in a row: not ready
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


class OpsStore(Protocol):
    """What the endpoints read from the store (`PostgresStore` implements it)."""

    async def observe(self, horizon_sec: float, queue_cap: int | None = None) -> Snapshot: ...

    async def ping(self, timeout: float = 2.0) -> None:
        """`select 1` within `timeout` s; raises `StoreError` when it does not answer."""

    async def recent_events(self, since_sec: float) -> list[dict[str, Any]]:
        """Orchestrator events of the last `since_sec` (the status page's timeline)."""


class Ticking(Protocol):
    """The loop as `/livez` sees it (`Orchestrator` implements it)."""

    @property
    def last_tick(self) -> float | None:
        """Monotonic time the last cycle finished; None before the first one."""

    @property
    def failing_cycles(self) -> int:
        """Consecutive cycles that ended in `retry` (0 after any other outcome)."""


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = _TEXT
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: HTTPStatus, lines: list[str]) -> Response:
        return cls(status, ("\n".join(lines) + "\n").encode())

    @classmethod
    def json(cls, status: HTTPStatus, doc: dict[str, Any]) -> Response:
        return cls(status, json.dumps(doc, default=str).encode(), _JSON)

    def encode(self, head_only: bool = False) -> bytes:
        head = [
            f"HTTP/1.1 {self.status.value} {self.status.phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{k}: {v}" for k, v in self.headers.items()),
        ]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        return raw if head_only else raw + self.body


class WaitingForDatabase:
    """Stands in for the loop and the store while `run` waits for a database that is
    not up yet: `/livez` passes (waiting is not being stuck), `/readyz` says why it
    is not ready. `OpsServer.attach` swaps the real ones in."""

    last_tick: float | None = None
    failing_cycles = 0

    def __init__(self) -> None:
        self.reason = "connecting"

    async def ping(self, timeout: float = 2.0) -> None:
        raise StoreError(f"not connected yet: {self.reason}")

    async def observe(self, horizon_sec: float, queue_cap: int | None = None) -> Snapshot:
        raise StoreError(f"not connected yet: {self.reason}")

    async def recent_events(self, since_sec: float) -> list[dict[str, Any]]:
        raise StoreError(f"not connected yet: {self.reason}")


class OpsServer:
    """Serves the endpoints for one daemon. `clock` is `time.monotonic` (the
    orchestrator's `last_tick` clock); tests inject their own."""

    def __init__(
        self,
        settings: Settings,
        orchestrator: Ticking,
        store: OpsStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        db_timeout_sec: float = 2.0,
    ) -> None:
        self._settings = settings
        self._orchestrator = orchestrator
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._db_timeout = db_timeout_sec
        self._secrets = _secrets(settings)
        self._server: asyncio.Server | None = None
        self._started_at: float | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._status_task: asyncio.Task[Response] | None = None
        self._routes: dict[str, Callable[[], Awaitable[Response]]] = {
            "/livez": self._livez,
            "/readyz": self._readyz,
            "/metrics": self._metrics_page,
            "/status": self._status,
            "/": self._page,
        }

    @property
    def stale_after_sec(self) -> float:
        """`/livez` fails when no cycle finished for this long (or, before the first
        one, since `start`): three polls (at least 60 s), plus one cycle that may
        legitimately run for its whole budget. With the defaults: 90 + 60 s."""
        cfg = self._settings
        return max(3 * cfg.orchestrator_poll_sec, 60.0) + cfg.cycle_budget_sec

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    def attach(self, orchestrator: Ticking, store: OpsStore) -> None:
        """The real loop and store, once they exist (see `WaitingForDatabase`)."""
        self._orchestrator, self._store = orchestrator, store

    async def start(self, host: str = "0.0.0.0", port: int = 0) -> OpsServer:
        """Binds and serves in the background; returns self."""
        self._started_at = self._clock()
        self._server = await asyncio.start_server(self._serve, host, port, limit=_MAX_LINE_BYTES)
        log.info("ops_http_started", host=host, port=self.port)
        return self

    async def stop(self) -> None:
        """Stops listening and drops the connections still open."""
        if self._server is None:
            return
        self._server.close()
        pending = [t for t in self._connections if not t.done()]
        for task in pending:
            task.cancel()
        if self._status_task is not None:
            self._status_task.cancel()
            pending.append(self._status_task)
        await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._server.wait_closed()
        self._server = None

    # connection -------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            async with asyncio.timeout(_READ_TIMEOUT_SEC):
                method, path = await read_request(reader)
            response = await self.respond(method, path)
            writer.write(response.encode(head_only=method == "HEAD"))
            async with asyncio.timeout(_WRITE_TIMEOUT_SEC):
                await writer.drain()
        except (TimeoutError, ValueError, ConnectionError):
            pass  # a slow or malformed client gets the connection closed, nothing more
        except Exception:  # never raise out of the server
            log.exception("ops_http_error")
        finally:
            await _close(writer)
            if task is not None:
                self._connections.discard(task)

    async def respond(self, method: str, target: str) -> Response:
        """The response to one request; never raises (except on cancellation)."""
        path = target.split("?", 1)[0]
        route = self._routes.get(path)
        if route is None:
            return Response.text(HTTPStatus.NOT_FOUND, ["not found"])
        if method not in ("GET", "HEAD"):
            return Response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"method not allowed\n",
                headers={"Allow": "GET, HEAD"},
            )
        try:
            async with asyncio.timeout(_HANDLER_TIMEOUT_SEC):
                return await route()
        except TimeoutError:
            return Response.text(HTTPStatus.SERVICE_UNAVAILABLE, [f"{path}: timed out"])
        except Exception:
            log.exception("ops_http_handler_failed", path=path)
            return Response.text(HTTPStatus.INTERNAL_SERVER_ERROR, ["internal error"])

    # handlers ---------------------------------------------------------------

    async def _livez(self) -> Response:
        now = self._clock()
        last = self._orchestrator.last_tick
        limit = self.stale_after_sec
        if isinstance(self._orchestrator, WaitingForDatabase):
            return Response.text(
                HTTPStatus.OK, [f"loop: waiting for the database ({self._orchestrator.reason})"]
            )
        if last is None:
            since = now - (self._started_at if self._started_at is not None else now)
            ok = since <= limit
            line = f"loop: {'starting' if ok else 'stuck'}, no cycle finished in {since:.1f} s"
        else:
            age = now - last
            ok = age <= limit
            line = f"loop: {'ok' if ok else 'stale'}, last cycle finished {age:.1f} s ago"
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        return Response.text(status, [line + f" (limit {limit:g} s)"])

    async def _readyz(self) -> Response:
        db = await self._check_db()
        lease = self._metrics.lease_state
        failing = self._orchestrator.failing_cycles
        cycles = "ok" if failing < _FAILING_CYCLES else f"failing: the last {failing} cycles failed"
        ok = db == "ok" and lease != "unknown" and cycles == "ok"
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        return Response.text(status, [f"db: {db}", f"lease: {lease}", f"cycles: {cycles}"])

    async def _check_db(self) -> str:
        try:
            # Our own bound too, in case a store's ping does not honour its timeout.
            async with asyncio.timeout(self._db_timeout + 0.5):
                await self._store.ping(timeout=self._db_timeout)
        except TimeoutError:
            return f"failed: no answer within {self._db_timeout:g} s"
        except StoreError as exc:
            return f"failed: {self._safe(exc)}"
        return "ok"

    async def _metrics_page(self) -> Response:
        return Response(HTTPStatus.OK, self._metrics.render(), METRICS_CONTENT_TYPE)

    async def _status(self) -> Response:
        """Single flight: concurrent requests share one observation, so a burst of
        requests costs the database one snapshot."""
        if self._status_task is None or self._status_task.done():
            self._status_task = asyncio.create_task(self._read_status())
        return await asyncio.shield(self._status_task)

    async def _read_status(self) -> Response:
        """HTTP 200 for healthy (0) and degraded (1); 503 for blocked (2) and
        unknown (3). The JSON always carries `exit_code` (the `status` command's)."""
        try:
            async with asyncio.timeout(_STATUS_TIMEOUT_SEC):
                snapshot = await self._store.observe(self._settings.policy().horizon_sec, None)
        except TimeoutError:
            return _unknown(f"no snapshot within {_STATUS_TIMEOUT_SEC:g} s")
        except StoreError as exc:
            return _unknown(self._safe(exc))
        report = judge(snapshot, self._settings, {})
        doc = report.as_dict()
        ok = doc["exit_code"] <= 1
        return Response.json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, doc)

    async def _page(self) -> Response:
        """The status page (see `ops.page`), observed fresh; 503 with the reason
        when the state cannot be read."""
        try:
            async with asyncio.timeout(_STATUS_TIMEOUT_SEC):
                snapshot = await self._store.observe(self._settings.policy().horizon_sec, None)
                events = await self._store.recent_events(
                    2 * self._settings.failure_window_minutes * 60
                )
        except (TimeoutError, StoreError) as exc:
            why = "no snapshot in time" if isinstance(exc, TimeoutError) else self._safe(exc)
            return Response.text(HTTPStatus.SERVICE_UNAVAILABLE, [f"state unreadable: {why}"])
        page = render_page(judge(snapshot, self._settings, {}), events)
        return Response(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")

    def _safe(self, exc: Exception) -> str:
        """The error's message, short, with every secret of the settings masked."""
        message = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message[:_MAX_ERROR_CHARS]


def _unknown(error: str) -> Response:
    doc = {"verdict": "unknown", "exit_code": 3, "error": error}
    return Response.json(HTTPStatus.SERVICE_UNAVAILABLE, doc)


def _secrets(settings: Settings) -> tuple[str, ...]:
    """Secret values that must never appear in a response: whole DSNs and keys, and
    the passwords inside DSNs (longest first, so a DSN is masked whole)."""
    found: set[str] = set()
    for secret in (
        settings.database_url,
        settings.worker_database_url,
        settings.runpod_api_key,
        settings.supabase_service_role_key,
        settings.supabase_worker_key,
    ):
        if secret is None:
            continue
        raw = secret.get_secret_value()
        found.add(raw)
        with contextlib.suppress(ValueError):
            password = urlparse(raw).password
            if password:
                found.update({password, unquote(password)})
    # A very short password would mask ordinary words; drivers do not echo them anyway.
    return tuple(sorted((s for s in found if len(s) >= 4), key=len, reverse=True))


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except Exception:  # a client that does not read, or a reset: drop its buffer
        writer.transport.abort()
