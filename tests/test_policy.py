"""Policy v1, rule by rule: each table row is one sentence of the specification.

Ages are seconds before `T0` (see `policy_builders`). `BASE_CONFIG`: min 0, max 10,
1 task per GPU, no idle buffer, overcapacity idle 300 s, min lifetime 600 s, ramp 10,
boot deadline 600 s, heartbeat loss 120 s, stuck task 3600 s, graceful drain 900 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import product
from typing import cast

import pytest
from policy_builders import (
    ACTION_TARGET,
    ACTIVE,
    BASE_CONFIG,
    CRASHED,
    ERROR,
    EXTERNAL,
    INACTIVE,
    SPAWNING,
    TERMINATED,
    TERMINATING,
    UNKNOWN,
    config,
    hold,
    of_kind,
    requeued_tasks,
    snap,
    spawn_reasons,
    worker,
    worker_actions,
)

from gpu_orchestrator.models import (
    TRANSITIONS,
    ActionKind,
    PolicyConfig,
    Reason,
    Snapshot,
    WorkerStatus,
    sources_of,
)
from gpu_orchestrator.policy import decide

QD, MIN, BUF = Reason.QUEUE_DEMAND, Reason.MIN_ACTIVE, Reason.IDLE_BUFFER
MAXED, RAMP = Reason.MAX_ACTIVE_REACHED, Reason.RAMP_LIMIT

# Health tables must not be disturbed by idle scale-down: the floor keeps every worker.
NO_SCALE_DOWN = config(min_active_gpus=10, max_active_gpus=10)


# -- desired capacity and spawning ------------------------------------------------------


@dataclass(frozen=True)
class Sizing:
    snapshot: Snapshot
    cfg: PolicyConfig
    desired: int
    capacity: int
    spawns: list[Reason]
    unmet: int = 0
    held_back: tuple[Reason, ...] = ()


SIZING = [
    pytest.param(Sizing(snap(), config(), 0, 0, []), id="empty_queue_no_floor_wants_nothing"),
    pytest.param(
        Sizing(snap(), config(min_active_gpus=2), 2, 0, [MIN, MIN]),
        id="min_active_floor_spawns_up_to_min",
    ),
    pytest.param(
        Sizing(snap(queued=50), config(max_active_gpus=3), 3, 0, [QD, QD, QD]),
        id="max_active_caps_desired",
    ),
    pytest.param(
        Sizing(snap(queued=7), config(tasks_per_gpu_threshold=3), 3, 0, [QD, QD, QD]),
        id="threshold_rounds_up_7_tasks_at_3_per_gpu_is_3",
    ),
    pytest.param(
        Sizing(snap(queued=6), config(tasks_per_gpu_threshold=3), 2, 0, [QD, QD]),
        id="threshold_exact_6_tasks_at_3_per_gpu_is_2",
    ),
    pytest.param(
        Sizing(snap(queued=1), config(tasks_per_gpu_threshold=3), 1, 0, [QD]),
        id="one_queued_task_wants_one_worker",
    ),
    pytest.param(
        Sizing(snap(), config(machines_to_keep_idle=1), 1, 0, [BUF]),
        id="idle_buffer_on_empty_queue",
    ),
    pytest.param(
        Sizing(
            snap(queued=3),
            config(tasks_per_gpu_threshold=3, machines_to_keep_idle=2),
            3,
            0,
            [QD, BUF, BUF],
        ),
        id="idle_buffer_on_top_of_queue_demand",
    ),
    pytest.param(
        Sizing(
            snap(queued=1),
            config(min_active_gpus=3),
            3,
            0,
            [QD, MIN, MIN],
        ),
        id="min_active_above_queue_demand",
    ),
    pytest.param(
        Sizing(
            snap(worker("w1"), worker("w2"), holds=[hold("t1", "w1"), hold("t2", "w2")]),
            config(),
            2,
            2,
            [],
        ),
        id="busy_workers_are_demand_no_drain_no_spawn",
    ),
    pytest.param(
        Sizing(
            snap(worker("w1"), worker("w2"), holds=[hold("t1", "w1"), hold("t2", "w2")], queued=1),
            config(tasks_per_gpu_threshold=3),
            3,
            2,
            [QD],
        ),
        id="busy_workers_plus_queue",
    ),
    pytest.param(
        Sizing(
            snap(worker("s1", SPAWNING, age=30), worker("s2", SPAWNING, age=30), queued=2),
            config(),
            2,
            2,
            [],
        ),
        id="booting_workers_count_as_capacity_no_double_spawn",
    ),
    pytest.param(
        Sizing(snap(worker("s1", SPAWNING, age=30), queued=3), config(), 3, 1, [QD, QD]),
        id="booting_worker_covers_part_of_demand",
    ),
    pytest.param(
        Sizing(
            snap(queued=5),
            config(max_spawns_per_cycle=2),
            5,
            0,
            [QD, QD],
            unmet=3,
            held_back=(RAMP,),
        ),
        id="ramp_limit_spawns_at_most_max_spawns_per_cycle",
    ),
    pytest.param(
        Sizing(
            snap(
                worker("a1"),
                worker("d1", TERMINATING),
                worker("d2", TERMINATING),
                holds=[hold("t1", "a1"), hold("t2", "d1"), hold("t3", "d2")],
                queued=10,
            ),
            config(max_active_gpus=3),
            3,
            1,
            [],
            unmet=2,
            held_back=(MAXED,),
        ),
        id="terminating_pods_still_bill_so_max_is_reached",
    ),
    pytest.param(
        Sizing(
            snap(worker("e1", ERROR, reason=Reason.CRASHED), queued=5),
            config(max_active_gpus=2),
            2,
            0,
            [QD],
            unmet=1,
            held_back=(MAXED,),
        ),
        id="unreleased_error_pod_counts_against_max",
    ),
    pytest.param(
        Sizing(
            snap(
                worker("a1"),
                worker("a2"),
                worker("a3"),
                holds=[hold("t1", "a1"), hold("t2", "a2"), hold("t3", "a3")],
                queued=1,
            ),
            config(max_active_gpus=3),
            3,
            3,
            [],
        ),
        id="fleet_at_max_with_queue_spawns_nothing",
    ),
    pytest.param(
        Sizing(snap(worker("x1", EXTERNAL), queued=1), config(max_active_gpus=1), 1, 0, [QD]),
        id="external_worker_is_neither_capacity_nor_a_billed_pod",
    ),
    pytest.param(
        Sizing(snap(worker("a1", heartbeat_age=500), queued=1), config(), 1, 0, [QD]),
        id="failing_worker_is_not_capacity_replacement_spawned",
    ),
    pytest.param(
        Sizing(snap(worker("s1", SPAWNING, age=601), queued=1), config(), 1, 0, [QD]),
        id="boot_timed_out_worker_is_not_capacity",
    ),
    pytest.param(
        Sizing(
            snap(
                worker("d1", TERMINATING),
                worker("d2", TERMINATING),
                holds=[hold("t1", "d1"), hold("t2", "d2")],
                queued=10,
            ),
            config(max_active_gpus=3, max_spawns_per_cycle=2),
            3,
            0,
            [QD],
            unmet=2,
            held_back=(MAXED,),
        ),
        id="max_binding_before_ramp_reports_max_active_reached",
    ),
]


@pytest.mark.parametrize("case", SIZING)
def test_desired_capacity_and_spawns(case: Sizing) -> None:
    plan = decide(case.snapshot, case.cfg)
    assert plan.desired_workers == case.desired
    assert plan.capacity == case.capacity
    assert spawn_reasons(plan) == case.spawns
    assert plan.unmet_demand == case.unmet
    assert plan.held_back == case.held_back
    assert of_kind(plan, ActionKind.DRAIN) == []


def test_ramp_limit_is_reported_when_it_caps_spawns_below_max() -> None:
    # 2 pods of 10: MAX leaves room for 8, the ramp allows 2, the queue wants 9 more.
    plan = decide(
        snap(
            worker("a1"),
            worker("d1", TERMINATING),
            holds=[hold("t1", "a1"), hold("t2", "d1")],
            queued=100,
        ),
        config(max_spawns_per_cycle=2),
    )
    assert spawn_reasons(plan) == [QD, QD]
    assert plan.unmet_demand == 7
    assert RAMP in plan.held_back


def test_spawn_actions_name_no_worker_and_explain_themselves() -> None:
    plan = decide(snap(queued=2), config())
    for action in of_kind(plan, ActionKind.SPAWN):
        assert action.worker_id is None and action.task_id is None
        assert action.message


# -- health: boot deadline, heartbeat loss, stuck task, drain, error rows ---------------


@dataclass(frozen=True)
class Health:
    snapshot: Snapshot
    expected: dict[str, tuple[ActionKind, Reason]]
    cfg: PolicyConfig = field(default=NO_SCALE_DOWN)


FAIL, STOP, RELEASE = ActionKind.FAIL, ActionKind.STOP, ActionKind.RELEASE

HEALTH = [
    pytest.param(
        Health(
            snap(worker("s1", SPAWNING, age=601, pod_id="p1")), {"s1": (FAIL, Reason.BOOT_TIMEOUT)}
        ),
        id="spawning_past_boot_deadline_fails_boot_timeout",
    ),
    pytest.param(
        Health(snap(worker("s1", SPAWNING, age=601)), {"s1": (FAIL, Reason.CREATE_LOST)}),
        id="spawning_past_boot_deadline_without_any_pod_is_a_lost_create_not_a_failure",
    ),
    pytest.param(
        Health(snap(worker("s1", SPAWNING, age=599)), {}),
        id="spawning_just_under_boot_deadline_waits",
    ),
    pytest.param(
        Health(snap(worker("s1", SPAWNING, age=600)), {}),
        id="spawning_exactly_at_boot_deadline_waits",
    ),
    pytest.param(
        Health(snap(worker("a1", heartbeat_age=121)), {"a1": (FAIL, Reason.HEARTBEAT_LOST)}),
        id="active_silent_past_idle_timeout_fails_heartbeat_lost",
    ),
    pytest.param(
        Health(snap(worker("a1", heartbeat_age=119)), {}),
        id="active_silent_just_under_idle_timeout_is_fine",
    ),
    pytest.param(
        Health(
            snap(worker("a1", heartbeat_age=121), holds=[hold("t1", "a1")]),
            {"a1": (FAIL, Reason.HEARTBEAT_LOST)},
        ),
        id="active_busy_silent_fails_heartbeat_lost",
    ),
    pytest.param(
        Health(
            snap(worker("a1", ready_age=200, heartbeat_age=None)),
            {"a1": (FAIL, Reason.HEARTBEAT_LOST)},
        ),
        id="active_without_heartbeat_column_is_timed_from_ready",
    ),
    pytest.param(
        Health(
            snap(worker("d1", TERMINATING, heartbeat_age=121), holds=[hold("t1", "d1")]),
            {"d1": (FAIL, Reason.HEARTBEAT_LOST)},
        ),
        id="terminating_with_task_silent_fails_heartbeat_lost",
    ),
    pytest.param(
        Health(
            snap(worker("a1"), holds=[hold("t1", "a1", age=3601)]),
            {"a1": (FAIL, Reason.STUCK_TASK)},
        ),
        id="task_past_stuck_timeout_fails_stuck_task",
    ),
    pytest.param(
        Health(snap(worker("a1"), holds=[hold("t1", "a1", age=3599)]), {}),
        id="task_just_under_stuck_timeout_is_fine",
    ),
    pytest.param(
        Health(
            snap(
                worker("a1"),
                holds=[hold("t1", "a1", age=3 * 3600, task_type="travel_orchestrator")],
            ),
            {},
            replace(NO_SCALE_DOWN, task_stuck_timeout_by_type=(("*_orchestrator", 0.0),)),
        ),
        id="a_type_with_no_stuck_limit_runs_for_hours",
    ),
    pytest.param(
        Health(
            snap(worker("a1"), holds=[hold("t1", "a1", age=700, task_type="single_image")]),
            {"a1": (FAIL, Reason.STUCK_TASK)},
            replace(NO_SCALE_DOWN, task_stuck_timeout_by_type=(("single_*", 600.0),)),
        ),
        id="a_type_with_a_shorter_limit_is_stuck_sooner",
    ),
    pytest.param(
        Health(
            snap(worker("d1", TERMINATING), holds=[hold("t1", "d1", age=3601)]),
            {"d1": (FAIL, Reason.STUCK_TASK)},
        ),
        id="terminating_with_stuck_task_fails_stuck_task",
    ),
    pytest.param(
        Health(
            snap(worker("a1", heartbeat_age=500), holds=[hold("t1", "a1", age=5000)]),
            {"a1": (FAIL, Reason.HEARTBEAT_LOST)},
        ),
        id="silent_and_stuck_reports_heartbeat_lost",
    ),
    pytest.param(
        Health(snap(worker("d1", TERMINATING)), {"d1": (STOP, Reason.DRAINED)}),
        id="terminating_without_tasks_stops_drained",
    ),
    pytest.param(
        Health(
            snap(worker("d1", TERMINATING, heartbeat_age=5000, drain_age=5000)),
            {"d1": (STOP, Reason.DRAINED)},
        ),
        id="terminating_without_tasks_stops_drained_even_when_silent",
    ),
    pytest.param(
        Health(
            snap(worker("d1", TERMINATING, drain_age=901), holds=[hold("t1", "d1")]),
            {"d1": (STOP, Reason.DRAIN_TIMEOUT)},
        ),
        id="terminating_busy_past_graceful_timeout_stops_drain_timeout",
    ),
    pytest.param(
        Health(snap(worker("d1", TERMINATING, drain_age=899), holds=[hold("t1", "d1")]), {}),
        id="terminating_busy_within_graceful_timeout_waits",
    ),
    pytest.param(
        Health(
            snap(worker("e1", ERROR, reason=Reason.HEARTBEAT_LOST)),
            {"e1": (RELEASE, Reason.HEARTBEAT_LOST)},
        ),
        id="unreleased_error_row_released_with_its_reason",
    ),
    pytest.param(
        Health(
            snap(worker("e1", ERROR, age=30, reason=Reason.SPAWN_FAILED)),
            {"e1": (RELEASE, Reason.SPAWN_FAILED)},
        ),
        id="unreleased_spawn_failure_released_with_its_reason",
    ),
    pytest.param(
        Health(snap(worker("e1", ERROR, reason=None)), {"e1": (RELEASE, Reason.UNKNOWN)}),
        id="unreleased_error_row_without_reason_released_as_unknown",
    ),
]


@pytest.mark.parametrize("case", HEALTH)
def test_health_rules(case: Health) -> None:
    plan = decide(case.snapshot, case.cfg)
    assert worker_actions(plan) == case.expected
    assert requeued_tasks(plan) == []


@pytest.mark.parametrize(
    "status", [EXTERNAL, INACTIVE, CRASHED, UNKNOWN, TERMINATED], ids=lambda s: s.value
)
def test_external_legacy_and_terminal_rows_are_never_acted_on(status: WorkerStatus) -> None:
    ancient = worker(
        "x1", status, age=100_000, ready_age=100_000, heartbeat_age=100_000, drain_age=100_000
    )
    plan = decide(snap(ancient, holds=[hold("t1", "x1", age=100_000)]), config())
    assert [a for a in plan.actions if a.worker_id == "x1"] == []
    assert plan.capacity == 0


# -- orphaned tasks -----------------------------------------------------------------------


ORPHANS = [
    pytest.param(snap(holds=[hold("t1", "ghost")]), ["t1"], id="holder_unknown_is_requeued"),
    pytest.param(snap(holds=[hold("t1", None)]), ["t1"], id="holder_none_is_requeued"),
    pytest.param(
        snap(holds=[hold("t1", "ghost"), hold("t2", "ghost")]),
        ["t1", "t2"],
        id="each_task_of_a_gone_holder_is_requeued",
    ),
    pytest.param(snap(worker("a1"), holds=[hold("t1", "a1")]), [], id="holder_active_kept"),
    pytest.param(
        snap(worker("d1", TERMINATING), holds=[hold("t1", "d1")]),
        [],
        id="holder_terminating_kept",
    ),
    pytest.param(
        snap(worker("s1", SPAWNING, age=30), holds=[hold("t1", "s1")]),
        [],
        id="holder_spawning_kept",
    ),
    pytest.param(
        snap(worker("x1", EXTERNAL), holds=[hold("t1", "x1")]), [], id="holder_external_kept"
    ),
    pytest.param(
        snap(worker("e1", ERROR, reason=Reason.CRASHED), holds=[hold("t1", "e1")]),
        [],
        id="holder_unreleased_error_left_to_release",
    ),
]


@pytest.mark.parametrize(("snapshot", "requeued"), ORPHANS)
def test_orphan_requeue(snapshot: Snapshot, requeued: list[str]) -> None:
    plan = decide(snapshot, NO_SCALE_DOWN)
    assert requeued_tasks(plan) == requeued
    for action in of_kind(plan, ActionKind.REQUEUE_ORPHAN):
        assert action.reason is Reason.ORPHAN
        assert action.worker_id not in {w.id for w in snapshot.workers}


def test_task_of_unreleased_error_worker_goes_with_its_release() -> None:
    plan = decide(
        snap(worker("e1", ERROR, reason=Reason.STUCK_TASK), holds=[hold("t1", "e1")]),
        NO_SCALE_DOWN,
    )
    assert worker_actions(plan) == {"e1": (RELEASE, Reason.STUCK_TASK)}
    assert requeued_tasks(plan) == []


# -- idle scale-down ----------------------------------------------------------------------


DRAINS = [
    pytest.param(snap(worker("a1")), config(), ["a1"], id="idle_active_above_desired_drained"),
    pytest.param(
        snap(worker("a1"), worker("a2"), holds=[hold("t1", "a1")]),
        config(),
        ["a2"],
        id="busy_worker_kept_idle_one_drained",
    ),
    pytest.param(
        snap(worker("a1", finished_age=299)),
        config(),
        [],
        id="idle_just_under_overcapacity_timeout_kept",
    ),
    pytest.param(
        snap(worker("a1", finished_age=300)),
        config(),
        ["a1"],
        id="idle_exactly_overcapacity_timeout_drained",
    ),
    pytest.param(snap(worker("a1", age=599)), config(), [], id="younger_than_min_lifetime_kept"),
    pytest.param(snap(worker("a1", age=600)), config(), ["a1"], id="exactly_min_lifetime_drained"),
    pytest.param(
        snap(worker("a1", age=10_000, ready_age=100)),
        config(),
        [],
        id="idle_measured_from_ready_not_from_spawn",
    ),
    pytest.param(
        snap(
            worker("a1", finished_age=400),
            worker("a2", finished_age=1000),
            worker("a3", finished_age=500),
        ),
        config(min_active_gpus=2),
        ["a2"],
        id="longest_idle_first_and_never_below_min",
    ),
    pytest.param(
        snap(
            worker("a1", finished_age=400),
            worker("a2", finished_age=1000),
            worker("a3", finished_age=500),
        ),
        config(machines_to_keep_idle=1),
        ["a2", "a3"],
        id="idle_buffer_keeps_one",
    ),
    pytest.param(
        snap(worker("a1"), worker("a2"), worker("a3"), queued=2),
        config(),
        ["a1"],
        id="queue_demand_keeps_workers_that_will_claim",
    ),
    pytest.param(
        snap(worker("a3"), worker("a2"), worker("a1")),
        config(min_active_gpus=2),
        ["a1"],
        id="equally_idle_drained_by_id_whatever_the_row_order",
    ),
    pytest.param(
        snap(worker("s1", SPAWNING, age=300), worker("s2", SPAWNING, age=300)),
        config(),
        [],
        id="booting_workers_never_drained",
    ),
    pytest.param(
        snap(worker("a1", ready_age=None, heartbeat_age=5)),
        config(),
        [],
        id="active_without_ready_time_not_drained",
    ),
    pytest.param(
        snap(worker("a1", heartbeat_age=500), worker("a2")),
        config(min_active_gpus=1),
        [],
        id="failing_worker_not_counted_so_survivor_kept",
    ),
]


@pytest.mark.parametrize(("snapshot", "cfg", "drained"), DRAINS)
def test_idle_scale_down(snapshot: Snapshot, cfg: PolicyConfig, drained: list[str]) -> None:
    plan = decide(snapshot, cfg)
    drains = of_kind(plan, ActionKind.DRAIN)
    assert [a.worker_id for a in drains] == drained
    assert all(a.reason is Reason.SCALED_DOWN for a in drains)
    assert spawn_reasons(plan) == []
    assert plan.capacity - len(drains) >= plan.desired_workers or not drains


# -- the transition table -----------------------------------------------------------------

# The specification of DESIGN §4, edge by edge.
EDGES = {
    (SPAWNING, ACTIVE),
    (SPAWNING, TERMINATING),
    (SPAWNING, ERROR),
    (ACTIVE, TERMINATING),
    (ACTIVE, ERROR),
    (TERMINATING, TERMINATED),
    (TERMINATING, ERROR),
}
TERMINAL = {TERMINATED, ERROR, INACTIVE, EXTERNAL, CRASHED, UNKNOWN}


def test_every_status_is_in_the_transition_table() -> None:
    assert set(TRANSITIONS) == set(WorkerStatus)
    for status in WorkerStatus:
        if status in TERMINAL:
            assert TRANSITIONS[status] == frozenset(), status
        else:
            assert TRANSITIONS[status], status


@pytest.mark.parametrize(
    ("src", "dst"),
    list(product(WorkerStatus, WorkerStatus)),
    ids=[f"{s.value}->{d.value}" for s, d in product(WorkerStatus, WorkerStatus)],
)
def test_transition_edge(src: WorkerStatus, dst: WorkerStatus) -> None:
    assert (dst in TRANSITIONS[src]) == ((src, dst) in EDGES)
    assert (src.value in sources_of(dst)) == ((src, dst) in EDGES)


def test_sources_of_is_the_compare_and_set_set() -> None:
    assert sources_of(ERROR) == ("active", "spawning", "terminating")
    assert sources_of(TERMINATING) == ("active", "spawning")
    assert sources_of(TERMINATED) == ("terminating",)
    assert sources_of(ACTIVE) == ("spawning",)
    assert sources_of(SPAWNING) == ()


def _all_table_snapshots() -> list[tuple[Snapshot, PolicyConfig]]:
    """Every snapshot of the tables above, with the config its table uses."""
    cases = [cast(Sizing | Health, p.values[0]) for p in SIZING + HEALTH]
    out = [(c.snapshot, c.cfg) for c in cases]
    out += [(cast(Snapshot, p.values[0]), NO_SCALE_DOWN) for p in ORPHANS]
    out += [(cast(Snapshot, p.values[0]), cast(PolicyConfig, p.values[1])) for p in DRAINS]
    return out


def test_policy_only_emits_allowed_edges() -> None:
    seen: set[ActionKind] = set()
    for snapshot, cfg in _all_table_snapshots():
        status_of = {w.id: w.status for w in snapshot.workers}
        for kind, _ in worker_actions(decide(snapshot, cfg)).values():
            seen.add(kind)
        for action in decide(snapshot, cfg).actions:
            if action.kind in ACTION_TARGET:
                src = status_of[action.worker_id or ""]
                assert ACTION_TARGET[action.kind] in TRANSITIONS[src], (src, action)
            elif action.kind is ActionKind.RELEASE:
                assert status_of[action.worker_id or ""] is ERROR, action
    assert seen == {ActionKind.FAIL, ActionKind.DRAIN, ActionKind.STOP, ActionKind.RELEASE}


def test_base_config_is_what_the_tables_assume() -> None:
    assert BASE_CONFIG.spawning_timeout_sec == 600
    assert BASE_CONFIG.gpu_idle_timeout_sec == 120
    assert BASE_CONFIG.task_stuck_timeout_sec == 3600
    assert BASE_CONFIG.graceful_shutdown_timeout_sec == 900
    assert BASE_CONFIG.overcapacity_idle_timeout_sec == 300
    assert BASE_CONFIG.min_worker_lifetime_sec == 600
