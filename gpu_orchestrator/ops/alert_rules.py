"""Alert rules (seed "Prevention 5"): `evaluate(report, cfg)` says, for every alert
key, whether its condition fires now (or that this cycle gives no evidence), with a
severity, a one-line message and a few fields. Pure: its clock is the snapshot's
`now` (the database server's), never the host's; "for N minutes" conditions are
computed from timestamps in the snapshot, not from memory of earlier cycles.
The `Alerter` in `alerts` turns these conditions into messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog

from ..config import Settings
from ..executor import ActionResult
from ..loop import CycleReport
from ..models import (
    ActionKind,
    BreakerState,
    Launch,
    Reason,
    Snapshot,
    WorkerStatus,
    WorkerView,
)

log = structlog.get_logger()

Severity = Literal["critical", "warning", "info"]
Status = Literal["firing", "resolved"]
WebhookFormat = Literal["slack", "generic"]

# Alert keys, one per condition `evaluate` judges.
BREAKER_OPENED = "breaker_opened"  # one-shot: the breaker opened this cycle
BREAKER_CLOSED = "breaker_closed"  # one-shot: the breaker closed this cycle
FAILURE_RATE_HIGH = "failure_rate_high"
NO_HEALTHY_WORKER = "no_healthy_worker"
HEARTBEATS_STALE = "heartbeats_stale"
TASK_FAILURE_RATE_HIGH = "task_failure_rate_high"
ALL_OFFERINGS_BACKING_OFF = "all_offerings_backing_off"
PROVIDER_AUTH_OR_BALANCE = "provider_auth_or_balance"
BILLING_HOLD = "billing_hold"
STORE_UNREADABLE = "store_unreadable"

ALERT_KEYS = (
    BREAKER_OPENED,
    BREAKER_CLOSED,
    FAILURE_RATE_HIGH,
    NO_HEALTHY_WORKER,
    HEARTBEATS_STALE,
    TASK_FAILURE_RATE_HIGH,
    ALL_OFFERINGS_BACKING_OFF,
    PROVIDER_AUTH_OR_BALANCE,
    BILLING_HOLD,
    STORE_UNREADABLE,
)


@dataclass(frozen=True)
class AlertConfig:
    """Alert settings (built from `config.Settings`; env var in each comment)."""

    webhook_url: str | None = field(default=None, repr=False)  # ALERT_WEBHOOK_URL (secret)
    # ALERT_WEBHOOK_FORMAT; None: `slack` for hooks.slack.com, else `generic`
    webhook_format: WebhookFormat | None = None
    webhook_timeout_sec: float = 5.0  # ALERT_WEBHOOK_TIMEOUT_SEC: one delivery, all told
    cooldown_sec: float = 900.0  # ALERT_COOLDOWN_SEC: least time between repeats of a key
    failure_rate: float = 0.5  # ALERT_FAILURE_RATE: worker failure rate strictly above
    # the breaker's sample minimum (MIN_WORKERS_FOR_RATE_CHECK) applies to the alert too
    failure_rate_min_sample: int = 5
    # ALERT_HEARTBEAT_STALE_SEC: a heartbeat older than this is not "healthy"
    heartbeat_stale_sec: float = 120.0
    no_worker_minutes: float = 5.0  # ALERT_NO_WORKER_MINUTES
    capacity_minutes: float = 15.0  # ALERT_CAPACITY_MINUTES
    task_failure_rate: float = 0.5  # ALERT_TASK_FAILURE_RATE: strictly above
    task_failure_min_sample: int = 5  # ALERT_TASK_FAILURE_MIN_SAMPLE: finished tasks
    task_window_sec: float = 1800.0  # the snapshot's horizon, over which task outcomes count
    store_unreadable_cycles: int = 3  # ALERT_STORE_UNREADABLE_CYCLES: failed cycles in a row
    probe_interval_sec: float = 300.0  # BREAKER_PROBE_INTERVAL_SEC: a billing hold's retry

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertConfig:
        """Validated by `Settings`; the breaker's sample minimum applies here too."""
        url = settings.alert_webhook_url
        return cls(
            webhook_url=None if url is None else url.get_secret_value(),
            webhook_format=settings.alert_webhook_format,
            webhook_timeout_sec=settings.alert_webhook_timeout_sec,
            cooldown_sec=settings.alert_cooldown_sec,
            failure_rate=settings.alert_failure_rate,
            failure_rate_min_sample=settings.min_workers_for_rate_check,
            heartbeat_stale_sec=settings.alert_heartbeat_stale_sec,
            no_worker_minutes=settings.alert_no_worker_minutes,
            capacity_minutes=settings.alert_capacity_minutes,
            task_failure_rate=settings.alert_task_failure_rate,
            task_failure_min_sample=settings.alert_task_failure_min_sample,
            task_window_sec=settings.policy().horizon_sec,
            store_unreadable_cycles=settings.alert_store_unreadable_cycles,
            probe_interval_sec=settings.breaker_probe_interval_sec,
        )

    @property
    def format(self) -> WebhookFormat:
        """The payload format: explicit, else guessed from the URL's host."""
        if self.webhook_format is not None:
            return self.webhook_format
        host = urlsplit(self.webhook_url or "").hostname or ""
        return "slack" if host == "hooks.slack.com" else "generic"


