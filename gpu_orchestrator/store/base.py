"""What the orchestrator and the worker agent need from the state store.

Every method is one call of one SQL function (see `migrations/`), so a direct
Postgres store and a REST store implement the same contract. Methods raise
`StoreError` when the store cannot be read or written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..models import Reason, Snapshot, WorkerStatus


@dataclass(frozen=True)
class Lease:
    leader: bool
    holder: str
    epoch: int  # grows each time leadership changes hands
    expires_at: datetime


@dataclass(frozen=True)
class ReleasedTasks:
    requeued: tuple[str, ...]
    failed: tuple[str, ...]  # dead-lettered: `MAX_TASK_ATTEMPTS` reached
    quarantined: tuple[str, ...] = ()  # poison: killed two workers

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.quarantined)


class OrchestratorStore(Protocol):
    async def observe(self, horizon_sec: float, queue_cap: int | None = None) -> Snapshot:
        """One call. `horizon_sec`: how far back launch history is read;
        `queue_cap`: stop counting queued tasks there (None: exact)."""

    async def create_worker(self, worker_id: str, provider: str, detail: Mapping[str, Any]) -> None:
        """Writes the intent row (`spawning`) before any pod is requested."""

    async def record_pod(self, worker_id: str, pod_id: str, cost_per_hr: float | None) -> None: ...

    async def transition_worker(
        self,
        worker_id: str,
        to: WorkerStatus,
        reason: Reason,
        detail: Mapping[str, Any] | None = None,
        *,
        released: bool = False,
    ) -> bool:
        """Compare-and-set from the statuses allowed to reach `to`; False when the
        row was elsewhere (someone moved first). `released`: no pod is left."""

    async def mark_released(self, worker_id: str) -> None:
        """The worker's pod is confirmed gone."""

    async def release_tasks(
        self,
        worker_id: str | None,
        task_id: str | None,
        max_attempts: int,
        error: str,
        *,
        holder_died: bool = False,
    ) -> ReleasedTasks:
        """Requeues (or dead-letters at the limit) `In Progress` tasks of a holder;
        when the holder died, a task that has killed two workers is quarantined."""

    async def record_event(
        self, kind: str, actor: str, reason: str, detail: Mapping[str, Any] | None = None
    ) -> None:
        """Appends a breaker transition or an operator lever to `orchestrator_events`."""

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

    async def complete_task(
        self, task_id: str, worker_id: str, result: Mapping[str, Any]
    ) -> bool: ...

    async def fail_task(
        self, task_id: str, worker_id: str, error: str, max_attempts: int
    ) -> bool: ...

    async def close(self) -> None: ...
