"""Brings a database to our schema, in one of two layouts:

- **native** (an empty database, or one we set up): our tables and functions in
  the connection's schema, versions from `migrations/`;
- **adopted** (a live Headless-Wan2GP / Reigh database, recognised by its
  markers): nothing of the app's is dropped or altered; our tables, the adapter
  views that read the app's rows in our shape, and our functions live in schema
  `orchestrator`, versions from `adopted/`. Adoption is recorded (an `adopted`
  event with what was found): the breaker's forgiveness point.

Every time, before the versions: what both layouts share (`common/`: our own
tables, created if missing, and the functions that read through the layout's
tables or views, replaced in place); after them, the grants (`grants.sql`):
least privilege re-asserted whatever a dashboard or default privileges changed
meanwhile.

Safe to run concurrently: every run takes one transaction-scoped advisory lock,
so a second process waits, then finds the versions applied and does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import asyncpg

# An arbitrary constant shared by every gpu-orchestrator: the migration lock's id.
_LOCK_ID = 7_461_839_204_117
ADOPTED_SCHEMA = "orchestrator"
# The one function of the app's that adoption changes (see adopted/0001_adopt.sql).
HEARTBEAT = "public.func_worker_heartbeat_with_logs(text, integer, integer, jsonb, uuid, text)"

_CREATE_LEDGER = """
create table if not exists orchestrator_migrations (
    version text primary key,
    applied_at timestamptz not null default now()
)
"""

# What marks a database of the system we replace (all in `public`, where
# Supabase keeps the app's tables): one is enough.
LEGACY_MARKERS_SQL = """
select array_remove(array[
    case when exists (select 1 from pg_type t join pg_namespace n on n.oid = t.typnamespace
                      where n.nspname = 'public' and t.typname = 'task_status'
                        and t.typtype = 'e')
         then 'enum public.task_status' end,
    case when exists (select 1 from information_schema.columns
                      where table_schema = 'public' and table_name = 'workers'
                        and column_name = 'instance_type')
         then 'column public.workers.instance_type' end,
    case when exists (select 1 from pg_trigger tg join pg_proc p on p.oid = tg.tgfoid
                      where tg.tgrelid = to_regclass('public.tasks')
                        and p.proname = 'prevent_timing_manipulation')
         then 'trigger prevent_timing_manipulation on public.tasks' end,
    case when exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                      where n.nspname = 'public' and p.proname = 'func_claim_task')
         then 'function public.func_claim_task' end,
    case when to_regclass('public.task_types') is not null
         then 'table public.task_types' end
], null)
"""

# The forgiveness point, once: rows that ended before it neither bill nor count.
_RECORD_ADOPTION = f"""
insert into orchestrator_events (kind, actor, reason, detail)
select 'adopted', 'migrate', 'adopted a Headless-Wan2GP / Reigh database',
       jsonb_build_object('found', ({LEGACY_MARKERS_SQL.strip()}))
where not exists (select 1 from orchestrator_events where kind = 'adopted')
"""


@dataclass(frozen=True)
class Layout:
    name: str
    schema: str | None  # None: the connection's current schema
    folder: str  # the versioned migrations

    @property
    def prefix(self) -> str:
        """How a caller names our functions: `orchestrator.` when adopted."""
        return f"{self.schema}." if self.schema else ""


NATIVE = Layout("native", None, "migrations")
ADOPTED = Layout("adopted", ADOPTED_SCHEMA, "adopted")


@dataclass(frozen=True)
class Inspection:
    """What `migrate` found, before changing anything."""

    layout: Layout
    markers: tuple[str, ...]  # of the system we replace
    applied: frozenset[str]

    @property
    def pending(self) -> list[str]:
        return [
            version for version, _ in migration_files(self.layout) if version not in self.applied
        ]


def _read(*parts: str) -> str:
    return (resources.files("gpu_orchestrator.store").joinpath(*parts)).read_text(encoding="utf-8")


def grants_sql() -> str:
    return _read("grants.sql")


def unadopt_sql() -> str:
    """The script that undoes an adoption (`migrate --print-sql --unadopt`)."""
    return _read("unadopt.sql")


def migration_files(layout: Layout = NATIVE) -> list[tuple[str, str]]:
    """(version, sql) for every versioned migration of `layout`, sorted."""
    folder = resources.files("gpu_orchestrator.store") / layout.folder
    return sorted(
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )


def common_files() -> list[tuple[str, str]]:
    """(name, sql) of what both layouts share, idempotent and re-applied every
    time: the tables only we use (`00_tables`), then the functions that read
    through the layout's tables or views."""
    return migration_files(Layout("common", None, "common"))


async def inspect_database(conn: asyncpg.Connection) -> Inspection:
    """Which layout this database has (or gets) and what is applied; reads only."""
    markers = tuple(await conn.fetchval(LEGACY_MARKERS_SQL))
    adopted_ledger = await conn.fetchval(
        "select to_regclass($1) is not null", f"{ADOPTED_SCHEMA}.orchestrator_migrations"
    )
    native_ledger = await conn.fetchval("select to_regclass('orchestrator_migrations') is not null")
    if adopted_ledger or (markers and not native_ledger):
        layout, ledger = ADOPTED, f"{ADOPTED_SCHEMA}.orchestrator_migrations"
    else:
        layout, ledger = NATIVE, "orchestrator_migrations"
    applied: frozenset[str] = frozenset()
    if adopted_ledger or native_ledger:
        applied = frozenset(r["version"] for r in await conn.fetch(f"select version from {ledger}"))
    return Inspection(layout, markers, applied)


