"""Policy v1 properties over arbitrary snapshots: mixed statuses (legacy included),
random ages, tasks held by known, unknown or no workers, queues of 0..10 000.

No breaker history and no operator controls here: these are the v1 scaling and
health guarantees; the breaker has its own properties.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from policy_builders import ACTION_TARGET, config, hold, snap, worker

from gpu_orchestrator.models import (
    TRANSITIONS,
    ActionKind,
    Plan,
    PolicyConfig,
    Reason,
    Snapshot,
    WorkerStatus,
)
from gpu_orchestrator.policy import decide

EXAMPLES = settings(max_examples=80, deadline=None)

# Why a worker holding an `In Progress` task may be taken down: it is gone or its
# task is, or it already had its graceful drain.
MAY_END_A_HOLDER = {Reason.HEARTBEAT_LOST, Reason.STUCK_TASK, Reason.DRAIN_TIMEOUT}

# Round ages often, so equal timestamps (ties) and exact thresholds come up.
ROUND = (0, 60, 120, 300, 600, 900, 3600)
AGES = st.sampled_from(ROUND) | st.integers(min_value=0, max_value=20_000)
RECENT = st.integers(min_value=0, max_value=60)  # healthy heartbeats and fresh claims
MAYBE_AGE = st.none() | RECENT | AGES
# Every status, ours far more often than legacy ones, so that healthy fleets (and
# with them spawns and scale-downs) are common, not only wreckage.
STATUSES = st.sampled_from(
    [*[WorkerStatus.ACTIVE] * 6, *[WorkerStatus.SPAWNING] * 2, *[WorkerStatus.TERMINATING] * 2]
) | st.sampled_from(list(WorkerStatus))


@dataclass(frozen=True)
class WorkerSpec:
    id: str
    status: WorkerStatus
    age: int
    ready_age: int | None
    heartbeat_age: int | None
    finished_age: int | None
    drain_age: int | None
    released: bool
    reason: Reason | None


@dataclass(frozen=True)
class HoldSpec:
    task_id: str
    worker_id: str | None
    age: int | None
    attempts: int


@dataclass(frozen=True)
class World:
    """A snapshot as plain data, so it can be built twice from scratch."""

    workers: tuple[WorkerSpec, ...]
    holds: tuple[HoldSpec, ...]
    queued: int

    def build(self, reverse: bool = False) -> Snapshot:
        workers = [
            worker(
                w.id,
                w.status,
                age=w.age,
                ready_age=w.ready_age,
                heartbeat_age=w.heartbeat_age,
                finished_age=w.finished_age,
                drain_age=w.drain_age,
                released=w.released,
                reason=w.reason,
            )
            for w in self.workers
        ]
        holds = [hold(h.task_id, h.worker_id, h.age, attempts=h.attempts) for h in self.holds]
        if reverse:
            workers.reverse()
            holds.reverse()
        return snap(*workers, holds=holds, queued=self.queued)


@st.composite
def worker_specs(draw: st.DrawFn, worker_id: str) -> WorkerSpec:
    status = draw(STATUSES)
    age = draw(AGES)
    below_age = (
        st.none()
        | st.sampled_from([a for a in ROUND if a <= age])
        | st.integers(min_value=0, max_value=age)
    )
    return WorkerSpec(
        id=worker_id,
        status=status,
        age=age,
        ready_age=draw(below_age),
        heartbeat_age=draw(st.integers(min_value=0, max_value=min(age, 60)) | below_age),
        finished_age=draw(below_age),
        drain_age=draw(below_age),
        released=draw(st.booleans()) if status is WorkerStatus.ERROR else False,
        reason=draw(st.none() | st.sampled_from(list(Reason))),
    )


@st.composite
def wreckage(draw: st.DrawFn) -> World:
    """Anything a table may hold: every status, any ages, tasks held by anyone."""
    n = draw(st.integers(min_value=0, max_value=8))
    workers = tuple(draw(worker_specs(f"w{i}")) for i in range(n))
    holders = st.sampled_from([*(w.id for w in workers), "ghost-1", "ghost-2", None])
    holds = tuple(
        HoldSpec(f"t{j}", draw(holders), draw(MAYBE_AGE), draw(st.integers(1, 5)))
        for j in range(draw(st.integers(min_value=0, max_value=8)))
    )
    queued = draw(st.integers(min_value=0, max_value=12) | st.integers(0, 10_000))
    return World(workers, holds, queued)


@st.composite
def fleets(draw: st.DrawFn) -> World:
    """A live, heartbeating fleet with round ages (so idle times tie and sit on the
    thresholds) and a small queue: the worlds where scale-down decisions happen."""
    workers: list[WorkerSpec] = []
    for i in range(draw(st.integers(min_value=1, max_value=10))):
        status = draw(st.sampled_from([WorkerStatus.ACTIVE] * 3 + [WorkerStatus.SPAWNING]))
        age = draw(st.sampled_from((*ROUND[1:], 7200)))
        ready: int | None = None
        finished: int | None = None
        if status is WorkerStatus.ACTIVE:
            ready = draw(st.sampled_from([a for a in ROUND if a <= age]))
            finished = draw(st.none() | st.sampled_from([a for a in ROUND if a <= ready]))
        workers.append(
            WorkerSpec(
                f"w{i}",
                status,
                age,
                ready,
                5 if ready is not None else None,
                finished,
                None,
                False,
                None,
            )
        )
    busy = draw(st.lists(st.sampled_from([w.id for w in workers]), unique=True))
    holds = tuple(HoldSpec(f"t{j}", wid, 30, 1) for j, wid in enumerate(busy))
    return World(tuple(workers), holds, draw(st.integers(min_value=0, max_value=4)))


def worlds() -> st.SearchStrategy[World]:
    return wreckage() | fleets()


@st.composite
def configs(draw: st.DrawFn) -> PolicyConfig:
    lo = draw(st.integers(min_value=0, max_value=4))
    timeout = (st.sampled_from(ROUND[1:]) | st.integers(min_value=1, max_value=8_000)).map(float)
    short = st.sampled_from([60.0, 120.0, 300.0])
    return config(
        min_active_gpus=lo,
        max_active_gpus=draw(st.integers(min_value=lo, max_value=16)),
        tasks_per_gpu_threshold=draw(st.integers(min_value=1, max_value=20)),
        machines_to_keep_idle=draw(st.integers(min_value=0, max_value=2)),
        max_spawns_per_cycle=draw(st.integers(min_value=0, max_value=6)),
        overcapacity_idle_timeout_sec=draw(short | timeout),
        min_worker_lifetime_sec=draw(short | timeout),
        spawning_timeout_sec=draw(timeout),
        gpu_idle_timeout_sec=draw(timeout),
        task_stuck_timeout_sec=draw(timeout),
        graceful_shutdown_timeout_sec=draw(timeout),
    )


@st.composite
def scale_down_configs(draw: st.DrawFn) -> PolicyConfig:
    """Round thresholds a fleet's ages meet, and floors that keep part of the fleet."""
    lo = draw(st.integers(min_value=0, max_value=4))
    return config(
        min_active_gpus=lo,
        max_active_gpus=draw(st.integers(min_value=max(lo, 1), max_value=16)),
        tasks_per_gpu_threshold=draw(st.integers(min_value=1, max_value=3)),
        machines_to_keep_idle=draw(st.integers(min_value=0, max_value=3)),
        overcapacity_idle_timeout_sec=draw(st.sampled_from([60.0, 300.0, 600.0])),
        min_worker_lifetime_sec=draw(st.sampled_from([60.0, 300.0, 600.0, 900.0])),
    )


