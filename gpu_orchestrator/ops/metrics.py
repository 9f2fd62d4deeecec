"""Prometheus metrics of the daemon, fed once per cycle from its `CycleReport`.

`Metrics` owns its own `CollectorRegistry` (never the process-global one), so
several instances (tests, an embedded demo) never collide. The daemon calls
`observe_cycle` from `Orchestrator.run_forever(on_cycle=...)`; the HTTP server
serves `render()` on `/metrics`.

Two kinds of series:

- Counters and the cycle histogram count what *this process* did.
- The fleet view (workers, queue, breaker, leader flag) is what the last cycle
  that observed the database saw. A cycle that could not observe (`retry`) keeps
  the last view: gauges hold the last known value, so an alert on queue age does
  not resolve because the database blinked (`gpuorch_cycles_total{outcome="retry"}`
  shows the outage). A standby (`skipped`: not leader) exports no fleet view at
  all: it never observed, and summing replicas must not double-count the fleet.
  Only `gpuorch_leader` (0) remains on a standby.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..executor import ActionResult
from ..loop import CycleReport
from ..models import FAILURE_REASONS, ActionKind, BreakerState, Reason, Snapshot, WorkerView

log = structlog.get_logger()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# gpuorch_breaker_state: one number, so `gpuorch_breaker_state > 0` alerts on
# "not closed" and max_over_time shows the worst state of a period.
BREAKER_LEVEL = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

# Statuses a snapshot's worker rows can have (terminated rows are not in it);
# always exported, 0 included, so a dashboard's series never vanish.
_WORKER_STATES = ("spawning", "active", "terminating", "error", "external")
_SPAWN_REASONS = (Reason.QUEUE_DEMAND, Reason.MIN_ACTIVE, Reason.IDLE_BUFFER, Reason.BREAKER_PROBE)
_EXIT_KINDS = frozenset({ActionKind.FAIL, ActionKind.STOP, ActionKind.RELEASE})
# FAIL: live -> error and pod released. RELEASE: an `error` row whose release did
# not finish in the cycle that failed it (its FAIL ended `error`, so it was not
# counted). Each failed worker is therefore counted once.
_FAILED_KINDS = frozenset({ActionKind.FAIL, ActionKind.RELEASE})
_CYCLE_OUTCOMES = ("ok", "retry", "skipped")
# From a quick cycle to CYCLE_TIMEOUT_SEC's default (120 s) and beyond.
_CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """The daemon's metrics; feed with `observe_cycle`, serve `render()`."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.last_report: CycleReport | None = None  # the last cycle observed
        self._fleet = _FleetCollector()
        self.registry.register(self._fleet)
        if process_metrics:  # process_* (memory, CPU, fds) and python_gc_*
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        r = self.registry
        self.cycles = Counter(
            "gpuorch_cycles",
            "Cycles run, by outcome (ok, retry, skipped).",
            ["outcome"],
            registry=r,
        )
        self.cycle_duration = Histogram(
            "gpuorch_cycle_duration_seconds",
            "Wall time of one cycle (lease, observe, decide, act), any outcome.",
            buckets=_CYCLE_BUCKETS,
            registry=r,
        )
        self.spawns = Counter(
            "gpuorch_spawns", "Workers launched (pod created), by reason.", ["reason"], registry=r
        )
        self.exits = Counter(
            "gpuorch_worker_exits",
            "Workers ended by this orchestrator (failed, or stopped after draining), by reason.",
            ["reason"],
            registry=r,
        )
        self.actions = Counter(
            "gpuorch_actions",
            "Plan actions applied, by kind and outcome (done, lost_race, skipped, error).",
            ["kind", "outcome"],
            registry=r,
        )
        self.failed_spend = Counter(
            "gpuorch_failed_worker_spend_usd",
            "Estimated USD spent on workers that failed: cost_per_hr x hours from their row's"
            " creation to their release, by failure reason.",
            ["reason"],
            registry=r,
        )
        for outcome in _CYCLE_OUTCOMES:  # pre-created: rate() and increase() see the 0
            self.cycles.labels(outcome)
        for reason in _SPAWN_REASONS:
            self.spawns.labels(reason.value)
        for reason in FAILURE_REASONS:
            self.exits.labels(reason.value)
            self.failed_spend.labels(reason.value)

    @property
    def lease_state(self) -> str:
        """`leader` or `standby` when the last cycle's lease call answered, else `unknown`."""
        outcome = None if self.last_report is None else self.last_report.outcome
        return {"ok": "leader", "skipped": "standby"}.get(outcome or "", "unknown")

    def observe_cycle(self, report: CycleReport) -> None:
        """Updates every series from one finished cycle. Never raises: it runs inside
        the loop (`run_forever`'s `on_cycle`), and a metrics bug must not stop it."""
        self.last_report = report
        try:
            self._observe(report)
        except Exception:
            log.exception("metrics_update_failed", cycle_id=report.cycle_id)

    def _observe(self, report: CycleReport) -> None:
        self.cycles.labels(report.outcome).inc()
        self.cycle_duration.observe(max(0.0, report.duration_ms / 1000))
        if report.outcome == "skipped":
            self._fleet.view = None
            self._fleet.leader = False
        elif report.outcome == "ok":
            self._fleet.leader = True
            if report.snapshot is not None:
                self._fleet.view = _FleetView.of(report)
        if report.snapshot is not None:
            self._count_results(report.results, report.snapshot)

    def _count_results(self, results: Iterable[ActionResult], snapshot: Snapshot) -> None:
        workers = {w.id: w for w in snapshot.workers}
        for result in results:
            self.actions.labels(result.kind.value, result.outcome).inc()
            if result.outcome != "done":
                continue
            reason = result.reason.value
            if result.kind is ActionKind.SPAWN:
                self.spawns.labels(reason).inc()
            elif result.kind in _EXIT_KINDS:
                self.exits.labels(reason).inc()
            if result.kind in _FAILED_KINDS and result.worker_id is not None:
                spent = _spend_usd(workers.get(result.worker_id), snapshot)
                if spent > 0:
                    self.failed_spend.labels(reason).inc(spent)

    def render(self) -> bytes:
        """Every series in the Prometheus text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def _spend_usd(worker: WorkerView | None, snapshot: Snapshot) -> float:
    """cost_per_hr x hours from the row's creation to this cycle (when its pod was
    released). 0 when unknown: no cost was recorded (the pod was never created)."""
    if worker is None or worker.cost_per_hr is None:
        return 0.0
    hours = (snapshot.now - worker.created_at).total_seconds() / 3600
    spent = worker.cost_per_hr * max(0.0, hours)
    return spent if math.isfinite(spent) else 0.0


@dataclass(frozen=True)
class _FleetView:
    """The gauges one observed cycle sets (all computed at `observe_cycle` time)."""

    workers: dict[str, int]
    queued: int
    queue_capped: bool
    oldest_queued_age_sec: float
    in_progress: int
    breaker_level: int | None  # None: the plan carried no breaker view
    failure_rate: float  # NaN: no sample in the window
    failures: dict[str, int]
    proven: int | None
    billing_hold: bool  # a 402 holds every spawn

    @classmethod
    def of(cls, report: CycleReport) -> _FleetView:
        snap = report.snapshot
        assert snap is not None
        workers = dict.fromkeys(_WORKER_STATES, 0)
        for w in snap.workers:
            workers[w.status.value] = workers.get(w.status.value, 0) + 1
        oldest = snap.queue.oldest_queued_at
        breaker = report.plan.breaker if report.plan is not None else None
        failures = {r.value: 0 for r in FAILURE_REASONS}
        if breaker is not None:
            failures.update((r.value, n) for r, n in breaker.failures_by_reason)
        return cls(
            workers=workers,
            queued=snap.queue.queued,
            queue_capped=snap.queue.capped,
            oldest_queued_age_sec=0.0
            if oldest is None
            else max(0.0, (snap.now - oldest).total_seconds()),
            in_progress=len(snap.holds),
            breaker_level=None if breaker is None else BREAKER_LEVEL[breaker.state],
            failure_rate=math.nan if breaker is None or breaker.rate is None else breaker.rate,
            failures=failures if breaker is not None else {},
            proven=None if breaker is None else breaker.proven,
            billing_hold=report.plan is not None and report.plan.billing_hold_since is not None,
        )


class _FleetCollector(Collector):
    """Exports the last fleet view, or nothing of it (see the module docstring)."""

    def __init__(self) -> None:
        self.view: _FleetView | None = None
        self.leader: bool | None = None  # None until a lease call answered

    def describe(self) -> Iterable[Metric]:
        return ()  # series come and go with leadership

    def collect(self) -> Iterator[Metric]:
        if self.leader is not None:
            yield _gauge(
                "gpuorch_leader",
                "1 when the last answered lease call made this process leader.",
                float(self.leader),
            )
        v = self.view
        if v is None:
            return
        workers = GaugeMetricFamily(
            "gpuorch_workers", "Worker rows by status at the last observation.", labels=["state"]
        )
        for state, n in sorted(v.workers.items()):
            workers.add_metric([state], n)
        yield workers
        yield _gauge(
            "gpuorch_queue_depth",
            "Claimable queued tasks; a lower bound when gpuorch_queue_depth_capped is 1.",
            v.queued,
        )
        yield _gauge(
            "gpuorch_queue_depth_capped",
            "1 when the cycle stopped counting queued tasks at its cap (beyond it no"
            " decision changes).",
            float(v.queue_capped),
        )
        yield _gauge(
            "gpuorch_queue_oldest_age_seconds",
            "Age of the oldest queued task at the last observation (0: queue empty).",
            v.oldest_queued_age_sec,
        )
        yield _gauge("gpuorch_tasks_in_progress", "Tasks In Progress.", v.in_progress)
        yield _gauge(
            "gpuorch_billing_hold",
            "1 while the provider account cannot pay (402): every spawn is held.",
            float(v.billing_hold),
        )
        yield from self._breaker(v)

    @staticmethod
    def _breaker(v: _FleetView) -> Iterator[Metric]:
        if v.breaker_level is None:
            return
        yield _gauge(
            "gpuorch_breaker_state",
            "Failure-rate breaker: 0 closed, 1 half_open, 2 open.",
            v.breaker_level,
        )
        yield _gauge(
            "gpuorch_failure_rate",
            "Failed / (failed + proven) workers in the window; NaN with no sample.",
            v.failure_rate,
        )
        failures = GaugeMetricFamily(
            "gpuorch_breaker_failures",
            "Worker failures counted by the breaker in its window, by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(v.failures.items()):
            failures.add_metric([reason], n)
        yield failures
        if v.proven is not None:
            yield _gauge(
                "gpuorch_breaker_proven",
                "Proven workers (ready, or still healthy) in the breaker's window.",
                v.proven,
            )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
