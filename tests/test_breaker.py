"""The failure-rate breaker as table tests: the seed runbook's scenario first, then
each rule of DESIGN §5 (seed: 30-minute window, threshold 0.8, minimum 5)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from policy_builders import ACTIVE, SEED_BREAKER, SPAWNING, T0, ago, hold, snap, worker

from gpu_orchestrator.models import (
    ActionKind,
    BreakerRecord,
    BreakerState,
    Controls,
    Launch,
    Reason,
)
from gpu_orchestrator.policy import decide
from gpu_orchestrator.policy.breaker import assess_breaker

SEED = replace(SEED_BREAKER, offerings=("A40@EU", "L40S@EU"))


def failed(wid: str, age: float, reason: Reason = Reason.BOOT_TIMEOUT, **kw: object) -> Launch:
    """A launch that failed `age` seconds ago (spawned 10 minutes before that)."""
    fields: dict[str, object] = {
        "worker_id": wid,
        "created_at": ago(age + 600),
        "offering": "A40@EU",
        "probe": False,
        "pod_created": True,
        "live": False,
        "ready_at": None,
        "failed_at": ago(age),
        "failure": reason,
        "task_caused": False,
    }
    fields.update(kw)
    return Launch(**fields)  # type: ignore[arg-type]


def healthy(wid: str, created_age: float, ready_age: float, tasks: int = 0, **kw: object) -> Launch:
    fields: dict[str, object] = {
        "worker_id": wid,
        "created_at": ago(created_age),
        "offering": "A40@EU",
        "probe": False,
        "pod_created": True,
        "live": True,
        "ready_at": ago(ready_age),
        "failed_at": None,
        "failure": None,
        "task_caused": False,
        "tasks_completed": tasks,
    }
    fields.update(kw)
    return Launch(**fields)  # type: ignore[arg-type]


def capacity_refusal(wid: str, age: float, offering: str = "A40@EU") -> Launch:
    return failed(
        wid, age, Reason.CAPACITY, pod_created=False, offering=offering, created_at=ago(age)
    )


SIX_FAILURES = tuple(failed(f"f{i}", age=600 + 120 * i) for i in range(6))  # 10..20 min ago


def seed_snapshot(*launches: Launch, busy_worker: str | None = "ok", **kw: object):
    """One task queued; the one live worker (if any) is busy, so no idle capacity."""
    workers = []
    holds = []
    if busy_worker is not None:
        live = next(launch for launch in launches if launch.worker_id == busy_worker)
        workers.append(worker(busy_worker, ACTIVE, age=(T0 - live.created_at).total_seconds()))
        holds.append(hold("t-running", busy_worker, age=30))
    base = snap(*workers, holds=holds, queued=1)
    return replace(base, launches=tuple(launches), **kw)


def spawns(plan):
    return [a for a in plan.actions if a.kind is ActionKind.SPAWN]


def test_seed_scenario_spawns_on_this_cycle():
    """6 failed + 1 healthy worker spawned after the newest failure that has
    completed tasks: 85.7 % > 80 %, yet the healthy worker proves spawning works."""
    ok = healthy("ok", created_age=300, ready_age=240, tasks=3)
    plan = decide(seed_snapshot(*SIX_FAILURES, ok), SEED)

    assert plan.breaker is not None
    assert plan.breaker.rate == pytest.approx(6 / 7)
    assert plan.breaker.tripped
    assert plan.breaker.evidence_worker == "ok"
    assert plan.breaker.state is BreakerState.CLOSED
    assert plan.breaker.transition is None
    assert len(spawns(plan)) == 1


def test_seed_scenario_without_the_healthy_worker_opens_and_blocks():
    plan = decide(seed_snapshot(*SIX_FAILURES, busy_worker=None), SEED)

    assert plan.breaker is not None
    assert plan.breaker.state is BreakerState.OPEN
    assert plan.breaker.transition is not None
    assert plan.breaker.transition.reason is Reason.BREAKER_TRIPPED
    assert spawns(plan) == []
    assert Reason.BREAKER_OPEN in plan.held_back
    assert plan.breaker.next_probe_at == T0 + timedelta(seconds=300)


def test_healthy_worker_that_predates_the_failures_is_not_evidence():
    old = healthy("ok", created_age=3 * 3600, ready_age=3 * 3600 - 60, tasks=50)
    plan = decide(seed_snapshot(*SIX_FAILURES, old), SEED)

    assert plan.breaker is not None
    assert plan.breaker.evidence_worker is None
    assert plan.breaker.state is BreakerState.OPEN
    assert spawns(plan) == []


def opened(age: float, interval: float = 300.0) -> BreakerRecord:
    return BreakerRecord(BreakerState.OPEN, ago(age), Reason.BREAKER_TRIPPED, interval)


def test_open_breaker_admits_one_probe_after_the_interval_while_tasks_wait():
    s = seed_snapshot(*SIX_FAILURES, busy_worker=None, breaker=opened(age=301))
    s = replace(s, queue=replace(s.queue, queued=5))
    plan = decide(s, SEED)

    assert plan.breaker is not None
    assert plan.breaker.state is BreakerState.HALF_OPEN
    probe = spawns(plan)
    assert len(probe) == 1 and probe[0].probe and probe[0].reason is Reason.BREAKER_PROBE


def test_open_breaker_before_the_interval_spawns_nothing():
    plan = decide(seed_snapshot(*SIX_FAILURES, busy_worker=None, breaker=opened(age=120)), SEED)

    assert plan.breaker is not None
    assert plan.breaker.state is BreakerState.OPEN
    assert spawns(plan) == []
    assert plan.breaker.next_probe_at == ago(120) + timedelta(seconds=300)


def test_no_probe_when_nothing_is_queued_and_the_fleet_is_at_min_active():
    s = replace(snap(worker("idle", ACTIVE)), launches=SIX_FAILURES, breaker=opened(age=900))
    plan = decide(s, replace(SEED, min_active_gpus=1))

    assert spawns(plan) == []


def test_open_breaker_blocks_even_below_min_active():
    s = replace(snap(), launches=SIX_FAILURES, breaker=opened(age=60))
    plan = decide(s, replace(SEED, min_active_gpus=2))

    assert spawns(plan) == []
    assert Reason.BREAKER_OPEN in plan.held_back


def test_below_min_active_counts_as_unmet_demand_for_a_probe():
    s = replace(snap(), launches=SIX_FAILURES, breaker=opened(age=301))
    plan = decide(s, replace(SEED, min_active_gpus=2))

    assert [a.probe for a in spawns(plan)] == [True]


def test_probe_in_flight_blocks_further_spawns():
    probe = healthy("p", created_age=60, ready_age=None, live=True, probe=True, ready_at=None)
    s = seed_snapshot(*SIX_FAILURES, probe, busy_worker=None, breaker=opened(age=400))
    s = replace(s, workers=(worker("p", SPAWNING, age=60),), queue=replace(s.queue, queued=5))
    plan = decide(s, SEED)

    assert plan.breaker is not None
    assert plan.breaker.state is BreakerState.HALF_OPEN
    assert plan.breaker.probe_worker == "p"
    assert spawns(plan) == []
    assert plan.held_back == (Reason.PROBE_IN_FLIGHT,)


def test_proven_probe_closes_and_forgives_older_failures():
    probe = healthy("p", created_age=200, ready_age=150, tasks=1, probe=True)
    s = seed_snapshot(*SIX_FAILURES, probe, busy_worker="p", breaker=opened(age=500))
    view = assess_breaker(s, SEED)

    assert view.state is BreakerState.CLOSED
    assert view.transition is not None and view.transition.reason is Reason.PROBE_PROVEN

    after = replace(
        s,
        breaker=BreakerRecord(BreakerState.CLOSED, T0, Reason.PROBE_PROVEN, 300.0),
        now=T0 + timedelta(seconds=1),
    )
    assert assess_breaker(after, SEED).failed == 0  # forgiven


def test_failed_probe_reopens_with_doubled_interval():
    probe = failed("p", age=10, probe=True, created_at=ago(400))
    s = seed_snapshot(*SIX_FAILURES, probe, busy_worker=None, breaker=opened(age=700))
    view = assess_breaker(s, SEED)

    assert view.state is BreakerState.OPEN
    assert view.transition is not None
    assert view.transition.reason is Reason.PROBE_FAILED
    assert view.probe_interval_sec == 600.0
    assert view.next_probe_at == T0 + timedelta(seconds=600)


def test_probe_interval_doubling_stops_at_the_maximum():
    probe = failed("p", age=10, probe=True, created_at=ago(400))
    s = seed_snapshot(*SIX_FAILURES, probe, busy_worker=None, breaker=opened(700, interval=3000))
    assert assess_breaker(s, SEED).probe_interval_sec == 3600.0


def test_evidence_closes_an_open_breaker_at_once():
    ok = healthy("ok", created_age=300, ready_age=240, tasks=1)
    view = assess_breaker(seed_snapshot(*SIX_FAILURES, ok, breaker=opened(age=100)), SEED)

    assert view.state is BreakerState.CLOSED
    assert view.transition is not None and view.transition.reason is Reason.EVIDENCE


def test_healthy_for_evidence_seconds_without_a_task_is_evidence():
    ok = healthy("ok", created_age=400, ready_age=300, tasks=0)
    assert assess_breaker(seed_snapshot(*SIX_FAILURES, ok), SEED).evidence_worker == "ok"
    young = healthy("ok", created_age=400, ready_age=299, tasks=0)
    assert assess_breaker(seed_snapshot(*SIX_FAILURES, young), SEED).evidence_worker is None


def test_ten_scale_downs_and_one_failure_stay_closed():
    scaled_down = tuple(
        healthy(f"s{i}", created_age=1500, ready_age=1400, live=False) for i in range(10)
    )
    plan = decide(replace(snap(queued=3), launches=(*scaled_down, failed("f", 60))), SEED)

    assert plan.breaker is not None
    assert (plan.breaker.failed, plan.breaker.proven) == (1, 10)
    assert plan.breaker.state is BreakerState.CLOSED
    assert len(spawns(plan)) == 3


def test_twenty_capacity_errors_leave_the_rate_alone_and_back_the_offering_off():
    refusals = tuple(capacity_refusal(f"c{i}", age=20 * (20 - i)) for i in range(20))
    base = (failed("f", 60), healthy("ok", 900, 800))
    without = decide(replace(snap(queued=2), launches=base), SEED)
    with_errors = decide(replace(snap(queued=2), launches=base + refusals), SEED)

    assert without.breaker is not None and with_errors.breaker is not None
    assert with_errors.breaker.rate == without.breaker.rate == 0.5
    assert [b.offering for b in with_errors.backoffs] == ["A40@EU"]
    assert with_errors.backoffs[0].capacity_errors == 20
    assert {a.offering for a in spawns(with_errors)} == {"L40S@EU"}


def test_every_offering_backing_off_holds_spawns_and_says_when_one_reopens():
    refusals = (capacity_refusal("c1", 10, "A40@EU"), capacity_refusal("c2", 5, "L40S@EU"))
    plan = decide(replace(snap(queued=2), launches=refusals), SEED)

    assert spawns(plan) == []
    assert plan.held_back == (Reason.ALL_OFFERINGS_BACKING_OFF,)
    assert min(b.until for b in plan.backoffs) == ago(10) + timedelta(seconds=60)


def test_capacity_backoff_doubles_per_refusal_and_resets_on_success():
    refusals = tuple(capacity_refusal(f"c{i}", age=100 - i) for i in range(3))
    plan = decide(replace(snap(queued=1), launches=refusals), SEED)
    assert plan.backoffs[0].until == ago(98) + timedelta(seconds=240)  # 60 * 2**2

    success = healthy("ok", created_age=50, ready_age=40)
    plan = decide(replace(snap(queued=1), launches=(*refusals, success)), SEED)
    assert plan.backoffs == ()


def test_exactly_the_threshold_stays_closed():
    launches = (*SIX_FAILURES[:4], healthy("ok", created_age=7200, ready_age=7000))
    view = assess_breaker(replace(snap(), launches=launches), SEED)

    assert view.rate == pytest.approx(0.8)
    assert not view.tripped
    assert view.state is BreakerState.CLOSED


def test_fewer_outcomes_than_the_minimum_never_trip():
    view = assess_breaker(replace(snap(), launches=SIX_FAILURES[:4]), SEED)
    assert view.rate == 1.0 and not view.tripped and view.state is BreakerState.CLOSED


def test_task_caused_deaths_do_not_count():
    poisoned = tuple(
        failed(f"p{i}", age=100, reason=Reason.HEARTBEAT_LOST, task_caused=True) for i in range(6)
    )
    view = assess_breaker(replace(snap(queued=1), launches=poisoned), SEED)
    assert view.failed == 0 and view.state is BreakerState.CLOSED


def test_failures_are_windowed_on_when_they_happened_not_on_creation():
    # Spawned 40 minutes ago, failed (boot timeout) 25 minutes ago: in the window.
    late = tuple(failed(f"b{i}", age=1500, created_at=ago(2400)) for i in range(5))
    assert assess_breaker(replace(snap(), launches=late), SEED).failed == 5
    gone = tuple(failed(f"b{i}", age=1801) for i in range(5))
    assert assess_breaker(replace(snap(), launches=gone), SEED).failed == 0


def test_forecast_lists_when_failures_age_out_and_when_the_rate_is_acceptable():
    view = assess_breaker(seed_snapshot(*SIX_FAILURES, busy_worker=None, breaker=opened(10)), SEED)

    ages = [600 + 120 * i for i in range(6)]
    assert view.aging_out == tuple(sorted(ago(a) + timedelta(seconds=1800) for a in ages))
    # An open breaker closes by ageing once no counted failure is left.
    assert view.rate_ok_at == ago(600) + timedelta(seconds=1800)


def test_failures_ageing_out_close_an_open_breaker_into_probation():
    s = replace(snap(queued=4), launches=(), breaker=opened(age=2000))
    plan = decide(s, SEED)

    assert plan.breaker is not None
    assert plan.breaker.transition is not None
    assert plan.breaker.transition.reason is Reason.AGED_OUT
    assert plan.breaker.probation
    assert len(spawns(plan)) == 1  # one booting worker at a time
    assert Reason.RECOVERY_RAMP in plan.held_back


def closed(age: float, reason: Reason = Reason.AGED_OUT) -> BreakerRecord:
    return BreakerRecord(BreakerState.CLOSED, ago(age), reason, 300.0)


def test_failure_during_probation_reopens_at_once_without_a_minimum_sample():
    new_failure = failed("n", age=5, created_at=ago(50))
    view = assess_breaker(
        replace(snap(queued=3), launches=(new_failure,), breaker=closed(60)), SEED
    )

    assert view.state is BreakerState.OPEN
    assert view.transition is not None and view.transition.reason is Reason.PROBATION_FAILED
    assert view.probe_interval_sec == 600.0


def test_probation_allows_one_booting_worker():
    booting = healthy("b", created_age=30, ready_age=None, ready_at=None)
    s = replace(
        snap(worker("b", SPAWNING, age=30), queued=6), launches=(booting,), breaker=closed(60)
    )
    plan = decide(s, SEED)
    assert spawns(plan) == [] and plan.held_back == (Reason.RECOVERY_RAMP,)


def test_after_probation_the_ramp_doubles_with_each_ready_worker():
    proven = tuple(healthy(f"r{i}", created_age=50, ready_age=40, tasks=1) for i in range(2))
    workers = [worker(f"r{i}", ACTIVE, age=50) for i in range(2)]
    holds = [hold(f"t{i}", f"r{i}") for i in range(2)]
    s = replace(snap(*workers, holds=holds, queued=20), launches=proven, breaker=closed(60))
    plan = decide(s, SEED)

    assert plan.breaker is not None and not plan.breaker.probation
    assert plan.breaker.booting_limit == 4
    assert len(spawns(plan)) == 4


def test_operator_reset_closes_and_forgives():
    s = seed_snapshot(
        *SIX_FAILURES,
        busy_worker=None,
        breaker=opened(age=100),
        controls=Controls(breaker_reset_at=ago(1)),
    )
    view = assess_breaker(s, SEED)

    assert view.state is BreakerState.CLOSED
    assert view.transition is not None and view.transition.reason is Reason.OPERATOR_RESET
    assert view.failed == 0


def test_pause_blocks_ordinary_spawns_but_not_the_probe():
    paused = Controls(spawning_paused=True)
    plan = decide(replace(snap(queued=3), controls=paused), SEED)
    assert spawns(plan) == [] and plan.held_back == (Reason.SPAWNING_PAUSED,)

    s = seed_snapshot(*SIX_FAILURES, busy_worker=None, breaker=opened(400), controls=paused)
    assert [a.probe for a in spawns(decide(s, SEED))] == [True]


def test_kill_switch_stops_probes_too():
    s = seed_snapshot(
        *SIX_FAILURES, busy_worker=None, breaker=opened(400), controls=Controls(kill_switch=True)
    )
    plan = decide(s, SEED)
    assert spawns(plan) == [] and plan.held_back == (Reason.KILL_SWITCH,)
