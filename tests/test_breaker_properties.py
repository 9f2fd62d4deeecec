"""Properties of the breaker over generated histories (its spend under a permanent
outage is replayed with the simulator in `test_sim.py`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from policy_builders import SEED_BREAKER, T0, snap

from gpu_orchestrator.models import FAILURE_REASONS, BreakerState, Launch, Reason
from gpu_orchestrator.policy import decide
from gpu_orchestrator.policy.breaker import assess_breaker, counted_failure

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


@settings(max_examples=100, deadline=None)
@given(data=st.data(), history=launches(), queued=st.integers(0, 100))
def test_the_plan_does_not_depend_on_the_order_launches_arrive_in(data, history, queued):
    """The breaker and the backoffs read history in launch order, which `Snapshot`
    establishes once, whatever order the store or a test gives it in."""
    shuffled = tuple(data.draw(st.permutations(history)))
    s = replace(snap(queued=queued), launches=history)
    assert replace(s, launches=shuffled).launches == s.launches
    assert decide(replace(s, launches=shuffled), CFG) == decide(s, CFG)