@dataclass(frozen=True)
class TaskStats:
    """Task outcomes in a recent window (the snapshot counts tasks whose
    `generation_processed_at` falls within its horizon, by terminal status)."""

    completed: int  # reached `Complete`
    failed: int  # reached `Failed` (attempts exhausted or dead-lettered)
    window_sec: float


@dataclass(frozen=True)
class AlertCondition:
    """One key as this cycle judges it."""

    # True: firing now; False: clear now; None: no evidence this cycle either way
    # (the alerter keeps the key's previous state and sends nothing for it).
    firing: bool | None
    severity: Severity
    message: str  # one line for humans, describing the current state (firing or not)
    fields: Mapping[str, Any] = field(default_factory=dict)
    # one-shot notices (breaker opened/closed) are sent once, never repeated or
    # resolved; `fingerprint` tells a re-judged notice from a new one.
    one_shot: bool = False
    fingerprint: str | None = None


@dataclass(frozen=True)
class Alert:
    """One message the alerter sends."""

    key: str
    status: Status
    severity: Severity
    message: str
    fields: Mapping[str, Any]
    at: datetime  # database time of the cycle that produced it
    repeat: bool = False  # a reminder: still firing after the cooldown

    def generic_payload(self) -> dict[str, Any]:
        return {
            "alert": self.key,
            "status": self.status,
            "severity": self.severity,
            "message": self.message,
            "fields": dict(self.fields),
            "at": self.at.isoformat(),
            "repeat": self.repeat,
        }

    def slack_payload(self) -> dict[str, Any]:
        if self.status == "resolved":
            head = f":white_check_mark: *RESOLVED* `{self.key}`"
        else:
            icon = {"critical": ":rotating_light:", "warning": ":warning:"}.get(
                self.severity, ":information_source:"
            )
            again = " (still firing)" if self.repeat else ""
            head = f"{icon} *{self.severity.upper()}* `{self.key}`{again}"
        lines = [f"{head}: {_slack_escape(self.message)}"]
        if self.fields:
            pairs = ", ".join(f"{k}={v}" for k, v in self.fields.items())
            lines.append(_slack_escape(pairs))
        lines.append(f"at {self.at.isoformat()}")
        return {"text": "\n".join(lines)}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- the pure part ----------------------------------------------------------------------


def evaluate(
    report: CycleReport, cfg: AlertConfig, task_stats: TaskStats | None = None
) -> dict[str, AlertCondition]:
    """Every alert key as this cycle's report shows it. Pure: no I/O, no host clock.

    A cycle that observed nothing (not leader, store unreadable) gives no evidence:
    every key comes back with `firing=None`."""
    snap, plan = report.snapshot, report.plan
    out: dict[str, AlertCondition] = {}
    if snap is None or plan is None:
        for key in ALERT_KEYS:
            out[key] = AlertCondition(None, "info", f"no observation ({report.outcome})")
        out[TASK_FAILURE_RATE_HIGH] = _task_failure_rate(task_stats, cfg)
        out[STORE_UNREADABLE] = _store_unreadable(report, cfg)
        return out
    out[BREAKER_OPENED], out[BREAKER_CLOSED] = _breaker_notices(report)
    out[FAILURE_RATE_HIGH] = _failure_rate(report, cfg)
    out[NO_HEALTHY_WORKER] = _no_healthy_worker(snap, cfg)
    out[HEARTBEATS_STALE] = _heartbeats_stale(snap, cfg)
    out[TASK_FAILURE_RATE_HIGH] = _task_failure_rate(task_stats, cfg)
    out[ALL_OFFERINGS_BACKING_OFF] = _capacity(report, cfg)
    out[PROVIDER_AUTH_OR_BALANCE] = _provider_refusals(report.results)
    out[BILLING_HOLD] = _billing_hold(report, cfg)
    out[STORE_UNREADABLE] = AlertCondition(False, "critical", "the store answered")
    return out


