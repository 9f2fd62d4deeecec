"""Issue 9's pure rules as tables: probation ends on proof (not on the calendar),
a deployed fix (a new launch fingerprint) is probed at once, a billing hold stops
every spawn, small fleets trip on a streak, and operator spawn requests obey the
kill switch and the ceiling."""

from __future__ import annotations

from dataclasses import replace

from policy_builders import ACTIVE, T0, ago, snap, worker
from test_breaker import (
    SEED,
    SIX_FAILURES,
    closed,
    failed,
    healthy,
    opened,
    seed_snapshot,
    spawns,
)

from gpu_orchestrator.models import BreakerState, Controls, Reason, ServedRequests
from gpu_orchestrator.policy import decide

# -- 2. probation ends on proof ---------------------------------------------------------------


def test_probation_outlasts_the_window_until_a_launch_proves_itself() -> None:
    """Closed by ageing three hours ago, nothing proved since (demand came and went):
    still one launch at a time, and a failure reopens at once."""
    quiet = replace(snap(queued=20), breaker=closed(3 * 3600))
    plan = decide(quiet, SEED)
    assert plan.breaker is not None and plan.breaker.probation
    assert len(spawns(plan)) == 1 and plan.held_back == (Reason.RECOVERY_RAMP,)

    failure = failed("n", age=5, created_at=ago(600))
    reopened = decide(replace(quiet, launches=(failure,)), SEED)
    assert reopened.breaker is not None and reopened.breaker.transition is not None
    assert reopened.breaker.transition.reason is Reason.PROBATION_FAILED


def test_a_proof_ends_probation_and_is_recorded() -> None:
    proof = healthy("p", created_age=600, ready_age=500, tasks=1)
    s = replace(
        snap(worker("p", ACTIVE, age=600), queued=20), launches=(proof,), breaker=closed(3 * 3600)
    )
    plan = decide(s, SEED)
    assert plan.breaker is not None and not plan.breaker.probation
    move = plan.breaker.transition
    assert move is not None and (move.to, move.reason) == (BreakerState.CLOSED, Reason.EVIDENCE)
    assert plan.breaker.booting_limit == 2


# -- a deployed fix is probed at once -------------------------------------------------------


def test_a_new_launch_fingerprint_is_probed_at_once_while_the_breaker_is_open() -> None:
    """The seed scenario with the healthy worker older than the failures: the
    breaker opened a minute ago. The same image waits for the probe interval; a
    newly configured image is probed in this very cycle."""
    old_image = tuple(f._replace(fingerprint="old") for f in SIX_FAILURES)
    elder = healthy("ok", created_age=3 * 3600, ready_age=3 * 3600 - 60, tasks=50)
    s = seed_snapshot(*old_image, elder, breaker=opened(60))

    same = decide(s, replace(SEED, fingerprint="old"))
    assert spawns(same) == []
    assert same.breaker is not None and same.breaker.next_probe_at == ago(60 - 300)

    fixed = decide(s, replace(SEED, fingerprint="new"))
    assert [a.probe for a in spawns(fixed)] == [True]
    assert fixed.breaker is not None
    assert fixed.breaker.failed_fingerprints == ("old",) and fixed.breaker.fingerprint == "new"


def test_a_fingerprint_whose_probe_failed_waits_like_any_other() -> None:
    old_image = tuple(f._replace(fingerprint="old") for f in SIX_FAILURES)
    probe = failed("probe", age=10, created_at=ago(50), probe=True, fingerprint="new")
    s = seed_snapshot(*old_image, probe, busy_worker=None, breaker=opened(60))
    plan = decide(s, replace(SEED, fingerprint="new"))
    assert spawns(plan) == []
    assert plan.breaker is not None and plan.breaker.transition is not None
    assert plan.breaker.transition.reason is Reason.PROBE_FAILED


# -- 5. a billing hold stops every spawn --------------------------------------------------------


