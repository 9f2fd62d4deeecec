"""A discrete-time simulator over the real policy: an in-memory world that turns
plans into worker histories the way the executor and real pods would, so whole
days of a fault can be replayed in milliseconds.

The world knows only facts (when a pod boots, whether it ever does, when tasks
finish); every decision comes from `policy.decide`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from ..models import (
    ActionKind,
    BreakerRecord,
    Launch,
    Plan,
    PolicyConfig,
    QueueStats,
    Reason,
    Snapshot,
    WorkerStatus,
    WorkerView,
)
from ..policy import decide

# Whether a pod launched at this time ever sends its first heartbeat.
BootFault = Callable[[datetime], bool]


@dataclass
class _Worker:
    view: WorkerView
    launch: Launch
    boots_at: datetime | None  # None: never boots


@dataclass
class SimFleet:
    cfg: PolicyConfig
    now: datetime
    boots: BootFault
    boot_sec: float = 60.0
    queued: int = 0
    workers: dict[str, _Worker] = field(default_factory=dict)
    history: list[Launch] = field(default_factory=list)  # ended launches
    breaker: BreakerRecord | None = None
    spawned_at: list[datetime] = field(default_factory=list)
    _next_id: int = 0

    def snapshot(self) -> Snapshot:
        horizon = self.now - timedelta(seconds=self.cfg.horizon_sec)
        recent = [
            launch
            for launch in self.history
            if max(launch.created_at, launch.failed_at or launch.created_at) > horizon
        ]
        live = [w.launch for w in self.workers.values()]
        return Snapshot(
            now=self.now,
            workers=tuple(w.view for w in self.workers.values()),
            holds=(),
            queue=QueueStats(self.queued, None),
            launches=tuple(recent + live),
            breaker=self.breaker,
        )

    def step(self, seconds: float) -> Plan:
        """Advances the clock, lets pods boot, then runs one cycle."""
        self.now += timedelta(seconds=seconds)
        for w in self.workers.values():
            if w.view.status is WorkerStatus.SPAWNING and w.boots_at and w.boots_at <= self.now:
                w.view = replace(
                    w.view, status=WorkerStatus.ACTIVE, ready_at=self.now, last_heartbeat=self.now
                )
                w.launch = replace(w.launch, ready_at=self.now)
            elif w.view.status is WorkerStatus.ACTIVE:
                w.view = replace(w.view, last_heartbeat=self.now)
        plan = decide(self.snapshot(), self.cfg)
        self._apply(plan)
        return plan

    def _apply(self, plan: Plan) -> None:
        move = plan.breaker.transition if plan.breaker else None
        if move is not None:
            self.breaker = BreakerRecord(move.to, self.now, move.reason, move.probe_interval_sec)
        for action in plan.actions:
            if action.kind is ActionKind.SPAWN:
                self._spawn(action.offering, action.probe)
            elif action.kind in (ActionKind.FAIL, ActionKind.STOP) and action.worker_id:
                self._end(action.worker_id, action.reason, failed=action.kind is ActionKind.FAIL)
            elif action.kind is ActionKind.DRAIN and action.worker_id:
                w = self.workers[action.worker_id]
                w.view = replace(
                    w.view, status=WorkerStatus.TERMINATING, drain_requested_at=self.now
                )

    def _spawn(self, offering: str | None, probe: bool) -> None:
        self._next_id += 1
        wid = f"sim-{self._next_id:05d}"
        boots = self.boots(self.now)
        view = WorkerView(
            wid, WorkerStatus.SPAWNING, self.now, None, None, None, None, None, pod_id=f"pod-{wid}"
        )
        launch = Launch(wid, self.now, offering, probe, True, True, None, None, None, False)
        at = self.now + timedelta(seconds=self.boot_sec) if boots else None
        self.workers[wid] = _Worker(view, launch, at)
        self.spawned_at.append(self.now)

    def _end(self, worker_id: str, reason: Reason, *, failed: bool) -> None:
        w = self.workers.pop(worker_id)
        self.history.append(
            replace(
                w.launch,
                live=False,
                failed_at=self.now if failed else None,
                failure=reason if failed else None,
            )
        )

    def launches_per_hour(self, start: datetime, hours: int) -> list[int]:
        return [
            sum(
                1
                for t in self.spawned_at
                if start + timedelta(hours=h) <= t < start + timedelta(hours=h + 1)
            )
            for h in range(hours)
        ]
