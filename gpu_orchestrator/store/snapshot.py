"""Turns the `orch_snapshot()` JSON document into a `Snapshot`, in one pass.

The database sends each worker, launch and held task as a positional array in the
field order of `WorkerView`, `Launch` and `TaskHold`, times as epoch seconds (see
the SQL). msgspec decodes the document straight into those named tuples, times
into UTC datetimes and words into the enums (an unknown word into `UNKNOWN`), in
C: at 1,000 workers that is about as fast as decoding the JSON alone, with no
Python loop over rows (benchmarks/cycle.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

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
    WorkerView,
)


class _Breaker(msgspec.Struct, frozen=True):
    state: BreakerState
    at: datetime
    reason: Reason | None
    probe_interval_sec: float


class _Document(msgspec.Struct, frozen=True):
    now: datetime
    workers: tuple[WorkerView, ...]
    launches: tuple[Launch, ...]
    holds: tuple[TaskHold, ...]
    queued: int
    finished: tuple[int, int]  # (completed, failed) within the horizon
    controls: Controls
    oldest_queued_at: datetime | None = None
    breaker: _Breaker | None = None
    blind_until: datetime | None = None
    adopted: bool = False


# strict=False: JSON numbers decode into datetimes (as epoch seconds, UTC).
_DECODER = msgspec.json.Decoder(_Document, strict=False)


def parse_snapshot(doc: str | bytes | Mapping[str, Any], queue_cap: int | None = None) -> Snapshot:
    """`doc`: the document's JSON text (the Postgres store), or the same document
    already decoded (the REST store). Raises `StoreError` when it is not a
    snapshot: a cycle never acts on a world it could not read."""
    try:
        if isinstance(doc, str | bytes):
            d = _DECODER.decode(doc)
        else:
            d = msgspec.convert(doc, _Document, strict=False)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise StoreError(f"malformed snapshot: {exc}") from exc
    breaker = d.breaker
    completed, failed = d.finished
    return Snapshot(
        now=d.now,
        workers=d.workers,
        holds=d.holds,
        queue=QueueStats(
            d.queued,
            d.oldest_queued_at,
            capped=queue_cap is not None and d.queued >= queue_cap,
            completed_recently=completed,
            failed_recently=failed,
        ),
        launches=d.launches,
        breaker=None
        if breaker is None
        else BreakerRecord(
            breaker.state, breaker.at, breaker.reason or Reason.UNKNOWN, breaker.probe_interval_sec
        ),
        controls=d.controls,
        blind_until=d.blind_until,
        adopted=d.adopted,
    )
