"""Builds the parts of a running orchestrator from settings: the database (direct
or embedded), migrations, the store, the provider, the executor and the loop."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from .config import Settings
from .errors import StoreError
from .executor import Executor
from .loop import Orchestrator
from .providers.base import Provider, worker_environment
from .providers.local import LocalProvider
from .providers.runpod import RunpodProvider
from .store.embedded import embedded_dsn
from .store.migrate import apply_migrations
from .store.postgres import PostgresStore, uses_transaction_pooler


async def resolve_dsn(settings: Settings) -> str:
    """`DATABASE_URL`, or the embedded Postgres under `ORCHESTRATOR_DATA_DIR`."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return await embedded_dsn(settings.orchestrator_data_dir)


async def migrate(dsn: str) -> list[str]:
    """Applies pending migrations; returns the versions applied now."""
    try:
        cache = 0 if uses_transaction_pooler(dsn) else 100
        conn = await asyncpg.connect(dsn, timeout=10, statement_cache_size=cache)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"cannot connect to the database: {exc}") from exc
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


def build_provider(settings: Settings) -> Provider:
    if settings.provider_name == "runpod":
        return RunpodProvider(settings)
    return LocalProvider(settings.orchestrator_data_dir, settings.local_worker_command)


@dataclass
class Runtime:
    settings: Settings
    dsn: str
    store: PostgresStore
    provider: Provider
    orchestrator: Orchestrator

    async def aclose(self) -> None:
        await self.provider.aclose()
        await self.store.close()


async def open_runtime(
    settings: Settings, *, dsn: str | None = None, provider: Provider | None = None
) -> Runtime:
    """Connects, migrates and wires everything; the caller closes it."""
    dsn = dsn or await resolve_dsn(settings)
    provider = provider or build_provider(settings)
    await migrate(dsn)
    store = await PostgresStore.connect(dsn, max_size=settings.action_concurrency + 2)
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
    )
    return Runtime(settings, dsn, store, provider, orchestrator)
