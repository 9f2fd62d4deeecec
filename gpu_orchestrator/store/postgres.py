"""The state store over asyncpg: one SQL function call per operation."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import asyncpg
import msgspec

from ..errors import LeaseLost, SchemaMissing, StoreError
from ..models import Expected, Reason, Snapshot, WorkerStatus, sources_of
from .base import Demand, Fence, Lease, events_from, lease_from
from .migrate import ADOPTED
from .snapshot import parse_snapshot
from .writes import GroupAnswer, Write, batch_json, group_answers

# Errors that mean "the store could not be reached or answered", translated at
# this edge so the loop deals with one category.
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
# Raised by `orch_check_lease` (migrations/0003_fencing.sql).
LEASE_LOST_SQLSTATE = "GOL01"


def _lease(fence: Fence | None) -> tuple[str | None, int | None]:
    return (None, None) if fence is None else (fence.name, fence.epoch)


@contextlib.asynccontextmanager
async def _translated(operation: str) -> AsyncIterator[None]:
    try:
        yield
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == LEASE_LOST_SQLSTATE:
            raise LeaseLost(f"{operation}: {exc}") from exc
        if exc.sqlstate == "42883":  # undefined function: not migrated, or too old
            raise SchemaMissing(
                f"{operation}: this database has no gpu-orchestrator schema (or an older "
                "one): run `gpu-orchestrator migrate`"
            ) from exc
        raise StoreError(f"{operation} failed: {type(exc).__name__}: {exc}") from exc
    except _DRIVER_ERRORS as exc:
        raise StoreError(f"{operation} failed: {type(exc).__name__}: {exc}") from exc


def uses_transaction_pooler(dsn: str) -> bool:
    """Supabase's transaction pooler (port 6543, or `pgbouncer=true`) cannot keep
    prepared statements between transactions."""
    parsed = urlparse(dsn)
    return parsed.port == 6543 or "pgbouncer=true" in (parsed.query or "")


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ, encoder=json.dumps, decoder=msgspec.json.decode, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset on release (a round trip per call): we keep no
    session state (no session locks, LISTEN or cursors between calls)."""


async def create_pool(dsn: str, max_size: int = 10, timeout: float = 10.0) -> asyncpg.Pool:
    async with _translated("connect"):
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            command_timeout=30,
            statement_cache_size=0 if uses_transaction_pooler(dsn) else 100,
            init=_init_connection,
            reset=_keep_session,
        )
    assert pool is not None
    return pool


