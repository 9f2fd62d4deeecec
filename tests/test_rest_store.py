"""The REST store (Supabase's Data API through supabase-py, unmodified) against a
PostgREST-style RPC endpoint over the real test Postgres (`fake_postgrest`), and
the store contract run against both stores: same calls, same semantics."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from e2e_support import cycle_until, drained, fast_settings
from fake_postgrest import ANON_KEY, SERVICE_KEY, WORKER_KEY, FakePostgrest
from fake_runpod import serve_asgi
from store_writes import write

from gpu_orchestrator.config import load_settings
from gpu_orchestrator.errors import LeaseLost, SchemaMissing, SettingsError, StoreError
from gpu_orchestrator.loop import LEASE_NAME
from gpu_orchestrator.models import Expected, Reason, WorkerStatus
from gpu_orchestrator.runtime import connect_rest_store, open_runtime
from gpu_orchestrator.store import writes
from gpu_orchestrator.store.base import Fence
from gpu_orchestrator.store.postgres import PostgresStore
from gpu_orchestrator.store.supabase import SupabaseStore
from gpu_orchestrator.store.writes import GroupAnswer


async def _serve(dsn: str) -> AsyncIterator[tuple[str, FakePostgrest]]:
    api = FakePostgrest(dsn)
    await api.start()
    try:
        async with serve_asgi(api) as url:
            yield url, api
    finally:
        await api.stop()


@pytest.fixture
async def rest(dsn: str) -> AsyncIterator[tuple[str, FakePostgrest]]:
    async for served in _serve(dsn):
        yield served


@pytest.fixture(params=["postgres", "supabase"])
async def any_store(request, dsn: str, rest) -> AsyncIterator[PostgresStore | SupabaseStore]:
    url, _ = rest
    store: PostgresStore | SupabaseStore
    if request.param == "postgres":
        store = await PostgresStore.connect(dsn, max_size=4)
    else:
        store = await SupabaseStore.connect(url, SERVICE_KEY)
    try:
        yield store
    finally:
        await store.close()


# -- the contract, on both stores ------------------------------------------------------------


async def test_a_worker_lifecycle_has_the_same_semantics_on_both_stores(any_store) -> None:
    store = any_store
    lease = await store.acquire_lease(LEASE_NAME, "orch", 30)
    fence = Fence(LEASE_NAME, lease.epoch, time.monotonic() + 30)
    assert lease.leader and lease.last_contact is None
    await store.set_setting("max_task_attempts", 3)
    assert await store.enqueue_tasks([{"task_type": "t", "params": {"n": 1}}] * 2) == 2

    await write(
        store, writes.create_worker("gpu-1", "local", {"reason": "queue_demand"}), fence=fence
    )
    assert await write(store, writes.record_pod("gpu-1", "pod-1", 0.44), fence=fence)
    beat = await store.heartbeat("gpu-1", [{"message": "booted", "level": "info"}], None)
    assert beat["success"] and beat["status"] == "active" and not beat["should_drain"]
    task = await store.claim_task("gpu-1")
    assert task is not None and task["params"] == {"n": 1} and task["attempts"] == 0
    assert await store.tasks_held("gpu-1") == [str(task["id"])]
    assert await store.complete_task(str(task["id"]), "gpu-1", {"output_location": "s3://x"})
    second = await store.claim_task("gpu-1")
    assert second is not None
    assert await store.fail_task(str(second["id"]), "gpu-1", "boom", 99)

    snap = await store.observe(1800, 10)
    (worker,) = snap.workers
    assert (worker.id, worker.status, worker.tasks_completed, worker.pod_id) == (
        "gpu-1",
        WorkerStatus.ACTIVE,
        1,
        "pod-1",
    )
    assert snap.queue.queued == 1 and snap.queue.completed_recently == 1

    stale = Expected(WorkerStatus.ACTIVE, worker.last_heartbeat, heartbeat_judged=True)
    await store.heartbeat("gpu-1", [], None)  # a newer heartbeat than the plan saw
    moved = await store.transition_worker(
        "gpu-1", WorkerStatus.ERROR, Reason.HEARTBEAT_LOST, fence=fence, expect=stale
    )
    assert moved is False
    assert await store.transition_worker(
        "gpu-1", WorkerStatus.TERMINATING, Reason.SCALED_DOWN, {"why": "t"}, fence=fence
    )
    released = await write(store, writes.release_tasks("gpu-1", None, 3, "drained"), fence=fence)
    assert not released
    await write(store, writes.record_pod_sightings(["gpu-1"], []), fence=fence)
    await write(store, writes.mark_released("gpu-1"), fence=fence)
    await store.record_event("breaker_reset", "ops", "test", {"n": 1}, fence=None)
    done = await store.maintenance(86400, fence=fence)
    assert done == {"logs_pruned": 0, "tasks_dead_lettered": 0}
    assert await store.task_counts() == {"Complete": 1, "Queued": 1}
    assert [w["id"] for w in await store.list_workers(10)] == ["gpu-1"]
    assert len(await store.list_tasks("Queued", 10)) == 1
    assert [line["message"] for line in await store.list_logs("gpu-1", None, 10)] == ["booted"]
    await store.release_lease(LEASE_NAME, "orch")


async def test_a_batch_of_writes_has_the_same_semantics_on_both_stores(any_store) -> None:
    store = any_store
    lease = await store.acquire_lease(LEASE_NAME, "orch", 30)
    fence = Fence(LEASE_NAME, lease.epoch, time.monotonic() + 30)
    answers = await store.apply_writes(
        [
            [writes.create_worker("gpu-1", "local", {"reason": "queue_demand"})],
            [
                writes.create_worker("gpu-2", "local", {}),
                writes.transition_worker(
                    "gpu-2",
                    WorkerStatus.TERMINATING,
                    Reason.SCALED_DOWN,
                    expect=Expected(WorkerStatus.ACTIVE),
                ),
            ],
            [writes.create_worker("gpu-1", "local", {})],
        ],
        fence=fence,
    )
    assert answers[0] == GroupAnswer((None,))
    assert answers[1] == GroupAnswer((None, False))  # it is spawning, not active
    assert answers[2].error is not None  # gpu-1 exists: this action alone is undone
    await store.release_lease(LEASE_NAME, "orch")
    await store.acquire_lease(LEASE_NAME, "other", 30)
    with pytest.raises(LeaseLost):
        await store.apply_writes([[writes.create_worker("gpu-3", "local", {})]], fence=fence)


async def test_a_stale_lease_is_refused_the_same_way_by_both_stores(any_store) -> None:
    old = await any_store.acquire_lease(LEASE_NAME, "a", 0.05)
    time.sleep(0.1)  # noqa: ASYNC251 - the lease lapses by the database clock
    assert (await any_store.acquire_lease(LEASE_NAME, "b", 30)).leader
    with pytest.raises(LeaseLost):
        await write(
            any_store,
            writes.create_worker("gpu-1", "local", {}),
            fence=Fence(LEASE_NAME, old.epoch, 1e12),
        )


# -- what only the REST path has ---------------------------------------------------------------


async def test_the_anon_key_can_call_nothing(rest) -> None:
    url, _ = rest
    store = await SupabaseStore.connect(url, ANON_KEY)
    try:
        for call in (
            store.observe(),
            store.claim_task("gpu-1"),
            store.enqueue_tasks([{}]),
            store.acquire_lease(LEASE_NAME, "anon", 30),
        ):
            with pytest.raises(StoreError, match="service role key"):
                await call
    finally:
        await store.close()


async def test_the_worker_key_reaches_the_worker_api_only(rest, dsn: str) -> None:
    url, api = rest
    conn = await asyncpg.connect(dsn)
    await conn.execute("select orch_create_worker(null, null, 'gpu-1', 'local', '{}')")
    await conn.close()
    store = await SupabaseStore.connect(url, WORKER_KEY)
    try:
        assert (await store.heartbeat("gpu-1", [], None))["success"]
        assert await store.claim_task("gpu-1") is None
        with pytest.raises(StoreError, match="permission denied"):
            await store.observe()
    finally:
        await store.close()
    assert ("gpu_worker", "func_worker_heartbeat_with_logs") in api.calls


async def test_an_unmigrated_database_is_explained_and_exits_2(empty_dsn: str, tmp_path) -> None:
    async for url, _ in _serve(empty_dsn):
        store = await SupabaseStore.connect(url, SERVICE_KEY)
        with pytest.raises(SchemaMissing, match="gpu-orchestrator migrate --print-sql"):
            await store.observe()
        await store.close()
        settings = load_settings(
            database_url=None,  # CI's second pass sets DATABASE_URL in the environment
            supabase_url=url,
            supabase_service_role_key=SERVICE_KEY,
            orchestrator_data_dir=tmp_path,
        )
        assert settings.store_kind == "supabase"
        with pytest.raises(SettingsError, match="lacks migrations 0001_schema"):
            await connect_rest_store(settings)


async def test_the_snapshot_of_1000_workers_is_one_value_well_under_the_api_timeout(
    rest, dsn: str
) -> None:
    """PostgREST caps row sets at 1,000 and Supabase's API roles have an 8 s
    statement timeout (the fake sets it): the snapshot is one JSON value, fast."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        """insert into workers (id, status, last_heartbeat, ready_at, pod_id)
           select 'gpu-' || i, 'active', now(), now() - interval '1 hour', 'pod-' || i
           from generate_series(1, 1000) i;
           insert into tasks (task_type) select 't' from generate_series(1, 20000)"""
    )
    await conn.close()
    url, _ = rest
    store = await SupabaseStore.connect(url, SERVICE_KEY)
    try:
        started = time.monotonic()
        snap = await store.observe(1800, None)
        took = time.monotonic() - started
    finally:
        await store.close()
    assert len(snap.workers) == 1000 and snap.queue.queued == 20000
    assert took < 4.0, took  # half the timeout, on a loaded 2-core CI machine


@pytest.mark.e2e
async def test_the_demo_runs_on_the_rest_store_with_workers_on_the_worker_key(
    rest, tmp_path: Path
) -> None:
    """The orchestrator on the service role key, local worker processes on the
    worker key, both through the REST API: 6 tasks done, the fleet back to zero."""
    url, api = rest
    settings = fast_settings(
        None,  # type: ignore[arg-type]
        tmp_path / "orch",
        database_url=None,
        supabase_url=url,
        supabase_service_role_key=SERVICE_KEY,
        supabase_worker_key=WORKER_KEY,
    )
    runtime = await open_runtime(settings)
    try:
        await runtime.store.enqueue_tasks(
            [{"task_type": "demo", "params": {"duration_sec": 0.2}}] * 6
        )
        await cycle_until(runtime, drained, timeout=90)
        assert await runtime.store.task_counts() == {"Complete": 6}
    finally:
        for pod in await runtime.provider.list_pods():
            await runtime.provider.terminate_pod(pod.name, pod.pod_id)
        await runtime.aclose()
    roles = {role for role, _ in api.calls}
    assert roles == {"service_role", "gpu_worker"}


async def test_commands_on_an_unmigrated_rest_database_exit_2_with_the_advice(
    empty_dsn: str, tmp_path: Path
) -> None:
    async for url, _ in _serve(empty_dsn):
        env = {
            **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            "SUPABASE_URL": url,
            "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
            "ORCHESTRATOR_DATA_DIR": str(tmp_path),
            "ORCHESTRATOR_PROVIDER": "local",
        }
        for args in (["once"], ["migrate"]):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gpu_orchestrator",
                *args,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 2, (args, err.decode())
            assert "migrate --print-sql" in err.decode()
            assert SERVICE_KEY not in err.decode()