def _prologue(layout: Layout) -> list[str]:
    """Statements that open a migration transaction of `layout`."""
    statements = [f"select pg_advisory_xact_lock({_LOCK_ID})"]
    if layout.schema:
        statements += [
            f"create schema if not exists {layout.schema}",
            # unqualified names are ours; the app's are always written `public.x`
            f"set local search_path = {layout.schema}",
        ]
    # Functions reference each other regardless of file order: check them at call time.
    statements += ["set local check_function_bodies = off", _CREATE_LEDGER.strip()]
    # What both layouts share comes first: a version may build on it (a view on a helper).
    return statements + [sql for _, sql in common_files()]


def _epilogue(layout: Layout) -> list[str]:
    statements = [_RECORD_ADOPTION.strip()] if layout is ADOPTED else []
    return [*statements, grants_sql()]


def plan_text(found: Inspection) -> str:
    """What `migrate` would do here (`migrate --dry-run`)."""
    if found.layout is ADOPTED:
        lines = [
            "database: Headless-Wan2GP / Reigh (found: " + ", ".join(found.markers) + ")",
            f"layout: adopted — everything of ours in schema {ADOPTED_SCHEMA!r}; the app's "
            "tables, rows, functions, triggers and grants are left as they are, but for:",
            f"  {HEARTBEAT}: "
            + (
                "would be extended in place (same signature, result, security definer, "
                "search_path and grants; its old body still runs first)"
                if not found.applied
                else "extended in place when adopted"
            ),
        ]
    else:
        lines = ["database: native (gpu-orchestrator's own schema)"]
        if found.markers:
            lines.append(
                "  note: it also has objects of Headless-Wan2GP / Reigh ("
                + ", ".join(found.markers)
                + "), but an older gpu-orchestrator set it up natively: it stays native"
            )
    pending = ", ".join(f"{found.layout.folder}/{v}" for v in found.pending)
    lines.append(f"would apply: {pending or 'nothing new'}")
    lines.append(
        "would re-apply: "
        + ", ".join(f"common/{name}" for name, _ in common_files())
        + ", grants.sql"
    )
    if found.layout is ADOPTED and not found.applied:
        lines.append("would record: an `adopted` event (the breaker's forgiveness point)")
    return "\n".join(lines)


def migration_script(layout: Layout = NATIVE) -> str:
    """Every migration of `layout` as one script for a SQL editor: each version
    applied only where the ledger lacks it, then the shared functions and the
    grants, in one transaction. Running it again changes nothing but re-asserting
    the grants. The native script refuses to run on a database of the system we
    replace (use the adopted one there)."""
    parts = [
        "-- gpu-orchestrator migrations: paste into the Supabase SQL editor (or a migration",
        f"-- file for `supabase db push`). Layout: {layout.name}. Safe to run again.",
        "begin;",
    ]
    if layout is NATIVE:
        parts += [
            "do $guard$ begin",
            "  if to_regclass('orchestrator_migrations') is null",
            f"     and cardinality(({LEGACY_MARKERS_SQL.strip()})) > 0 then",
            "    raise exception 'this is a Headless-Wan2GP / Reigh database: print the "
            "adopted script instead (gpu-orchestrator migrate --print-sql --adopted)';",
            "  end if;",
            "end $guard$;",
        ]
    parts += [_statement(sql) for sql in _prologue(layout)]
    for version, sql in migration_files(layout):
        body = f"{sql}\ninsert into orchestrator_migrations (version) values ('{version}');"
        parts += [
            f"-- {layout.folder}/{version}",
            "do $migration$ begin",
            f"  if exists (select 1 from orchestrator_migrations where version = '{version}') then",
            "    return;",
            "  end if;",
            f"  execute {_dollar_quote(body)};",
            "end $migration$;",
        ]
    parts += ["-- grants, re-asserted on every migrate"]
    parts += [_statement(sql) for sql in _epilogue(layout)]
    parts += ["commit;"]
    return "\n".join(parts)


def _statement(sql: str) -> str:
    return sql.strip().rstrip(";") + ";"


def _has_statements(sql: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("--") for line in sql.splitlines())


def _dollar_quote(text: str) -> str:
    tag = "$body$"
    assert tag not in text
    return f"{tag}{text}{tag}"


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Applies the pending migrations of this database's layout; returns the
    versions it applied."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_ID)
        found = await inspect_database(conn)  # under the lock: a racing run has finished
        for statement in _prologue(found.layout):
            await conn.execute(statement)
        for version, sql in migration_files(found.layout):
            if version in found.applied:
                continue
            if _has_statements(sql):  # asyncpg fails on a comment-only script
                await conn.execute(sql)
            await conn.execute("insert into orchestrator_migrations (version) values ($1)", version)
            applied_now.append(version)
        for statement in _epilogue(found.layout):
            await conn.execute(statement)
    return applied_now
