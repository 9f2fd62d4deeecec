"""Applies a plan's actions through the store and the provider, with bounded
concurrency. Holds no business rules: the plan said what and why; this says how,
in a crash-safe order (write the status first, then touch the pod).

Fenced: every write carries the leader's lease, and a pod is created or
terminated only after such a write succeeded in this cycle (and the lease's local
deadline has not passed). A lost lease (`LeaseLost`) stops the cycle: no action
starts after it, and it is raised to the loop.

Batched: the actions run side by side and their writes meet at a `WriteBarrier`,
so each step (intent and status writes, then what the provider answered) is one
round trip for all of them; only provider calls are bounded in concurrency.

Any other failed action becomes an `ActionResult` with outcome `error`, never an
exception that unwinds the cycle; the next cycle re-reads the world and tries again.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import structlog

from .errors import (
    BalanceError,
    CapacityError,
    LeaseLost,
    OfferingForbidden,
    OrchestratorError,
    RateLimited,
    TransientProviderError,
)
from .models import (
    Action,
    ActionKind,
    BreakerState,
    BreakerTransition,
    Plan,
    Pod,
    Reason,
    Snapshot,
    WorkerStatus,
)
from .providers.base import PodSpec, Provider
from .store import writes
from .store.base import Fence, OrchestratorStore, released_from
from .write_barrier import WriteBarrier

log = structlog.get_logger()

T = TypeVar("T")


@dataclass(frozen=True)
class ActionResult:
    kind: ActionKind
    reason: Reason
    worker_id: str | None
    task_id: str | None
    # done | lost_race (someone moved first) | skipped (stopping, or the lease was
    # lost) | unresolved (a create whose answer was lost: its row waits for the pod)
    # | error | shadow (decided by a shadow orchestrator, not carried out)
    outcome: str
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


class _Held(Exception):
    """A launch not attempted: another launch of this cycle found the account unable
    to pay."""


class _Unresolved(Exception):
    """A create ended without an answer (5xx, timeout) and the pod was not found by
    name: it may still appear. Chained to the provider's error."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(worker_id)
        self.worker_id = worker_id


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
        fingerprint: str | None = None,
        concurrency: int = 8,
    ) -> None:
        self._store = store
        self._provider = provider
        self._pod_env = pod_env  # worker id -> the pod's environment
        self._prefix = name_prefix
        self._max_attempts = max_task_attempts
        self._actor = actor  # who records breaker transitions: this orchestrator
        self._fingerprint = fingerprint  # what launches run (recorded per worker)
        self._concurrency = concurrency

    async def apply(
        self, plan: Plan, snapshot: Snapshot, stop: asyncio.Event, fence: Fence | None
    ) -> list[ActionResult]:
        """Records what the cycle observed (blind spell, pod sightings, breaker
        transition), then runs every action; once `stop` is set, actions not yet
        started are skipped (those under way finish, so the state stays consistent).
        `fence`: the leader's lease (None for an operator's command). Raises
        `LeaseLost` once the lease is gone, after the actions under way end."""
        pods = {w.id: w.pod_id for w in snapshot.workers}
        gate = asyncio.Semaphore(self._concurrency)  # provider calls under way
        lost: list[LeaseLost] = []
        cycle = _CycleState()

        async def run(action: Action, barrier: WriteBarrier) -> ActionResult:
            try:
                if stop.is_set() or lost:
                    return _result(action, "skipped")
                step = _Step(action, fence, barrier, gate, cycle)
                try:
                    return await self._run(action, pods, snapshot.now, step)
                except LeaseLost as exc:
                    lost.append(exc)
                    return _result(action, "skipped", error=str(exc))
            finally:
                await barrier.leave()

        async def observe(barrier: WriteBarrier) -> None:
            try:
                await self._record_observations(plan, barrier)
            except LeaseLost as exc:
                lost.append(exc)
            finally:
                await barrier.leave()

        # The first launch goes ahead alone (beside the other actions): an account
        # that cannot pay (402) then holds the rest before they are sent. What the
        # cycle observed is written first, in the first batch.
        spawns = [n for n, a in enumerate(plan.actions) if a.kind is ActionKind.SPAWN]
        waves = ([n for n in range(len(plan.actions)) if n not in spawns[1:]], spawns[1:])
        done: dict[int, ActionResult] = {}
        for first, wave in zip((True, False), waves, strict=True):
            barrier = WriteBarrier(self._store, fence, len(wave) + int(first))
            jobs = [run(plan.actions[n], barrier) for n in wave]
            # scheduled before the actions: what the cycle observed leads the batch
            observing = asyncio.create_task(observe(barrier)) if first else None
            done.update(zip(wave, await asyncio.gather(*jobs), strict=True))
            if observing is not None:
                await observing
        results = [done[n] for n in range(len(plan.actions))]
        if lost:
            raise lost[0]
        return results

    async def list_pods(self) -> tuple[Pod, ...] | None:
        """The provider's pods, or None when they could not be listed: then
        nothing is reconciled this cycle (never "everything is orphaned")."""
        try:
            return tuple(await self._provider.list_pods())
        except OrchestratorError as exc:
            log.warning("pod_list_failed", error=str(exc))
            return None

    async def _record_observations(self, plan: Plan, barrier: WriteBarrier) -> None:
        """Facts first, decisions second: one group at the head of the first batch.
        A failed record is judged again next cycle from the same facts; a lost
        lease stops the cycle."""
        group = self._observation_writes(plan)
        if not group:
            return
        answer = await barrier.write(*group)
        if answer.error is not None:
            log.warning("observation_record_failed", error=str(answer.error))
            return
        _log_observations(plan)

    def _observation_writes(self, plan: Plan) -> list[writes.Write]:
        """A blind spell, pod sightings, served spawn requests, the breaker's move."""
        group: list[writes.Write] = []
        if plan.observation_gap is not None:
            since, until = plan.observation_gap
            group.append(
                writes.record_event(
                    "observation_gap",
                    self._actor,
                    "no_contact",
                    {"from": since.isoformat(), "to": until.isoformat()},
                )
            )
        if plan.sightings:
            group.append(writes.record_pod_sightings(plan.sightings.missing, plan.sightings.seen))
        if plan.served_requests is not None:
            served = plan.served_requests
            group.append(
                writes.record_event(
                    "spawn_requests_served",
                    self._actor,
                    "operator_request",
                    {
                        "up_to_id": served.up_to_id,
                        "asked": served.asked,
                        "allowed": served.allowed,
                        "held_back": [r.value for r in served.held_back],
                    },
                )
            )
        breaker = plan.breaker
        if breaker is not None and breaker.transition is not None:
            move = breaker.transition
            group.append(
                writes.record_event(
                    _breaker_event(move),
                    self._actor,
                    move.reason.value,
                    {
                        "probe_interval_sec": move.probe_interval_sec,
                        "message": move.message,
                        "rate": breaker.rate,
                        "failed": breaker.failed,
                        "proven": breaker.proven,
                    },
                )
            )
        return group

    async def _run(
        self, action: Action, pods: dict[str, str | None], now: datetime, step: _Step
    ) -> ActionResult:
        handlers: dict[ActionKind, Callable[[_Step], Awaitable[str | None]]] = {
            ActionKind.SPAWN: lambda step: self._spawn(step, now),
            ActionKind.FAIL: lambda step: self._fail(step, pods),
            ActionKind.DRAIN: self._drain,
            ActionKind.STOP: lambda step: self._stop(step, pods),
            ActionKind.RELEASE: lambda step: self._release(step, pods),
            ActionKind.REQUEUE_ORPHAN: self._requeue_orphan,
            ActionKind.TERMINATE_ORPHAN_POD: self._terminate_orphan_pod,
            ActionKind.ADOPT_POD: self._adopt_pod,
        }
        try:
            worker_id = await handlers[action.kind](step)
        except _LostRace:
            log.info("action_lost_race", kind=action.kind, worker_id=action.worker_id)
            return _result(action, "lost_race")
        except _Unresolved as unresolved:
            return _result(
                action,
                "unresolved",
                worker_id=unresolved.worker_id,
                error=str(unresolved.__cause__),
                error_kind=type(unresolved.__cause__).__name__,
            )
        except _Held as held:
            return _result(action, "skipped", error=str(held))
        except LeaseLost:
            raise
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

    async def _spawn(self, step: _Step, now: datetime) -> str:
        """Tries the action's offering, then its fallbacks, each launch with its own
        intent row, until one is placed; refusals are recorded as neutral outcomes
        (they back that offering off)."""
        action = step.action
        candidates = (action.offering, *action.fallbacks)
        for n, offering in enumerate(candidates):
            try:
                return await self._launch(step, offering, now)
            except (CapacityError, OfferingForbidden) as exc:
                if n + 1 == len(candidates):
                    raise
                log.info("offering_refused", offering=offering, error=str(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _launch(self, step: _Step, offering: str | None, now: datetime) -> str:
        action = step.action
        if step.cycle.billing_hold is not None:
            raise _Held(f"billing hold: {step.cycle.billing_hold}")
        worker_id = new_worker_id(self._prefix, now)
        # The intent row comes first, fenced: a crash after it leaves a `spawning` row
        # that reconciliation resolves, never an untracked pod, and a stale leader
        # gets no further.
        await step.write(
            writes.create_worker(
                worker_id,
                self._provider.name,
                {
                    "reason": action.reason.value,
                    "offering": offering,
                    "probe": action.probe,
                    "fingerprint": self._fingerprint,
                },
            )
        )
        spec = PodSpec(worker_id, self._pod_env(worker_id), offering)
        try:
            pod = await step.call_provider(lambda: self._provider.create_pod(spec))
        except LeaseLost:
            raise
        except TransientProviderError as exc:
            # The pod may exist: the row stays `spawning` and a later list adopts it.
            log.warning("create_unresolved", worker_id=worker_id, error=str(exc))
            raise _Unresolved(worker_id) from exc
        except OrchestratorError as exc:
            if isinstance(exc, BalanceError):  # the account cannot pay: no other launch now
                step.cycle.billing_hold = str(exc)
            await step.write(
                writes.transition_worker(
                    worker_id,
                    WorkerStatus.ERROR,
                    _launch_outcome(exc),
                    {"error": str(exc)},
                    released=True,
                ),
                compare=False,
            )
            raise
        await step.write(writes.record_pod(worker_id, pod.pod_id, pod.cost_per_hr))
        log.info(
            "worker_spawned",
            worker_id=worker_id,
            pod_id=pod.pod_id,
            reason=action.reason,
            offering=offering,
            probe=action.probe,
        )
        return worker_id

    async def _adopt_pod(self, step: _Step) -> str:
        action = step.action
        assert action.worker_id is not None and action.pod_id is not None
        await step.write(
            writes.record_pod(action.worker_id, action.pod_id, action.cost_per_hr, adopted=True)
        )
        log.info("pod_adopted", worker_id=action.worker_id, pod_id=action.pod_id)
        return action.worker_id

    def _transition(self, step: _Step, to: WorkerStatus) -> writes.Write:
        """The compare-and-set on what the plan judged (`expect`)."""
        action = step.action
        assert action.worker_id is not None
        return writes.transition_worker(
            action.worker_id, to, action.reason, {"message": action.message}, expect=action.expect
        )

    async def _fail(self, step: _Step, pods: dict[str, str | None]) -> str:
        worker_id = await self._release_pod(
            step, pods, holder_died=True, first=self._transition(step, WorkerStatus.ERROR)
        )
        await step.write(writes.mark_released(worker_id))
        return worker_id

    async def _drain(self, step: _Step) -> str:
        await step.write(self._transition(step, WorkerStatus.TERMINATING))
        assert step.action.worker_id is not None
        return step.action.worker_id

    async def _release(self, step: _Step, pods: dict[str, str | None]) -> str:
        """A failed worker: requeue what it held, terminate its pod, record it gone."""
        worker_id = await self._release_pod(step, pods, holder_died=True)
        await step.write(writes.mark_released(worker_id))
        return worker_id

    async def _stop(self, step: _Step, pods: dict[str, str | None]) -> str:
        worker_id = await self._release_pod(step, pods, holder_died=False)
        await step.write(self._transition(step, WorkerStatus.TERMINATED))
        return worker_id

    async def _release_pod(
        self,
        step: _Step,
        pods: dict[str, str | None],
        *,
        holder_died: bool,
        first: writes.Write | None = None,
    ) -> str:
        """Requeues what the worker held (after `first`, in the same group, when it
        passes), then terminates its pod."""
        action = step.action
        worker_id = action.worker_id
        assert worker_id is not None
        release = writes.release_tasks(
            worker_id,
            None,
            self._max_attempts,
            f"worker {worker_id} lost: {action.reason.value}",
            holder_died=holder_died,
        )
        answers = await step.write(*(() if first is None else (first,)), release)
        released = released_from(answers[-1])
        if released:
            log.info(
                "tasks_released",
                worker_id=worker_id,
                reason=action.reason,
                requeued=len(released.requeued),
                dead_lettered=len(released.failed),
                quarantined=list(released.quarantined),
            )
        await step.call_provider(
            lambda: self._provider.terminate_pod(worker_id, pods.get(worker_id))
        )
        return worker_id

    async def _terminate_orphan_pod(self, step: _Step) -> str | None:
        action = step.action
        assert action.worker_id is not None
        # Recorded first: the fenced write that entitles this leader to the delete.
        await step.write(
            writes.record_event(
                "orphan_pod_terminating",
                self._actor,
                action.reason.value,
                {"pod_id": action.pod_id, "name": action.worker_id},
            )
        )
        await step.call_provider(
            lambda: self._provider.terminate_pod(action.worker_id or "", action.pod_id)
        )
        log.warning("orphan_pod_terminated", pod_id=action.pod_id, name=action.worker_id)
        return action.worker_id

    async def _requeue_orphan(self, step: _Step) -> str | None:
        action = step.action
        answers = await step.write(
            writes.release_tasks(
                action.worker_id,
                action.task_id,
                self._max_attempts,
                f"holder {action.worker_id} gone: {action.reason.value}",
            )
        )
        if not released_from(answers[0]):
            raise _LostRace
        return action.worker_id


@dataclass
class _CycleState:
    """What one action of a cycle learns that changes the others."""

    billing_hold: str | None = None  # a create was answered 402: launch nothing more


@dataclass(frozen=True)
class _Step:
    """One action under way, the lease it runs under, and its cycle's state."""

    action: Action
    fence: Fence | None
    barrier: WriteBarrier  # where its writes meet those of the other actions
    provider_gate: asyncio.Semaphore  # bounds the cycle's provider calls under way
    cycle: _CycleState = field(default_factory=_CycleState)

    async def write(self, *group: writes.Write, compare: bool = True) -> tuple[Any, ...]:
        """The answers of `group`, written in one transaction with the other actions'
        writes. `_LostRace` when a compare-and-set in it found the row moved on
        (`compare=False`: the outcome is recorded whether or not it moved)."""
        answer = await self.barrier.write(*group)
        if answer.error is not None:
            raise answer.error
        if compare and answer.answers[-1] is False:
            raise _LostRace
        return answer.answers

    async def call_provider(self, call: Callable[[], Awaitable[T]]) -> T:
        """A pod is touched only while the lease the last write passed is still ours.
        Never write while holding the gate: the barrier waits for every action."""
        async with self.provider_gate:
            if self.fence is not None:
                self.fence.check()
            return await call()


def _breaker_event(move: BreakerTransition) -> str:
    return "breaker_opened" if move.to is BreakerState.OPEN else "breaker_closed"


def _log_observations(plan: Plan) -> None:
    """Once recorded: a blind spell and a breaker move are worth an operator's eye."""
    if plan.observation_gap is not None:
        since, until = plan.observation_gap
        log.warning(
            "observation_gap",
            since=since.isoformat(),
            seconds=round((until - since).total_seconds(), 1),
            message="nobody read the database meanwhile: workers get a full "
            "heartbeat timeout from now before they are judged",
        )
    breaker = plan.breaker
    if breaker is not None and breaker.transition is not None:
        move = breaker.transition
        log.warning(
            _breaker_event(move), reason=move.reason, message=move.message, rate=breaker.rate
        )


def _launch_outcome(exc: OrchestratorError) -> Reason:
    """How a refused launch counts: only a refusal about our request is a failure."""
    if isinstance(exc, CapacityError):
        return Reason.CAPACITY
    if isinstance(exc, OfferingForbidden):
        return Reason.OFFERING_FORBIDDEN
    if isinstance(exc, RateLimited):
        return Reason.RATE_LIMITED
    if isinstance(exc, BalanceError):
        return Reason.BILLING_HOLD
    return Reason.SPAWN_FAILED


def would_do(action: Action) -> ActionResult:
    """An action a shadow orchestrator decided and did not carry out."""
    return _result(action, "shadow")


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
