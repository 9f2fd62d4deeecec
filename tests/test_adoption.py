"""Issue 11: adopting a live Headless-Wan2GP / Reigh database without breaking it.

The database is `tests/data/legacy_reigh.sql` (the pipeline's objects as the
public Reigh migrations and the old orchestrator's SQL leave them: see the file's
citations) seeded with rows in every legacy state (`legacy_reigh_seed.sql`), and
their pods (`legacy_reigh_pods.json`) are in the fake Runpod. Workers are driven
as they really call the database: Headless-Wan2GP's heartbeat through PostgREST
with an `apikey` header, the app's claim and completion through the service role.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import _scratch_database, template_database
from fake_postgrest import SERVICE_KEY, FakePostgrest
from fake_runpod import FakeRunpod, serve_asgi
from legacy_fixture import DATA, load_legacy_database
from store_writes import write
from test_runpod_provider import KEY, provider_for, runpod_settings
from typer.testing import CliRunner

from gpu_orchestrator.cli import app
from gpu_orchestrator.config import Settings, load_settings
from gpu_orchestrator.errors import SettingsError
from gpu_orchestrator.loop import CycleReport
from gpu_orchestrator.models import Reason, WorkerStatus
from gpu_orchestrator.ops.health import judge, render_text
from gpu_orchestrator.runtime import connect_rest_store, open_runtime
from gpu_orchestrator.store import writes
from gpu_orchestrator.store.migrate import (
    ADOPTED,
    NATIVE,
    apply_migrations,
    inspect_database,
    migration_script,
    plan_text,
    unadopt_sql,
)
from gpu_orchestrator.store.postgres import PostgresStore

HEARTBEAT_6 = "func_worker_heartbeat_with_logs(text,integer,integer,jsonb,uuid,text)"
ACTIVE = "gpu-20260410_100000-a1a1a1a1"  # heartbeating, pod legacypod01
BOOTING = "gpu-20260410_131500-b2b2b2b2"  # `inactive` + orchestrator_status spawning, legacypod02
SPAWNING = "gpu-20260410_131400-c1c1c1c1"  # `spawning`, legacypod07 STARTING
NO_POD = ("api-worker-main", "local-workstation-1", "default_worker")
LIVE_PODS = ("legacypod01", "legacypod02", "legacypod07")


@pytest.fixture(scope="session")
async def legacy_template(pg_admin_dsn: str) -> AsyncIterator[str]:
    async with template_database(pg_admin_dsn, load_legacy_database) as name:
        yield name


@pytest.fixture
async def legacy_dsn(pg_admin_dsn: str, legacy_template: str) -> AsyncIterator[str]:
    """A fresh copy of the legacy database, not migrated."""
    options = f'template "{legacy_template}" strategy file_copy'
    async with _scratch_database(pg_admin_dsn, options) as dsn:
        yield dsn


@pytest.fixture
async def adopted_dsn(legacy_dsn: str) -> str:
    conn = await asyncpg.connect(legacy_dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return legacy_dsn


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunpod]:
    fake = FakeRunpod(api_key=KEY, gpu_prices={"NVIDIA GeForce RTX 4090": 0.69})
    for pod in json.loads((DATA / "legacy_reigh_pods.json").read_text())["pods"]:
        fake.add_existing_pod(pod)
    yield fake
    assert fake.violations == []


@contextlib.asynccontextmanager
async def _served(dsn: str, schemas: tuple[str, ...] = ("public",)) -> AsyncIterator[str]:
    api = FakePostgrest(dsn, schemas=schemas)
    await api.start()
    try:
        async with serve_asgi(api) as url:
            yield url
    finally:
        await api.stop()


@contextlib.asynccontextmanager
async def _postgrest(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    async with _served(dsn) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def _as_worker_guardian(client: httpx.AsyncClient, worker_id: str, **body: Any) -> Any:
    """One beat exactly as Headless-Wan2GP's heartbeat_guardian.py sends it: only the
    `apikey` header, these five named arguments (see legacy_reigh_findings.md §b)."""
    payload = {
        "worker_id_param": worker_id,
        "vram_total_mb_param": 24564,
        "vram_used_mb_param": 18000,
        "logs_param": [],
        "status_param": "active",
    } | body
    response = await client.post(
        "/rest/v1/rpc/func_worker_heartbeat_with_logs",
        headers={"apikey": SERVICE_KEY, "Prefer": "return=representation"},
        json=payload,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _as_service(client: httpx.AsyncClient, fn: str, **args: Any) -> Any:
    """An RPC as the app's edge functions make it (the service key)."""
    response = await client.post(
        f"/rest/v1/rpc/{fn}", headers={"Authorization": f"Bearer {SERVICE_KEY}"}, json=args
    )
    assert response.status_code == 200, response.text
    return response.json()