class PostgresStore:
    """Implements `OrchestratorStore` and `WorkerStore` (see `base`)."""

    def __init__(self, pool: asyncpg.Pool, namespace: str = "", demand: Demand = Demand()) -> None:
        self._pool = pool
        self._demand = demand
        # How our functions are named: `orchestrator.` on an adopted database (see
        # store/migrate.py), where nothing of ours is in the app's schema.
        self._ns = namespace

    @classmethod
    async def connect(
        cls, dsn: str, max_size: int = 10, demand: Demand = Demand()
    ) -> PostgresStore:
        pool = await create_pool(dsn, max_size=max_size)
        async with _translated("connect"):
            adopted = await pool.fetchval(
                "select to_regclass($1) is not null", f"{ADOPTED.schema}.orchestrator_migrations"
            )
        return cls(pool, ADOPTED.prefix if adopted else "", demand)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def _val(self, operation: str, sql: str, *args: Any) -> Any:
        async with _translated(operation):
            return await self._pool.fetchval(sql, *args)

    async def _call(self, operation: str, call: str, *args: Any) -> Any:
        """`select` one of our functions: `call` is e.g. `orch_snapshot($1, $2)`."""
        return await self._val(operation, f"select {self._ns}{call}", *args)

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self, timeout: float = 2.0) -> None:
        """`select 1` within `timeout` s (pool acquisition included)."""
        async with _translated("ping"), asyncio.timeout(timeout):
            await self._pool.fetchval("select 1")

    # orchestrator ---------------------------------------------------------

    async def observe(self, horizon_sec: float = 1800.0, queue_cap: int | None = None) -> Snapshot:
        # as text: `parse_snapshot` decodes it once, straight into the policy's types
        doc = await self._call(
            "observe",
            "orch_snapshot($1, $2, $3, $4)::text",
            horizon_sec,
            queue_cap,
            *self._demand.params(),
        )
        return parse_snapshot(doc, queue_cap)

    async def transition_worker(
        self,
        worker_id: str,
        to: WorkerStatus,
        reason: Reason,
        detail: Mapping[str, Any] | None = None,
        *,
        fence: Fence | None,
        expect: Expected | None = None,
        released: bool = False,
    ) -> bool:
        sources = sources_of(to) if expect is None else (expect.status.value,)
        return bool(
            await self._call(
                "transition_worker",
                "orch_transition_worker($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                *_lease(fence),
                worker_id,
                list(sources),
                to.value,
                reason.value,
                detail or {},
                released,
                expect is not None and expect.heartbeat_judged,
                None if expect is None else expect.heartbeat,
                expect is not None and expect.idle,
            )
        )

    async def record_event(
        self,
        kind: str,
        actor: str,
        reason: str,
        detail: Mapping[str, Any] | None = None,
        *,
        fence: Fence | None,
    ) -> None:
        await self._call(
            "record_event",
            "orch_record_event($1, $2, $3, $4, $5, $6)",
            *_lease(fence),
            kind,
            actor,
            reason,
            detail or {},
        )

    async def apply_writes(
        self, groups: Sequence[Sequence[Write]], *, fence: Fence | None
    ) -> list[GroupAnswer]:
        out = await self._call(
            "apply_writes",
            "orch_apply_writes($1, $2, $3)",
            *_lease(fence),
            batch_json(groups),
        )
        return group_answers(out)

    async def set_setting(self, name: str, value: Any) -> None:
        await self._call("set_setting", "orch_set_setting($1, $2)", name, value)

    async def maintenance(self, log_retention_sec: float, *, fence: Fence | None) -> dict[str, int]:
        out = await self._call(
            "maintenance",
            "orch_maintenance($1, $2, $3)",
            *_lease(fence),
            timedelta(seconds=log_retention_sec),
        )
        return {k: int(v) for k, v in out.items()}

    async def acquire_lease(self, name: str, holder: str, ttl_sec: float) -> Lease:
        out = await self._call(
            "acquire_lease",
            "orch_acquire_lease($1, $2, $3)",
            name,
            holder,
            ttl_sec,
        )
        return lease_from(out)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._call("release_lease", "orch_release_lease($1, $2)", name, holder)

    async def enqueue_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> int:
        return int(await self._call("enqueue_tasks", "orch_enqueue_tasks($1)", list(tasks)))

    async def recent_events(self, since_sec: float) -> list[dict[str, Any]]:
        """Orchestrator events of the last `since_sec`, oldest first (for people)."""
        rows = await self._call("recent_events", "orch_recent_events($1)", since_sec)
        return events_from(rows)

    async def task_counts(self) -> dict[str, int]:
        """Tasks by status, for people (the cycle never reads this)."""
        return dict(await self._call("task_counts", "orch_task_counts()"))

    async def list_logs(
        self, worker_id: str | None, task_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        return list(
            await self._call("list_logs", "orch_logs($1, $2, $3)", worker_id, task_id, limit)
        )

    async def list_workers(self, limit: int) -> list[dict[str, Any]]:
        return list(await self._call("list_workers", "orch_workers($1)", limit))

    async def list_tasks(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        return list(await self._call("list_tasks", "orch_tasks($1, $2)", status, limit))

    # worker agent ---------------------------------------------------------

    async def heartbeat(
        self,
        worker_id: str,
        logs: Sequence[Mapping[str, Any]],
        current_task_id: str | None,
        status: str = "active",
    ) -> dict[str, Any]:
        out = await self._val(
            "heartbeat",
            "select func_worker_heartbeat_with_logs($1, null, null, $2, $3, $4)",
            worker_id,
            list(logs),
            current_task_id,
            status,
        )
        return dict(out)

    async def claim_task(self, worker_id: str) -> dict[str, Any] | None:
        async with _translated("claim_task"):
            row = await self._pool.fetchrow(
                "select id::text, task_type, params, attempts from func_claim_available_task($1)",
                worker_id,
            )
        return None if row is None else dict(row)

    async def tasks_held(self, worker_id: str) -> list[str]:
        held = await self._val("tasks_held", "select func_tasks_held_by($1)", worker_id)
        return [str(task_id) for task_id in held]

    async def complete_task(self, task_id: str, worker_id: str, result: Mapping[str, Any]) -> bool:
        out = await self._val(
            "complete_task",
            "select func_mark_task_complete($1::uuid, $2, $3)",
            task_id,
            result,
            worker_id,
        )
        return bool(out["success"])

    async def fail_task(self, task_id: str, worker_id: str, error: str, max_attempts: int) -> bool:
        out = await self._val(
            "fail_task",
            "select func_mark_task_failed($1::uuid, $2, $3, $4)",
            task_id,
            error,
            worker_id,
            max_attempts,
        )
        return bool(out["success"])
