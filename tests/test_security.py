"""Least privilege on a database set up with Supabase's roles (`anon`,
`authenticated`, `service_role` stood in for, see conftest): for every table and
function we own, the public keys can neither read, write nor execute; `gpu_worker`
can only call the worker API; the migrating role still does everything."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from gpu_orchestrator.store.migrate import apply_migrations

WORKER_API = {
    "func_claim_available_task",
    "func_worker_heartbeat_with_logs",
    "func_mark_task_complete",
    "func_mark_task_failed",
    "func_tasks_held_by",
}
# Called only by our definer functions: they run as the definer, granted to nobody.
HELPERS = {"orch_check_lease", "orch_task_attempts_limit", "orch_try_timestamptz"}
OUR_TABLES = (
    "tasks",
    "workers",
    "system_logs",
    "worker_events",
    "orchestrator_events",
    "orchestrator_leases",
    "orchestrator_migrations",
    "orchestrator_settings",
)
OUTSIDERS = ("anon", "authenticated")


async def _our_functions(conn: asyncpg.Connection) -> list[tuple[int, str, bool, list[str]]]:
    rows = await conn.fetch(
        """select p.oid, p.proname, p.prosecdef, coalesce(p.proconfig, '{}') as config
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = current_schema()
             and (p.proname like 'orch\\_%' or p.proname like 'func\\_%')"""
    )
    return [(r["oid"], r["proname"], r["prosecdef"], list(r["config"])) for r in rows]


@pytest.fixture
async def conn(dsn: str):
    c = await asyncpg.connect(dsn)
    try:
        yield c
    finally:
        await c.close()


async def test_the_public_keys_can_neither_read_write_nor_execute_anything_of_ours(conn) -> None:
    functions = await _our_functions(conn)
    assert len(functions) >= 25  # the listing itself works
    for role in (*OUTSIDERS, "gpu_worker"):
        for table in OUR_TABLES:
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                allowed = await conn.fetchval(
                    "select has_table_privilege($1, $2, $3)", role, table, privilege
                )
                assert not allowed, (role, table, privilege)
        for oid, name, _, _ in functions:
            may = await conn.fetchval(
                "select has_function_privilege($1, $2::oid, 'EXECUTE')", role, oid
            )
            expected = role == "gpu_worker" and name in WORKER_API
            assert may is expected, (role, name)
    for table in OUR_TABLES:
        assert await conn.fetchval(
            "select relrowsecurity from pg_class where oid = $1::regclass", table
        ), table


async def test_entry_points_run_as_their_owner_with_a_fixed_search_path(conn) -> None:
    for _, name, definer, config in await _our_functions(conn):
        if name in HELPERS:
            assert not definer and not config, name
            continue
        assert definer, name
        assert any(c.startswith("search_path=pg_catalog") for c in config), (name, config)


async def test_service_role_executes_every_entry_point_and_no_helper(conn) -> None:
    for oid, name, _, _ in await _our_functions(conn):
        may = await conn.fetchval(
            "select has_function_privilege('service_role', $1::oid, 'EXECUTE')", oid
        )
        assert may is (name not in HELPERS), name


async def test_gpu_worker_works_through_the_worker_api_and_nothing_else(conn) -> None:
    await conn.execute("select orch_create_worker(null, null, 'gpu-1', 'local', '{}')")
    await conn.execute("insert into tasks (task_type) values ('t')")
    async with conn.transaction():
        await conn.execute("set local role gpu_worker")
        beat = await conn.fetchval(
            "select func_worker_heartbeat_with_logs('gpu-1', null, null, '[]', null, 'active')"
        )
        assert json.loads(beat)["success"] is True
        claimed = await conn.fetchrow("select id from func_claim_available_task('gpu-1')")
        assert claimed is not None
        done = await conn.fetchval(
            "select func_mark_task_complete($1, '{}'::jsonb, 'gpu-1')", claimed["id"]
        )
        assert json.loads(done)["success"] is True
    for forbidden in ("select orch_snapshot()", "select count(*) from tasks"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute("set local role gpu_worker")
                await conn.execute(forbidden)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with conn.transaction():
            await conn.execute("set local role anon")
            await conn.execute("select func_claim_available_task('gpu-1')")


async def test_grants_are_reapplied_on_every_migrate(conn) -> None:
    """A dashboard click (or Supabase's default privileges) that re-grants anon is
    undone by the next migrate."""
    await conn.execute("grant select on tasks to anon")
    snapshot = "orch_snapshot(double precision, integer, text[], text)"
    await conn.execute(f"grant execute on function {snapshot} to anon")
    assert await apply_migrations(conn) == []  # nothing new to apply
    assert not await conn.fetchval("select has_table_privilege('anon', 'tasks', 'SELECT')")
    assert not await conn.fetchval("select has_function_privilege('anon', $1, 'EXECUTE')", snapshot)


async def test_local_pods_get_their_own_credentials_only(tmp_path, monkeypatch) -> None:
    """A local pod inherits the environment, but never the orchestrator's own
    credentials: it gets what worker_environment gives it, nothing more."""
    from gpu_orchestrator.providers.base import PodSpec
    from gpu_orchestrator.providers.local import LocalProvider

    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-MARKER")
    monkeypatch.setenv("DATABASE_URL", "postgresql://owner:owner-MARKER@h/d")
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-MARKER")
    dump = tmp_path / "env.txt"
    provider = LocalProvider(tmp_path, f"env > {dump}")
    await provider.create_pod(PodSpec("gpu-1", {"SUPABASE_WORKER_KEY": "worker-key"}))
    for _ in range(100):
        if dump.exists() and "SUPABASE_WORKER_KEY" in dump.read_text():
            break
        await asyncio.sleep(0.05)
    seen = dump.read_text()
    assert "SUPABASE_WORKER_KEY=worker-key" in seen
    assert "MARKER" not in seen
    await provider.terminate_pod("gpu-1", None)
