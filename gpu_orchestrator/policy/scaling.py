"""Scaling rules: how many workers the queue asks for, and which idle ones to drain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from ..models import PolicyConfig, QueueStats, TaskHold, WorkerStatus, WorkerView


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def queue_demand(queue: QueueStats, busy: int, cfg: PolicyConfig) -> int:
    """Workers the work asks for: one per busy worker plus one per
    `TASKS_PER_GPU_THRESHOLD` queued tasks (unbounded)."""
    return busy + _ceil_div(queue.queued, cfg.tasks_per_gpu_threshold)


def desired_workers(demand: int, cfg: PolicyConfig) -> int:
    """Demand plus the idle buffer, within `MIN_ACTIVE_GPUS`..`MAX_ACTIVE_GPUS`."""
    wanted = demand + cfg.machines_to_keep_idle
    return max(cfg.min_active_gpus, min(cfg.max_active_gpus, wanted))


_DRAINABLE = frozenset({WorkerStatus.ACTIVE})  # a set test: cheaper than an Enum read


def drain_candidates(
    workers: Sequence[WorkerView],
    holds: Mapping[str, Sequence[TaskHold]],
    now: datetime,
    cfg: PolicyConfig,
) -> list[WorkerView]:
    """Active workers that may be scaled down, longest idle first: they hold no
    task, have idled `GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC` and lived
    `MIN_WORKER_LIFETIME_SEC`. Booting workers are never drained."""
    idle_by = now - timedelta(seconds=cfg.overcapacity_idle_timeout_sec)
    born_by = now - timedelta(seconds=cfg.min_worker_lifetime_sec)
    eligible: list[tuple[datetime, str, WorkerView]] = []
    for w in workers:
        if w.status not in _DRAINABLE or holds.get(w.id):
            continue
        idle_since = w.idle_since()
        if idle_since is not None and idle_since <= idle_by and w.created_at <= born_by:
            eligible.append((idle_since, w.id, w))
    return [w for _, _, w in sorted(eligible, key=lambda item: (item[0], item[1]))]
