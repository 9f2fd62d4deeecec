"""Fenced writes described as data, so the actions of a cycle can send theirs
together: one `orch_apply_writes` call (one round trip) for many actions instead
of one call per write. Each `Write` runs the SQL function `orch_<op>`, lease check
included; the stores send them with `apply_writes` (the executor, and tests, one
write at a time too).

A batch is a list of groups, one per action, each a list of writes run in order:
a compare-and-set answering False ends its group, a failed group leaves no trace
(its own subtransaction), and a lost lease aborts the whole batch (`LeaseLost`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import StoreError
from ..models import Expected, Reason, WorkerStatus, sources_of


@dataclass(frozen=True)
class Write:
    op: str  # the SQL function `orch_<op>` it runs
    args: Mapping[str, Any]  # JSON-ready

    def as_json(self) -> dict[str, Any]:
        return {"op": self.op, **self.args}

    def as_params(self) -> dict[str, Any]:
        """The named arguments of its SQL function (lease aside)."""
        return {f"{name}_param": value for name, value in self.args.items()}


@dataclass(frozen=True)
class GroupAnswer:
    """What one group of a batch did: the answer of each write run (fewer than the
    group's writes when a compare-and-set ended it), or the error that undid it."""

    answers: tuple[Any, ...]
    error: StoreError | None = None


def create_worker(worker_id: str, provider: str, detail: Mapping[str, Any]) -> Write:
    """The intent row (`spawning`), written before any pod is requested."""
    return Write(
        "create_worker", {"worker_id": worker_id, "provider": provider, "detail": dict(detail)}
    )


def record_pod(
    worker_id: str, pod_id: str, cost_per_hr: float | None, *, adopted: bool = False
) -> Write:
    """The worker's pod (`adopted`: found in a list after an ambiguous create);
    answers False when the row already has another pod."""
    return Write(
        "record_pod",
        {"worker_id": worker_id, "pod_id": pod_id, "cost_per_hr": cost_per_hr, "adopted": adopted},
    )


def transition_worker(
    worker_id: str,
    to: WorkerStatus,
    reason: Reason,
    detail: Mapping[str, Any] | None = None,
    *,
    expect: Expected | None = None,
    released: bool = False,
) -> Write:
    """See `OrchestratorStore.transition_worker`."""
    heartbeat = None if expect is None else expect.heartbeat
    return Write(
        "transition_worker",
        {
            "worker_id": worker_id,
            "from": list(sources_of(to) if expect is None else (expect.status.value,)),
            "to": to.value,
            "reason": reason.value,
            "detail": dict(detail or {}),
            "released": released,
            "check_heartbeat": expect is not None and expect.heartbeat_judged,
            "heartbeat_seen": None if heartbeat is None else heartbeat.isoformat(),
            "require_idle": expect is not None and expect.idle,
        },
    )


def mark_released(worker_id: str) -> Write:
    """The worker's pod is confirmed gone."""
    return Write("mark_released", {"worker_id": worker_id})


def release_tasks(
    worker_id: str | None,
    task_id: str | None,
    max_attempts: int,
    error: str,
    *,
    holder_died: bool = False,
) -> Write:
    """Requeues (or dead-letters at the limit) the `In Progress` tasks of a holder;
    when the holder died, a task that has killed two workers is quarantined. The
    answer reads with `base.released_from`."""
    return Write(
        "release_tasks",
        {
            "worker_id": worker_id,
            "task_id": task_id,
            "max_attempts": max_attempts,
            "error_message": error,
            "holder_died": holder_died,
        },
    )


def record_event(
    kind: str, actor: str, reason: str, detail: Mapping[str, Any] | None = None
) -> Write:
    return Write(
        "record_event",
        {"kind": kind, "actor": actor, "reason": reason, "detail": dict(detail or {})},
    )


def record_pod_sightings(missing: Sequence[str], seen: Sequence[str]) -> Write:
    """Rows whose pod a successful list did not show, and rows whose pod is back."""
    return Write("record_pod_sightings", {"missing": list(missing), "seen": list(seen)})


def batch_json(groups: Sequence[Sequence[Write]]) -> list[list[dict[str, Any]]]:
    """The `actions_param` of `orch_apply_writes`."""
    return [[write.as_json() for write in group] for group in groups]


def group_answers(out: Sequence[Mapping[str, Any]]) -> list[GroupAnswer]:
    """`orch_apply_writes`'s answer, read the same way by both stores."""
    return [
        GroupAnswer(tuple(one["answers"]))
        if "answers" in one
        else GroupAnswer((), StoreError(f"write failed: {one['sqlstate']} {one['error']}"))
        for one in out
    ]