def _store_unreadable(report: CycleReport, cfg: AlertConfig) -> AlertCondition:
    if report.outcome != "retry":
        return AlertCondition(None, "critical", f"no observation ({report.outcome})")
    fields: dict[str, Any] = {"failed_cycles": report.failing_cycles}
    return AlertCondition(
        report.failing_cycles >= cfg.store_unreadable_cycles,
        "critical",
        f"{report.failing_cycles} cycles in a row could not read the state store, so the "
        f"fleet is not watched: {(report.reason or '')[:200]}",
        fields,
    )


def _billing_hold(report: CycleReport, cfg: AlertConfig) -> AlertCondition:
    plan = report.plan
    assert plan is not None
    since = plan.billing_hold_since
    if since is None:
        return AlertCondition(False, "critical", "no billing hold")
    return AlertCondition(
        True,
        "critical",
        f"the provider account cannot pay (402) since {since.isoformat()}: every spawn is "
        f"held; add funds. One create is retried every {cfg.probe_interval_sec:g} s and "
        "the first that succeeds lifts the hold",
        {"since": since.isoformat()},
    )


def _breaker_notices(report: CycleReport) -> tuple[AlertCondition, AlertCondition]:
    plan, snap = report.plan, report.snapshot
    assert plan is not None and snap is not None
    b = plan.breaker
    move = b.transition if b is not None else None
    quiet = AlertCondition(False, "info", "no breaker transition this cycle", one_shot=True)
    if b is None or move is None:
        return quiet, quiet
    rate = "-" if b.rate is None else f"{b.rate:.0%} ({b.failed}/{b.failed + b.proven})"
    fields: dict[str, Any] = {
        "reason": move.reason.value,
        "rate": None if b.rate is None else round(b.rate, 4),
        "failed": b.failed,
        "proven": b.proven,
    }
    # A transition whose recording failed is judged again next cycle from the same
    # prior record: same fingerprint, so it is not announced twice.
    prior = snap.breaker.at.isoformat() if snap.breaker is not None else "never"
    fingerprint = f"{move.to.value}:{move.reason.value}:{prior}"
    if move.to is BreakerState.OPEN:
        fields["probe_interval_sec"] = move.probe_interval_sec
        severity: Severity = "critical"
        message = f"breaker opened, spawning blocked: {move.message} (failure rate {rate})"
    else:
        severity, message = "info", f"breaker closed, spawning resumes: {move.message}"
    notice = AlertCondition(True, severity, message, fields, True, fingerprint)
    return (notice, quiet) if move.to is BreakerState.OPEN else (quiet, notice)


def _failure_rate(report: CycleReport, cfg: AlertConfig) -> AlertCondition:
    b = report.plan.breaker if report.plan is not None else None
    if b is None:
        return AlertCondition(None, "warning", "breaker not assessed this cycle")
    sample = b.failed + b.proven
    fields = {"rate": b.rate, "failed": b.failed, "proven": b.proven, "threshold": cfg.failure_rate}
    if b.rate is None or sample < cfg.failure_rate_min_sample:
        return AlertCondition(
            False, "warning", f"{sample} workers in the window, too few to judge", fields
        )
    reasons = ", ".join(f"{r.value} x{n}" for r, n in b.failures_by_reason)
    firing = b.rate > cfg.failure_rate
    verb = "above" if firing else "at or below"
    return AlertCondition(
        firing,
        "warning",
        f"worker failure rate {b.rate:.0%} ({b.failed}/{sample}) {verb} "
        f"ALERT_FAILURE_RATE {cfg.failure_rate:.0%}" + (f" [{reasons}]" if reasons else ""),
        {**fields, "rate": round(b.rate, 4), "breaker": b.state.value},
    )


def age_sec(now: datetime, then: datetime) -> float:
    return (now - then).total_seconds()


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f}m" if seconds >= 60 else f"{seconds:.0f}s"


