"""The state store over Supabase's Data API (PostgREST), on the async supabase-py
client: each operation is **one** `rpc()` of the same SQL function the asyncpg
store calls (`postgres.py`), so both stores have the same semantics and no rule
lives in Python.

- Explicit timeouts; reads and idempotent calls are retried on transport errors
  and 5xx, writes never (a write whose answer was lost is judged again next cycle
  from what the database says).
- `APIError` codes become the store's errors: `GOL01` → `LeaseLost`; an unknown
  function (`PGRST202`, `42883`) → `SchemaMissing` ("run `gpu-orchestrator
  migrate`"); `42501` → the key lacks the rights; anything else → `StoreError`.
- The snapshot is one `json` value: PostgREST's 1,000-row cap never applies.
- Migrations cannot run over REST: `schema_version()` lets a caller check the
  database is migrated (see `gpu-orchestrator migrate --print-sql`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from postgrest.exceptions import APIError
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from ..errors import LeaseLost, SchemaMissing, StoreError
from ..models import Expected, Reason, Snapshot, WorkerStatus
from . import writes
from .base import Demand, Fence, Lease, events_from, lease_from
from .migrate import ADOPTED_SCHEMA
from .snapshot import parse_snapshot
from .writes import GroupAnswer, Write, batch_json, group_answers

_READ_TRIES = 3
_LEASE_LOST = "GOL01"
# no such function, or (asking for schema `orchestrator`) no such exposed schema
_NO_FUNCTION = ("PGRST202", "42883", "PGRST106")


def _lease(fence: Fence | None) -> dict[str, Any]:
    if fence is None:
        return {"lease_name_param": None, "lease_epoch_param": None}
    return {"lease_name_param": fence.name, "lease_epoch_param": fence.epoch}


def _translate(operation: str, exc: APIError) -> StoreError:
    code = exc.code or ""
    if code == _LEASE_LOST:
        return LeaseLost(f"{operation}: {exc.message}")
    if code in _NO_FUNCTION:
        return SchemaMissing(
            f"{operation}: this database has no gpu-orchestrator schema (or an older one): "
            "run `gpu-orchestrator migrate --print-sql` and apply it in the Supabase SQL "
            "editor, or `gpu-orchestrator migrate` with DATABASE_URL"
        )
    if code == "42501":
        return StoreError(
            f"{operation}: permission denied: the orchestrator needs the service role key "
            "(SUPABASE_SERVICE_ROLE_KEY), never the anon key"
        )
    return StoreError(f"{operation} failed: {code} {exc.message}".rstrip())


class SupabaseStore:
    """Implements `OrchestratorStore` and `WorkerStore` (see `base`) over `rpc()`."""

    def __init__(
        self, client: AsyncClient, *, retry_delay: float = 0.5, demand: Demand = Demand()
    ) -> None:
        self._client = client
        self._demand = demand
        # Where our functions are: `orchestrator` on an adopted database (see
        # store/migrate.py; the schema must be exposed by the Data API), else the
        # default schema. The worker API stays in the default schema.
        self._ours = client.postgrest
        self._retry_delay = retry_delay

    @classmethod
    async def connect(
        cls, url: str, key: str, timeout: float = 10.0, demand: Demand = Demand()
    ) -> SupabaseStore:
        options = AsyncClientOptions(
            httpx_client=httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0)),
            postgrest_client_retry=False,  # ours: reads only
            auto_refresh_token=False,
            persist_session=False,
        )
        try:
            client = await acreate_client(url, key, options=options)
        except Exception as exc:  # supabase-py raises its own bare exceptions for bad input
            raise StoreError(f"connect to {url} failed: {type(exc).__name__}: {exc}") from exc
        return cls(client, demand=demand)

    async def _rpc(
        self, operation: str, fn: str, params: Mapping[str, Any], *, read: bool = False
    ) -> Any:
        tries = _READ_TRIES if read else 1
        for attempt in range(1, tries + 1):
            try:
                api = self._ours if fn.startswith("orch_") else self._client.postgrest
                return (await api.rpc(fn, dict(params)).execute()).data
            except APIError as exc:
                if read and attempt < tries and (exc.code or "").startswith(("08", "PGRST0")):
                    await asyncio.sleep(self._retry_delay * attempt)
                    continue
                raise _translate(operation, exc) from exc
            except httpx.HTTPError as exc:
                if attempt < tries:
                    await asyncio.sleep(self._retry_delay * attempt)
                    continue
                raise StoreError(f"{operation} failed: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        await self._client.postgrest.aclose()

    async def ping(self, timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            await self.schema_version()

    def use_adopted_schema(self) -> None:
        """Our functions are in schema `orchestrator` (an adopted database)."""
        self._ours = self._client.schema(ADOPTED_SCHEMA)

    def use_native_schema(self) -> None:
        self._ours = self._client.postgrest

    async def schema_version(self) -> list[str]:
        """The migration versions applied to the database."""
        return list(await self._rpc("schema_version", "orch_schema_version", {}, read=True))

    # orchestrator ---------------------------------------------------------

    async def observe(self, horizon_sec: float = 1800.0, queue_cap: int | None = None) -> Snapshot:
        types, demand_sql = self._demand.params()
        doc = await self._rpc(
            "observe",
            "orch_snapshot",
            {
                "horizon_sec_param": horizon_sec,
                "queue_cap_param": queue_cap,
                "gpu_task_types_param": types,
                "demand_sql_param": demand_sql,
            },
            read=True,
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
        write = writes.transition_worker(
            worker_id, to, reason, detail, expect=expect, released=released
        )
        return bool(
            await self._rpc(
                "transition_worker",
                "orch_transition_worker",
                {**_lease(fence), **write.as_params()},
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
        await self._rpc(
            "record_event",
            "orch_record_event",
            {
                **_lease(fence),
                "kind_param": kind,
                "actor_param": actor,
                "reason_param": reason,
                "detail_param": dict(detail or {}),
            },
        )

    async def apply_writes(
        self, groups: Sequence[Sequence[Write]], *, fence: Fence | None
    ) -> list[GroupAnswer]:
        out = await self._rpc(
            "apply_writes",
            "orch_apply_writes",
            {**_lease(fence), "actions_param": batch_json(groups)},
        )
        return group_answers(out)

    async def set_setting(self, name: str, value: Any) -> None:
        await self._rpc(
            "set_setting", "orch_set_setting", {"name_param": name, "value_param": value}
        )

    async def maintenance(self, log_retention_sec: float, *, fence: Fence | None) -> dict[str, int]:
        out = await self._rpc(
            "maintenance",
            "orch_maintenance",
            {**_lease(fence), "log_retention_param": f"{log_retention_sec:g} seconds"},
        )
        return {k: int(v) for k, v in out.items()}

    async def acquire_lease(self, name: str, holder: str, ttl_sec: float) -> Lease:
        out = await self._rpc(
            "acquire_lease",
            "orch_acquire_lease",
            {"name_param": name, "holder_param": holder, "ttl_sec_param": ttl_sec},
        )
        return lease_from(out)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._rpc(
            "release_lease", "orch_release_lease", {"name_param": name, "holder_param": holder}
        )

    async def enqueue_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> int:
        return int(
            await self._rpc(
                "enqueue_tasks", "orch_enqueue_tasks", {"tasks_param": [dict(t) for t in tasks]}
            )
        )

    async def recent_events(self, since_sec: float) -> list[dict[str, Any]]:
        rows = await self._rpc(
            "recent_events", "orch_recent_events", {"since_sec_param": since_sec}, read=True
        )
        return events_from(rows)

    async def task_counts(self) -> dict[str, int]:
        return dict(await self._rpc("task_counts", "orch_task_counts", {}, read=True))

    async def list_logs(
        self, worker_id: str | None, task_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        params = {"worker_id_param": worker_id, "task_id_param": task_id, "limit_param": limit}
        return list(await self._rpc("list_logs", "orch_logs", params, read=True))

    async def list_workers(self, limit: int) -> list[dict[str, Any]]:
        return list(
            await self._rpc("list_workers", "orch_workers", {"limit_param": limit}, read=True)
        )

    async def list_tasks(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        params = {"status_param": status, "limit_param": limit}
        return list(await self._rpc("list_tasks", "orch_tasks", params, read=True))

    # worker agent ---------------------------------------------------------

    async def heartbeat(
        self,
        worker_id: str,
        logs: Sequence[Mapping[str, Any]],
        current_task_id: str | None,
        status: str = "active",
    ) -> dict[str, Any]:
        out = await self._rpc(
            "heartbeat",
            "func_worker_heartbeat_with_logs",
            {
                "worker_id_param": worker_id,
                "logs_param": [dict(line) for line in logs],
                "current_task_id_param": current_task_id,
                "status_param": status,
            },
        )
        return dict(out)

    async def claim_task(self, worker_id: str) -> dict[str, Any] | None:
        rows = await self._rpc(
            "claim_task", "func_claim_available_task", {"worker_id_param": worker_id}
        )
        if not rows:
            return None
        row = rows[0]
        return {k: row[k] for k in ("id", "task_type", "params", "attempts")}

    async def complete_task(self, task_id: str, worker_id: str, result: Mapping[str, Any]) -> bool:
        out = await self._rpc(
            "complete_task",
            "func_mark_task_complete",
            {
                "task_id_param": task_id,
                "result_data_param": dict(result),
                "worker_id_param": worker_id,
            },
        )
        return bool(out["success"])

    async def fail_task(self, task_id: str, worker_id: str, error: str, max_attempts: int) -> bool:
        out = await self._rpc(
            "fail_task",
            "func_mark_task_failed",
            {
                "task_id_param": task_id,
                "error_message_param": error,
                "worker_id_param": worker_id,
                "max_attempts_param": max_attempts,
            },
        )
        return bool(out["success"])

    async def tasks_held(self, worker_id: str) -> list[str]:
        held = await self._rpc(
            "tasks_held", "func_tasks_held_by", {"worker_id_param": worker_id}, read=True
        )
        return [str(task_id) for task_id in held]