def billed_pods(snapshot: Snapshot) -> int:
    return sum(1 for w in snapshot.workers if w.status is not WorkerStatus.EXTERNAL)


def holders(snapshot: Snapshot) -> set[str]:
    return set(snapshot.holds_by_worker())


@EXAMPLES
@given(worlds(), configs())
def test_never_spawns_above_max_active_gpus(world: World, cfg: PolicyConfig) -> None:
    snapshot = world.build()
    plan = decide(snapshot, cfg)
    pods, spawns = billed_pods(snapshot), plan.count(ActionKind.SPAWN)
    assert pods + spawns <= max(cfg.max_active_gpus, pods)
    if pods >= cfg.max_active_gpus:
        assert spawns == 0
    assert spawns <= cfg.max_spawns_per_cycle


@EXAMPLES
@given(worlds(), configs())
def test_a_worker_holding_a_task_is_ended_only_when_it_or_its_task_is_lost(
    world: World, cfg: PolicyConfig
) -> None:
    """DRAIN never touches a holder; FAIL/STOP of a holder only for heartbeat_lost,
    stuck_task or drain_timeout, or boot_timeout / create_lost of a `spawning` row (the
    claim SQL lets a worker claim before its first heartbeat, so a booting row can
    hold a task)."""
    snapshot = world.build()
    status_of = {w.id: w.status for w in snapshot.workers}
    busy = holders(snapshot)
    for action in decide(snapshot, cfg).actions:
        if action.worker_id not in busy or action.kind not in ACTION_TARGET:
            continue
        assert action.kind is not ActionKind.DRAIN, action
        booting = status_of[action.worker_id] is WorkerStatus.SPAWNING
        assert action.reason in MAY_END_A_HOLDER or (
            action.reason in (Reason.BOOT_TIMEOUT, Reason.CREATE_LOST) and booting
        ), action


@EXAMPLES
@given(worlds(), configs())
def test_same_snapshot_same_plan(world: World, cfg: PolicyConfig) -> None:
    snapshot = world.build()
    first = decide(snapshot, cfg)
    assert decide(snapshot, cfg) == first
    assert decide(world.build(), cfg) == first  # rebuilt from scratch, same order


