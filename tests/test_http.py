"""The daemon's HTTP endpoints on a real 127.0.0.1 port: /livez from the loop's tick
(controlled clock), /readyz against a real database (up and down), /metrics parsed
as Prometheus text after hand-built cycle reports, /status as the health JSON from
a real migrated database."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from policy_builders import ACTIVE, SPAWNING, T0, TERMINATING, breaker_view, snap, worker
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from gpu_orchestrator.config import Settings, load_settings
from gpu_orchestrator.errors import StoreError
from gpu_orchestrator.executor import ActionResult
from gpu_orchestrator.loop import CycleReport
from gpu_orchestrator.models import (
    ActionKind,
    BreakerState,
    BreakerView,
    Plan,
    QueueStats,
    Reason,
    Snapshot,
    TaskHold,
)
from gpu_orchestrator.ops.http import OpsServer, OpsStore
from gpu_orchestrator.ops.metrics import Metrics
from gpu_orchestrator.store.postgres import PostgresStore

SECRET = "s3cret-pa55word"

# ---------------------------------------------------------------------------
# builders


def _settings(tmp_path: Path, dsn: str | None = None) -> Settings:
    # poll 10 s, cycle timeout 20 s: /livez tolerates max(30, 60) + 20 = 80 s
    return load_settings(
        database_url=dsn or f"postgresql://orch:{SECRET}@127.0.0.1:1/none",
        orchestrator_provider="local",
        orchestrator_data_dir=tmp_path,
        orchestrator_poll_sec=10,
        cycle_timeout_sec=20,
    )


def _breaker(
    state: BreakerState = BreakerState.CLOSED,
    *,
    rate: float | None = None,
    failures: tuple[tuple[Reason, int], ...] = (),
    proven: int = 0,
) -> BreakerView:
    return replace(breaker_view(state, failures=failures, proven=proven), rate=rate)


def _result(
    kind: ActionKind, reason: Reason, worker_id: str | None = None, outcome: str = "done"
) -> ActionResult:
    return ActionResult(kind, reason, worker_id, None, outcome)


def _ok(
    snapshot: Snapshot,
    breaker: BreakerView | None = None,
    results: tuple[ActionResult, ...] = (),
    duration_ms: float = 1500.0,
) -> CycleReport:
    plan = Plan(actions=(), desired_workers=0, capacity=0, unmet_demand=0, breaker=breaker)
    return CycleReport("c1", "ok", None, duration_ms, snapshot, plan, results)


def _busy_fleet() -> Snapshot:
    """One active, one booting, one that never booted (2 h old, $1.50/h), one draining."""
    s = snap(
        worker("w-active", ACTIVE),
        worker("w-boot", SPAWNING, age=60),
        worker("w-dead", SPAWNING, age=7200),
        worker("w-drained", TERMINATING),
        holds=[TaskHold("t1", "w-active", T0 - timedelta(seconds=30), 1)],
        queued=7,
        oldest_queued_age=300,
    )
    costly = tuple(w._replace(cost_per_hr=1.5) if w.id == "w-dead" else w for w in s.workers)
    return replace(s, workers=costly)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


# ---------------------------------------------------------------------------
# metrics


def test_an_observed_cycle_sets_fleet_breaker_and_action_series() -> None:
    metrics = Metrics()
    breaker = _breaker(
        BreakerState.OPEN,
        rate=0.75,
        failures=((Reason.BOOT_TIMEOUT, 2), (Reason.HEARTBEAT_LOST, 1)),
        proven=1,
    )
    results = (
        _result(ActionKind.SPAWN, Reason.QUEUE_DEMAND, "w-new-1"),
        _result(ActionKind.SPAWN, Reason.QUEUE_DEMAND, "w-new-2"),
        _result(ActionKind.SPAWN, Reason.QUEUE_DEMAND, outcome="error"),
        _result(ActionKind.FAIL, Reason.BOOT_TIMEOUT, "w-dead"),
        _result(ActionKind.STOP, Reason.DRAINED, "w-drained"),
        _result(ActionKind.DRAIN, Reason.SCALED_DOWN, "w-active", outcome="lost_race"),
    )
    metrics.observe_cycle(_ok(_busy_fleet(), breaker, results))

    m = _parse(metrics.render().decode())
    assert _value(m, "gpuorch_workers", state="active") == 1
    assert _value(m, "gpuorch_workers", state="spawning") == 2
    assert _value(m, "gpuorch_workers", state="terminating") == 1
    assert _value(m, "gpuorch_workers", state="error") == 0
    assert _value(m, "gpuorch_spawns_total", reason="queue_demand") == 2
    assert _value(m, "gpuorch_spawns_total", reason="breaker_probe") == 0
    assert _value(m, "gpuorch_worker_exits_total", reason="boot_timeout") == 1
    assert _value(m, "gpuorch_worker_exits_total", reason="drained") == 1
    assert _value(m, "gpuorch_worker_exits_total", reason="crashed") == 0
    assert _value(m, "gpuorch_actions_total", kind="spawn", outcome="error") == 1
    assert _value(m, "gpuorch_actions_total", kind="drain", outcome="lost_race") == 1
    assert _value(m, "gpuorch_breaker_state") == 2
    assert _value(m, "gpuorch_failure_rate") == 0.75
    assert _value(m, "gpuorch_breaker_failures", reason="boot_timeout") == 2
    assert _value(m, "gpuorch_breaker_failures", reason="heartbeat_lost") == 1
    assert _value(m, "gpuorch_breaker_failures", reason="crashed") == 0
    assert _value(m, "gpuorch_breaker_proven") == 1
    assert _value(m, "gpuorch_queue_depth") == 7
    assert _value(m, "gpuorch_queue_depth_capped") == 0
    assert _value(m, "gpuorch_queue_oldest_age_seconds") == 300
    assert _value(m, "gpuorch_tasks_in_progress") == 1
    assert _value(m, "gpuorch_cycles_total", outcome="ok") == 1
    assert _value(m, "gpuorch_cycles_total", outcome="retry") == 0
    assert _value(m, "gpuorch_cycle_duration_seconds_count") == 1
    assert _value(m, "gpuorch_cycle_duration_seconds_sum") == 1.5
    assert _value(m, "gpuorch_cycle_duration_seconds_bucket", le="2.5") == 1
    assert _value(m, "gpuorch_cycle_duration_seconds_bucket", le="1.0") == 0
    assert _value(m, "gpuorch_leader") == 1
    # w-dead: $1.50/h for the 2 h since its row was created
    assert _value(m, "gpuorch_failed_worker_spend_usd_total", reason="boot_timeout") == 3.0
    assert not any("w-" in v for _, labels in m for _, v in labels), "no worker ids as labels"


def test_counters_accumulate_and_a_failed_worker_is_charged_once_per_release() -> None:
    metrics = Metrics()
    fleet = _busy_fleet()
    # cycle 1: FAIL moved the row but could not terminate the pod (error: not counted);
    # cycle 2: RELEASE of that error row finished it (counted, charged once).
    metrics.observe_cycle(
        _ok(fleet, _breaker(), (_result(ActionKind.FAIL, Reason.BOOT_TIMEOUT, "w-dead", "error"),))
    )
    metrics.observe_cycle(
        _ok(fleet, _breaker(), (_result(ActionKind.RELEASE, Reason.BOOT_TIMEOUT, "w-dead"),))
    )

    m = _parse(metrics.render().decode())
    assert _value(m, "gpuorch_cycles_total", outcome="ok") == 2
    assert _value(m, "gpuorch_worker_exits_total", reason="boot_timeout") == 1
    assert _value(m, "gpuorch_failed_worker_spend_usd_total", reason="boot_timeout") == 3.0
    assert _value(m, "gpuorch_actions_total", kind="fail", outcome="error") == 1


def test_failure_rate_is_nan_without_a_sample_and_the_breaker_state_is_numeric() -> None:
    metrics = Metrics()
    metrics.observe_cycle(_ok(snap(), _breaker(BreakerState.HALF_OPEN)))
    m = _parse(metrics.render().decode())
    assert math.isnan(_value(m, "gpuorch_failure_rate"))
    assert _value(m, "gpuorch_breaker_state") == 1
    assert _value(m, "gpuorch_queue_oldest_age_seconds") == 0  # empty queue


def test_a_standby_exports_no_fleet_view_and_a_failed_cycle_keeps_the_last_one() -> None:
    metrics = Metrics()
    assert "gpuorch_leader" not in _names(_parse(metrics.render().decode()))
    assert metrics.lease_state == "unknown"

    metrics.observe_cycle(_ok(_busy_fleet(), _breaker()))
    metrics.observe_cycle(CycleReport("c2", "retry", "StoreError: observe failed", 30.0))
    m = _parse(metrics.render().decode())
    assert _value(m, "gpuorch_queue_depth") == 7  # last known, not zero
    assert _value(m, "gpuorch_leader") == 1
    assert _value(m, "gpuorch_cycles_total", outcome="retry") == 1
    assert metrics.lease_state == "unknown"

    metrics.observe_cycle(CycleReport("c3", "skipped", "not_leader (held by other)", 5.0))
    m = _parse(metrics.render().decode())
    assert _value(m, "gpuorch_leader") == 0
    assert metrics.lease_state == "standby"
    fleet = {"gpuorch_workers", "gpuorch_queue_depth", "gpuorch_breaker_state"}
    assert not fleet & _names(m)


def test_a_metrics_bug_is_logged_and_never_raised_into_the_loop() -> None:
    metrics = Metrics()
    broken = CycleReport("c1", "ok", None, 1.0, snapshot=object())  # type: ignore[arg-type]
    with capture_logs() as logs:
        metrics.observe_cycle(broken)
    assert [e["event"] for e in logs] == ["metrics_update_failed"]
    assert _value(_parse(metrics.render().decode()), "gpuorch_cycles_total", outcome="ok") == 1


def test_a_capped_queue_count_is_flagged() -> None:
    metrics = Metrics()
    s = snap()
    capped = Snapshot(s.now, (), (), QueueStats(15, T0 - timedelta(seconds=5), capped=True))
    metrics.observe_cycle(_ok(capped, _breaker()))
    m = _parse(metrics.render().decode())
    assert _value(m, "gpuorch_queue_depth") == 15
    assert _value(m, "gpuorch_queue_depth_capped") == 1


# ---------------------------------------------------------------------------
# the server


class _Loop:
    def __init__(self, last_tick: float | None = None, failing_cycles: int = 0) -> None:
        self.last_tick = last_tick
        self.failing_cycles = failing_cycles


class _Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Unreachable:
    """A store whose database hangs (ping) or fails with the DSN in its message."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def observe(self, horizon_sec: float, queue_cap: int | None = None) -> Snapshot:
        raise StoreError(f"observe failed: cannot connect to {self.dsn}")

    async def ping(self, timeout: float = 2.0) -> None:
        await asyncio.sleep(3600)


