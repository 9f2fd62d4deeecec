"""Applies a plan's actions through the store and the provider, with bounded
concurrency. Holds no business rules: the plan said what and why; this says how,
in a crash-safe order (write the status first, then touch the pod).

A failed action becomes an `ActionResult` with outcome `error`, never an exception
that unwinds the cycle; the next cycle re-reads the world and tries again.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from .errors import CapacityError, OfferingForbidden, OrchestratorError, RateLimited
from .models import (
    Action,
    ActionKind,
    BreakerState,
    Plan,
    Pod,
    Reason,
    Snapshot,
    WorkerStatus,
)
from .providers.base import PodSpec, Provider
from .store.base import OrchestratorStore

log = structlog.get_logger()


@dataclass(frozen=True)
class ActionResult:
    kind: ActionKind
    reason: Reason
    worker_id: str | None
    task_id: str | None
    outcome: str  # done | lost_race (someone moved first) | skipped (stopping) | error
    error: str | None = None
    error_kind: str | None = None  # the error's class, e.g. BalanceError (for alerts)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "kind": self.kind.value,
            "reason": self.reason.value,
            "worker_id": self.worker_id,
            "task_id": self.task_id,
            "outcome": self.outcome,
            "error": self.error,
            "error_kind": self.error_kind,
        }


def new_worker_id(prefix: str, now: datetime) -> str:
    """`{prefix}-{yyyymmddHHMMSS}-{8 hex}`: sortable by launch time, unique."""
    return f"{prefix}-{now:%Y%m%d%H%M%S}-{secrets.token_hex(4)}"


class _LostRace(Exception):
    """A compare-and-set found the row already moved by someone else."""


class Executor:
    def __init__(
        self,
        store: OrchestratorStore,
        provider: Provider,
        pod_env: Callable[[str], dict[str, str]],
        *,
        name_prefix: str,
        max_task_attempts: int,
        actor: str,
        concurrency: int = 8,
    ) -> None:
        self._store = store
        self._provider = provider
        self._pod_env = pod_env  # worker id -> the pod's environment
        self._prefix = name_prefix
        self._max_attempts = max_task_attempts
        self._actor = actor  # who records breaker transitions: this orchestrator
        self._concurrency = concurrency

    async def apply(
        self, plan: Plan, snapshot: Snapshot, stop: asyncio.Event
    ) -> list[ActionResult]:
        """Records the breaker transition, then runs every action; once `stop` is set,
        actions not yet started are skipped (those under way finish, so the state
        stays consistent)."""
        await self._record_breaker(plan)
        pods = {w.id: w.pod_id for w in snapshot.workers}
        gate = asyncio.Semaphore(self._concurrency)

        async def run(action: Action) -> ActionResult:
            async with gate:
                if stop.is_set():
                    return _result(action, "skipped")
                return await self._run(action, pods, snapshot.now)

        return list(await asyncio.gather(*(run(a) for a in plan.actions)))

    async def list_pods(self) -> tuple[Pod, ...] | None:
        """The provider's pods, or None when they could not be listed: then
        nothing is reconciled this cycle (never "everything is orphaned")."""
        try:
            return tuple(await self._provider.list_pods())
        except OrchestratorError as exc:
            log.warning("pod_list_failed", error=str(exc))
            return None

    async def _record_breaker(self, plan: Plan) -> None:
        move = plan.breaker.transition if plan.breaker is not None else None
        if move is None:
            return
        kind = "breaker_opened" if move.to is BreakerState.OPEN else "breaker_closed"
        detail = {"probe_interval_sec": move.probe_interval_sec, "message": move.message}
        assert plan.breaker is not None
        detail.update(
            rate=plan.breaker.rate, failed=plan.breaker.failed, proven=plan.breaker.proven
        )
        try:
            await self._store.record_event(kind, self._actor, move.reason.value, detail)
        except OrchestratorError as exc:
            # The next cycle judges the same transition again from the same facts.
            log.warning("breaker_record_failed", kind=kind, error=str(exc))
            return
        log.warning(kind, reason=move.reason, message=move.message, **{"rate": plan.breaker.rate})

    async def _run(
        self, action: Action, pods: dict[str, str | None], now: datetime
    ) -> ActionResult:
        handlers: dict[ActionKind, Callable[[], Awaitable[str | None]]] = {
            ActionKind.SPAWN: lambda: self._spawn(action, now),
            ActionKind.FAIL: lambda: self._fail(action, pods),
            ActionKind.DRAIN: lambda: self._drain(action),
            ActionKind.STOP: lambda: self._stop(action, pods),
            ActionKind.RELEASE: lambda: self._release(action, pods),
            ActionKind.REQUEUE_ORPHAN: lambda: self._requeue_orphan(action),
            ActionKind.TERMINATE_ORPHAN_POD: lambda: self._terminate_orphan_pod(action),
        }
        try:
            worker_id = await handlers[action.kind]()
        except _LostRace:
            log.info("action_lost_race", kind=action.kind, worker_id=action.worker_id)
            return _result(action, "lost_race")
        except OrchestratorError as exc:
            log.warning(
                "action_failed",
                kind=action.kind,
                reason=action.reason,
                worker_id=action.worker_id,
                task_id=action.task_id,
                error=str(exc),
            )
            return _result(action, "error", error=str(exc), error_kind=type(exc).__name__)
        return _result(action, "done", worker_id=worker_id)

    async def _spawn(self, action: Action, now: datetime) -> str:
        """Tries the action's offering, then its fallbacks, each launch with its own
        intent row, until one is placed; refusals are recorded as neutral outcomes
        (they back that offering off)."""
        candidates = (action.offering, *action.fallbacks)
        for n, offering in enumerate(candidates):
            try:
                return await self._launch(action, offering, now)
            except (CapacityError, OfferingForbidden) as exc:
                if n + 1 == len(candidates):
                    raise
                log.info("offering_refused", offering=offering, error=str(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _launch(self, action: Action, offering: str | None, now: datetime) -> str:
        worker_id = new_worker_id(self._prefix, now)
        # The intent row comes first: a crash after it leaves a `spawning` row that
        # reconciliation resolves, never an untracked pod.
        await self._store.create_worker(
            worker_id,
            self._provider.name,
            {"reason": action.reason.value, "offering": offering, "probe": action.probe},
        )
        spec = PodSpec(worker_id, self._pod_env(worker_id), offering)
        try:
            pod = await self._provider.create_pod(spec)
        except OrchestratorError as exc:
            await self._give_up_spawn(worker_id, _launch_outcome(exc), exc)
            raise
        await self._store.record_pod(worker_id, pod.pod_id, pod.cost_per_hr)
        log.info(
            "worker_spawned",
            worker_id=worker_id,
            pod_id=pod.pod_id,
            reason=action.reason,
            offering=offering,
            probe=action.probe,
        )
        return worker_id

    async def _give_up_spawn(self, worker_id: str, reason: Reason, exc: Exception) -> None:
        await self._store.transition_worker(
            worker_id, WorkerStatus.ERROR, reason, {"error": str(exc)}, released=True
        )

    async def _transition(self, action: Action, to: WorkerStatus) -> str:
        assert action.worker_id is not None
        moved = await self._store.transition_worker(
            action.worker_id, to, action.reason, {"message": action.message}
        )
        if not moved:
            raise _LostRace
        return action.worker_id

    async def _fail(self, action: Action, pods: dict[str, str | None]) -> str:
        await self._transition(action, WorkerStatus.ERROR)
        return await self._release(action, pods)

    async def _drain(self, action: Action) -> str:
        return await self._transition(action, WorkerStatus.TERMINATING)

    async def _release(self, action: Action, pods: dict[str, str | None]) -> str:
        """A failed worker: requeue what it held, terminate its pod, record it gone."""
        worker_id = await self._release_pod(action, pods, holder_died=True)
        await self._store.mark_released(worker_id)
        return worker_id

    async def _stop(self, action: Action, pods: dict[str, str | None]) -> str:
        await self._release_pod(action, pods, holder_died=False)
        return await self._transition(action, WorkerStatus.TERMINATED)

    async def _release_pod(
        self, action: Action, pods: dict[str, str | None], *, holder_died: bool
    ) -> str:
        worker_id = action.worker_id
        assert worker_id is not None
        released = await self._store.release_tasks(
            worker_id,
            None,
            self._max_attempts,
            f"worker {worker_id} lost: {action.reason.value}",
            holder_died=holder_died,
        )
        if released:
            log.info(
                "tasks_released",
                worker_id=worker_id,
                reason=action.reason,
                requeued=len(released.requeued),
                dead_lettered=len(released.failed),
                quarantined=list(released.quarantined),
            )
        await self._provider.terminate_pod(worker_id, pods.get(worker_id))
        return worker_id

    async def _terminate_orphan_pod(self, action: Action) -> str | None:
        assert action.worker_id is not None
        await self._provider.terminate_pod(action.worker_id, action.pod_id)
        await self._store.record_event(
            "orphan_pod_terminated",
            self._actor,
            action.reason.value,
            {"pod_id": action.pod_id, "name": action.worker_id},
        )
        log.warning("orphan_pod_terminated", pod_id=action.pod_id, name=action.worker_id)
        return action.worker_id

    async def _requeue_orphan(self, action: Action) -> str | None:
        released = await self._store.release_tasks(
            action.worker_id,
            action.task_id,
            self._max_attempts,
            f"holder {action.worker_id} gone: {action.reason.value}",
        )
        if not released:
            raise _LostRace
        return action.worker_id


def _launch_outcome(exc: OrchestratorError) -> Reason:
    """How a refused launch counts: only a refusal about our request is a failure."""
    if isinstance(exc, CapacityError):
        return Reason.CAPACITY
    if isinstance(exc, OfferingForbidden):
        return Reason.OFFERING_FORBIDDEN
    if isinstance(exc, RateLimited):
        return Reason.RATE_LIMITED
    return Reason.SPAWN_FAILED


def _result(
    action: Action,
    outcome: str,
    *,
    worker_id: str | None = None,
    error: str | None = None,
    error_kind: str | None = None,
) -> ActionResult:
    return ActionResult(
        kind=action.kind,
        reason=action.reason,
        worker_id=worker_id or action.worker_id,
        task_id=action.task_id,
        outcome=outcome,
        error=error,
        error_kind=error_kind,
    )
