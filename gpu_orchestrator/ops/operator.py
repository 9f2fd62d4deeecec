"""Operator commands behind the CLI: spawn, drain, terminate (each audited in
`orchestrator_events` with who and why), and read-only listings of workers,
tasks and log lines. They go through the same store, policy and executor as the
loop; nothing here edits rows by hand. `spawn` is a request the leader carries
out (so it never races the leader for `MAX_ACTIVE_GPUS`); `drain` and `terminate`
are not a leader's: their writes are unfenced (`fence=None`), and compare-and-set
like every transition."""

from __future__ import annotations

import asyncio
from typing import Any

from ..config import Settings
from ..errors import OrchestratorError
from ..executor import ActionResult
from ..loop import CycleReport
from ..models import Action, ActionKind, Plan, Reason, WorkerStatus
from ..runtime import connect_store, open_runtime


class OperatorError(OrchestratorError):
    """The command cannot be carried out as asked (unknown worker, wrong state)."""


def _single(action: Action) -> Plan:
    return Plan(actions=(action,), desired_workers=0, capacity=0, unmet_demand=0)


async def spawn(settings: Settings, count: int, actor: str, why: str) -> CycleReport:
    """Asks the leader for `count` more workers: the request is recorded (audited),
    and the leader launches them in its next cycle, within `MAX_ACTIVE_GPUS` and
    never with the kill switch on or during a billing hold. With no other leader,
    this command leads that one cycle itself; its report says which happened."""
    runtime = await open_runtime(settings, migrated=False)
    try:
        await runtime.store.record_event(
            "spawn_requested", actor, why, {"count": count}, fence=None
        )
        report = await runtime.orchestrator.run_cycle()
        await runtime.orchestrator.release_lease()
    finally:
        await runtime.aclose()
    return report


async def drain(settings: Settings, worker_id: str, actor: str, why: str) -> None:
    """Refuses the worker new claims; the loop stops it once idle."""
    store = await connect_store(settings)
    try:
        moved = await store.transition_worker(
            worker_id,
            WorkerStatus.TERMINATING,
            Reason.MANUAL,
            {"actor": actor, "why": why},
            fence=None,
        )
        if not moved:
            raise OperatorError(f"{worker_id} is not a spawning or active worker")
        await store.record_event("operator_drain", actor, why, {"worker_id": worker_id}, fence=None)
    finally:
        await store.close()


async def terminate(settings: Settings, worker_id: str, actor: str, why: str) -> ActionResult:
    """Stops the worker now: its tasks are requeued, its pod terminated."""
    runtime = await open_runtime(settings, migrated=False)
    try:
        snapshot = await runtime.store.observe(settings.policy().horizon_sec)
        worker = next((w for w in snapshot.workers if w.id == worker_id), None)
        if worker is None or worker.status is WorkerStatus.EXTERNAL:
            raise OperatorError(f"{worker_id} is not a live worker of this orchestrator")
        detail = {"actor": actor, "why": why}
        if worker.status in (WorkerStatus.SPAWNING, WorkerStatus.ACTIVE):
            await runtime.store.transition_worker(
                worker_id, WorkerStatus.TERMINATING, Reason.MANUAL, detail, fence=None
            )
        kind = ActionKind.RELEASE if worker.status is WorkerStatus.ERROR else ActionKind.STOP
        action = Action(kind, Reason.MANUAL, f"operator: {why}", worker_id=worker_id)
        await runtime.store.record_event(
            "operator_terminate", actor, why, {"worker_id": worker_id}, fence=None
        )
        (result,) = await runtime.orchestrator.executor.apply(
            _single(action), snapshot, asyncio.Event(), fence=None
        )
    finally:
        await runtime.aclose()
    if result.outcome != "done":
        raise OperatorError(f"terminating {worker_id}: {result.outcome} {result.error or ''}")
    return result


async def listing(settings: Settings, what: str, **filters: Any) -> list[dict[str, Any]]:
    """`workers`, `tasks` or `logs`, newest first (logs oldest first)."""
    store = await connect_store(settings)
    try:
        if what == "workers":
            return await store.list_workers(filters["limit"])
        if what == "tasks":
            return await store.list_tasks(filters.get("status"), filters["limit"])
        return await store.list_logs(
            filters.get("worker_id"), filters.get("task_id"), filters["limit"]
        )
    finally:
        await store.close()
