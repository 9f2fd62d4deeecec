"""The reconcile loop: lease → observe → decide → act → record, every poll.

Level-triggered: each cycle re-reads the world, so nothing depends on what an
earlier cycle (or an earlier process) remembered. A cycle that cannot read the
store acts on nothing.

A cycle never outlives its lease: its deadline is the lease's term less a margin
(or `CYCLE_TIMEOUT_SEC`, if sooner), every write is fenced by the lease's epoch,
and a cycle that learns it lost the lease stops at once. No exception ends the
loop: an unexpected one is logged with its cycle id and the next cycle runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog

from .config import cycle_budget, lease_margin
from .errors import LeaseLost, OrchestratorError
from .executor import ActionResult, Executor, would_do
from .models import Plan, PolicyConfig, Snapshot
from .policy import decide
from .store.base import Fence, OrchestratorStore

log = structlog.get_logger()

LEASE_NAME = "orchestrator"
MAINTENANCE_EVERY_SEC = 3600.0  # log retention and dead-lettering: hourly is plenty


@dataclass(frozen=True)
class CycleReport:
    """What one cycle saw, decided and did; printed by `once`, logged by `run`."""

    cycle_id: str
    # ok | retry (could not observe, timed out, failed) | skipped (not leader, or the
    # lease was lost during the cycle)
    outcome: str
    reason: str | None  # for `ok`: None, or "shadow" (decided, nothing done)
    duration_ms: float
    snapshot: Snapshot | None = None
    plan: Plan | None = None
    results: tuple[ActionResult, ...] = field(default=())
    failing_cycles: int = 0  # consecutive `retry` cycles, this one included

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cycle_id": self.cycle_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "duration_ms": round(self.duration_ms, 1),
        }
        if self.snapshot is not None:
            snap = self.snapshot
            out["observed"] = {
                "now": snap.now.isoformat(),
                "workers": _count_by_status(snap),
                "queued": snap.queue.queued,
                "queued_capped": snap.queue.capped,
                "in_progress": len(snap.holds),
            }
        if self.plan is not None:
            out["plan"] = {
                "desired_workers": self.plan.desired_workers,
                "capacity": self.plan.capacity,
                "unmet_demand": self.plan.unmet_demand,
                "held_back": [r.value for r in self.plan.held_back],
                "unsafe": self.plan.unsafe,
                "offerings_backing_off": {
                    b.offering: {"capacity_errors": b.capacity_errors, "until": b.until.isoformat()}
                    for b in self.plan.backoffs
                },
            }
            if self.plan.breaker is not None:
                out["breaker"] = self.plan.breaker.as_dict()
            out["actions"] = [r.as_dict() for r in self.results]
        return out


def _count_by_status(snapshot: Snapshot) -> dict[str, int]:
    counts: dict[str, int] = {}
    for w in snapshot.workers:
        counts[w.status.value] = counts.get(w.status.value, 0) + 1
    return counts


class Orchestrator:
    def __init__(
        self,
        store: OrchestratorStore,
        executor: Executor,
        policy: PolicyConfig,
        *,
        holder: str,
        lease_sec: float,
        cycle_timeout_sec: float,
        log_retention_sec: float = 14 * 86400,
        shadow: bool = False,
    ) -> None:
        self._store = store
        self._executor = executor
        self._policy = policy
        self._holder = holder
        self._lease_sec = lease_sec
        self._timeout = cycle_budget(cycle_timeout_sec, lease_sec)
        self.last_tick: float | None = None  # monotonic time of the last finished cycle
        self.failing_cycles = 0  # consecutive cycles that ended in `retry`
        self._log_retention_sec = log_retention_sec
        self._maintained_at: float | None = None  # monotonic; None: not yet in this process
        self.shadow = shadow

    @property
    def executor(self) -> Executor:
        return self._executor

    async def run_cycle(self, stop: asyncio.Event | None = None) -> CycleReport:
        """One cycle under a timeout; never raises for store or provider trouble."""
        stop = stop or asyncio.Event()
        cycle_id = uuid.uuid4().hex[:12]
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(cycle_id=cycle_id):
            try:
                report = await asyncio.wait_for(self._cycle(cycle_id, stop), self._timeout)
            except TimeoutError:
                report = CycleReport(cycle_id, "retry", "cycle_timeout", 0.0)
            except LeaseLost as exc:
                log.warning("lease_lost", error=str(exc))
                report = CycleReport(cycle_id, "skipped", f"lease_lost: {exc}", 0.0)
            except OrchestratorError as exc:
                report = CycleReport(cycle_id, "retry", f"{type(exc).__name__}: {exc}", 0.0)
            except Exception as exc:  # a bug or a hostile answer must not end the loop
                log.exception("cycle_failed", error=f"{type(exc).__name__}: {exc}")
                report = CycleReport(cycle_id, "retry", f"unexpected {type(exc).__name__}", 0.0)
            duration = (time.perf_counter() - started) * 1000
            self.last_tick = time.monotonic()
            self.failing_cycles = self.failing_cycles + 1 if report.outcome == "retry" else 0
            report = replace(report, duration_ms=duration, failing_cycles=self.failing_cycles)
            _log_cycle(report)
        return report

    async def _cycle(self, cycle_id: str, stop: asyncio.Event) -> CycleReport:
        if self.shadow:
            return await self._shadow_cycle(cycle_id)
        asked = time.monotonic()  # the lease's term starts after this, by any clock
        lease = await self._store.acquire_lease(LEASE_NAME, self._holder, self._lease_sec)
        if not lease.leader:
            return CycleReport(cycle_id, "skipped", f"not_leader (held by {lease.holder})", 0.0)
        fence = Fence(
            LEASE_NAME, lease.epoch, asked + lease.ttl_sec - lease_margin(self._lease_sec)
        )
        snapshot = await self._observe(lease.last_contact)
        plan = decide(snapshot, self._policy)
        results = await self._executor.apply(plan, snapshot, stop, fence)
        await self._maintain(fence)
        return CycleReport(cycle_id, "ok", None, 0.0, snapshot, plan, tuple(results))

    async def _shadow_cycle(self, cycle_id: str) -> CycleReport:
        """Observe and decide only: no lease (taking it is a write), no recorded
        observation, no action; the plan's actions are reported as `shadow`."""
        snapshot = await self._observe(last_contact=None)
        plan = decide(snapshot, self._policy)
        results = tuple(would_do(action) for action in plan.actions)
        return CycleReport(cycle_id, "ok", "shadow", 0.0, snapshot, plan, results)

    async def _observe(self, last_contact: datetime | None) -> Snapshot:
        """The world as the policy reads it: the store's snapshot, the provider's pods."""
        snapshot = await self._store.observe(self._policy.horizon_sec, self._policy.queue_cap)
        return replace(
            snapshot, pods=await self._executor.list_pods(), last_contact_at=last_contact
        )

    async def _maintain(self, fence: Fence) -> None:
        """Upkeep at most every `MAINTENANCE_EVERY_SEC` (idempotent: a restart that
        runs it again early does no harm)."""
        now = time.monotonic()
        if self._maintained_at is not None and now - self._maintained_at < MAINTENANCE_EVERY_SEC:
            return
        try:
            done = await self._store.maintenance(self._log_retention_sec, fence=fence)
        except LeaseLost:
            raise
        except OrchestratorError as exc:
            log.warning("maintenance_failed", error=str(exc))
            return
        self._maintained_at = now
        if any(done.values()):
            log.info("maintenance", **done)

    async def run_forever(
        self,
        stop: asyncio.Event,
        poll_sec: float,
        on_cycle: Callable[[CycleReport], None] | None = None,
    ) -> None:
        """Cycles every `poll_sec` until `stop` is set, then hands the lease back so
        a successor can lead at once. Pods are left running."""
        try:
            while not stop.is_set():
                report = await self.run_cycle(stop)
                if on_cycle is not None:
                    try:
                        on_cycle(report)
                    except Exception:  # an observer (metrics, alerts) must not stop the loop
                        log.exception("on_cycle_failed", cycle_id=report.cycle_id)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_sec)
        finally:
            await self.release_lease()

    async def release_lease(self) -> None:
        """Hands leadership back so a successor can lead at once (best effort)."""
        with contextlib.suppress(OrchestratorError):
            await self._store.release_lease(LEASE_NAME, self._holder)