def _refused_402(wid: str, age: float):
    return failed(wid, age, Reason.BILLING_HOLD, pod_created=False, created_at=ago(age))


def test_a_402_holds_every_spawn_until_its_retry_is_due_and_counts_nothing() -> None:
    held = decide(replace(snap(queued=20), launches=(_refused_402("x", 30),)), SEED)
    assert spawns(held) == [] and held.held_back == (Reason.BILLING_HOLD,)
    assert held.billing_hold_since == ago(30)
    assert held.breaker is not None and held.breaker.failed == 0

    due = decide(replace(snap(queued=20), launches=(_refused_402("x", 301),)), SEED)
    assert len(spawns(due)) == 1 and due.held_back == (Reason.BILLING_HOLD,)


def test_the_first_create_that_succeeds_lifts_the_hold() -> None:
    paid = healthy("y", created_age=20, ready_age=None, ready_at=None)
    s = replace(snap(queued=20), launches=(_refused_402("x", 400), paid))
    plan = decide(s, replace(SEED, max_active_gpus=4))
    assert plan.billing_hold_since is None and len(spawns(plan)) == 4


# -- small fleets trip on a streak ----------------------------------------------------------------


def test_a_one_gpu_fleet_trips_when_its_last_launches_all_failed() -> None:
    """Five boot timeouts 10 minutes apart: never five within one window, yet the
    platform plainly does not work."""
    streak = tuple(failed(f"f{i}", age=60 + 660 * i) for i in range(5))
    plan = decide(replace(snap(queued=1), launches=streak), replace(SEED, max_active_gpus=1))
    assert plan.breaker is not None and plan.breaker.state is BreakerState.OPEN
    assert spawns(plan) == []


def test_a_streak_broken_by_a_ready_worker_does_not_trip() -> None:
    streak = [failed(f"f{i}", age=60 + 660 * i) for i in range(5)]
    streak[2] = healthy("ok", created_age=1400, ready_age=1300, live=False)
    plan = decide(replace(snap(queued=1), launches=tuple(streak)), SEED)
    assert plan.breaker is not None and plan.breaker.state is BreakerState.CLOSED


# -- 4. operator spawn requests go through the leader's rules -------------------------------


def _requested(count: int, **controls: object) -> Controls:
    return Controls(requested_spawns=count, spawn_request_id=7, **controls)  # type: ignore[arg-type]


def test_a_spawn_request_is_served_within_max_active_gpus() -> None:
    plan = decide(
        replace(snap(worker("a", ACTIVE)), controls=_requested(9)), replace(SEED, max_active_gpus=4)
    )
    manual = [a for a in spawns(plan) if a.reason is Reason.MANUAL]
    assert len(manual) == 3  # MAX_ACTIVE_GPUS 4, one pod already
    assert plan.served_requests == ServedRequests(7, 9, 3, (Reason.MAX_ACTIVE_REACHED,))


def test_a_spawn_request_with_the_kill_switch_on_launches_nothing() -> None:
    plan = decide(replace(snap(), controls=_requested(2, kill_switch=True)), SEED)
    assert spawns(plan) == []
    assert plan.served_requests == ServedRequests(7, 2, 0, (Reason.KILL_SWITCH,))


def test_no_request_no_record() -> None:
    assert decide(snap(now=T0), SEED).served_requests is None


def test_a_spawn_request_while_every_offering_backs_off_is_refused_not_a_crash() -> None:
    refusals = tuple(
        failed(f"c{i}", age=5, reason=Reason.CAPACITY, pod_created=False, offering=o)
        for i, o in enumerate(SEED.offerings)
    )
    s = replace(snap(), launches=refusals, controls=_requested(2))
    plan = decide(s, SEED)
    assert spawns(plan) == []
    assert plan.served_requests == ServedRequests(7, 2, 0, (Reason.ALL_OFFERINGS_BACKING_OFF,))
