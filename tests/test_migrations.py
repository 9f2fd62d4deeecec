"""The migrations against a real Postgres: fresh installs, reruns, concurrent runs,
the function names the stores call, and upgrades of a Headless-Wan2GP database."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from store_writes import write

import gpu_orchestrator
from gpu_orchestrator.models import WorkerStatus
from gpu_orchestrator.store import writes
from gpu_orchestrator.store.migrate import (
    _LOCK_ID,
    apply_migrations,
    inspect_database,
    migration_files,
    migration_script,
    plan_text,
)
from gpu_orchestrator.store.postgres import PostgresStore

ALL_VERSIONS = [version for version, _ in migration_files()]
STORE_DIR = Path(gpu_orchestrator.__file__).parent / "store"
# An SQL function called from Python: `orch_...(` or `func_...(`, inside a query string.
CALLED_FUNCTION = re.compile(r"\b((?:orch|func)_[a-z0-9_]+)\s*\(")
WRITE_OP = re.compile(r"\bWrite\(\s*\"([a-z_]+)\"")


async def _ledger(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("select version from orchestrator_migrations order by version")
    return [r["version"] for r in rows]


async def test_migrations_apply_on_an_empty_database_and_a_rerun_applies_nothing(
    empty_dsn: str,
) -> None:
    assert ALL_VERSIONS[:2] == ["0001_schema", "0002_functions"]
    conn = await asyncpg.connect(empty_dsn)
    try:
        plan = plan_text(await inspect_database(conn))
        assert plan.startswith("database: native") and "would apply: migrations/0001_schema" in plan
        assert await apply_migrations(conn) == ALL_VERSIONS
        assert "would apply: nothing new" in plan_text(await inspect_database(conn))
        tables = {
            r["tablename"]
            for r in await conn.fetch(
                "select tablename from pg_tables where schemaname = current_schema()"
            )
        }
        assert {"tasks", "workers", "worker_events", "system_logs", "orchestrator_leases"} <= tables

        assert await apply_migrations(conn) == []
        assert await _ledger(conn) == ALL_VERSIONS
    finally:
        await conn.close()


async def _advisory_waiters(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            """select count(*) from pg_locks
               where locktype = 'advisory' and not granted
                 and database = (select oid from pg_database where datname = current_database())"""
        )
    )


async def test_two_processes_migrating_at_once_both_succeed_and_record_each_version_once(
    empty_dsn: str,
) -> None:
    env = {**os.environ, "DATABASE_URL": empty_dsn, "LOG_FORMAT": "json"}
    holder = await asyncpg.connect(empty_dsn)
    procs: list[asyncio.subprocess.Process] = []
    try:
        # Hold the migration lock so both processes are provably inside
        # `apply_migrations` at the same time before either may proceed.
        await holder.execute("select pg_advisory_lock($1)", _LOCK_ID)
        for _ in range(2):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "gpu_orchestrator",
                    "migrate",
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        deadline = time.monotonic() + 20
        for _ in range(2000):  # until both wait on the lock, one exits, or the deadline
            if (
                await _advisory_waiters(holder) >= 2
                or any(p.returncode is not None for p in procs)
                or time.monotonic() > deadline
            ):
                break
            await asyncio.sleep(0.02)
        waiting = await _advisory_waiters(holder)
        await holder.execute("select pg_advisory_unlock($1)", _LOCK_ID)
        results = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), timeout=30
        )
        for proc, (_, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, err.decode()
        assert waiting == 2, "both processes should wait on the migration lock together"
        outputs = sorted(out.decode().strip() for out, _ in results)
        assert outputs == ["applied: " + ", ".join(ALL_VERSIONS), "database is up to date"]
        assert await _ledger(holder) == ALL_VERSIONS
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await holder.close()


def _functions_the_stores_call() -> set[str]:
    """Called by name, or run by `orch_apply_writes` for a `Write` op (store/writes.py)."""
    names: set[str] = set()
    for source in STORE_DIR.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        names.update(CALLED_FUNCTION.findall(text))
        names.update(f"orch_{op}" for op in WRITE_OP.findall(text))
    return names


async def test_every_sql_function_the_stores_call_exists_after_migrating(dsn: str) -> None:
    called = _functions_the_stores_call()
    # The parse itself must work, or this test would check nothing.
    assert {
        "orch_snapshot",
        "orch_apply_writes",
        "orch_transition_worker",
        "orch_release_tasks",
        "orch_acquire_lease",
        "func_claim_available_task",
        "func_worker_heartbeat_with_logs",
        "func_mark_task_complete",
        "func_mark_task_failed",
    } <= called
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """select p.proname from pg_proc p
               join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = current_schema() and p.proname = any($1::text[])""",
            sorted(called),
        )
    finally:
        await conn.close()
    assert called - {r["proname"] for r in rows} == set()


async def test_no_function_of_ours_claims_to_be_immutable(dsn: str) -> None:
    # Each reads tables, the clock or TimeZone; `immutable` would let the planner
    # fold a call into a constant.
    conn = await asyncpg.connect(dsn)
    try:
        immutable = await conn.fetch(
            """select p.proname from pg_proc p
               join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = current_schema() and p.provolatile = 'i'
                 and (p.proname like 'orch\\_%' or p.proname like 'func\\_%')"""
        )
    finally:
        await conn.close()
    assert [r["proname"] for r in immutable] == []


@pytest.mark.parametrize(
    ("legacy_status", "in_snapshot"),
    [("inactive", False), ("crashed", False), ("not-a-status", False), ("external", True)],
)
async def test_the_snapshot_reads_legacy_worker_statuses_without_crashing(
    store: PostgresStore, legacy_status: str, in_snapshot: bool
) -> None:
    await store.pool.execute(
        "insert into workers (id, status) values ('legacy-1', $1)", legacy_status
    )
    await write(store, writes.create_worker("gpu-1", "local", {}))
    seen = {w.id: w.status for w in (await store.observe()).workers}
    assert seen.get("gpu-1") is WorkerStatus.SPAWNING
    assert ("legacy-1" in seen) is in_snapshot
    if in_snapshot:
        assert seen["legacy-1"] == WorkerStatus(legacy_status)


async def _schema(dsn: str) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        columns = await conn.fetch(
            """select table_name, column_name, data_type, is_nullable
               from information_schema.columns where table_schema = 'public'
               order by 1, 2"""
        )
        functions = await conn.fetch(
            """select p.proname, pg_get_function_identity_arguments(p.oid), p.prosecdef::text,
                      coalesce(array_to_string(p.proconfig, ','), '')
               from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = 'public' order by 1, 2"""
        )
        versions = await conn.fetch("select version from orchestrator_migrations order by 1")
    finally:
        await conn.close()
    return (
        [tuple(r) for r in columns],
        [tuple(r) for r in functions],
        [r["version"] for r in versions],
    )


async def test_the_printed_script_builds_the_same_database_as_migrate_and_runs_twice(
    dsn: str, empty_dsn: str
) -> None:
    """`migrate --print-sql` is what a Supabase user runs in the SQL editor: it must
    build what `migrate` builds, and be safe to run again."""
    script = migration_script()
    conn = await asyncpg.connect(empty_dsn)
    try:
        await conn.execute(script)
        await conn.execute(script)
    finally:
        await conn.close()
    assert await _schema(empty_dsn) == await _schema(dsn)
