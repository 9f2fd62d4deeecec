"""`decide`: one snapshot in, one plan out. Observed failures first, then scaling."""

from __future__ import annotations

from ..models import (
    Action,
    ActionKind,
    Plan,
    PolicyConfig,
    Reason,
    Snapshot,
    WorkerStatus,
)
from .health import health_actions
from .scaling import desired_workers, drain_candidates, queue_demand

_ACCEPTS_TASKS = (WorkerStatus.SPAWNING, WorkerStatus.ACTIVE)


def decide(snapshot: Snapshot, cfg: PolicyConfig) -> Plan:
    """The plan for this cycle. Pure: same snapshot and config, same plan."""
    health = health_actions(snapshot, cfg)
    leaving = {a.worker_id for a in health if a.kind in (ActionKind.FAIL, ActionKind.STOP)}
    holds = snapshot.holds_by_worker()

    serving = [w for w in snapshot.workers if w.status in _ACCEPTS_TASKS and w.id not in leaving]
    capacity = len(serving)
    busy = sum(1 for w in serving if holds.get(w.id))
    demand = queue_demand(snapshot.queue, busy, cfg)
    desired = desired_workers(demand, cfg)

    # Pods that may still bill: everything not released, failing ones included
    # until their termination is confirmed.
    pods = sum(1 for w in snapshot.workers if w.status is not WorkerStatus.EXTERNAL)
    shortfall = max(0, desired - capacity)
    room = max(0, cfg.max_active_gpus - pods)
    spawns = min(shortfall, room, cfg.max_spawns_per_cycle)
    held_back: list[Reason] = []
    if spawns < shortfall:
        held_back.append(Reason.MAX_ACTIVE_REACHED if room < shortfall else Reason.RAMP_LIMIT)

    actions = list(health)
    for n in range(spawns):
        reason = _spawn_reason(capacity + n, demand, cfg)
        actions.append(
            Action(ActionKind.SPAWN, reason, f"fleet {capacity + n} of {desired} wanted")
        )
    if capacity > desired:
        idle = drain_candidates(serving, holds, snapshot.now, cfg)
        for w in idle[: capacity - desired]:
            actions.append(
                Action(
                    ActionKind.DRAIN,
                    Reason.SCALED_DOWN,
                    f"idle, fleet {capacity} above {desired} wanted",
                    worker_id=w.id,
                )
            )
    return Plan(
        actions=tuple(actions),
        desired_workers=desired,
        capacity=capacity,
        unmet_demand=shortfall - spawns,
        held_back=tuple(held_back),
    )


def _spawn_reason(capacity: int, demand: int, cfg: PolicyConfig) -> Reason:
    if capacity < min(demand, cfg.max_active_gpus):
        return Reason.QUEUE_DEMAND
    if capacity < cfg.min_active_gpus:
        return Reason.MIN_ACTIVE
    return Reason.IDLE_BUFFER