Serve = Callable[..., Awaitable[tuple[OpsServer, httpx.AsyncClient]]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    opened: list[tuple[OpsServer, httpx.AsyncClient]] = []

    async def start(
        store: OpsStore,
        *,
        dsn: str | None = None,
        loop: _Loop | None = None,
        metrics: Metrics | None = None,
        clock: _Clock | None = None,
        db_timeout_sec: float = 2.0,
    ) -> tuple[OpsServer, httpx.AsyncClient]:
        server = OpsServer(
            _settings(tmp_path, dsn),
            loop or _Loop(),
            store,
            metrics or Metrics(),
            clock=clock or _Clock(),
            db_timeout_sec=db_timeout_sec,
        )
        await server.start(host="127.0.0.1", port=0)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10)
        opened.append((server, client))
        return server, client

    yield start
    for server, client in opened:
        await client.aclose()
        await server.stop()


async def test_livez_follows_the_loop_tick_with_a_start_up_grace(serve: Serve) -> None:
    clock, loop = _Clock(1000.0), _Loop()
    server, client = await serve(_Unreachable("x"), loop=loop, clock=clock)
    assert server.stale_after_sec == 80

    clock.now = 1079.0  # no cycle yet, within the grace after start
    response = await client.get("/livez")
    assert response.status_code == 200 and "starting" in response.text
    clock.now = 1081.0  # still no cycle finished: the loop is stuck
    assert (await client.get("/livez")).status_code == 503

    loop.last_tick = 1075.0
    assert (await client.get("/livez")).status_code == 200
    clock.now = 1075.0 + 80.5  # stale: the database is not consulted either way
    response = await client.get("/livez")
    assert response.status_code == 503 and "stale" in response.text


