"""A database outage is not a fleet-wide heartbeat loss (issue 8, item 7).

Real worker agent processes and the real loop reach Postgres through a TCP proxy
that the test cuts for longer than `GPU_IDLE_TIMEOUT_SEC`: nobody can write or
read meanwhile. When it comes back, the busy, healthy workers must not be failed
for the silence the outage forced on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from e2e_support import cycle_until

from gpu_orchestrator.models import WorkerStatus

pytestmark = [pytest.mark.process, pytest.mark.e2e]

IDLE_TIMEOUT_SEC = 3.0
OUTAGE_SEC = 8.0  # longer than the heartbeat timeout and than two whole cycles


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to Postgres (over TCP or its Unix socket) until
    `cut()`: then every connection is dropped and new ones are refused until
    `restore()`."""

    def __init__(self, connect: Callable[[], Awaitable[tuple[Any, Any]]]) -> None:
        self._connect = connect
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._connect()
        except OSError:
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            dst.close()

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start(self.port)


@pytest.fixture
async def proxied_dsn(dsn: str) -> AsyncIterator[tuple[str, CuttableProxy]]:
    """`dsn` through a proxy on 127.0.0.1 (the embedded server listens on a socket)."""
    parsed = urlparse(dsn)
    socket_dir = parse_qs(parsed.query).get("host", [parsed.hostname or ""])[0]
    port = parsed.port or 5432
    if socket_dir.startswith("/"):
        path = f"{socket_dir}/.s.PGSQL.{port}"
        proxy = CuttableProxy(lambda: asyncio.open_unix_connection(path))
    else:
        proxy = CuttableProxy(lambda: asyncio.open_connection(socket_dir, port))
    await proxy.start()
    user = parsed.username or "postgres"
    password = f":{parsed.password}" if parsed.password else ""
    yield f"postgresql://{user}{password}@127.0.0.1:{proxy.port}{parsed.path}", proxy
    await proxy.cut()


async def test_busy_workers_survive_a_database_outage_longer_than_the_heartbeat_timeout(
    proxied_dsn, make_runtime
) -> None:
    dsn, proxy = proxied_dsn
    runtime = await make_runtime(
        dsn,
        max_active_gpus=2,
        tasks_per_gpu_threshold=1,
        gpu_idle_timeout_sec=IDLE_TIMEOUT_SEC,
        leader_lease_sec=3.0,
        orchestrator_poll_sec=0.3,
    )
    long = {"task_type": "demo", "params": {"duration_sec": 60}}
    await runtime.store.enqueue_tasks([long, long])

    def both_busy(report, counts) -> bool:
        return counts.get("In Progress", 0) == 2

    await cycle_until(runtime, both_busy, timeout=60)

    await proxy.cut()
    loop = asyncio.get_running_loop()
    until = loop.time() + OUTAGE_SEC
    while loop.time() < until:  # the loop keeps trying: every cycle fails
        report = await runtime.orchestrator.run_cycle()
        assert report.outcome == "retry"
        await asyncio.sleep(0.3)
    await proxy.restore()

    first = None
    for _ in range(30):  # the pool reconnects; then the first cycle observes
        report = await runtime.orchestrator.run_cycle()
        if report.outcome == "ok":
            first = first or report
            assert [r for r in report.results if r.kind.value == "fail"] == [], report.as_dict()
        await asyncio.sleep(0.1)
    assert first is not None and first.plan is not None
    assert first.plan.observation_gap is not None

    statuses = await runtime.store.pool.fetch("select id, status from workers")
    assert [r["status"] for r in statuses] == [WorkerStatus.ACTIVE.value] * 2
    counts = await runtime.store.task_counts()
    assert counts.get("In Progress") == 2  # nothing requeued, nothing lost
