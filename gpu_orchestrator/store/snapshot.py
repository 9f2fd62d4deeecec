"""Turns the `orch_snapshot()` JSON document into a `Snapshot`.

Rows arrive as positional arrays with times as epoch seconds (see the SQL). The
database says which roles a worker row plays: a `WorkerView` (the cycle may act
on it), a `Launch` (it belongs to the breaker's history), or both; each time is
converted once and shared by both.
"""

from __future__ import annotations

from datetime import UTC, datetime
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


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


# Dict look-ups: the enums' own constructors cost more than the rest of a row.
_STATUS = {s.value: s for s in WorkerStatus}
_REASON = {r.value: r for r in Reason}


def _split_workers(rows: list[list[Any]]) -> tuple[tuple[WorkerView, ...], tuple[Launch, ...]]:
    # Thousands of rows per cycle: conversions are inlined, not calls of `_ts`.
    workers: list[WorkerView] = []
    launches: list[Launch] = []
    stamp = datetime.fromtimestamp
    for (
        wid, raw_status, acted_on, launch, live, created, ready, heartbeat, drain, finished,
        completed, pod_id, termination, cost, missing, offering, probe, failed, task_caused,
        fingerprint,
    ) in rows:  # fmt: skip
        status = _STATUS.get(raw_status, WorkerStatus.UNKNOWN)
        created_at = stamp(created, UTC)
        ready_at = None if ready is None else stamp(ready, UTC)
        reason = None if termination is None else _REASON.get(termination, Reason.UNKNOWN)
        if acted_on:
            workers.append(
                WorkerView(
                    wid,
                    status,
                    created_at,
                    ready_at,
                    None if heartbeat is None else stamp(heartbeat, UTC),
                    None if drain is None else stamp(drain, UTC),
                    None,
                    None if finished is None else stamp(finished, UTC),
                    completed,
                    pod_id,
                    reason,
                    None if cost is None else float(cost),
                    None if missing is None else stamp(missing, UTC),
                )
            )
        if launch:
            launches.append(
                Launch(
                    wid,
                    created_at,
                    offering,
                    bool(probe),
                    pod_id is not None,
                    live,
                    ready_at,
                    None if failed is None else stamp(failed, UTC),
                    reason if status is WorkerStatus.ERROR else None,
                    bool(task_caused),
                    completed,
                    fingerprint,
                )
            )
    return tuple(workers), tuple(launches)


def _breaker(row: dict[str, Any] | None) -> BreakerRecord | None:
    if row is None:
        return None
    return BreakerRecord(
        state=BreakerState(row["state"]),
        at=datetime.fromtimestamp(row["at"], UTC),
        reason=Reason.parse(row.get("reason")),
        probe_interval_sec=float(row["probe_interval_sec"]),
    )


def _controls(row: dict[str, Any]) -> Controls:
    requested, request_id = row.get("spawn_requests") or (0, None)
    return Controls(
        spawning_paused=bool(row.get("spawning_paused")),
        kill_switch=bool(row.get("kill_switch")),
        breaker_reset_at=_ts(row.get("breaker_reset_at")),
        requested_spawns=int(requested),
        spawn_request_id=None if request_id is None else int(request_id),
    )


def parse_snapshot(doc: dict[str, Any], queue_cap: int | None = None) -> Snapshot:
    """Raises `StoreError` when the document is not a snapshot: a cycle never acts
    on a world it could not read."""
    stamp = datetime.fromtimestamp
    try:
        now = stamp(doc["now"], UTC)
        workers, launches = _split_workers(doc["workers"])
        return Snapshot(
            now=now,
            workers=workers,
            holds=tuple(
                TaskHold(
                    task,
                    holder,
                    None if started is None else stamp(started, UTC),
                    attempts,
                    task_type,
                )
                for task, holder, started, attempts, task_type in doc["holds"]
            ),
            queue=QueueStats(
                queued := int(doc["queued"]),
                _ts(doc.get("oldest_queued_at")),
                capped=queue_cap is not None and queued >= queue_cap,
                completed_recently=int(doc["finished"][0]),
                failed_recently=int(doc["finished"][1]),
            ),
            launches=launches,
            breaker=_breaker(doc.get("breaker")),
            controls=_controls(doc["controls"]),
            blind_until=_ts(doc.get("blind_until")),
            adopted=bool(doc.get("adopted")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"malformed snapshot: {exc!r}") from exc