async def test_readyz_is_ready_when_the_database_answers_and_the_lease_is_known(
    serve: Serve, store: PostgresStore
) -> None:
    metrics = Metrics()
    _, client = await serve(store, metrics=metrics)

    response = await client.get("/readyz")
    assert response.status_code == 503  # no cycle yet: lease state unknown
    assert response.text == "db: ok\nlease: unknown\ncycles: ok\n"

    metrics.observe_cycle(CycleReport("c1", "skipped", "not_leader (held by old)", 3.0))
    response = await client.get("/readyz")
    assert response.status_code == 200 and response.text == "db: ok\nlease: standby\ncycles: ok\n"

    metrics.observe_cycle(_ok(snap(), _breaker()))
    response = await client.get("/readyz")
    assert response.status_code == 200 and response.text == "db: ok\nlease: leader\ncycles: ok\n"


async def test_readyz_is_not_ready_after_three_failed_cycles_in_a_row(
    serve: Serve, store: PostgresStore
) -> None:
    metrics = Metrics()
    metrics.observe_cycle(_ok(snap(), _breaker()))
    loop = _Loop(failing_cycles=2)
    _, client = await serve(store, metrics=metrics, loop=loop)
    assert (await client.get("/readyz")).status_code == 200

    loop.failing_cycles = 3
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.text.splitlines()[2] == "cycles: failing: the last 3 cycles failed"