def _no_healthy_worker(snap: Snapshot, cfg: AlertConfig) -> AlertCondition:
    """Tasks wait and no active worker has a fresh heartbeat, for N minutes: since the
    later of the oldest queued task's creation and the last moment any row shows a
    worker able to claim (`_healthy_until`). Rows of terminated workers are gone from
    the snapshot, so the queue's age is then the only bound; `oldest_queued_at` is a
    task's `created_at`, so a requeued task makes the wait look longer than it is."""
    now, queue = snap.now, snap.queue
    healthy = [
        w
        for w in snap.workers
        if w.status is WorkerStatus.ACTIVE
        and w.last_heartbeat is not None
        and age_sec(now, w.last_heartbeat) <= cfg.heartbeat_stale_sec
    ]
    fields: dict[str, Any] = {"queued": queue.queued, "healthy_workers": len(healthy)}
    if queue.queued == 0 or queue.oldest_queued_at is None:
        return AlertCondition(False, "critical", "no task waiting", fields)
    if healthy:
        return AlertCondition(False, "critical", f"{len(healthy)} healthy workers", fields)
    since = max([queue.oldest_queued_at, *(_healthy_until(w, cfg) for w in snap.workers)])
    waited = max(0.0, age_sec(now, since))
    booting = sum(1 for w in snap.workers if w.status is WorkerStatus.SPAWNING)
    fields.update(
        oldest_queued_sec=round(age_sec(now, queue.oldest_queued_at)),
        without_healthy_worker_sec=round(waited),
        booting=booting,
    )
    plus = "+" if queue.capped else ""
    return AlertCondition(
        waited >= cfg.no_worker_minutes * 60,
        "critical",
        f"{queue.queued}{plus} tasks waiting and no healthy worker for {minutes(waited)} "
        f"({booting} booting; healthy = active with a heartbeat in the last "
        f"{cfg.heartbeat_stale_sec:g}s)",
        fields,
    )


def _healthy_until(worker: WorkerView, cfg: AlertConfig) -> datetime:
    """The latest moment this row shows the worker could still claim tasks: its
    last heartbeat turning stale, or its drain request, whichever came first."""
    if worker.last_heartbeat is None:
        return datetime.min.replace(tzinfo=UTC)
    until = worker.last_heartbeat + timedelta(seconds=cfg.heartbeat_stale_sec)
    if worker.status is not WorkerStatus.ACTIVE and worker.drain_requested_at is not None:
        until = min(until, worker.drain_requested_at)
    return until


def _heartbeats_stale(snap: Snapshot, cfg: AlertConfig) -> AlertCondition:
    """Every worker that should be heartbeating (active or draining) is silent."""
    now = snap.now
    beating = [
        w for w in snap.workers if w.status in (WorkerStatus.ACTIVE, WorkerStatus.TERMINATING)
    ]
    if not beating:
        return AlertCondition(False, "critical", "no worker is expected to heartbeat")
    # a missing heartbeat reads as the health policy reads it
    ages = [age_sec(now, w.last_heartbeat or w.ready_at or w.created_at) for w in beating]
    freshest = min(ages)
    fields = {"workers": len(beating), "freshest_heartbeat_sec": round(freshest)}
    if freshest <= cfg.heartbeat_stale_sec:
        fresh = sum(1 for a in ages if a <= cfg.heartbeat_stale_sec)
        return AlertCondition(
            False, "critical", f"{fresh} of {len(beating)} workers heartbeating", fields
        )
    return AlertCondition(
        True,
        "critical",
        f"all {len(beating)} active or draining workers silent: freshest heartbeat "
        f"{minutes(freshest)} ago (ALERT_HEARTBEAT_STALE_SEC={cfg.heartbeat_stale_sec:g})",
        fields,
    )


def _task_failure_rate(stats: TaskStats | None, cfg: AlertConfig) -> AlertCondition:
    if stats is None:
        return AlertCondition(None, "warning", "task outcomes not supplied")
    finished = stats.completed + stats.failed
    fields: dict[str, Any] = {
        "failed": stats.failed,
        "finished": finished,
        "window_sec": stats.window_sec,
        "threshold": cfg.task_failure_rate,
    }
    if finished < cfg.task_failure_min_sample:
        return AlertCondition(False, "warning", f"{finished} tasks finished, too few", fields)
    rate = stats.failed / finished
    fields["rate"] = round(rate, 4)
    firing = rate > cfg.task_failure_rate
    verb = "above" if firing else "at or below"
    return AlertCondition(
        firing,
        "warning",
        f"task failure rate {rate:.0%} ({stats.failed}/{finished} in the last "
        f"{minutes(stats.window_sec)}) {verb} ALERT_TASK_FAILURE_RATE {cfg.task_failure_rate:.0%}",
        fields,
    )


