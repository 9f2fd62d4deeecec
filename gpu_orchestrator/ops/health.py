"""The health report behind `gpu-orchestrator status` and
`scripts/check_system_health.py`: the seed runbook's "Current Situation" and its
decision tree, answered from one snapshot and the same pure policy the loop runs.

Read-only: it observes and decides, and applies nothing. `--set NAME=VALUE` judges
the same snapshot under other settings ("what if"), still changing nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime
from enum import IntEnum
from typing import Any

import structlog

from ..config import Settings
from ..errors import OrchestratorError
from ..models import (
    BreakerState,
    Plan,
    Pod,
    PolicyConfig,
    Reason,
    Snapshot,
    WorkerStatus,
)
from ..policy import decide
from ..policy.reconcile import launched_at

log = structlog.get_logger()

_POD_LIST_TIMEOUT_SEC = 15.0


class Verdict(IntEnum):
    """The exit code of `status`."""

    HEALTHY = 0
    DEGRADED = 1
    BLOCKED = 2  # spawning blocked, or no healthy worker while tasks wait
    UNKNOWN = 3  # the state could not be read


# One hint per failure reason: what it usually means and where to look.
HINTS: dict[Reason, str] = {
    Reason.BOOT_TIMEOUT: "workers never sent a first heartbeat within {spawning_timeout_sec:g} s:"
    " check the image and the start-up logs (gpu-orchestrator logs --worker ID)",
    Reason.BOOT_FAILED: "pods exited before their first heartbeat: the image's entrypoint fails;"
    " check the pod logs",
    Reason.HEARTBEAT_LOST: "workers went silent for {gpu_idle_timeout_sec:g} s: crashes, OOM or"
    " network; if start-up legitimately takes longer, raise GPU_IDLE_TIMEOUT_SEC",
    Reason.CRASHED: "workers reported a crash: read their system_logs lines",
    Reason.STUCK_TASK: "a task ran longer than {task_stuck_timeout_sec:g} s: a hung task, or"
    " TASK_STUCK_TIMEOUT_SEC is too low for real tasks",
    Reason.POD_VANISHED: "pods disappeared at the provider: terminated outside the"
    " orchestrator, or reclaimed",
    Reason.SPAWN_FAILED: "the provider refused launches: check the RUNPOD_* settings, the"
    " account balance and the API key",
}

# Levers shown with their current values (the seed's and ours).
LEVERS = (
    "max_worker_failure_rate",
    "failure_window_minutes",
    "min_workers_for_rate_check",
    "breaker_probe_interval_sec",
    "breaker_evidence_sec",
    "gpu_idle_timeout_sec",
    "spawning_timeout_sec",
    "min_active_gpus",
    "max_active_gpus",
)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 1)


@dataclass(frozen=True)
class HealthReport:
    snapshot: Snapshot
    plan: Plan
    settings: Settings
    verdict: Verdict
    summary: str  # the verdict in one line
    action: str  # what the operator should do
    what_if: dict[str, str]  # settings changed for this report only

    def as_dict(self) -> dict[str, Any]:
        """The `--json` document (schema: docs/health-json.md)."""
        snap, plan, cfg = self.snapshot, self.plan, self.settings.policy()
        assert plan.breaker is not None
        holds = snap.holds_by_worker()
        healthy = [
            {
                "id": w.id,
                "heartbeat_age_sec": _age(snap.now, w.last_heartbeat),
                "tasks_completed": w.tasks_completed,
                "busy": bool(holds.get(w.id)),
            }
            for w in snap.workers
            if _is_healthy(w.status, _age(snap.now, w.last_heartbeat), cfg)
        ]
        statuses: dict[str, int] = {}
        for w in snap.workers:
            statuses[w.status.value] = statuses.get(w.status.value, 0) + 1
        breaker = plan.breaker.as_dict()
        breaker["hints"] = {
            reason.value: HINTS[reason].format(**vars(cfg))
            for reason, _ in plan.breaker.failures_by_reason
            if reason in HINTS
        }
        return {
            "now": snap.now.isoformat(),
            "verdict": self.verdict.name.lower(),
            "exit_code": int(self.verdict),
            "summary": self.summary,
            "recommended_action": self.action,
            "what_if": self.what_if,
            "breaker": breaker,
            "workers": {
                "by_status": statuses,
                "healthy": healthy,
                # rows with no pod (API workers, `external` rows, workstations): never
                # failed for a missing pod, never billed, never terminated
                "without_pod": [w.id for w in snap.workers if w.status is WorkerStatus.EXTERNAL],
            },
            "database": "adopted" if snap.adopted else "native",
            # shadow: decided every cycle, nothing done (`next_cycle.actions`: what it would do)
            "shadow": self.settings.shadow,
            "queue": {
                "queued": snap.queue.queued,
                "in_progress": len(snap.holds),
                "oldest_queued_age_sec": _age(snap.now, snap.queue.oldest_queued_at),
            },
            "next_cycle": {
                "desired_workers": plan.desired_workers,
                "capacity": plan.capacity,
                "unmet_demand": plan.unmet_demand,
                "held_back": [r.value for r in plan.held_back],
                "actions": [
                    {"kind": a.kind.value, "reason": a.reason.value, "worker_id": a.worker_id}
                    for a in plan.actions
                ],
                "offerings_backing_off": {b.offering: _iso(b.until) for b in plan.backoffs},
            },
            "pods": {
                "listed": snap.pods is not None,
                # listed pods not named as ours: never touched, shown so they are seen
                "foreign": list(plan.foreign_pods),
                # on an adopted database: pods the old orchestrator named, now ours
                "legacy": sorted(
                    p.name
                    for p in snap.pods or ()
                    if snap.adopted
                    and launched_at(p.name, cfg.name_prefix) is None
                    and p.name not in plan.foreign_pods
                ),
            },
            "billing_hold_since": _iso(plan.billing_hold_since),
            "controls": {
                "spawning_paused": snap.controls.spawning_paused,
                "kill_switch": snap.controls.kill_switch,
                "breaker_reset_at": _iso(snap.controls.breaker_reset_at),
            },
            "levers": {name.upper(): getattr(self.settings, name) for name in LEVERS},
        }


def _is_healthy(status: WorkerStatus, heartbeat_age: float | None, cfg: PolicyConfig) -> bool:
    # Healthy: active and heard from within the heartbeat timeout.
    return (
        status is WorkerStatus.ACTIVE
        and heartbeat_age is not None
        and heartbeat_age <= cfg.gpu_idle_timeout_sec
    )


def judge(snapshot: Snapshot, settings: Settings, what_if: dict[str, str]) -> HealthReport:
    """The seed's decision tree over the plan the loop would make now."""
    cfg = settings.policy()
    plan = decide(snapshot, cfg)
    breaker = plan.breaker
    assert breaker is not None
    healthy = [
        w
        for w in snapshot.workers
        if _is_healthy(w.status, _age(snapshot.now, w.last_heartbeat), cfg)
    ]
    waiting = snapshot.queue.queued > 0
    held = set(plan.held_back)
    rate = "-" if breaker.rate is None else f"{breaker.rate:.1%}"
    counts = f"{breaker.failed}/{breaker.failed + breaker.proven}"
    dominant = max(breaker.failures_by_reason, key=lambda item: item[1], default=None)
    hint = HINTS.get(dominant[0], "").format(**vars(cfg)) if dominant else ""
    when = _iso(breaker.next_probe_at)

    if snapshot.controls.kill_switch:
        return _report(
            snapshot,
            plan,
            settings,
            what_if,
            Verdict.BLOCKED,
            "kill switch on: nothing is spawned, probes included",
            "when safe: gpu-orchestrator kill-switch off --reason '...'",
        )
    if plan.billing_hold_since is not None:
        return _report(
            snapshot,
            plan,
            settings,
            what_if,
            Verdict.BLOCKED,
            f"billing hold since {_iso(plan.billing_hold_since)}: the provider account "
            "cannot pay (402), no spawn is attempted",
            "add funds to the provider account; a create is retried every "
            f"{cfg.breaker_probe_interval_sec:g} s and the first that succeeds lifts the hold",
        )
    if breaker.state is not BreakerState.CLOSED:
        summary = f"breaker {breaker.state.value}: failure rate {rate} ({counts}), spawning blocked"
        if healthy and breaker.evidence_worker is None:
            action = (
                f"{len(healthy)} healthy worker(s) predate the failures, so they do not prove "
                f"new pods boot. {hint}. The next probe is due at {when}; fix the cause, or "
                "once it is fixed: gpu-orchestrator breaker reset --reason '...'"
            )
        else:
            action = (
                f"investigate before spawning more: {hint}. The next probe is due at {when} and "
                "closes the breaker if it proves itself; after a fix: "
                "gpu-orchestrator breaker reset --reason '...'"
            )
        verdict = Verdict.BLOCKED if waiting or Reason.BREAKER_OPEN in held else Verdict.DEGRADED
        return _report(snapshot, plan, settings, what_if, verdict, summary, action)
    booting = any(w.status is WorkerStatus.SPAWNING for w in snapshot.workers)
    waited = _age(snapshot.now, snapshot.queue.oldest_queued_at) or 0.0
    if waiting and not healthy and (not booting or waited > cfg.spawning_timeout_sec):
        reasons = ", ".join(r.value for r in plan.held_back) or "none"
        return _report(
            snapshot,
            plan,
            settings,
            what_if,
            Verdict.BLOCKED,
            f"tasks have waited {waited:.0f} s with no healthy worker (held back: {reasons})",
            _held_back_action(plan, snapshot),
        )
    if breaker.tripped and breaker.evidence_worker is not None:
        return _report(
            snapshot,
            plan,
            settings,
            what_if,
            Verdict.DEGRADED,
            f"failure rate {rate} ({counts}) is above the threshold, but "
            f"{breaker.evidence_worker}, spawned after the newest failure, proved "
            "that spawning works: spawning continues",
            f"watch the next launches; {hint}",
        )
    problems = []
    if breaker.failed:
        problems.append(f"{breaker.failed} worker failure(s) in the window ({rate})")
    if breaker.probation or breaker.booting_limit is not None:
        problems.append("recovering: launches ramp up gradually")
    if held:
        problems.append("held back: " + ", ".join(r.value for r in plan.held_back))
    if waiting and not healthy:
        problems.append("tasks wait and no worker is healthy yet")
    if problems:
        return _report(
            snapshot,
            plan,
            settings,
            what_if,
            Verdict.DEGRADED,
            "; ".join(problems),
            hint or _held_back_action(plan, snapshot),
        )
    return _report(
        snapshot,
        plan,
        settings,
        what_if,
        Verdict.HEALTHY,
        f"operating normally: {len(healthy)} healthy worker(s), {snapshot.queue.queued} queued",
        "nothing to do",
    )