async def test_readyz_is_not_ready_when_the_database_is_down(serve: Serve) -> None:
    dead = f"postgresql://orch:{SECRET}@127.0.0.1:1/none"
    pool = await asyncpg.create_pool(dead, min_size=0)  # connects lazily: nothing yet
    metrics = Metrics()
    metrics.observe_cycle(_ok(snap(), _breaker()))
    try:
        _, client = await serve(PostgresStore(pool), dsn=dead, metrics=metrics)
        response = await client.get("/readyz")
    finally:
        await pool.close()
    assert response.status_code == 503
    db, lease, _ = response.text.splitlines()
    assert db.startswith("db: failed: StoreError") and lease == "lease: leader"
    assert SECRET not in response.text


async def test_readyz_gives_up_on_a_database_that_does_not_answer(serve: Serve) -> None:
    _, client = await serve(_Unreachable("x"), db_timeout_sec=0.1)
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.text.splitlines()[0] == "db: failed: no answer within 0.1 s"


async def test_metrics_endpoint_serves_the_prometheus_text_format(serve: Serve) -> None:
    metrics = Metrics()
    metrics.observe_cycle(_ok(_busy_fleet(), _breaker()))
    _, client = await serve(_Unreachable("x"), metrics=metrics)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = _parse(response.text)
    assert _value(m, "gpuorch_workers", state="active") == 1
    assert "process_resident_memory_bytes" in _names(m)


