"""Properties of the breaker over generated histories, and its spend under a
permanent outage replayed with the simulator."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from policy_builders import SEED_BREAKER, T0, snap

from gpu_orchestrator.models import FAILURE_REASONS, BreakerState, Launch, Reason
from gpu_orchestrator.policy import decide
from gpu_orchestrator.policy.breaker import assess_breaker, counted_failure
from gpu_orchestrator.sim.fleet import SimFleet

CFG = replace(SEED_BREAKER, offerings=("A", "B"))

REASONS = sorted(FAILURE_REASONS | {Reason.CAPACITY, Reason.MANUAL, Reason.ORPHAN}, key=str)


@st.composite
def launches(draw: st.DrawFn, count: int = 30) -> tuple[Launch, ...]:
    out = []
    for i in range(draw(st.integers(0, count))):
        created = T0 - timedelta(seconds=draw(st.floats(0, 7200)))
        ready = draw(st.one_of(st.none(), st.floats(0, 600)))
        ready_at = None if ready is None else min(T0, created + timedelta(seconds=ready))
        ended = draw(st.booleans())
        failure = draw(st.sampled_from(REASONS)) if ended else None
        failed_at = (
            min(T0, created + timedelta(seconds=draw(st.floats(0, 1200)))) if ended else None
        )
        out.append(
            Launch(
                worker_id=f"w{i:03d}",
                created_at=created,
                offering=draw(st.sampled_from(["A", "B"])),
                probe=draw(st.booleans()),
                pod_created=failure is not Reason.CAPACITY,
                live=not ended and draw(st.booleans()),
                ready_at=None if failure is Reason.CAPACITY else ready_at,
                failed_at=failed_at,
                failure=failure,
                task_caused=draw(st.booleans()) if ended else False,
                tasks_completed=draw(st.integers(0, 3)),
            )
        )
    return tuple(out)


def capacity_refusals(n: int) -> tuple[Launch, ...]:
    return tuple(
        Launch(
            f"cap{i}",
            T0 - timedelta(seconds=10 * i),
            "A",
            False,
            False,
            False,
            None,
            T0 - timedelta(seconds=10 * i),
            Reason.CAPACITY,
            False,
        )
        for i in range(n)
    )


@settings(max_examples=200, deadline=None)
@given(history=launches(), refusals=st.integers(1, 40))
def test_capacity_errors_never_change_the_rate(history, refusals):
    before = assess_breaker(replace(snap(queued=3), launches=history), CFG)
    after = assess_breaker(
        replace(snap(queued=3), launches=history + capacity_refusals(refusals)), CFG
    )
    assert (after.failed, after.proven, after.rate) == (before.failed, before.proven, before.rate)
    assert after.state is before.state


@settings(max_examples=200, deadline=None)
@given(history=launches(count=12), queued=st.integers(0, 50))
def test_a_closed_breaker_never_blocks_on_fewer_outcomes_than_the_minimum(history, queued):
    """Fewer than MIN_WORKERS_FOR_RATE_CHECK outcomes in the window, and fewer than that
    many failures in a row among the launches it knows (the small-fleet streak rule):
    the breaker stays closed."""
    view = assess_breaker(replace(snap(queued=queued), launches=history), CFG)
    failures = sum(1 for launch in history if counted_failure(launch))
    if (
        view.failed + view.proven < CFG.min_workers_for_rate_check
        and failures < CFG.min_workers_for_rate_check
    ):
        assert view.state is BreakerState.CLOSED
        plan = decide(replace(snap(queued=queued), launches=history), CFG)
        assert Reason.BREAKER_OPEN not in plan.held_back


@settings(max_examples=100, deadline=None)
@given(history=launches(), queued=st.integers(0, 100))
def test_decide_is_deterministic_with_history(history, queued):
    s = replace(snap(queued=queued), launches=history)
    assert decide(s, CFG) == decide(replace(s, launches=tuple(history)), CFG)


# Queued tasks at a time since the start: always a deep queue, always one task, or
# a burst of demand for 20 minutes every 3 hours (quiet spells longer than a window).
DEMAND = {
    "deep": lambda _elapsed: 100,
    "one": lambda _elapsed: 1,
    "comes_and_goes": lambda elapsed: 100 if elapsed % (3 * 3600) < 20 * 60 else 0,
}


@settings(max_examples=25, deadline=None)
@given(
    interval=st.sampled_from([60.0, 300.0, 900.0]),
    boot_timeout=st.sampled_from([300.0, 600.0]),
    max_gpus=st.integers(2, 10),
    poll=st.sampled_from([15.0, 30.0]),
    demand=st.sampled_from(sorted(DEMAND)),
)
def test_permanent_outage_launches_stay_under_the_stated_bound(
    interval, boot_timeout, max_gpus, poll, demand
):
    """No pod ever boots. Until the breaker trips the fleet relaunches at most
    MAX_ACTIVE_GPUS per boot deadline; once it has tripped every launch is a probe
    or a probation launch, at least min(probe interval, window) + boot deadline
    apart: at most 3600 / (min(interval, window) + boot deadline) + 1 launches per
    hour, whatever the demand does (a deep queue, one task, bursts after quiet
    spells). A fleet too small to fail the minimum sample within one window trips
    on a streak of failures instead."""
    cfg = replace(
        CFG,
        max_active_gpus=max_gpus,
        max_spawns_per_cycle=max_gpus,
        spawning_timeout_sec=boot_timeout,
        breaker_probe_interval_sec=interval,
    )
    window = cfg.failure_window_sec
    queued = DEMAND[demand]
    sim = SimFleet(cfg, T0, boots=lambda _at: False, queued=queued(0.0))
    hours = 8
    first_trip_hour = None
    for step in range(int(hours * 3600 / poll)):
        sim.queued = queued(step * poll)
        sim.step(poll)
        if first_trip_hour is None and sim.breaker is not None:
            first_trip_hour = int((sim.now - T0).total_seconds() // 3600)
    per_hour = sim.launches_per_hour(T0, hours)
    bound = math.floor(3600 / (min(interval, window) + boot_timeout)) + 1
    before_trip = max_gpus * (math.ceil(window / boot_timeout) + 1)
    # Any hour: at most a fresh start's burst (a burst after its history aged out).
    assert all(n <= before_trip + bound for n in per_hour), (per_hour, before_trip + bound)
    if demand != "comes_and_goes":  # tasks always wait: the breaker trips in hour one
        assert first_trip_hour == 0, per_hour
    if first_trip_hour is not None:  # once tripped, every hour after is bounded
        after = per_hour[first_trip_hour + 1 :]
        assert all(n <= bound for n in after), (per_hour, bound, first_trip_hour)
