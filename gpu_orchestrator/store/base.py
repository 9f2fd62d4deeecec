"""What the orchestrator and the worker agent need from the state store.

Every method is one call of one SQL function (see `migrations/`), so a direct
Postgres store and a REST store implement the same contract. Methods raise
`StoreError` when the store cannot be read or written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import LeaseLost
from ..models import Expected, Reason, Snapshot, WorkerStatus
from .writes import GroupAnswer, Write


@dataclass(frozen=True)
class Lease:
    leader: bool
    holder: str
    epoch: int  # grows each time leadership changes hands
    expires_at: datetime
    ttl_sec: float  # how long it is held from now, by the database clock
    last_contact: datetime | None  # when it was renewed before this call (by anyone)


@dataclass(frozen=True)
class Demand:
    """How the snapshot counts demand (`GPU_TASK_TYPES`, `DEMAND_SQL_FUNCTION`):
    queued GPU tasks of these types (empty: all of them), or what this SQL
    function answers (e.g. the app's count of the tasks it would hand out)."""

    gpu_task_types: tuple[str, ...] = ()
    sql_function: str | None = None

    def params(self) -> tuple[list[str] | None, str | None]:
        return list(self.gpu_task_types) or None, self.sql_function


@dataclass(frozen=True)
class Fence:
    """The lease a leader's writes are checked against. The database refuses a
    write whose epoch is no longer held; `check` refuses, before a provider call,
    once the local deadline (the lease's end, less a margin) has passed, which the
    database cannot see for a call that is not a write."""

    name: str
    epoch: int
    deadline: float  # `time.monotonic()` after which the lease may have moved

    def check(self) -> None:
        if time.monotonic() >= self.deadline:
            raise LeaseLost(f"lease {self.name} epoch {self.epoch}: the cycle outlived it")


@dataclass(frozen=True)
class ReleasedTasks:
    requeued: tuple[str, ...]
    failed: tuple[str, ...]  # dead-lettered: `MAX_TASK_ATTEMPTS` reached
    quarantined: tuple[str, ...] = ()  # poison: killed two workers

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.quarantined)


# The JSON answers of the SQL functions, read the same way by both stores.


def lease_from(out: Mapping[str, Any]) -> Lease:
    """`orch_acquire_lease`'s answer."""
    contact = out["last_contact"]
    return Lease(
        leader=bool(out["leader"]),
        holder=str(out["holder"]),
        epoch=int(out["epoch"]),
        expires_at=datetime.fromisoformat(out["expires_at"]),
        ttl_sec=float(out["ttl_sec"]),
        last_contact=None if contact is None else datetime.fromtimestamp(contact, UTC),
    )


def released_from(out: Mapping[str, Any]) -> ReleasedTasks:
    """`orch_release_tasks`'s answer."""
    return ReleasedTasks(
        requeued=tuple(map(str, out["requeued"])),
        failed=tuple(map(str, out["failed"])),
        quarantined=tuple(map(str, out["quarantined"])),
    )


def events_from(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`orch_recent_events`'s answer, times as datetimes."""
    return [{**row, "at": datetime.fromtimestamp(row["at"], UTC)} for row in rows]


class OrchestratorStore(Protocol):
    async def observe(self, horizon_sec: float, queue_cap: int | None = None) -> Snapshot:
        """One call. `horizon_sec`: how far back launch history is read;
        `queue_cap`: stop counting queued tasks there (None: exact)."""

    # Every write below takes `fence`: the leader's lease, checked in the same
    # transaction (`LeaseLost` when it is no longer held); None for an operator's
    # command, which is audited and compare-and-set like any transition.

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
        """Compare-and-set on what the plan observed (`expect`), or from any status
        allowed to reach `to`; False when the row moved on (someone moved first).
        `released`: no pod is left."""

    async def record_event(
        self,
        kind: str,
        actor: str,
        reason: str,
        detail: Mapping[str, Any] | None = None,
        *,
        fence: Fence | None,
    ) -> None:
        """Appends a breaker transition, a blind spell, an orphan pod or an operator
        lever to `orchestrator_events`."""

    async def apply_writes(
        self, groups: Sequence[Sequence[Write]], *, fence: Fence | None
    ) -> list[GroupAnswer]:
        """The writes of many actions in one call, one group per action (see
        `writes`); one answer per group. `LeaseLost`: none of them applied."""

    async def set_setting(self, name: str, value: Any) -> None:
        """A setting the database enforces whoever calls (`max_task_attempts`)."""

    async def maintenance(self, log_retention_sec: float, *, fence: Fence | None) -> dict[str, int]:
        """Prunes `system_logs` past the retention and dead-letters queued tasks whose
        attempts reached the limit; returns how many of each."""

    async def acquire_lease(self, name: str, holder: str, ttl_sec: float) -> Lease: ...

    async def release_lease(self, name: str, holder: str) -> None: ...

    async def enqueue_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> int: ...

    async def close(self) -> None: ...


class WorkerStore(Protocol):
    """The four calls a worker agent makes, with the existing function names."""

    async def heartbeat(
        self,
        worker_id: str,
        logs: Sequence[Mapping[str, Any]],
        current_task_id: str | None,
        status: str = "active",
    ) -> dict[str, Any]: ...

    async def claim_task(self, worker_id: str) -> dict[str, Any] | None: ...

    async def tasks_held(self, worker_id: str) -> list[str]:
        """Ids of the `In Progress` tasks this worker holds (an agent's start-up check)."""

    async def complete_task(
        self, task_id: str, worker_id: str, result: Mapping[str, Any]
    ) -> bool: ...

    async def fail_task(
        self, task_id: str, worker_id: str, error: str, max_attempts: int
    ) -> bool: ...

    async def close(self) -> None: ...