def _log_cycle(report: CycleReport) -> None:
    """The whole report as fields (JSON lines keep it all) and a one-line `message`
    for people (the console shows only that, see `logs`)."""
    summary = report.as_dict()
    event = "cycle" if report.outcome == "ok" else f"cycle_{report.outcome}"
    if report.outcome == "retry":
        log.warning(event, message=_one_line(report), **summary)
    else:
        log.info(event, message=_one_line(report), **summary)


def _one_line(report: CycleReport) -> str:
    if report.outcome != "ok" or report.snapshot is None or report.plan is None:
        return f"{report.outcome}: {report.reason}"
    workers = ", ".join(f"{n} {s}" for s, n in sorted(_count_by_status(report.snapshot).items()))
    acts: dict[str, int] = {}
    for r in report.results:
        key = f"{r.kind.value}({r.reason.value}){'' if r.outcome == 'done' else ':' + r.outcome}"
        acts[key] = acts.get(key, 0) + 1
    breaker = report.plan.breaker.state.value if report.plan.breaker else "-"
    return ("shadow, nothing done: " if report.reason == "shadow" else "") + (
        f"{report.duration_ms:.0f} ms; workers: {workers or 'none'}; "
        f"queued {report.snapshot.queue.queued}; breaker {breaker}; actions: "
        + (" ".join(f"{k}x{n}" for k, n in sorted(acts.items())) or "none")
    )