async def _worker_heartbeating(store: PostgresStore, worker_id: str) -> None:
    await store.pool.execute(
        "select orch_create_worker(null, null, $1, 'local', '{\"reason\": \"queue_demand\"}')",
        worker_id,
    )
    await store.pool.execute(
        "select func_worker_heartbeat_with_logs($1, null, null, '[]'::jsonb, null, 'active')",
        worker_id,
    )


async def _enqueue(store: PostgresStore, count: int) -> None:
    await store.pool.execute(
        "select orch_enqueue_tasks((select jsonb_agg(jsonb_build_object('task_type', 'demo'))"
        " from generate_series(1, $1)))",
        count,
    )


async def test_status_serves_the_health_json_of_a_healthy_fleet(
    serve: Serve, store: PostgresStore, dsn: str
) -> None:
    await _worker_heartbeating(store, "gpu-20250101000000-aaaaaaaa")
    await _enqueue(store, 2)
    _, client = await serve(store, dsn=dsn)

    response = await client.get("/status")
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["exit_code"] in (0, 1) and response.status_code == 200, doc
    assert doc["workers"]["by_status"] == {"active": 1}
    assert [w["id"] for w in doc["workers"]["healthy"]] == ["gpu-20250101000000-aaaaaaaa"]
    assert doc["queue"]["queued"] == 2
    assert doc["breaker"]["state"] == "closed"


async def test_status_is_503_when_tasks_wait_with_no_worker(
    serve: Serve, store: PostgresStore, dsn: str
) -> None:
    await _enqueue(store, 20)  # above the loop's queue cap: /status counts exactly
    _, client = await serve(store, dsn=dsn)
    response = await client.get("/status")
    doc = response.json()
    assert response.status_code == 503
    assert doc["verdict"] == "blocked" and doc["exit_code"] == 2
    assert doc["queue"]["queued"] == 20


async def test_status_is_unknown_when_the_state_cannot_be_read_and_leaks_no_secret(
    serve: Serve,
) -> None:
    dsn = f"postgresql://orch:{SECRET}@db.example:5432/app"
    _, client = await serve(_Unreachable(dsn), dsn=dsn)
    response = await client.get("/status")
    assert response.status_code == 503
    doc = response.json()
    assert doc["verdict"] == "unknown" and doc["exit_code"] == 3
    assert doc["error"].startswith("StoreError: observe failed")
    assert SECRET not in response.text and "db.example" not in response.text


class _SlowStore:
    """Observes once `gate` opens, counting calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def observe(self, horizon_sec: float, queue_cap: int | None = None) -> Snapshot:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        return snap(queued=0, now=T0)

    async def ping(self, timeout: float = 2.0) -> None:
        return None


async def test_concurrent_status_requests_share_one_observation(serve: Serve) -> None:
    store = _SlowStore()
    server, _ = await serve(store)
    # Tasks start in order: each joins the flight before the observation begins.
    requests = [asyncio.create_task(server.respond("GET", "/status")) for _ in range(5)]
    await store.entered.wait()
    store.gate.set()
    responses = await asyncio.gather(*requests)
    assert store.calls == 1
    assert {json.loads(r.body)["verdict"] for r in responses} == {"healthy"}


async def test_unknown_paths_are_404_other_methods_405_and_head_has_no_body(
    serve: Serve,
) -> None:
    _, client = await serve(_Unreachable("x"))
    assert (await client.get("/nope")).status_code == 404
    response = await client.post("/livez")
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    response = await client.head("/livez")
    assert response.status_code == 200 and response.content == b""
    assert (await client.get("/livez?verbose=1")).status_code == 200


async def test_a_silent_client_blocks_neither_other_requests_nor_stop(serve: Serve) -> None:
    server, client = await serve(_Unreachable("x"))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /livez HTTP/1.1\r\n")  # ... and never finishes its headers
    await writer.drain()

    assert (await client.get("/livez")).status_code == 200
    async with asyncio.timeout(2):
        await server.stop()
    assert await reader.read() == b""  # dropped without a response
    writer.close()
