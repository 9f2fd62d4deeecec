"""Applies the versioned SQL migrations in `migrations/`, in order, once each,
then the grants (`grants.sql`) every time: least privilege is re-asserted on every
migrate, whatever a dashboard or default privileges changed meanwhile.

Safe to run concurrently: every run takes one transaction-scoped advisory lock,
so a second process waits, then finds the versions applied and does nothing.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

# An arbitrary constant shared by every gpu-orchestrator: the migration lock's id.
_LOCK_ID = 7_461_839_204_117

_CREATE_LEDGER = """
create table if not exists orchestrator_migrations (
    version text primary key,
    applied_at timestamptz not null default now()
)
"""


def grants_sql() -> str:
    return (resources.files("gpu_orchestrator.store") / "grants.sql").read_text(encoding="utf-8")


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration, sorted by version."""
    folder = resources.files("gpu_orchestrator.store") / "migrations"
    files = sorted(
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return files


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Applies the pending migrations; returns the versions it applied."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_ID)
        await conn.execute(_CREATE_LEDGER)
        done = {
            r["version"] for r in await conn.fetch("select version from orchestrator_migrations")
        }
        for version, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("insert into orchestrator_migrations (version) values ($1)", version)
            applied_now.append(version)
        await conn.execute(grants_sql())
    return applied_now
