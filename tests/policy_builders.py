"""Readable builders for policy tests: snapshots written in "seconds ago" at a fixed `T0`.

    snap(
        worker("w1", ACTIVE, finished_age=900),
        worker("w2", SPAWNING, age=30),
        holds=[hold("t1", "w1", age=60)],
        queued=4,
    )

Every age is in seconds before the snapshot's `now` (default `T0`); `None` means the
timestamp is not set. Defaults describe a healthy worker of that status, so a test
only spells out what it is about.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import Enum

from gpu_orchestrator.models import (
    Action,
    ActionKind,
    BreakerState,
    BreakerTransition,
    BreakerView,
    Plan,
    PolicyConfig,
    QueueStats,
    Reason,
    Snapshot,
    TaskHold,
    WorkerStatus,
    WorkerView,
)

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

SPAWNING = WorkerStatus.SPAWNING
ACTIVE = WorkerStatus.ACTIVE
TERMINATING = WorkerStatus.TERMINATING
TERMINATED = WorkerStatus.TERMINATED
ERROR = WorkerStatus.ERROR
EXTERNAL = WorkerStatus.EXTERNAL
INACTIVE = WorkerStatus.INACTIVE
CRASHED = WorkerStatus.CRASHED
UNKNOWN = WorkerStatus.UNKNOWN


class _Auto(Enum):
    AUTO = "auto"


AUTO = _Auto.AUTO  # "what a healthy worker of this status would have"

# Every v1 setting spelled out, so the tables do not depend on `PolicyConfig` defaults
# (breaker and capacity-backoff settings keep theirs; breaker tests set their own).
BASE_CONFIG = PolicyConfig(
    min_active_gpus=0,
    max_active_gpus=10,
    tasks_per_gpu_threshold=1,
    machines_to_keep_idle=0,
    overcapacity_idle_timeout_sec=300.0,
    min_worker_lifetime_sec=600.0,
    max_spawns_per_cycle=10,
    spawning_timeout_sec=600.0,
    gpu_idle_timeout_sec=120.0,
    task_stuck_timeout_sec=3600.0,
    graceful_shutdown_timeout_sec=900.0,
    max_task_attempts=3,
)


# The seed runbook's breaker: 30-minute window, threshold 0.8, minimum 5.
SEED_BREAKER = replace(
    BASE_CONFIG,
    max_worker_failure_rate=0.8,
    failure_window_sec=1800.0,
    min_workers_for_rate_check=5,
    breaker_probe_interval_sec=300.0,
    breaker_probe_max_interval_sec=3600.0,
    breaker_evidence_sec=300.0,
    capacity_backoff_sec=60.0,
    capacity_backoff_max_sec=1800.0,
)


def config(**overrides: object) -> PolicyConfig:
    """`BASE_CONFIG` with some settings changed: `config(max_active_gpus=2)`."""
    return replace(BASE_CONFIG, **overrides)  # type: ignore[arg-type]


def ago(seconds: float | None, now: datetime = T0) -> datetime | None:
    return None if seconds is None else now - timedelta(seconds=seconds)


def _ready_by_default(status: WorkerStatus) -> bool:
    return status in (ACTIVE, TERMINATING, ERROR, EXTERNAL, INACTIVE, CRASHED)


def worker(
    worker_id: str,
    status: WorkerStatus = ACTIVE,
    *,
    age: float = 3600.0,
    ready_age: float | _Auto | None = AUTO,
    heartbeat_age: float | _Auto | None = AUTO,
    finished_age: float | None = None,
    drain_age: float | _Auto | None = AUTO,
    released: bool = False,
    reason: Reason | None = None,
    pod_id: str | None = None,
    pod_missing_age: float | None = None,
    now: datetime = T0,
) -> WorkerView:
    """One worker row.

    age: since the row was created (spawn intent).
    ready_age: since its first heartbeat; AUTO: `age` for statuses past boot, else None.
    heartbeat_age: since its last heartbeat; AUTO: 5 s once ready, else None.
    finished_age: since it last finished a task (None: never finished one).
    drain_age: since drain was requested; AUTO: 10 s for `terminating`, else None.
    released: the pod is confirmed gone (`terminated_at` set).
    reason: `termination_reason`.
    pod_id: its pod (None: no create answered yet).
    pod_missing_age: since a pod list first missed its pod (None: the last one showed it).
    """
    if ready_age is AUTO:
        ready_age = age if _ready_by_default(status) else None
    if heartbeat_age is AUTO:
        heartbeat_age = 5.0 if ready_age is not None else None
    if drain_age is AUTO:
        drain_age = 10.0 if status is TERMINATING else None
    created = ago(age, now)
    assert created is not None
    return WorkerView(
        id=worker_id,
        status=status,
        created_at=created,
        ready_at=ago(ready_age, now),
        last_heartbeat=ago(heartbeat_age, now),
        drain_requested_at=ago(drain_age, now),
        terminated_at=now if released else None,
        last_task_finished_at=ago(finished_age, now),
        termination_reason=reason,
        pod_id=pod_id,
        pod_missing_since=ago(pod_missing_age, now),
    )


def hold(
    task_id: str,
    worker_id: str | None,
    age: float | None = 60.0,
    *,
    attempts: int = 1,
    task_type: str | None = None,
    now: datetime = T0,
) -> TaskHold:
    """An `In Progress` task claimed `age` seconds ago by `worker_id`."""
    return TaskHold(
        task_id=task_id,
        worker_id=worker_id,
        started_at=ago(age, now),
        attempts=attempts,
        task_type=task_type,
    )


def snap(
    *workers: WorkerView,
    holds: Iterable[TaskHold] = (),
    queued: int = 0,
    oldest_queued_age: float | None = None,
    now: datetime = T0,
) -> Snapshot:
    return Snapshot(
        now=now,
        workers=tuple(workers),
        holds=tuple(holds),
        queue=QueueStats(queued=queued, oldest_queued_at=ago(oldest_queued_age, now)),
    )


# -- reading plans ---------------------------------------------------------------------


def spawn_reasons(plan: Plan) -> list[Reason]:
    return [a.reason for a in plan.actions if a.kind is ActionKind.SPAWN]


def worker_actions(plan: Plan) -> dict[str, tuple[ActionKind, Reason]]:
    """Actions on snapshot workers (FAIL, DRAIN, STOP, RELEASE) by worker id."""
    out: dict[str, tuple[ActionKind, Reason]] = {}
    for a in plan.actions:
        if a.kind in (ActionKind.SPAWN, ActionKind.REQUEUE_ORPHAN):
            continue
        assert a.worker_id is not None, a
        assert a.worker_id not in out, f"two actions for {a.worker_id}: {plan.actions}"
        out[a.worker_id] = (a.kind, a.reason)
    return out


def requeued_tasks(plan: Plan) -> list[str]:
    return [
        a.task_id
        for a in plan.actions
        if a.kind is ActionKind.REQUEUE_ORPHAN and a.task_id is not None
    ]


def of_kind(plan: Plan, kind: ActionKind) -> list[Action]:
    return [a for a in plan.actions if a.kind is kind]


# The status each worker action moves its row to.
ACTION_TARGET: dict[ActionKind, WorkerStatus] = {
    ActionKind.FAIL: ERROR,
    ActionKind.DRAIN: TERMINATING,
    ActionKind.STOP: TERMINATED,
}


def breaker_view(
    state: BreakerState = BreakerState.CLOSED,
    *,
    failures: tuple[tuple[Reason, int], ...] = (),
    proven: int = 0,
    transition: BreakerTransition | None = None,
) -> BreakerView:
    """A breaker view with quiet defaults: no probe, no ramp, no forecast."""
    failed = sum(n for _, n in failures)
    sample = failed + proven
    return BreakerView(
        state=state,
        failed=failed,
        proven=proven,
        rate=failed / sample if sample else None,
        failures_by_reason=failures,
        tripped=state is not BreakerState.CLOSED,
        evidence_worker=None,
        probe_interval_sec=300.0,
        next_probe_at=None,
        probe_worker=None,
        probation=False,
        booting_limit=None,
        aging_out=(),
        rate_ok_at=None,
        transition=transition,
    )
