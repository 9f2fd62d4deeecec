"""Health rules: which workers have failed, finished draining, or left work behind.

Each rule looks at one worker (or one orphaned task) at the snapshot's `now` and
returns at most one action with its reason code, and the state it judged (the
action's `expect`: its transition is a compare-and-set on it).

Silence is never held against a worker for time nobody could read the database:
after a blind spell (`blind_until`), every worker gets a full heartbeat timeout
to report before it is judged on silence or on a missed boot deadline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from ..models import (
    Action,
    ActionKind,
    Expected,
    PolicyConfig,
    Reason,
    Snapshot,
    TaskHold,
    WorkerStatus,
    WorkerView,
)


def _age(now: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else (now - since).total_seconds()


def observation_gap(snapshot: Snapshot, cfg: PolicyConfig) -> tuple[datetime, datetime] | None:
    """(from, to): the orchestrators' previous contact with the database was longer
    ago than a healthy loop allows, so nobody could see the fleet meanwhile."""
    since = snapshot.last_contact_at
    if since is None or _age(snapshot.now, since) <= cfg.observation_gap_sec:
        return None
    return since, snapshot.now


def silence(worker: WorkerView, now: datetime, blind_until: datetime | None) -> float:
    """Seconds the worker has been silent in time the database could be reached."""
    heard = worker.last_heartbeat or worker.ready_at or worker.created_at
    if blind_until is not None and blind_until > heard:
        heard = blind_until
    return (now - heard).total_seconds()


def _stuck_limits(holds: Iterable[TaskHold], cfg: PolicyConfig) -> dict[str | None, float | None]:
    """`cfg.stuck_after_sec` of each task type held: its patterns matched once per
    type per cycle, not once per task."""
    return {task_type: cfg.stuck_after_sec(task_type) for task_type in {h.task_type for h in holds}}


def _stuck_task(
    held: Sequence[TaskHold], now: datetime, limits: Mapping[str | None, float | None]
) -> tuple[float, float] | None:
    """(seconds run, limit) of the held task furthest past its type's limit."""
    worst: tuple[float, float] | None = None
    for hold in held:
        limit = limits[hold.task_type]
        if limit is None or hold.started_at is None:
            continue
        ran = (now - hold.started_at).total_seconds()
        if ran > limit and (worst is None or ran - limit > worst[0] - worst[1]):
            worst = (ran, limit)
    return worst


# Workers whose heartbeats and tasks are judged, tested once per worker: reading
# an Enum member off its class costs ~70 ns in Python 3.11, five times per worker
# per cycle before this.
_RUNNING = frozenset({WorkerStatus.ACTIVE, WorkerStatus.TERMINATING})


def judge_worker(
    worker: WorkerView,
    held: Sequence[TaskHold],
    now: datetime,
    cfg: PolicyConfig,
    limits: Mapping[str | None, float | None],
    blind_until: datetime | None = None,
) -> Action | None:
    """The action one worker needs this cycle, or None when it is fine. `limits`:
    `_stuck_limits` of the held tasks; `blind_until`: the end of the latest blind
    spell (see the module docstring)."""
    status = worker.status
    if status not in _RUNNING:
        return _judge_not_running(worker, now, cfg, blind_until)
    draining = status is WorkerStatus.TERMINATING
    if draining and not held:
        return Action(
            ActionKind.STOP,
            Reason.DRAINED,
            "drained and idle",
            worker_id=worker.id,
            expect=Expected(status),
        )
    silent = silence(worker, now, blind_until)
    if silent > cfg.gpu_idle_timeout_sec:
        return Action(
            ActionKind.FAIL,
            Reason.HEARTBEAT_LOST,
            f"silent for {silent:.0f}s (GPU_IDLE_TIMEOUT_SEC={cfg.gpu_idle_timeout_sec:g})",
            worker_id=worker.id,
            expect=Expected(status, worker.last_heartbeat, heartbeat_judged=True),
        )
    stuck = _stuck_task(held, now, limits)
    if stuck is not None:
        ran, limit = stuck
        return Action(
            ActionKind.FAIL,
            Reason.STUCK_TASK,
            f"a task has run {ran:.0f}s ("
            + (
                f"TASK_STUCK_TIMEOUT_SEC={limit:g}"
                if limit == cfg.task_stuck_timeout_sec
                else f"{limit:g}s for its type: TASK_STUCK_TIMEOUT_BY_TYPE"
            )
            + ")",
            worker_id=worker.id,
            expect=Expected(status),
        )
    if draining:
        drained_for = _age(now, worker.drain_requested_at)
        if drained_for > cfg.graceful_shutdown_timeout_sec:
            return Action(
                ActionKind.STOP,
                Reason.DRAIN_TIMEOUT,
                f"still busy {drained_for:.0f}s after drain request "
                f"(GRACEFUL_SHUTDOWN_TIMEOUT_SEC={cfg.graceful_shutdown_timeout_sec:g})",
                worker_id=worker.id,
                expect=Expected(status),
            )
    return None


def _judge_not_running(
    worker: WorkerView, now: datetime, cfg: PolicyConfig, blind_until: datetime | None
) -> Action | None:
    """A failed worker is released; a booting one judged on its boot deadline;
    external and legacy rows are not ours to manage."""
    status = worker.status
    if status is WorkerStatus.ERROR:
        reason = worker.termination_reason or Reason.UNKNOWN
        return Action(
            ActionKind.RELEASE,
            reason,
            "failed worker: requeue its tasks, terminate its pod",
            worker_id=worker.id,
        )
    if status is not WorkerStatus.SPAWNING:
        return None
    booting = _age(now, worker.created_at)
    just_seen = blind_until is not None and _age(now, blind_until) <= cfg.gpu_idle_timeout_sec
    if booting <= cfg.spawning_timeout_sec or just_seen:
        return None
    if worker.pod_id is None:
        # No answer to the create, and no list ever showed a pod: nothing says a
        # pod ran, so nothing says one failed.
        return Action(
            ActionKind.FAIL,
            Reason.CREATE_LOST,
            f"no pod seen {booting:.0f}s after an unanswered create",
            worker_id=worker.id,
            expect=Expected(status),
        )
    return Action(
        ActionKind.FAIL,
        Reason.BOOT_TIMEOUT,
        f"no first heartbeat {booting:.0f}s after spawn "
        f"(SPAWNING_TIMEOUT_SEC={cfg.spawning_timeout_sec:g})",
        worker_id=worker.id,
        expect=Expected(status),
    )


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


def health_actions(
    snapshot: Snapshot,
    cfg: PolicyConfig,
    holds: Mapping[str, Sequence[TaskHold]],
    blind_until: datetime | None = None,
) -> list[Action]:
    """Every health action of this cycle, workers in snapshot order, then orphans.
    `holds`: the snapshot's `holds_by_worker()`."""
    now = snapshot.now
    limits = _stuck_limits(snapshot.holds, cfg)
    actions = [
        action
        for worker in snapshot.workers
        if (action := judge_worker(worker, holds.get(worker.id, ()), now, cfg, limits, blind_until))
    ]
    return actions + orphan_requeues(snapshot)
