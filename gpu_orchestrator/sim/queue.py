"""The simulated task queue, with the semantics of the SQL functions in
`store/migrations/` (the simulator never imports the store):

- `func_claim_available_task`: the oldest `Queued` task below the attempts limit,
  only for a worker that is `spawning` or `active` and not draining;
- `func_mark_task_complete`: from `In Progress` only;
- `orch_release_tasks`: the holder's `In Progress` tasks go back with
  `attempts + 1`, dead-lettered (`Failed`) at `MAX_TASK_ATTEMPTS`; a task two dead
  workers held is quarantined as poison (and their deaths become task-caused)
  when another worker completed another task since the first of those deaths.

The system we replace reset orphaned tasks without `attempts + 1` (DESIGN §1):
`counts_attempts=False` simulates that.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from ..models import TaskHold

QUARANTINE_AFTER = 2  # `quarantine_after_param`'s default in orch_release_tasks


class TaskStatus(StrEnum):
    QUEUED = "Queued"
    IN_PROGRESS = "In Progress"
    COMPLETE = "Complete"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


@dataclass
class SimTask:
    id: str
    created_at: datetime
    duration_sec: float
    poison: bool = False  # kills the worker that runs it
    status: TaskStatus = TaskStatus.QUEUED
    attempts: int = 0
    worker_id: str | None = None
    started_at: datetime | None = None
    first_claimed_at: datetime | None = None
    finished_at: datetime | None = None
    quarantined: bool = False
    lost_by: list[str] = field(default_factory=list)  # workers that died holding it
    run: int = 0  # claims so far: tells a finish event of this claim from a stale one


@dataclass(frozen=True)
class Released:
    requeued: int
    dead_lettered: int
    task_caused: tuple[str, ...]  # workers whose deaths a quarantine reclassified


class TaskQueue:
    def __init__(self, max_attempts: int, *, counts_attempts: bool) -> None:
        self._max_attempts = max_attempts
        self._counts_attempts = counts_attempts
        self.tasks: dict[str, SimTask] = {}
        self._queued: list[tuple[datetime, str]] = []  # heap; entries may be stale
        self._held: dict[str, SimTask] = {}  # In Progress, by id
        self._completed: list[tuple[datetime, str]] = []  # (finished_at, worker), in order

    def add(self, task: SimTask) -> None:
        self.tasks[task.id] = task
        heapq.heappush(self._queued, (task.created_at, task.id))

    def _claimable(self, task: SimTask) -> bool:
        return task.status is TaskStatus.QUEUED and task.attempts < self._max_attempts

    def _drop_stale(self) -> None:
        while self._queued and not self._claimable(self.tasks[self._queued[0][1]]):
            heapq.heappop(self._queued)

    def queued(self) -> int:
        """Claimable tasks (the snapshot's `queued`)."""
        self._drop_stale()
        return sum(1 for _, tid in self._queued if self._claimable(self.tasks[tid]))

    def oldest_queued_at(self) -> datetime | None:
        self._drop_stale()
        return self._queued[0][0] if self._queued else None

    def claim(self, worker_id: str, now: datetime) -> SimTask | None:
        self._drop_stale()
        if not self._queued:
            return None
        task = self.tasks[heapq.heappop(self._queued)[1]]
        task.status, task.worker_id, task.started_at = TaskStatus.IN_PROGRESS, worker_id, now
        task.first_claimed_at = task.first_claimed_at or now
        task.run += 1
        self._held[task.id] = task
        return task

    def complete(self, task: SimTask, now: datetime) -> None:
        assert task.status is TaskStatus.IN_PROGRESS and task.worker_id is not None
        task.status, task.finished_at = TaskStatus.COMPLETE, now
        del self._held[task.id]
        self._completed.append((now, task.worker_id))

    def cancel_waiting(self, created_before: datetime, now: datetime) -> None:
        """The users gave up on tasks still queued since before `created_before`."""
        for task in self.tasks.values():
            if task.status is TaskStatus.QUEUED and task.created_at < created_before:
                task.status, task.finished_at = TaskStatus.CANCELLED, now

    def holds(self) -> tuple[TaskHold, ...]:
        return tuple(
            TaskHold(t.id, t.worker_id, t.started_at, t.attempts) for t in self._held.values()
        )

    def release(
        self,
        worker_id: str | None,
        task_id: str | None,
        now: datetime,
        *,
        holder_died: bool,
        failed_at: Callable[[str], datetime | None],
    ) -> Released:
        """`orch_release_tasks`; `failed_at`: a worker's failure time (for quarantine)."""
        requeued = dead = 0
        task_caused: list[str] = []
        for task in [t for t in self._held.values() if t.worker_id == worker_id]:
            if task_id is not None and task.id != task_id:
                continue
            del self._held[task.id]
            if holder_died and worker_id is not None:
                task.lost_by.append(worker_id)
            if self._counts_attempts and self._is_poison(task, failed_at):
                task.status, task.quarantined, task.finished_at = TaskStatus.FAILED, True, now
                task.attempts += 1
                task_caused += task.lost_by
            elif self._counts_attempts and task.attempts + 1 >= self._max_attempts:
                task.status, task.finished_at = TaskStatus.FAILED, now
                task.attempts += 1
                dead += 1
            else:
                task.attempts += 1 if self._counts_attempts else 0
                task.status, task.worker_id, task.started_at = TaskStatus.QUEUED, None, None
                heapq.heappush(self._queued, (task.created_at, task.id))
                requeued += 1
        return Released(requeued, dead, tuple(task_caused))

    def _is_poison(self, task: SimTask, failed_at: Callable[[str], datetime | None]) -> bool:
        if len(task.lost_by) < QUARANTINE_AFTER:
            return False
        deaths = [t for w in task.lost_by if (t := failed_at(w)) is not None]
        since = min(deaths, default=None)
        lost = set(task.lost_by)
        # another task completed by another worker since the first death: the
        # platform was fine meanwhile, so the task is at fault
        return since is not None and any(
            worker not in lost and at >= since for at, worker in reversed(self._completed)
        )
