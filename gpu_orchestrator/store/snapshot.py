"""Turns the `orch_snapshot()` JSON document into a `Snapshot`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import StoreError
from ..models import (
    BreakerRecord,
    BreakerState,
    Controls,
    Launch,
    QueueStats,
    Reason,
    Snapshot,
    TaskHold,
    WorkerStatus,
    WorkerView,
)


def _ts(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _worker(row: dict[str, Any]) -> WorkerView:
    reason = row.get("termination_reason")
    return WorkerView(
        id=row["id"],
        status=WorkerStatus.parse(row.get("status")),
        created_at=datetime.fromisoformat(row["created_at"]),
        ready_at=_ts(row.get("ready_at")),
        last_heartbeat=_ts(row.get("last_heartbeat")),
        drain_requested_at=_ts(row.get("drain_requested_at")),
        terminated_at=_ts(row.get("terminated_at")),
        last_task_finished_at=_ts(row.get("last_task_finished_at")),
        tasks_completed=int(row.get("tasks_completed") or 0),
        pod_id=row.get("pod_id"),
        termination_reason=None if reason is None else Reason.parse(reason),
    )


def _launch(row: dict[str, Any]) -> Launch:
    failure = row.get("failure")
    return Launch(
        worker_id=row["id"],
        created_at=datetime.fromisoformat(row["created_at"]),
        offering=row.get("offering"),
        probe=bool(row.get("probe")),
        pod_created=bool(row.get("pod_created")),
        live=bool(row.get("live")),
        ready_at=_ts(row.get("ready_at")),
        failed_at=_ts(row.get("failed_at")),
        failure=None if failure is None else Reason.parse(failure),
        task_caused=bool(row.get("task_caused")),
        tasks_completed=int(row.get("tasks_completed") or 0),
    )


def _breaker(row: dict[str, Any] | None) -> BreakerRecord | None:
    if row is None:
        return None
    return BreakerRecord(
        state=BreakerState(row["state"]),
        at=datetime.fromisoformat(row["at"]),
        reason=Reason.parse(row.get("reason")),
        probe_interval_sec=float(row["probe_interval_sec"]),
    )


def _controls(row: dict[str, Any]) -> Controls:
    return Controls(
        spawning_paused=bool(row.get("spawning_paused")),
        kill_switch=bool(row.get("kill_switch")),
        breaker_reset_at=_ts(row.get("breaker_reset_at")),
    )


def parse_snapshot(doc: dict[str, Any]) -> Snapshot:
    """Raises `StoreError` when the document is not a snapshot: a cycle never acts
    on a world it could not read."""
    try:
        queue = doc["queue"]
        return Snapshot(
            now=datetime.fromisoformat(doc["now"]),
            workers=tuple(_worker(w) for w in doc["workers"]),
            holds=tuple(
                TaskHold(
                    task_id=str(h["task_id"]),
                    worker_id=h.get("worker_id"),
                    started_at=_ts(h.get("started_at")),
                    attempts=int(h.get("attempts") or 0),
                )
                for h in doc["holds"]
            ),
            queue=QueueStats(
                queued=int(queue["queued"]), oldest_queued_at=_ts(queue.get("oldest_queued_at"))
            ),
            launches=tuple(_launch(row) for row in doc["launches"]),
            breaker=_breaker(doc.get("breaker")),
            controls=_controls(doc["controls"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"malformed snapshot: {exc!r}") from exc