_REFUSED = (Reason.CAPACITY, Reason.OFFERING_FORBIDDEN)


def refused_since(launches: tuple[Launch, ...]) -> datetime | None:
    """When launches started being refused (capacity, forbidden offering) with no pod
    placed since: the first refusal after the last placed launch; None if the last
    placed launch came after every refusal. `launches` in `LAUNCH_ORDER`."""
    since: datetime | None = None
    for launch in launches:
        if launch.pod_created:
            since = None
        elif launch.failure in _REFUSED and since is None:
            since = launch.failed_at or launch.created_at
    return since


def _capacity(report: CycleReport, cfg: AlertConfig) -> AlertCondition:
    """Demand is held back because every offering is backing off, and no launch has
    been placed for N minutes. A cycle where a backoff expired and a launch was tried
    and refused again is no evidence either way (the alert does not flap)."""
    snap, plan = report.snapshot, report.plan
    assert snap is not None and plan is not None
    placed = any(r.kind is ActionKind.SPAWN and r.outcome == "done" for r in report.results)
    since = refused_since(snap.launches)
    wanting = plan.unmet_demand > 0 or plan.count(ActionKind.SPAWN) > 0
    fields: dict[str, Any] = {
        "offerings": {b.offering: b.until.isoformat() for b in plan.backoffs},
        "unmet_demand": plan.unmet_demand,
    }
    if placed or since is None:
        return AlertCondition(
            False, "warning", "no launch refused since the last placed one", fields
        )
    if not wanting:
        return AlertCondition(False, "warning", "no demand waiting for capacity", fields)
    if Reason.ALL_OFFERINGS_BACKING_OFF not in plan.held_back:
        return AlertCondition(None, "warning", "spawning held back for another reason", fields)
    refused = max(0.0, age_sec(snap.now, since))
    fields["refused_for_sec"] = round(refused)
    return AlertCondition(
        refused >= cfg.capacity_minutes * 60,
        "warning",
        f"every offering out of capacity: no pod placed for {minutes(refused)}, "
        f"{plan.unmet_demand} workers wanted ({len(plan.backoffs)} offerings backing off)",
        fields,
    )


# The provider's error text: "POST /v2/pods: 402 <detail>" (providers/runpod.py).
_PROVIDER_STATUS = re.compile(r"^(?:GET|POST|PUT|PATCH|DELETE) \S+: (401|402|422)\b")
_PROBLEM_BY_STATUS = {"401": "auth", "402": "balance", "422": "rejected"}


def provider_problem(result: ActionResult) -> str | None:
    """`auth`, `balance` or `rejected` when a failed action was refused by the provider
    for a reason only a human can fix. Uses `result.error_kind` (the exception class
    name) when the executor records it, else the provider's status in the error text."""
    if result.outcome != "error" or not result.error:
        return None
    kind = getattr(result, "error_kind", None)
    match = _PROVIDER_STATUS.match(result.error)
    by_text = _PROBLEM_BY_STATUS[match.group(1)] if match else None
    if kind == "BalanceError":
        return "balance"
    if kind == "RequestRejected":
        return "auth" if by_text == "auth" else "rejected"
    return by_text if kind is None else None


def _provider_refusals(results: tuple[ActionResult, ...]) -> AlertCondition:
    problems = [(r, p) for r in results if (p := provider_problem(r)) is not None]
    if problems:
        kinds = sorted({p for _, p in problems})
        first = problems[0][0]
        return AlertCondition(
            True,
            "critical",
            f"provider refused {len(problems)} actions ({', '.join(kinds)}): "
            f"{(first.error or '')[:200]}",
            {"kinds": kinds, "actions": len(problems), "kind": first.kind.value},
        )
    if any(r.kind is ActionKind.SPAWN and r.outcome == "done" for r in results):
        return AlertCondition(False, "critical", "the provider accepted a launch")
    return AlertCondition(None, "critical", "no provider evidence this cycle")


# -- the stateful part ------------------------------------------------------------------
