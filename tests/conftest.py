"""Real-Postgres fixtures: migrate once into a template database per session, then
give each test its own `CREATE DATABASE ... TEMPLATE`.

The server is the one `DATABASE_URL` points at when it is set (CI runs the suite
both ways), else an embedded `pgserver` started in a temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from gpu_orchestrator.runtime import Runtime, open_runtime
from gpu_orchestrator.store.embedded import with_database
from gpu_orchestrator.store.migrate import apply_migrations
from gpu_orchestrator.store.postgres import PostgresStore


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    folder = tempfile.mkdtemp(prefix="gpo-pg-")  # short: the socket path is limited
    server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


# Supabase's API roles, stood in for (roles are cluster-wide): the grants must keep
# them out of everything we own.
SUPABASE_ROLES = ("anon", "authenticated", "service_role")


async def ensure_supabase_roles(admin: asyncpg.Connection) -> None:
    for role in SUPABASE_ROLES:
        # a concurrent session may create it first: either error means "exists"
        with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
            await admin.execute(f"create role {role} nologin")


@contextlib.asynccontextmanager
async def template_database(
    admin_dsn: str, prepare: Callable[[asyncpg.Connection], Awaitable[object]]
) -> AsyncIterator[str]:
    """A database `prepare`d once, to copy per test (`create database ... template`)."""
    name = f"gpo_tpl_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await ensure_supabase_roles(admin)
    await admin.execute(f'create database "{name}"')
    conn = await asyncpg.connect(with_database(admin_dsn, name))
    try:
        await prepare(conn)
    finally:
        await conn.close()
    try:
        yield name
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


@pytest.fixture(scope="session")
async def template_db(pg_admin_dsn: str) -> AsyncIterator[str]:
    async with template_database(pg_admin_dsn, apply_migrations) as name:
        yield name


@contextlib.asynccontextmanager
async def _scratch_database(admin_dsn: str, create_options: str = "") -> AsyncIterator[str]:
    """A database of its own for one test, dropped afterwards."""
    name = f"gpo_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'create database "{name}" {create_options}')
    try:
        yield with_database(admin_dsn, name)
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


@pytest.fixture
async def dsn(pg_admin_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test."""
    # file_copy: a small template copies faster than the WAL-logged default
    async with _scratch_database(pg_admin_dsn, f'template "{template_db}" strategy file_copy') as d:
        yield d


@pytest.fixture
async def empty_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database with no migrations applied."""
    async with _scratch_database(pg_admin_dsn) as d:
        yield d


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.connect(dsn, max_size=20)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def make_runtime(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Runtime]]]:
    """Opens runtimes with fast settings; terminates every pod they left at the end."""
    from e2e_support import fast_settings

    opened: list[Runtime] = []

    async def make(dsn: str, **overrides: object) -> Runtime:
        runtime = await open_runtime(fast_settings(dsn, tmp_path / "orch", **overrides))
        opened.append(runtime)
        return runtime

    yield make
    for runtime in opened:  # never leak a worker process, whatever the test did
        for pod in await runtime.provider.list_pods():
            await runtime.provider.terminate_pod(pod.name, pod.pod_id)
        await runtime.aclose()
