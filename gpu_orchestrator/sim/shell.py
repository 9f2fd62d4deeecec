"""Applies a plan to the simulated world with the executor's semantics
(`executor.py`): breaker transitions and pod sightings recorded first; a status
written before its pod is touched; a refused offering is a neutral intent row and
the next offering is tried; a create without an answer leaves its row `spawning`
for a later pod list to adopt (ours) or fails it (the baseline); a pod that could
not be terminated leaves its row unreleased, retried by the next cycle."""

from __future__ import annotations

from datetime import datetime

from ..models import Action, ActionKind, BreakerRecord, Plan, Reason, WorkerStatus
from .policies import SimPolicy
from .provider import Created
from .rows import WorkerRow
from .world import World


class Shell:
    def __init__(self, world: World, policy: SimPolicy) -> None:
        self._world = world
        self._policy = policy
        self._minted = 0

    def apply(self, plan: Plan, now: datetime) -> None:
        world = self._world
        move = plan.breaker.transition if plan.breaker else None
        if move is not None:
            world.breaker = BreakerRecord(move.to, now, move.reason, move.probe_interval_sec)
        if plan.sightings:
            for worker_id in plan.sightings.missing:
                world.rows[worker_id].pod_missing_since = now
            for worker_id in plan.sightings.seen:
                world.rows[worker_id].pod_missing_since = None
        for action in plan.actions:
            self._run(action, now)
        world.dispatch(now)  # requeued tasks and new capacity meet at once

    def _run(self, action: Action, now: datetime) -> None:
        world, kind = self._world, action.kind
        if kind is ActionKind.SPAWN:
            world.launches.append(now)
            self._spawn(action, now)
            return
        worker_id = action.worker_id
        assert worker_id is not None
        row = world.rows.get(worker_id)
        if kind is ActionKind.TERMINATE_ORPHAN_POD:
            world.terminate_pod(worker_id, now)
        elif kind is ActionKind.REQUEUE_ORPHAN:
            self._release_tasks(worker_id, action.task_id, now, holder_died=False)
        elif row is None:
            raise AssertionError(f"{kind} for unknown worker {worker_id}")
        elif kind is ActionKind.ADOPT_POD:
            row.pod_id, row.cost_per_hr = action.pod_id, action.cost_per_hr
        elif kind is ActionKind.DRAIN:
            row.transition(WorkerStatus.TERMINATING, action.reason, now)
        elif kind is ActionKind.STOP:
            self._release_tasks(worker_id, None, now, holder_died=False)
            if world.terminate_pod(worker_id, now):
                row.transition(WorkerStatus.TERMINATED, action.reason, now)
        else:  # FAIL, RELEASE
            if kind is ActionKind.FAIL:
                row.transition(WorkerStatus.ERROR, action.reason, now)
            self._release_tasks(worker_id, None, now, holder_died=True)
            if world.terminate_pod(worker_id, now):
                row.terminated_at = now

    def _release_tasks(
        self, worker_id: str, task_id: str | None, now: datetime, *, holder_died: bool
    ) -> None:
        rows = self._world.rows
        released = self._world.queue.release(
            worker_id,
            task_id,
            now,
            holder_died=holder_died,
            failed_at=lambda w: rows[w].failed_at if w in rows else None,
        )
        for worker in released.task_caused:
            rows[worker].task_caused = True

    def _spawn(self, action: Action, now: datetime) -> None:
        """Each offering tried gets its own intent row, as in `Executor._spawn`."""
        world = self._world
        for offering in (action.offering, *action.fallbacks):
            assert offering is not None
            row = self._intent_row(offering, action.probe, now)
            answer, pod = world.provider.create(row.id, offering, now)
            if pod is not None:
                world.pod_created(row.id, pod.boots_at)
            if answer is Created.YES:
                assert pod is not None
                row.pod_id, row.cost_per_hr = pod.pod_id, pod.offering.usd_per_hr
                return
            if answer is Created.ANSWER_LOST:
                if self._policy.lost_create_fails:
                    self._refused(row, Reason.SPAWN_FAILED, now)
                return
            self._refused(row, Reason.CAPACITY, now)

    def _intent_row(self, offering: str, probe: bool, now: datetime) -> WorkerRow:
        """Named `{prefix}-{yyyymmddHHMMSS}-{8 hex}` like `new_worker_id`, from a
        counter instead of random bytes (deterministic)."""
        self._minted += 1
        worker_id = f"{self._world.cfg.name_prefix}-{now:%Y%m%d%H%M%S}-{self._minted:08x}"
        row = WorkerRow(worker_id, now, offering, probe, self._world.cfg.fingerprint)
        self._world.rows[worker_id] = row
        return row

    @staticmethod
    def _refused(row: WorkerRow, reason: Reason, now: datetime) -> None:
        row.transition(WorkerStatus.ERROR, reason, now)
        row.terminated_at = now  # nothing runs: released at once
