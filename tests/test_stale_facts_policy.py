"""The pure rules behind "never act on stale or partial facts" (issue 8): which
pods are ours, what a missing pod proves, what the plan records before acting, and
what a blind spell forgives. Each table row names the behaviour it pins."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from policy_builders import ACTIVE, SPAWNING, T0, ago, snap, worker, worker_actions

from gpu_orchestrator.models import (
    ActionKind,
    Pod,
    PodSightings,
    PolicyConfig,
    Reason,
    Snapshot,
)
from gpu_orchestrator.policy import decide
from gpu_orchestrator.policy.reconcile import launched_at

CFG = PolicyConfig(
    overcapacity_idle_timeout_sec=1e9,
    pod_grace_sec=120,
    pod_missing_sec=60,
    gpu_idle_timeout_sec=300,
    observation_gap_sec=180,
)
OURS = "gpu-20250101115000-0badc0de"  # ten minutes before T0


def pod(name: str, pod_id: str = "p1", running: bool = True) -> Pod:
    return Pod(pod_id=pod_id, name=name, running=running, status="RUNNING")


def listed(snapshot: Snapshot, *pods: Pod) -> Snapshot:
    return replace(snapshot, pods=tuple(pods))


# -- 3. pods that are not ours ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        (OURS, True),
        ("gpu-dev-box", False),  # hand-made
        ("gpu-staging-20250101115000-0badc0de", False),  # another deployment's prefix
        ("gpu-20250101_115000-0badc0de", False),  # the legacy orchestrator's names
        ("gpu-20250101115000-0badc0de-x", False),
        ("gpu-20250101115000-0BADC0DE", False),
        ("gpu-20251301115000-0badc0de", False),  # month 13
        ("gpux-20250101115000-0badc0de", False),
    ],
)
def test_only_a_name_that_parses_exactly_as_ours_is_ours(name: str, ours: bool) -> None:
    assert (launched_at(name, "gpu") is not None) is ours


def test_on_an_adopted_database_the_old_orchestrators_names_are_ours_with_their_time() -> None:
    legacy = "gpu-20260410_131500-b2b2b2b2"
    assert launched_at(legacy, "gpu") is None
    assert launched_at(legacy, "gpu", legacy=True) == datetime(2026, 4, 10, 13, 15, tzinfo=UTC)
    assert launched_at(OURS, "gpu", legacy=True) is not None
    for other in ("gpu-20261310_131500-b2b2b2b2", "api-worker-main", "gpu-20260410_131500-B2"):
        assert launched_at(other, "gpu", legacy=True) is None


def test_foreign_pods_are_never_terminated_and_are_reported() -> None:
    foreign = [pod("gpu-dev-box", "p2"), pod("gpu-staging-20250101115000-0badc0de", "p3")]
    plan = decide(listed(snap(), pod(OURS, "p1"), *foreign), CFG)
    assert [(a.kind, a.worker_id) for a in plan.actions] == [
        (ActionKind.TERMINATE_ORPHAN_POD, OURS)
    ]
    assert plan.foreign_pods == ("gpu-dev-box", "gpu-staging-20250101115000-0badc0de")


# -- 4. partial answers are not proof ---------------------------------------------------

FRESH = {"heartbeat_age": 3.0}
SILENT = {"heartbeat_age": 90.0}


@pytest.mark.parametrize(
    ("w", "expected"),
    [
        pytest.param(worker("a1", pod_id="p1", **FRESH), {}, id="first_miss_fails_nothing"),
        pytest.param(
            worker("a1", pod_id="p1", pod_missing_age=600, **FRESH),
            {},
            id="missing_long_but_heartbeat_fresh_is_kept",
        ),
        pytest.param(
            worker("a1", pod_id="p1", pod_missing_age=30, **SILENT),
            {},
            id="silent_but_missing_briefly_is_kept",
        ),
        pytest.param(
            worker("a1", pod_id="p1", pod_missing_age=61, **SILENT),
            {"a1": (ActionKind.FAIL, Reason.POD_VANISHED)},
            id="missing_and_silent_past_the_interval_vanished",
        ),
    ],
)
def test_a_missing_pod_proves_a_vanished_worker_only_over_time_and_silence(
    w, expected: dict[str, tuple[ActionKind, Reason]]
) -> None:
    plan = decide(listed(snap(w)), CFG)  # a one-GPU fleet, an empty list
    assert worker_actions(plan) == expected
    assert plan.unsafe is None


def test_a_list_records_when_a_pod_went_missing_and_when_it_came_back() -> None:
    gone = worker("a1", pod_id="p1", **FRESH)
    back = worker("a2", pod_id="p2", pod_missing_age=20, **FRESH)
    young = worker("a3", pod_id="p3", age=30, **FRESH)  # within the grace: not yet
    plan = decide(listed(snap(gone, back, young), pod("a2", "p2")), CFG)
    assert plan.sightings == PodSightings(missing=("a1",), seen=("a2",))
    assert worker_actions(plan) == {}


def test_a_list_not_read_records_no_sighting() -> None:
    plan = decide(snap(worker("a1", pod_id="p1", **FRESH)), CFG)
    assert plan.sightings is None


# -- 5. an ambiguous create is not a failure ---------------------------------------------


def test_a_listed_pod_of_a_row_without_pod_id_is_adopted_not_deleted() -> None:
    row = worker(OURS, SPAWNING, age=600)
    plan = decide(listed(snap(row), Pod("p9", OURS, True, "RUNNING", 0.44)), CFG)
    (adopt,) = plan.actions
    assert (adopt.kind, adopt.reason, adopt.pod_id, adopt.cost_per_hr) == (
        ActionKind.ADOPT_POD,
        Reason.CREATE_UNRESOLVED,
        "p9",
        0.44,
    )


def test_a_row_whose_create_never_showed_a_pod_waits_for_the_boot_deadline() -> None:
    waiting = decide(listed(snap(worker(OURS, SPAWNING, age=300))), CFG)
    assert worker_actions(waiting) == {}
    lost = decide(listed(snap(worker(OURS, SPAWNING, age=601))), CFG)
    assert worker_actions(lost) == {OURS: (ActionKind.FAIL, Reason.CREATE_LOST)}
    assert lost.breaker is not None and lost.breaker.failed == 0


# -- 2. every transition carries what it was judged on -----------------------------------


def test_each_worker_action_expects_the_state_it_was_judged_on() -> None:
    silent = worker("a1", heartbeat_age=301)
    booting = worker("s1", SPAWNING, age=601, pod_id="p1")
    idle = worker("i1")
    plan = decide(snap(silent, booting, idle), replace(CFG, overcapacity_idle_timeout_sec=0))
    expect = {a.worker_id: a.expect for a in plan.actions}
    assert expect["a1"] is not None and expect["a1"].heartbeat_judged
    assert expect["a1"].heartbeat == silent.last_heartbeat and expect["a1"].status is ACTIVE
    assert expect["s1"] is not None and expect["s1"].status is SPAWNING
    assert expect["i1"] is not None and expect["i1"].idle and expect["i1"].status is ACTIVE


# -- 7. a blind spell is not a fleet-wide heartbeat loss -----------------------------------


def test_after_a_blind_spell_each_worker_gets_a_full_heartbeat_timeout() -> None:
    busy = worker("a1", heartbeat_age=400)  # silent through a 10-minute outage
    booting = worker("s1", SPAWNING, age=700, pod_id="p1")
    outage = replace(snap(busy, booting), last_contact_at=ago(600))

    plan = decide(outage, CFG)
    assert plan.observation_gap == (ago(600), T0)
    assert worker_actions(plan) == {}

    # Later cycles read the recorded spell: judged again a full timeout after it.
    later = T0 + timedelta(seconds=299)
    recorded = replace(outage, now=later, last_contact_at=later, blind_until=T0)
    assert worker_actions(decide(recorded, CFG)) == {}
    past = replace(recorded, now=T0 + timedelta(seconds=301))
    assert worker_actions(decide(past, CFG)) == {
        "a1": (ActionKind.FAIL, Reason.HEARTBEAT_LOST),
        "s1": (ActionKind.FAIL, Reason.BOOT_TIMEOUT),
    }


def test_a_healthy_loops_gap_is_no_blind_spell() -> None:
    plan = decide(replace(snap(worker("a1")), last_contact_at=ago(179)), CFG)
    assert plan.observation_gap is None
