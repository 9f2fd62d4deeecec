"""The data the policy reads (Snapshot) and writes (Plan), and the vocabulary they share.

Everything here is a frozen value: the pure policy takes a `Snapshot` and a
`PolicyConfig` and returns a `Plan`. No I/O, no clock: `Snapshot.now` is the
database server's time at observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class WorkerStatus(StrEnum):
    """`workers.status` values. The first five are ours; the rest are legacy values
    written by the system we replace, read without crashing and never written."""

    SPAWNING = "spawning"
    ACTIVE = "active"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    ERROR = "error"
    INACTIVE = "inactive"
    EXTERNAL = "external"
    CRASHED = "crashed"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, raw: str | None) -> WorkerStatus:
        try:
            return cls(raw or "")
        except ValueError:
            return cls.UNKNOWN


# The worker state machine, written once. Each edge names its trigger. Legacy and
# terminal statuses map to nothing: we never move a row out of them.
TRANSITIONS: dict[WorkerStatus, frozenset[WorkerStatus]] = {
    WorkerStatus.SPAWNING: frozenset(
        {
            WorkerStatus.ACTIVE,  # first heartbeat (SQL heartbeat function)
            WorkerStatus.TERMINATING,  # scale-down or operator drain before boot
            WorkerStatus.ERROR,  # spawn_failed, boot_timeout, crashed
        }
    ),
    WorkerStatus.ACTIVE: frozenset(
        {
            WorkerStatus.TERMINATING,  # drain requested (idle scale-down, operator)
            WorkerStatus.ERROR,  # heartbeat_lost, stuck_task, crashed
        }
    ),
    WorkerStatus.TERMINATING: frozenset(
        {
            WorkerStatus.TERMINATED,  # drained (idle) or drain_timeout; pod terminated
            WorkerStatus.ERROR,  # heartbeat_lost, stuck_task, crashed while draining
        }
    ),
    WorkerStatus.TERMINATED: frozenset(),
    WorkerStatus.ERROR: frozenset(),  # its pod is terminated, then `terminated_at` is set
    WorkerStatus.INACTIVE: frozenset(),
    WorkerStatus.EXTERNAL: frozenset(),
    WorkerStatus.CRASHED: frozenset(),
    WorkerStatus.UNKNOWN: frozenset(),
}

# Statuses whose pod we launched and may still be running (and billing).
LIVE_STATUSES = frozenset({WorkerStatus.SPAWNING, WorkerStatus.ACTIVE, WorkerStatus.TERMINATING})


def sources_of(target: WorkerStatus) -> tuple[str, ...]:
    """Statuses a row may be in for a move to `target` (the compare-and-set set)."""
    return tuple(sorted(s.value for s, dests in TRANSITIONS.items() if target in dests))


class Reason(StrEnum):
    """Machine-readable reason codes carried by every action and worker event."""

    # why we spawn
    QUEUE_DEMAND = "queue_demand"
    MIN_ACTIVE = "min_active"
    IDLE_BUFFER = "idle_buffer"
    # failures (DESIGN §4)
    SPAWN_FAILED = "spawn_failed"
    BOOT_TIMEOUT = "boot_timeout"
    HEARTBEAT_LOST = "heartbeat_lost"
    CRASHED = "crashed"
    STUCK_TASK = "stuck_task"
    POD_VANISHED = "pod_vanished"
    # normal exits
    SCALED_DOWN = "scaled_down"
    DRAINED = "drained"
    DRAIN_TIMEOUT = "drain_timeout"
    MANUAL = "manual"
    # neutral
    CAPACITY = "capacity"
    ORPHAN = "orphan"
    # why spawning is held back
    MAX_ACTIVE_REACHED = "max_active_reached"
    RAMP_LIMIT = "ramp_limit"
    # a reason read back from the database that this version does not know
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, raw: str | None) -> Reason:
        try:
            return cls(raw or "")
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True)
class TaskHold:
    """An `In Progress` task and who holds it."""

    task_id: str
    worker_id: str | None  # None: claimed by nobody we know (corrupt or legacy row)
    started_at: datetime | None  # `generation_started_at` (claim time)
    attempts: int


@dataclass(frozen=True)
class WorkerView:
    """One `workers` row as the policy sees it."""

    id: str
    status: WorkerStatus
    created_at: datetime
    ready_at: datetime | None  # first heartbeat
    last_heartbeat: datetime | None
    drain_requested_at: datetime | None  # set when moved to `terminating`
    terminated_at: datetime | None  # pod confirmed gone
    last_task_finished_at: datetime | None
    tasks_completed: int = 0
    pod_id: str | None = None
    termination_reason: Reason | None = None

    @property
    def pod_released(self) -> bool:
        """True once nothing of this worker can still be running or billing."""
        return self.terminated_at is not None

    def idle_since(self) -> datetime | None:
        """When it last became idle: ready time or its last finished task."""
        if self.ready_at is None:
            return None
        if self.last_task_finished_at is None:
            return self.ready_at
        return max(self.ready_at, self.last_task_finished_at)


@dataclass(frozen=True)
class QueueStats:
    """The queue as one cycle sees it."""

    queued: int  # claimable `Queued` tasks
    oldest_queued_at: datetime | None


@dataclass(frozen=True)
class Snapshot:
    """Everything one cycle needs, read in one database call."""

    now: datetime  # the database server's clock
    # live and `external` rows, plus `error` rows whose pod is not yet released
    workers: tuple[WorkerView, ...]
    holds: tuple[TaskHold, ...]  # every `In Progress` task
    queue: QueueStats

    def holds_by_worker(self) -> dict[str, list[TaskHold]]:
        out: dict[str, list[TaskHold]] = {}
        for hold in self.holds:
            if hold.worker_id is not None:
                out.setdefault(hold.worker_id, []).append(hold)
        return out


@dataclass(frozen=True)
class PolicyConfig:
    """The settings the policy reads (built from `config.Settings`)."""

    min_active_gpus: int = 0
    max_active_gpus: int = 4
    tasks_per_gpu_threshold: int = 3
    machines_to_keep_idle: int = 0
    overcapacity_idle_timeout_sec: float = 300.0
    min_worker_lifetime_sec: float = 300.0
    max_spawns_per_cycle: int = 4
    spawning_timeout_sec: float = 600.0
    gpu_idle_timeout_sec: float = 300.0
    task_stuck_timeout_sec: float = 3600.0
    graceful_shutdown_timeout_sec: float = 600.0
    max_task_attempts: int = 3


class ActionKind(StrEnum):
    SPAWN = "spawn"  # write an intent row, then ask the provider for a pod
    FAIL = "fail"  # live -> error; then release (requeue tasks, terminate pod)
    DRAIN = "drain"  # spawning/active -> terminating: claims refused from now on
    STOP = "stop"  # terminating -> terminated: requeue leftovers, terminate pod
    RELEASE = "release"  # an `error` row whose pod may still run: requeue, terminate pod
    REQUEUE_ORPHAN = "requeue_orphan"  # an `In Progress` task whose holder is gone


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    reason: Reason
    message: str  # one line for humans
    worker_id: str | None = None  # None for SPAWN (the shell names the worker)
    task_id: str | None = None  # REQUEUE_ORPHAN only


@dataclass(frozen=True)
class Plan:
    """What one cycle will do, and what it will not do and why."""

    actions: tuple[Action, ...]
    desired_workers: int  # fleet size the queue asks for, within bounds
    capacity: int  # booting + active workers that accept tasks, after this plan's failures
    unmet_demand: int  # workers wanted but not spawned this cycle
    held_back: tuple[Reason, ...] = field(default=())  # why unmet demand was not spawned

    def count(self, kind: ActionKind) -> int:
        return sum(1 for a in self.actions if a.kind is kind)