# -- the catalog and the rows, before and after ------------------------------------

_CATALOG = {
    "functions": """
        select p.oid::regprocedure::text as sig, pg_get_function_result(p.oid) as result,
               p.prosecdef, p.proconfig, p.provolatile, p.proacl::text as acl,
               md5(p.prosrc) as body, obj_description(p.oid, 'pg_proc') as comment
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('public', 'auth')""",
    "columns": """
        select table_name, column_name, data_type, udt_name, is_nullable, column_default
        from information_schema.columns where table_schema = 'public'""",
    "constraints": """
        select conrelid::regclass::text as rel, conname, pg_get_constraintdef(oid) as def,
               convalidated
        from pg_constraint where connamespace = 'public'::regnamespace""",
    "triggers": """
        select tgrelid::regclass::text as rel, tgname, pg_get_triggerdef(oid) as def, tgenabled
        from pg_trigger where not tgisinternal""",
    "indexes": "select indexname, indexdef from pg_indexes where schemaname = 'public'",
    "relations": """
        select relname, relkind, relacl::text as acl, relrowsecurity, relforcerowsecurity
        from pg_class where relnamespace = 'public'::regnamespace and relkind in ('r', 'v')""",
    "policies": "select tablename, policyname, roles::text, cmd, qual, with_check from pg_policies",
    "enum": "select enumlabel, enumsortorder from pg_enum order by enumsortorder",
    "default_acl": "select defaclrole::regrole::text, defaclobjtype, defaclacl::text "
    "from pg_default_acl",
    "schema_acl": "select nspname, nspacl::text from pg_namespace "
    "where nspname in ('public', 'auth')",
}
_APP_TABLES = ("tasks", "workers", "system_logs", "task_types", "projects", "users")


async def _catalog(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: sorted(tuple(str(v) for v in row.values()) for row in await conn.fetch(sql))
        for name, sql in _CATALOG.items()
    }


async def _rows(conn: asyncpg.Connection, schema: str, tables: tuple[str, ...]) -> dict[str, Any]:
    return {
        table: sorted(
            r[0] for r in await conn.fetch(f"select to_jsonb(t)::text from {schema}.{table} t")
        )
        for table in tables
    }


