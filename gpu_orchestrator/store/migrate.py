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


def migration_script() -> str:
    """Every migration as one script for a SQL editor: each version applied only
    where the ledger lacks it, then the grants, in one transaction. Running it on a
    migrated database changes nothing but re-asserting the grants."""
    parts = [
        "-- gpu-orchestrator migrations: paste into the Supabase SQL editor (or a migration",
        "-- file for `supabase db push`). Safe to run again.",
        "begin;",
        f"select pg_advisory_xact_lock({_LOCK_ID});",
        _CREATE_LEDGER.strip() + ";",
    ]
    for version, sql in migration_files():
        body = f"{sql}\ninsert into orchestrator_migrations (version) values ('{version}');"
        parts += [
            f"-- {version}",
            "do $migration$ begin",
            f"  if exists (select 1 from orchestrator_migrations where version = '{version}') then",
            "    return;",
            "  end if;",
            f"  execute {_dollar_quote(body)};",
            "end $migration$;",
        ]
    parts += ["-- grants, re-asserted on every migrate", grants_sql().strip(), "commit;"]
    return "\n".join(parts)


def _dollar_quote(text: str) -> str:
    tag = "$body$"
    assert tag not in text
    return f"{tag}{text}{tag}"


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