@EXAMPLES
@given(worlds(), configs())
def test_row_order_does_not_change_the_decisions(world: World, cfg: PolicyConfig) -> None:
    """The snapshot query does not order its rows, so the set of actions must not
    depend on it (only their order in the plan may)."""
    forward, backward = decide(world.build(), cfg), decide(world.build(reverse=True), cfg)
    assert Counter(forward.actions) == Counter(backward.actions)
    assert (forward.desired_workers, forward.capacity, forward.unmet_demand) == (
        backward.desired_workers,
        backward.capacity,
        backward.unmet_demand,
    )
    assert forward.held_back == backward.held_back


@EXAMPLES
@given(worlds(), configs())
def test_every_action_is_explained_and_touches_a_worker_at_most_once(
    world: World, cfg: PolicyConfig
) -> None:
    snapshot = world.build()
    plan = decide(snapshot, cfg)
    known = {w.id: w.status for w in snapshot.workers}
    per_worker: Counter[str] = Counter()
    for action in plan.actions:
        assert isinstance(action.reason, Reason)
        assert action.message.strip() and "\n" not in action.message, action
        if action.kind is ActionKind.SPAWN:
            assert action.worker_id is None and action.task_id is None
        elif action.kind is ActionKind.REQUEUE_ORPHAN:
            assert action.reason is Reason.ORPHAN and action.worker_id not in known
        else:
            assert action.worker_id in known, action
            per_worker[action.worker_id] += 1
    assert all(n == 1 for n in per_worker.values()), plan.actions


@EXAMPLES
@given(worlds(), configs())
def test_actions_follow_the_transition_table(world: World, cfg: PolicyConfig) -> None:
    snapshot = world.build()
    status_of = {w.id: w.status for w in snapshot.workers}
    for action in decide(snapshot, cfg).actions:
        if action.kind in ACTION_TARGET:
            src = status_of[action.worker_id or ""]
            assert ACTION_TARGET[action.kind] in TRANSITIONS[src], (src, action)
        elif action.kind is ActionKind.RELEASE:
            assert status_of[action.worker_id or ""] is WorkerStatus.ERROR, action
        if action.kind is ActionKind.DRAIN:  # scale-down never drains a booting worker
            assert status_of[action.worker_id or ""] is WorkerStatus.ACTIVE, action


@EXAMPLES
@given(worlds(), configs())
def test_every_orphan_is_requeued_once_and_no_held_task_twice(
    world: World, cfg: PolicyConfig
) -> None:
    snapshot = world.build()
    known = {w.id for w in snapshot.workers}
    orphans = {h.task_id for h in snapshot.holds if h.worker_id not in known}
    requeued = [
        a.task_id for a in decide(snapshot, cfg).actions if a.kind is ActionKind.REQUEUE_ORPHAN
    ]
    assert sorted(requeued, key=str) == sorted(orphans)


@EXAMPLES
@given(worlds(), configs())
def test_plan_accounts_for_what_it_did_not_do(world: World, cfg: PolicyConfig) -> None:
    plan: Plan = decide(world.build(), cfg)
    spawns, drains = plan.count(ActionKind.SPAWN), plan.count(ActionKind.DRAIN)
    assert cfg.min_active_gpus <= plan.desired_workers <= cfg.max_active_gpus
    assert plan.unmet_demand >= 0
    assert bool(plan.held_back) == (plan.unmet_demand > 0), plan
    assert spawns + plan.unmet_demand == max(0, plan.desired_workers - plan.capacity)
    assert not (spawns and drains)
    if drains:
        assert plan.capacity - drains >= plan.desired_workers


@settings(max_examples=200, deadline=None)
@given(fleets(), scale_down_configs())
def test_scale_down_drains_the_longest_idle_and_never_below_desired(
    world: World, cfg: PolicyConfig
) -> None:
    snapshot = world.build()
    plan = decide(snapshot, cfg)
    busy = holders(snapshot)
    drained = {a.worker_id for a in plan.actions if a.kind is ActionKind.DRAIN}
    assert len(drained) == plan.count(ActionKind.DRAIN)
    assert len(drained) <= max(0, plan.capacity - plan.desired_workers)
    by_id = {w.id: w for w in snapshot.workers}
    for d in (by_id[i] for i in drained if i is not None):
        assert d.status is WorkerStatus.ACTIVE and d.id not in busy, d
        d_idle = d.idle_since()
        assert d_idle is not None
        # Anyone idle longer who has lived at least as long would have gone first.
        for u in snapshot.workers:
            u_idle = u.idle_since()
            if (
                u.id in drained
                or u.status is not WorkerStatus.ACTIVE
                or u.id in busy
                or u_idle is None
            ):
                continue
            assert not (u_idle < d_idle and u.created_at <= d.created_at), (u.id, d.id)
    backward = decide(world.build(reverse=True), cfg)
    assert {a.worker_id for a in backward.actions if a.kind is ActionKind.DRAIN} == drained