def _held_back_action(plan: Plan, snapshot: Snapshot) -> str:
    held = set(plan.held_back)
    if not held and plan.unmet_demand == 0 and snapshot.queue.queued:
        return "workers are booting or about to be spawned; check again after the boot deadline"
    if Reason.SPAWNING_PAUSED in held:
        return "spawning is paused: gpu-orchestrator spawning resume --reason '...'"
    if Reason.ALL_OFFERINGS_BACKING_OFF in held:
        first = min((b.until for b in plan.backoffs), default=None)
        return (
            f"every offering is out of capacity; the first reopens at {_iso(first)}: add GPU "
            "types or data centers (RUNPOD_GPU_TYPES, RUNPOD_DATA_CENTER_IDS)"
        )
    if Reason.MAX_ACTIVE_REACHED in held:
        return "the fleet is at MAX_ACTIVE_GPUS: raise it if the queue should drain faster"
    return "launches are ramping up; nothing to do"


def _report(
    snapshot: Snapshot,
    plan: Plan,
    settings: Settings,
    what_if: dict[str, str],
    verdict: Verdict,
    summary: str,
    action: str,
) -> HealthReport:
    return HealthReport(snapshot, plan, settings, verdict, summary, action, what_if)


def render_text(report: HealthReport) -> str:
    """The human report: the seed's sections, answered."""
    doc = report.as_dict()
    b, q = doc["breaker"], doc["queue"]
    lines = [f"== gpu-orchestrator status at {doc['now']}"]
    if report.what_if:
        changed = ", ".join(f"{k}={v}" for k, v in report.what_if.items())
        lines.append(f"WHAT IF {changed} (nothing was changed)")
    lines += [
        f"verdict: {doc['verdict'].upper()} (exit {doc['exit_code']}): {doc['summary']}",
        f"recommended action: {doc['recommended_action']}",
        "",
        f"breaker: {b['state']}; failure rate "
        f"{'-' if b['rate'] is None else format(b['rate'], '.1%')} "
        f"({b['failed']} failed / {b['failed'] + b['proven']} in the window); "
        f"next probe {b['next_probe_at'] or '-'}",
    ]
    for reason, n in b["failures_by_reason"].items():
        lines.append(f"  {n} x {reason}: {b['hints'].get(reason, '')}")
    if b["failures_age_out_at"]:
        lines.append(f"  failures leave the window at: {', '.join(b['failures_age_out_at'])}")
    if b["rate_ok_at"]:
        lines.append(f"  rate acceptable by {b['rate_ok_at']} if nothing new happens")
    healthy = doc["workers"]["healthy"]
    if doc["shadow"]:
        lines.append("SHADOW: decides, does nothing; the next cycle's actions are what it would do")
    if doc["database"] == "adopted":
        lines.append("database: an adopted Headless-Wan2GP / Reigh database")
    lines.append(f"healthy workers: {len(healthy)}")
    for w in healthy:
        lines.append(
            f"  {w['id']}: heartbeat {w['heartbeat_age_sec']} s ago, "
            f"{w['tasks_completed']} task(s) completed{', busy' if w['busy'] else ''}"
        )
    lines.append(
        f"queue: {q['queued']} queued, {q['in_progress']} in progress, oldest queued "
        f"{q['oldest_queued_age_sec'] if q['oldest_queued_age_sec'] is not None else '-'} s ago"
    )
    if doc["workers"]["without_pod"]:
        lines.append(
            "workers without a pod (not ours to manage, never terminated): "
            + ", ".join(doc["workers"]["without_pod"])
        )
    nxt = doc["next_cycle"]
    lines.append(
        f"next cycle: {len(nxt['actions'])} action(s), desired {nxt['desired_workers']}, "
        f"held back: {', '.join(nxt['held_back']) or '-'}"
    )
    if doc["billing_hold_since"]:
        lines.append(
            f"billing hold since {doc['billing_hold_since']}: the provider account cannot pay"
            " (402); every spawn is held until a retried create succeeds"
        )
    if b["failed_fingerprints"]:
        lines.append(
            f"failed launch fingerprints: {', '.join(b['failed_fingerprints'])}; "
            f"launches now: {b['fingerprint']}"
        )
    pods = doc["pods"]
    if not pods["listed"]:
        lines.append("pods: not listed (the provider did not answer)")
    elif pods["foreign"]:
        lines.append(
            f"foreign pods (not named as ours, never touched): {len(pods['foreign'])}: "
            + ", ".join(pods["foreign"])
        )
    if pods["legacy"]:
        lines.append(
            f"pods of the old orchestrator (adopted, managed as ours): {len(pods['legacy'])}: "
            + ", ".join(pods["legacy"])
        )
    lines.append("levers: " + ", ".join(f"{k}={v}" for k, v in doc["levers"].items()))
    return "\n".join(lines)


async def read_report(
    settings: Settings, what_if: dict[str, str], events: list[dict[str, Any]] | None = None
) -> HealthReport:
    """Observes once (exact queue depth) and judges; raises `StoreError` when the
    state cannot be read. `settings` already carry the what-if overrides.
    `events`: filled with the orchestrator events of the last two failure windows
    (the status page's timeline), when given."""
    from ..runtime import connect_store

    store = await connect_store(settings)
    try:
        snapshot = await store.observe(settings.policy().horizon_sec)
        if events is not None:
            events += await store.recent_events(2 * settings.policy().failure_window_sec)
    finally:
        await store.close()
    return judge(replace(snapshot, pods=await _list_pods(settings)), settings, what_if)


async def _list_pods(settings: Settings) -> tuple[Pod, ...] | None:
    """The provider's pods, or None when they cannot be listed in time (the report
    says so; the rest of it stands)."""
    from ..runtime import build_provider

    provider = build_provider(settings)
    try:
        async with asyncio.timeout(_POD_LIST_TIMEOUT_SEC):
            return tuple(await provider.list_pods())
    except (OrchestratorError, TimeoutError) as exc:
        log.warning("status_pod_list_failed", error=str(exc))
        return None
    finally:
        await provider.aclose()
