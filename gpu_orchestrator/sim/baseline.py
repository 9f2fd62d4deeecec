"""The breaker of the system we replace, simulated to compare against (it lives
here, never in the product). Each rule cites DESIGN §1 ("Known faults of the
system we replace") or the seed runbook (`seeds/000_89510cbd73cfbf8d.txt`).

Everything that is not the breaker (scaling, health, reconciliation) is the real
policy run with the old boot deadline, so the comparison isolates the breaker and
its accounting.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from ..models import Action, ActionKind, BreakerState, Plan, PolicyConfig, Reason, Snapshot
from ..policy import decide

# Switches our breaker off inside `decide`: the old rule below replaces it.
_NEVER = 10**9


def _old_rules(cfg: PolicyConfig) -> PolicyConfig:
    return replace(
        cfg,
        # One timeout for boots and heartbeats: the seed's "Prevention 1: increase
        # heartbeat timeout if workers legitimately need >5 minutes to initialize"
        # (GPU_IDLE_TIMEOUT_SEC=300 ended slow boots too).
        spawning_timeout_sec=cfg.gpu_idle_timeout_sec,
        # No probes, no evidence, no fingerprints: the seed's only ways out are to
        # wait for failures to age out or to edit thresholds ("Option 1", "Option 2").
        min_workers_for_rate_check=_NEVER,
        # "No capacity" was a worker failure, not a backoff (DESIGN §1).
        capacity_backoff_sec=0.0,
        capacity_backoff_max_sec=0.0,
    )


def old_failure_rate(
    snapshot: Snapshot, cfg: PolicyConfig, failing: frozenset[str]
) -> tuple[int, int]:
    """(failed, total) over workers *created* in the window (DESIGN §1 "it windowed
    on `created_at`"; seed "6/7 workers in last 30 minutes"). Every ended worker —
    `error` or `terminated` — is a failure, normal scale-downs and "no capacity"
    refusals included (DESIGN §1 "it counted normal scale-downs and cloud 'no
    capacity' errors as worker failures"; seed "6 terminated/failed workers").
    `failing`: workers this cycle fails, counted at once (the benefit of the doubt:
    the old breaker then reacts as early as ours)."""
    start = snapshot.now - timedelta(seconds=cfg.failure_window_sec)
    created = [launch for launch in snapshot.launches if launch.created_at > start]
    failed = sum(1 for la in created if not la.live or la.worker_id in failing)
    return failed, len(created)


def decide_baseline(snapshot: Snapshot, cfg: PolicyConfig) -> Plan:
    plan = decide(replace(snapshot, breaker=None), _old_rules(cfg))
    failing = frozenset(
        a.worker_id for a in plan.actions if a.kind is ActionKind.FAIL and a.worker_id
    )
    failed, total = old_failure_rate(snapshot, cfg, failing)
    # Blocks when the sample reaches MIN_WORKERS_FOR_RATE_CHECK and the rate is above
    # MAX_WORKER_FAILURE_RATE (seed "Environment Variables"), and it blocks every
    # spawn until the failures age out, even with no worker at all (DESIGN §1 "it
    # blocked spawning for the whole window even at zero workers"; seed "New workers
    # cannot spawn until rate drops below 80%").
    blocked = (
        total >= cfg.min_workers_for_rate_check and failed / total > cfg.max_worker_failure_rate
    )
    assert plan.breaker is not None
    view = replace(
        plan.breaker,
        state=BreakerState.OPEN if blocked else BreakerState.CLOSED,
        failed=failed,
        proven=total - failed,
        rate=failed / total if total else None,
        tripped=blocked,
    )
    if not blocked:
        return replace(plan, breaker=view)
    kept: tuple[Action, ...] = tuple(a for a in plan.actions if a.kind is not ActionKind.SPAWN)
    held = len(plan.actions) - len(kept)
    return replace(
        plan,
        actions=kept,
        unmet_demand=plan.unmet_demand + held,
        held_back=(Reason.BREAKER_OPEN,) if plan.unmet_demand + held else (),
        breaker=view,
    )
