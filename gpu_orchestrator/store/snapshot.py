"""Turns the `orch_snapshot()` JSON document into a `Snapshot`.

Rows arrive as positional arrays with times as epoch seconds (see the SQL): one
worker row serves both as a `WorkerView` (when the cycle may act on it) and as a
`Launch` (when it belongs to the breaker's history).
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

# Statuses of rows the cycle acts on while their pod is not released.
_ROW_STATUSES = frozenset(
    {
        WorkerStatus.SPAWNING,
        WorkerStatus.ACTIVE,
        WorkerStatus.TERMINATING,
        WorkerStatus.ERROR,
        WorkerStatus.EXTERNAL,
    }
)
_LIVE = frozenset({WorkerStatus.SPAWNING, WorkerStatus.ACTIVE, WorkerStatus.TERMINATING})


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


# Dict look-ups: the enums' own constructors cost more than the rest of a row.
_STATUS = {s.value: s for s in WorkerStatus}
_REASON = {r.value: r for r in Reason}


def _split_workers(
    rows: list[list[Any]], since: float
) -> tuple[tuple[WorkerView, ...], tuple[Launch, ...]]:
    """`since`: epoch seconds where the breaker's history starts."""
    workers: list[WorkerView] = []
    launches: list[Launch] = []
    stamp = datetime.fromtimestamp
    for (
        wid, raw_status, created, ready, heartbeat, drain, terminated, finished,
        completed, pod_id, termination, offering, probe, failed, task_caused, cost,
        missing, fingerprint,
    ) in rows:  # fmt: skip
        status = _STATUS.get(raw_status, WorkerStatus.UNKNOWN)
        created_at = stamp(created, UTC)
        ready_at = None if ready is None else stamp(ready, UTC)
        reason = None if termination is None else _REASON.get(termination, Reason.UNKNOWN)
        if terminated is None and status in _ROW_STATUSES:
            workers.append(
                WorkerView(
                    wid,
                    status,
                    created_at,
                    ready_at,
                    _ts(heartbeat),
                    _ts(drain),
                    None,
                    _ts(finished),
                    completed,
                    pod_id,
                    reason,
                    None if cost is None else float(cost),
                    _ts(missing),
                )
            )
        live = terminated is None and status in _LIVE
        if (
            live
            or created > since
            or (ready is not None and ready > since)
            or (failed is not None and failed > since)
        ):
            launches.append(
                Launch(
                    wid,
                    created_at,
                    offering,
                    bool(probe),
                    pod_id is not None,
                    live,
                    ready_at,
                    _ts(failed),
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


def parse_snapshot(
    doc: dict[str, Any], horizon_sec: float, queue_cap: int | None = None
) -> Snapshot:
    """Raises `StoreError` when the document is not a snapshot: a cycle never acts
    on a world it could not read."""
    try:
        now = datetime.fromtimestamp(doc["now"], UTC)
        workers, launches = _split_workers(doc["workers"], doc["now"] - horizon_sec)
        return Snapshot(
            now=now,
            workers=workers,
            holds=tuple(
                TaskHold(str(task), holder, _ts(started), int(attempts), task_type)
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
