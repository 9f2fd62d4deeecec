"""Health rules: which workers have failed, finished draining, or left work behind.

Each rule looks at one worker (or one orphaned task) at the snapshot's `now` and
returns at most one action with its reason code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..models import (
    Action,
    ActionKind,
    PolicyConfig,
    Reason,
    Snapshot,
    TaskHold,
    WorkerStatus,
    WorkerView,
)


def _age(now: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else (now - since).total_seconds()


def judge_worker(
    worker: WorkerView, held: Sequence[TaskHold], now: datetime, cfg: PolicyConfig
) -> Action | None:
    """The action one worker needs this cycle, or None when it is fine."""
    status = worker.status
    if status is WorkerStatus.ERROR:
        reason = worker.termination_reason or Reason.UNKNOWN
        return Action(
            ActionKind.RELEASE,
            reason,
            "failed worker: requeue its tasks, terminate its pod",
            worker_id=worker.id,
        )
    if status is WorkerStatus.SPAWNING:
        booting = _age(now, worker.created_at)
        if booting > cfg.spawning_timeout_sec:
            return Action(
                ActionKind.FAIL,
                Reason.BOOT_TIMEOUT,
                f"no first heartbeat {booting:.0f}s after spawn "
                f"(SPAWNING_TIMEOUT_SEC={cfg.spawning_timeout_sec:g})",
                worker_id=worker.id,
            )
        return None
    if status not in (WorkerStatus.ACTIVE, WorkerStatus.TERMINATING):
        return None  # external and legacy rows are not ours to manage

    if status is WorkerStatus.TERMINATING and not held:
        return Action(ActionKind.STOP, Reason.DRAINED, "drained and idle", worker_id=worker.id)
    silent = _age(now, worker.last_heartbeat or worker.ready_at or worker.created_at)
    if silent > cfg.gpu_idle_timeout_sec:
        return Action(
            ActionKind.FAIL,
            Reason.HEARTBEAT_LOST,
            f"last heartbeat {silent:.0f}s ago (GPU_IDLE_TIMEOUT_SEC={cfg.gpu_idle_timeout_sec:g})",
            worker_id=worker.id,
        )
    longest = max((_age(now, h.started_at) for h in held), default=0.0)
    if longest > cfg.task_stuck_timeout_sec:
        return Action(
            ActionKind.FAIL,
            Reason.STUCK_TASK,
            f"a task has run {longest:.0f}s "
            f"(TASK_STUCK_TIMEOUT_SEC={cfg.task_stuck_timeout_sec:g})",
            worker_id=worker.id,
        )
    if status is WorkerStatus.TERMINATING:
        draining = _age(now, worker.drain_requested_at)
        if draining > cfg.graceful_shutdown_timeout_sec:
            return Action(
                ActionKind.STOP,
                Reason.DRAIN_TIMEOUT,
                f"still busy {draining:.0f}s after drain request "
                f"(GRACEFUL_SHUTDOWN_TIMEOUT_SEC={cfg.graceful_shutdown_timeout_sec:g})",
                worker_id=worker.id,
            )
    return None


def orphan_requeues(snapshot: Snapshot) -> list[Action]:
    """`In Progress` tasks whose holder is no row of the snapshot (terminated,
    legacy or unknown): nobody will ever finish them."""
    known = {w.id for w in snapshot.workers}
    return [
        Action(
            ActionKind.REQUEUE_ORPHAN,
            Reason.ORPHAN,
            f"in progress on {hold.worker_id or 'no worker'}, which is gone",
            worker_id=hold.worker_id,
            task_id=hold.task_id,
        )
        for hold in snapshot.holds
        if hold.worker_id is None or hold.worker_id not in known
    ]


def health_actions(snapshot: Snapshot, cfg: PolicyConfig) -> list[Action]:
    """Every health action of this cycle, workers in snapshot order, then orphans."""
    holds = snapshot.holds_by_worker()
    actions = [
        action
        for worker in snapshot.workers
        if (action := judge_worker(worker, holds.get(worker.id, ()), snapshot.now, cfg))
    ]
    return actions + orphan_requeues(snapshot)
