"""Simulated `workers` rows, read into the policy's models the way `orch_snapshot()`
and `store/snapshot.py` do: a row the cycle may act on becomes a `WorkerView`, a
row within the breaker's horizon (or live) a `Launch`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..models import LIVE_STATUSES, Launch, Reason, WorkerStatus, WorkerView


@dataclass
class WorkerRow:
    id: str
    created_at: datetime
    offering: str | None
    probe: bool
    fingerprint: str | None
    status: WorkerStatus = WorkerStatus.SPAWNING
    ready_at: datetime | None = None
    last_heartbeat: datetime | None = None
    drain_requested_at: datetime | None = None
    terminated_at: datetime | None = None  # its pod is confirmed gone
    last_task_finished_at: datetime | None = None
    tasks_completed: int = 0
    pod_id: str | None = None
    termination_reason: Reason | None = None
    failed_at: datetime | None = None
    task_caused: bool = False
    cost_per_hr: float | None = None
    pod_missing_since: datetime | None = None  # first pod list that missed its pod

    @property
    def live(self) -> bool:
        return self.terminated_at is None and self.status in LIVE_STATUSES

    def claims(self) -> bool:
        """`func_claim_available_task` hands this worker a task."""
        return (
            self.status in (WorkerStatus.SPAWNING, WorkerStatus.ACTIVE)
            and self.drain_requested_at is None
        )

    def first_heartbeat(self, at: datetime) -> None:
        """`func_worker_heartbeat_with_logs`: `spawning -> active`; nothing else moves."""
        if self.status is WorkerStatus.SPAWNING:
            self.status, self.ready_at = WorkerStatus.ACTIVE, at

    def transition(self, to: WorkerStatus, reason: Reason, now: datetime) -> None:
        """`orch_transition_worker` (the plan's compare-and-set always holds here:
        nothing moves between a simulated snapshot and its plan)."""
        self.status = to
        if to is WorkerStatus.TERMINATING:
            self.drain_requested_at = self.drain_requested_at or now
        if to is WorkerStatus.TERMINATED:
            self.terminated_at = self.terminated_at or now
        if to in (WorkerStatus.ERROR, WorkerStatus.TERMINATED):
            self.termination_reason = reason
        if to is WorkerStatus.ERROR:
            self.failed_at = self.failed_at or now

    def view(self) -> WorkerView | None:
        """As a row of the snapshot, or None when the cycle has nothing to do with it."""
        if self.terminated_at is not None:
            return None
        return WorkerView(
            self.id,
            self.status,
            self.created_at,
            self.ready_at,
            self.last_heartbeat,
            self.drain_requested_at,
            None,
            self.last_task_finished_at,
            self.tasks_completed,
            self.pod_id,
            self.termination_reason,
            self.cost_per_hr,
            self.pod_missing_since,
        )

    def launch(self, since: datetime) -> Launch | None:
        """As breaker history, or None when it left the horizon starting at `since`."""
        recent = (
            self.created_at > since
            or (self.ready_at is not None and self.ready_at > since)
            or (self.failed_at is not None and self.failed_at > since)
        )
        if not (self.live or recent):
            return None
        return Launch(
            self.id,
            self.created_at,
            self.offering,
            self.probe,
            self.pod_id is not None,
            self.live,
            self.ready_at,
            self.failed_at,
            self.termination_reason if self.status is WorkerStatus.ERROR else None,
            self.task_caused,
            self.tasks_completed,
            self.fingerprint,
        )
