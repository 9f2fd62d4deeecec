"""Builds the parts of a running orchestrator from settings: the database (direct,
embedded, or Supabase's Data API), migrations, the store, the provider, the
executor and the loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from .config import Settings
from .errors import DatabaseRefused, SchemaMissing, SettingsError, StoreError
from .executor import Executor
from .loop import Orchestrator
from .providers.base import Provider, worker_environment
from .providers.local import LocalProvider
from .providers.runpod import RunpodProvider
from .store.embedded import embedded_dsn
from .store.migrate import (
    ADOPTED,
    NATIVE,
    Inspection,
    apply_migrations,
    inspect_database,
    migration_files,
)
from .store.postgres import PostgresStore, uses_transaction_pooler
from .store.supabase import SupabaseStore

Store = PostgresStore | SupabaseStore

# Answers that never change by waiting: wrong password, unknown role or database.
_REFUSALS = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)

_MIGRATE_ADVICE = (
    "run `gpu-orchestrator migrate --print-sql` and apply its output in the Supabase SQL "
    "editor (or `gpu-orchestrator migrate` with DATABASE_URL)"
)


async def resolve_dsn(settings: Settings) -> str:
    """`DATABASE_URL`, or the embedded Postgres under `ORCHESTRATOR_DATA_DIR`."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return await embedded_dsn(settings.orchestrator_data_dir, keep=settings.embedded_postgres_keep)


@contextlib.asynccontextmanager
async def _migration_connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    try:
        cache = 0 if uses_transaction_pooler(dsn) else 100
        conn = await asyncpg.connect(dsn, timeout=10, statement_cache_size=cache)
    except _REFUSALS as exc:
        raise DatabaseRefused(f"the database refused the connection: {exc}") from exc
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise StoreError(f"cannot connect to the database: {exc}") from exc
    try:
        yield conn
    finally:
        await conn.close()


async def migrate(dsn: str) -> list[str]:
    """Applies pending migrations; returns the versions applied now."""
    async with _migration_connection(dsn) as conn:
        return await apply_migrations(conn)


async def inspect(dsn: str) -> Inspection:
    """What `migrate` would find and do here; changes nothing."""
    async with _migration_connection(dsn) as conn:
        return await inspect_database(conn)


async def connect_store(settings: Settings, max_size: int = 1) -> Store:
    """The configured store, connected, never migrated (a command that changes
    things must not migrate silently); the REST store checks the schema."""
    if settings.store_kind == "supabase":
        return await connect_rest_store(settings)
    return await PostgresStore.connect(
        await resolve_dsn(settings), max_size=max_size, demand=settings.demand()
    )


async def connect_rest_store(settings: Settings) -> SupabaseStore:
    """Supabase's Data API with the service role key. Raises `SettingsError` (exit 2)
    when the database is not migrated: over REST it cannot be."""
    url, key = settings.supabase_url, settings.supabase_service_role_key
    if url is None or key is None:
        raise SettingsError(
            "SUPABASE_SERVICE_ROLE_KEY is unset: the orchestrator's REST store needs it "
            "(SUPABASE_WORKER_KEY is for workers)"
        )
    store = await SupabaseStore.connect(url, key.get_secret_value(), demand=settings.demand())
    layout, applied = NATIVE, set[str]()
    try:
        applied = set(await store.schema_version())
    except SchemaMissing:
        store.use_adopted_schema()  # an adopted database keeps ours in `orchestrator`
        try:
            layout, applied = ADOPTED, set(await store.schema_version())
        except SchemaMissing:
            store.use_native_schema()
    pending = [version for version, _ in migration_files(layout) if version not in applied]
    if pending:
        await store.close()
        raise SettingsError(
            f"SUPABASE_URL={url}: the database lacks migrations {', '.join(pending)}: "
            + _MIGRATE_ADVICE
            + " (on an adopted Headless-Wan2GP / Reigh database: migrate --print-sql "
            "--adopted, and expose schema `orchestrator` under Settings > API > Exposed schemas)"
        )
    return store


def build_provider(settings: Settings) -> Provider:
    if settings.provider_name == "runpod":
        return RunpodProvider(settings)
    return LocalProvider(settings.orchestrator_data_dir, settings.local_worker_command)


@dataclass
class Runtime:
    settings: Settings
    dsn: str | None  # None on the REST store
    store: Store
    provider: Provider
    orchestrator: Orchestrator

    async def aclose(self) -> None:
        await self.provider.aclose()
        await self.store.close()


async def open_runtime(
    settings: Settings,
    *,
    dsn: str | None = None,
    provider: Provider | None = None,
    migrated: bool = True,
) -> Runtime:
    """Connects, migrates (`migrated`; never over REST, which is checked instead,
    nor in shadow mode, which writes nothing) and wires everything; the caller
    closes it."""
    store: Store
    if dsn is None and settings.store_kind == "supabase":
        store = await connect_rest_store(settings)
    else:
        dsn = dsn or await resolve_dsn(settings)
        if migrated and not settings.shadow:
            await migrate(dsn)
        store = await PostgresStore.connect(
            dsn, max_size=settings.action_concurrency + 2, demand=settings.demand()
        )
    provider = provider or build_provider(settings)
    if not settings.shadow:
        # The attempts limit lives in the database, so no worker can pass its own.
        await store.set_setting("max_task_attempts", settings.max_task_attempts)
    executor = Executor(
        store,
        provider,
        lambda worker_id: worker_environment(settings, settings.worker_dsn or dsn, worker_id),
        name_prefix=settings.worker_name_prefix,
        max_task_attempts=settings.max_task_attempts,
        actor=settings.orchestrator_id,
        fingerprint=settings.launch_fingerprint,
        concurrency=settings.action_concurrency,
    )
    orchestrator = Orchestrator(
        store,
        executor,
        settings.policy(),
        holder=settings.orchestrator_id,
        lease_sec=settings.leader_lease_sec,
        cycle_timeout_sec=settings.cycle_timeout_sec,
        log_retention_sec=settings.system_logs_retention_days * 86400,
        shadow=settings.shadow,
    )
    return Runtime(settings, dsn, store, provider, orchestrator)