def _without_heartbeat_body(catalog: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    out = dict(catalog)
    out["functions"] = [
        row[:6] + row[7:] if row[0] == HEARTBEAT_6 else row for row in catalog["functions"]
    ]
    return out


def _heartbeat_body(catalog: dict[str, list[tuple[Any, ...]]]) -> str:
    return next(row[6] for row in catalog["functions"] if row[0] == HEARTBEAT_6)


async def test_migrate_twice_leaves_every_legacy_row_and_function_as_it_was(
    legacy_dsn: str,
) -> None:
    conn = await asyncpg.connect(legacy_dsn)
    try:
        found = await inspect_database(conn)
        assert found.layout is ADOPTED and "enum public.task_status" in found.markers
        assert "would record: an `adopted` event" in plan_text(found)
        catalog, rows = await _catalog(conn), await _rows(conn, "public", _APP_TABLES)

        applied = await apply_migrations(conn)
        first = await _catalog(conn)
        assert applied and await apply_migrations(conn) == []
        second = await _catalog(conn)

        # Nothing of the app's changed but the heartbeat's body, once; its
        # signature, result, security definer, search_path, grants and comment stay.
        assert _without_heartbeat_body(first) == _without_heartbeat_body(catalog)
        assert _heartbeat_body(first) != _heartbeat_body(catalog)
        assert second == first
        assert await _rows(conn, "public", _APP_TABLES) == rows
        # Everything of ours lives in its own schema, closed to the app's API roles.
        assert (
            await conn.fetchval(
                "select count(*) from pg_proc where pronamespace = 'public'::regnamespace "
                "and proname like 'orch\\_%'"
            )
            == 0
        )
        for role in ("anon", "authenticated"):
            assert not await conn.fetchval(
                "select has_schema_privilege($1, 'orchestrator', 'USAGE')", role
            )
        adopted = await conn.fetchval(
            "select detail from orchestrator.orchestrator_events where kind = 'adopted'"
        )
        assert "function public.func_claim_task" not in json.loads(adopted)["found"]
        assert "trigger prevent_timing_manipulation on public.tasks" in json.loads(adopted)["found"]
    finally:
        await conn.close()


async def test_the_unadopt_script_gives_the_app_back_its_database_as_it_was(
    legacy_dsn: str,
) -> None:
    conn = await asyncpg.connect(legacy_dsn)
    try:
        catalog = await _catalog(conn)
        await apply_migrations(conn)
        await conn.execute(unadopt_sql())
        assert await _catalog(conn) == catalog
        assert await conn.fetchval("select to_regnamespace('orchestrator')") is None
    finally:
        await conn.close()


async def _adopted_schema(conn: asyncpg.Connection) -> list[tuple[str, ...]]:
    rows = await conn.fetch(
        """select p.oid::regprocedure::text, md5(p.prosrc), p.prosecdef::text,
                  coalesce(array_to_string(p.proconfig, ','), '')
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname in ('orchestrator', 'public')
           union all
           select c.oid::regclass::text, c.relkind::text, coalesce(c.relacl::text, ''), ''
           from pg_class c where c.relnamespace = 'orchestrator'::regnamespace
           union all
           select 'ledger', version, '', '' from orchestrator.orchestrator_migrations
           union all
           select 'event', kind, detail::text, '' from orchestrator.orchestrator_events"""
    )
    return sorted(tuple(str(v) for v in r.values()) for r in rows)


async def test_the_printed_adopted_script_adopts_like_migrate_and_runs_twice(
    pg_admin_dsn: str, legacy_template: str, adopted_dsn: str
) -> None:
    """`migrate --print-sql --adopted` is what a Supabase user pastes into the SQL
    editor; the native script refuses to run on such a database."""
    options = f'template "{legacy_template}" strategy file_copy'
    async with _scratch_database(pg_admin_dsn, options) as other:
        conn = await asyncpg.connect(other)
        try:
            with pytest.raises(asyncpg.RaiseError, match="Headless-Wan2GP / Reigh database"):
                await conn.execute(migration_script(NATIVE))
            await conn.execute("rollback")  # the editor's session, after the refusal
            await conn.execute(migration_script(ADOPTED))
            await conn.execute(migration_script(ADOPTED))
            scripted = await _adopted_schema(conn)
        finally:
            await conn.close()
    conn = await asyncpg.connect(adopted_dsn)
    try:
        assert scripted == await _adopted_schema(conn)
    finally:
        await conn.close()


async def test_the_heartbeat_as_the_worker_sends_it_still_succeeds_with_and_without_logs(
    adopted_dsn: str,
) -> None:
    logs = [
        {"timestamp": "2026-04-10T13:20:00+00:00", "level": "INFO", "message": "loaded model",
         "task_id": None, "metadata": {"step": 1}},
        {"level": "ERROR", "message": "cuda warning",
         "task_id": "aaaaaaaa-0000-4000-8000-000000000006"},
    ]  # fmt: skip
    async with _postgrest(adopted_dsn) as client:
        quiet = await _as_worker_guardian(client, ACTIVE)
        chatty = await _as_worker_guardian(client, ACTIVE, logs_param=logs)
        newcomer = await _as_worker_guardian(client, "gpu-workstation-x")
    assert quiet == {
        "success": True, "heartbeat_updated": True, "logs_inserted": 0, "log_errors": 0,
        "crash_requeued_tasks": 0, "crash_failed_tasks": 0,
    }  # fmt: skip
    assert chatty["success"] is True and chatty["logs_inserted"] == 2
    assert newcomer["success"] is True
    conn = await asyncpg.connect(adopted_dsn)
    try:
        row = await conn.fetchrow(
            "select status, instance_type from public.workers where id = 'gpu-workstation-x'"
        )
        assert tuple(row) == ("active", "external")  # auto-inserted, as before
        assert (
            await conn.fetchval(
                "select count(*) from public.system_logs where worker_id = $1 "
                "and message in ('loaded model', 'cuda warning')",
                ACTIVE,
            )
            == 2
        )
        seen = await conn.fetchval(
            "select status from orchestrator.workers where id = 'gpu-workstation-x'"
        )
        assert seen == "external"
    finally:
        await conn.close()


async def test_a_worker_we_launch_is_a_valid_app_row_becomes_ready_and_stays_drained(
    adopted_dsn: str,
) -> None:
    store = await PostgresStore.connect(adopted_dsn, max_size=2)
    conn = await asyncpg.connect(adopted_dsn)
    worker = "gpu-20260410133000-0badc0de"
    try:
        assert (await store.observe()).adopted  # it found our schema
        await write(
            store,
            writes.create_worker(
                worker, "runpod", {"offering": "NVIDIA GeForce RTX 4090", "reason": "queue"}
            ),
        )
        row = await conn.fetchrow("select * from public.workers where id = $1", worker)
        assert row["instance_type"] == "NVIDIA GeForce RTX 4090" and row["status"] == "inactive"
        assert json.loads(row["metadata"])["orchestrator_status"] == "spawning"

        async with _postgrest(adopted_dsn) as client:
            assert (await _as_worker_guardian(client, worker))["success"] is True
            ours = await conn.fetchrow(
                "select status, ready_at from orchestrator.workers where id = $1", worker
            )
            assert ours["status"] == "active" and ours["ready_at"] is not None

            assert await store.transition_worker(
                worker, WorkerStatus.ERROR, Reason.HEARTBEAT_LOST, fence=None
            )
            assert (
                await conn.fetchval("select status from public.workers where id = $1", worker)
                == "inactive"
            )
            # A late beat of a failed worker does not turn it back into a live one.
            assert (await _as_worker_guardian(client, worker))["success"] is True
        assert (
            await conn.fetchval("select status from public.workers where id = $1", worker)
            == "inactive"
        )
        assert (await store.observe()).workers  # the adapter reads it
    finally:
        await conn.close()
        await store.close()


async def test_a_queued_gpu_task_is_claimed_and_completed_through_the_legacy_functions(
    adopted_dsn: str,
) -> None:
    async with _postgrest(adopted_dsn) as client:
        await _as_worker_guardian(client, ACTIVE)
        claimed = await _as_service(
            client, "claim_next_task_service_role", p_worker_id=ACTIVE, p_run_type="gpu"
        )
        assert claimed and claimed[0]["task_id"] == "aaaaaaaa-0000-4000-8000-000000000001"
        done = await _as_service(
            client,
            "func_mark_task_complete",
            task_id_param=claimed[0]["task_id"],
            result_data_param={"output_location": "s3://out.mp4"},
        )
    assert done is None  # `returns void`, as before
    conn = await asyncpg.connect(adopted_dsn)
    try:
        status = await conn.fetchval(
            "select status::text from public.tasks where id = $1::uuid", claimed[0]["task_id"]
        )
        assert status == "Complete"
    finally:
        await conn.close()


async def _one_cycle(
    dsn: str, fake: FakeRunpod, tmp_path: Path, **settings: object
) -> tuple[Settings, CycleReport]:
    """One cycle of the real loop on this database against the fake Runpod."""
    cfg = runpod_settings(
        dsn, orchestrator_data_dir=tmp_path, runpod_gpu_types="NVIDIA GeForce RTX 4090", **settings
    )
    runtime = await open_runtime(cfg, dsn=dsn, provider=provider_for(fake, cfg))
    try:
        return cfg, await runtime.orchestrator.run_cycle()
    finally:
        await runtime.aclose()


async def test_once_spares_every_live_or_booting_legacy_worker_and_every_worker_without_a_pod(
    adopted_dsn: str, fake: FakeRunpod, tmp_path: Path
) -> None:
    settings, report = await _one_cycle(
        adopted_dsn,
        fake,
        tmp_path,
        demand_sql_function="count_eligible_tasks_service_role(false, 'gpu')",
    )
    assert report.outcome == "ok", report.reason
    assert all(r.outcome in ("done", "lost_race") for r in report.results), report.results
    # A legacy worker silent since before the adoption is failed, and forgiven: its
    # failure is dated to its last heartbeat, before the breaker's reset point.
    failed = {(r.worker_id, r.reason.value) for r in report.results if r.kind.value == "fail"}
    assert ("gpu-20260410_110000-f6f6f6f6", "heartbeat_lost") in failed
    store = await PostgresStore.connect(adopted_dsn, max_size=2)
    try:
        after = judge(await store.observe(), settings, {}).as_dict()
    finally:
        await store.close()
    assert after["breaker"]["failed"] == 0, after["breaker"]
    deleted = {r.path.rsplit("/", 1)[-1] for r in fake.requests_to("DELETE")}
    assert not deleted & set(LIVE_PODS)
    assert report.snapshot is not None and report.snapshot.queue.queued == 3  # the app's count

    conn = await asyncpg.connect(adopted_dsn)
    try:
        statuses = dict(await conn.fetch("select id, status from orchestrator.workers"))
        assert statuses[ACTIVE] == "active"
        assert statuses[BOOTING] == "spawning" and statuses[SPAWNING] == "spawning"
        for worker in NO_POD:
            assert statuses[worker] == "external"
        failed = await conn.fetch(
            "select worker_id from orchestrator.worker_state where status = 'error'"
        )
        assert not {r["worker_id"] for r in failed} & {ACTIVE, BOOTING, SPAWNING, *NO_POD}
        # Our launches (if the plan made any) are valid rows of the app.
        for row in await conn.fetch(
            "select w.instance_type, w.status from public.workers w "
            "join orchestrator.worker_state s on s.worker_id = w.id where s.launched"
        ):
            assert row["instance_type"] == "NVIDIA GeForce RTX 4090"
    finally:
        await conn.close()


async def _everything(conn: asyncpg.Connection) -> dict[str, Any]:
    tables = await conn.fetch(
        "select schemaname, tablename from pg_tables "
        "where schemaname in ('public', 'orchestrator', 'auth')"
    )
    return {
        f"{t['schemaname']}.{t['tablename']}": (
            await _rows(conn, t["schemaname"], (t["tablename"],))
        )[t["tablename"]]
        for t in tables
    }


async def test_shadow_mode_writes_nothing_and_mutates_no_pod(
    adopted_dsn: str, fake: FakeRunpod, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(adopted_dsn)
    try:
        before = await _everything(conn)
        _, report = await _one_cycle(adopted_dsn, fake, tmp_path, shadow=True)
        assert await _everything(conn) == before
    finally:
        await conn.close()
    assert report.outcome == "ok" and report.reason == "shadow"
    assert {r.method for r in fake.requests} == {"GET"}
    # What it would do is decided and reported, not done.
    assert report.results and {r.outcome for r in report.results} == {"shadow"}


async def test_the_rest_store_finds_our_schema_once_it_is_exposed(
    adopted_dsn: str, tmp_path: Path
) -> None:
    settings = load_settings(
        database_url=None,  # CI's second pass sets DATABASE_URL in the environment
        supabase_url="http://replaced",
        supabase_service_role_key=SERVICE_KEY,
        orchestrator_data_dir=tmp_path,
    )
    async with _served(adopted_dsn) as url:
        with pytest.raises(SettingsError, match="Exposed schemas"):
            await connect_rest_store(settings.model_copy(update={"supabase_url": url}))
    async with _served(adopted_dsn, ("public", "orchestrator")) as url:
        store = await connect_rest_store(settings.model_copy(update={"supabase_url": url}))
        try:
            snapshot = await store.observe()
        finally:
            await store.close()
    assert snapshot.adopted  # read through schema `orchestrator`
    assert {w.id for w in snapshot.workers} >= {ACTIVE, BOOTING, *NO_POD}


async def test_a_dead_workers_task_is_requeued_through_the_apps_timing_trigger(
    adopted_dsn: str,
) -> None:
    stale = "gpu-20260410_110000-f6f6f6f6"  # holds task 07 (attempts 1)
    task = "aaaaaaaa-0000-4000-8000-000000000007"
    store = await PostgresStore.connect(adopted_dsn, max_size=2)
    try:
        assert await store.transition_worker(
            stale, WorkerStatus.ERROR, Reason.HEARTBEAT_LOST, fence=None
        )
        released = await write(store, writes.release_tasks(stale, None, 3, "worker lost"))
    finally:
        await store.close()
    assert released.requeued == (task,)
    conn = await asyncpg.connect(adopted_dsn)
    try:
        row = await conn.fetchrow(
            "select status::text, attempts, worker_id, generation_started_at, "
            "current_setting('application_name') as app from public.tasks where id = $1::uuid",
            task,
        )
        assert tuple(row)[:4] == ("Queued", 2, None, None)
        # The trigger still guards every other writer.
        with pytest.raises(asyncpg.RaiseError, match="Timing fields"):
            await conn.execute(
                "update public.tasks set generation_started_at = now() where id = $1::uuid", task
            )
    finally:
        await conn.close()


async def test_status_on_an_adopted_database_shows_legacy_pods_and_podless_workers_apart(
    adopted_dsn: str, fake: FakeRunpod, tmp_path: Path
) -> None:
    settings = runpod_settings(adopted_dsn, orchestrator_data_dir=tmp_path)
    store = await PostgresStore.connect(adopted_dsn, max_size=2)
    try:
        snapshot = await store.observe()
    finally:
        await store.close()
    pods = await provider_for(fake, settings).list_pods()
    report = judge(replace(snapshot, pods=tuple(pods)), settings, {})
    text = render_text(report)
    assert "database: an adopted Headless-Wan2GP / Reigh database" in text
    assert "workers without a pod (not ours to manage, never terminated): " in text
    doc = report.as_dict()
    assert set(NO_POD) <= set(doc["workers"]["without_pod"])
    assert "gpu-20260410_100000-a1a1a1a1" in doc["pods"]["legacy"]
    assert doc["database"] == "adopted"


def test_the_adopted_and_unadopt_scripts_are_printed_never_applied_by_migrate() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["migrate", "--adopted"]).exit_code == 2
    printed = runner.invoke(app, ["migrate", "--print-sql", "--unadopt"])
    assert printed.exit_code == 0 and "drop schema if exists orchestrator cascade" in printed.output
