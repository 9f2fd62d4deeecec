"""`orch_apply_writes` against the real database: many actions' writes in one call,
with the semantics of separate calls (each write checks the lease, a lost
compare-and-set ends its action, a failed action leaves no trace) and none of a
batch applied once the lease is lost. And the executor: a cycle's writes cost a
constant number of calls however many actions it takes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from store_writes import write

from gpu_orchestrator.errors import LeaseLost
from gpu_orchestrator.executor import ActionResult, Executor
from gpu_orchestrator.loop import LEASE_NAME
from gpu_orchestrator.models import (
    Action,
    ActionKind,
    Expected,
    Plan,
    Pod,
    QueueStats,
    Reason,
    Snapshot,
    WorkerStatus,
    WorkerView,
)
from gpu_orchestrator.providers.base import PodSpec
from gpu_orchestrator.store import writes
from gpu_orchestrator.store.base import Fence
from gpu_orchestrator.store.postgres import PostgresStore
from gpu_orchestrator.store.writes import GroupAnswer, Write
from gpu_orchestrator.write_barrier import WriteBarrier


async def _fence(store: PostgresStore, holder: str = "a") -> Fence:
    lease = await store.acquire_lease(LEASE_NAME, holder, 30)
    return Fence(LEASE_NAME, lease.epoch, time.monotonic() + 30)


async def _statuses(store: PostgresStore) -> dict[str, str]:
    rows = await store.pool.fetch("select id, status from workers order by id")
    return {r["id"]: r["status"] for r in rows}


async def test_a_batch_applies_each_action_and_answers_each_write(store: PostgresStore) -> None:
    fence = await _fence(store)
    answers = await store.apply_writes(
        [
            [writes.create_worker("gpu-1", "local", {"reason": "queue_demand"})],
            [writes.create_worker("gpu-2", "local", {"reason": "queue_demand"})],
            [writes.record_event("breaker_opened", "a", "breaker_tripped", {"n": 1})],
        ],
        fence=fence,
    )
    assert [a.error for a in answers] == [None, None, None]
    assert answers[0].answers == (None,)
    assert answers[2].answers[0]["kind"] == "breaker_opened"
    answers = await store.apply_writes(
        [
            [
                writes.record_pod("gpu-1", "pod-1", 0.44),
                writes.transition_worker(
                    "gpu-1", WorkerStatus.ERROR, Reason.BOOT_TIMEOUT, released=True
                ),
            ],
            [writes.record_pod_sightings(["gpu-2"], [])],
        ],
        fence=fence,
    )
    assert answers == [GroupAnswer((True, True)), GroupAnswer((None,))]
    row = await store.pool.fetchrow(
        "select pod_id, status, terminated_at is not null as released from workers "
        "where id = 'gpu-1'"
    )
    assert tuple(row) == ("pod-1", "error", True)
    assert await store.pool.fetchval(
        "select pod_missing_since is not null from workers where id = 'gpu-2'"
    )


async def test_a_lost_compare_and_set_ends_its_action_only(store: PostgresStore) -> None:
    fence = await _fence(store)
    await write(store, writes.create_worker("gpu-1", "local", {}), fence=fence)
    await write(store, writes.create_worker("gpu-2", "local", {}), fence=fence)
    drain = writes.transition_worker(  # the plan judged it active: it is spawning
        "gpu-1",
        WorkerStatus.TERMINATING,
        Reason.SCALED_DOWN,
        expect=Expected(WorkerStatus.ACTIVE, idle=True),
    )
    answers = await store.apply_writes(
        [
            [drain, writes.mark_released("gpu-1")],
            [writes.transition_worker("gpu-2", WorkerStatus.TERMINATING, Reason.MANUAL)],
        ],
        fence=fence,
    )
    assert answers == [GroupAnswer((False,)), GroupAnswer((True,))]
    assert await _statuses(store) == {"gpu-1": "spawning", "gpu-2": "terminating"}
    assert (
        await store.pool.fetchval("select terminated_at from workers where id = 'gpu-1'") is None
    )  # the write after the lost compare-and-set did not run


async def test_a_failed_action_leaves_no_trace_and_the_others_apply(
    store: PostgresStore,
) -> None:
    fence = await _fence(store)
    await write(store, writes.create_worker("gpu-1", "local", {}), fence=fence)
    answers = await store.apply_writes(
        [
            # its second write fails (the id exists): its first is undone too
            [
                writes.create_worker("gpu-2", "local", {}),
                writes.create_worker("gpu-1", "local", {}),
            ],
            [writes.create_worker("gpu-3", "local", {})],
            [Write("no_such_write", {})],
        ],
        fence=fence,
    )
    assert answers[0].error is not None and "23505" in str(answers[0].error)
    assert answers[1] == GroupAnswer((None,))
    assert answers[2].error is not None and "no_such_write" in str(answers[2].error)
    assert await _statuses(store) == {"gpu-1": "spawning", "gpu-3": "spawning"}


async def test_a_lost_lease_applies_none_of_the_batch(store: PostgresStore) -> None:
    fence = await _fence(store, "a")
    await write(store, writes.create_worker("gpu-1", "local", {}), fence=fence)
    await store.release_lease(LEASE_NAME, "a")
    await _fence(store, "b")
    with pytest.raises(LeaseLost):
        await store.apply_writes(
            [
                [writes.create_worker("gpu-2", "local", {})],
                [writes.transition_worker("gpu-1", WorkerStatus.ERROR, Reason.CRASHED)],
                [writes.release_tasks("gpu-1", None, 3, "x")],
            ],
            fence=fence,
        )
    assert await _statuses(store) == {"gpu-1": "spawning"}
    assert await store.pool.fetchval("select count(*) from worker_events") == 1


async def test_a_heartbeat_judgment_goes_through_the_batch_unchanged(
    store: PostgresStore,
) -> None:
    # The plan's last-heartbeat time travels as ISO text: a newer beat still voids it.
    fence = await _fence(store)
    await write(store, writes.create_worker("gpu-1", "local", {}), fence=fence)
    await store.heartbeat("gpu-1", [], None)
    seen = await store.pool.fetchval("select last_heartbeat from workers where id = 'gpu-1'")
    stale = writes.transition_worker(
        "gpu-1",
        WorkerStatus.ERROR,
        Reason.HEARTBEAT_LOST,
        expect=Expected(WorkerStatus.ACTIVE, datetime(2020, 1, 1, tzinfo=UTC), True),
    )
    fresh = writes.transition_worker(
        "gpu-1",
        WorkerStatus.ERROR,
        Reason.HEARTBEAT_LOST,
        expect=Expected(WorkerStatus.ACTIVE, seen, True),
    )
    assert await store.apply_writes([[stale]], fence=fence) == [GroupAnswer((False,))]
    assert await store.apply_writes([[fresh]], fence=fence) == [GroupAnswer((True,))]


class _CountingStore:
    """The real store, counting the batches it is sent."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.batches: list[int] = []  # groups per call

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def apply_writes(
        self, groups: Sequence[Sequence[Write]], *, fence: Fence | None
    ) -> list[GroupAnswer]:
        self.batches.append(len(groups))
        return await self._store.apply_writes(groups, fence=fence)


class _Pods:
    name = "local"

    def __init__(self, create_sec: float = 0.0) -> None:
        self.created: list[str] = []
        self.terminated: list[str] = []
        self._create_sec = create_sec  # how long a create takes

    async def create_pod(self, spec: PodSpec) -> Pod:
        await asyncio.sleep(self._create_sec)
        self.created.append(spec.worker_id)
        return Pod(f"pod-{spec.worker_id}", spec.worker_id, running=True)

    async def list_pods(self) -> list[Pod]:
        return []

    async def terminate_pod(self, worker_id: str, pod_id: str | None) -> None:
        self.terminated.append(worker_id)

    async def aclose(self) -> None:
        pass


async def _silent_workers(
    store: PostgresStore, fence: Fence, count: int
) -> tuple[tuple[WorkerView, ...], list[Action]]:
    """`count` active workers, and the plan's FAIL for each."""
    silent = [f"gpu-{n}" for n in range(count)]
    for worker_id in silent:
        await write(store, writes.create_worker(worker_id, "local", {}), fence=fence)
        await store.heartbeat(worker_id, [], None)
    now = await store.pool.fetchval("select now()")
    views = tuple(
        WorkerView(w, WorkerStatus.ACTIVE, now, now, None, None, None, None, pod_id=f"pod-{w}")
        for w in silent
    )
    fails = [
        Action(
            ActionKind.FAIL,
            Reason.CRASHED,
            "test",
            worker_id=w,
            expect=Expected(WorkerStatus.ACTIVE),
        )
        for w in silent
    ]
    return views, fails


async def _apply(
    store: _CountingStore,
    pods: _Pods,
    views: tuple[WorkerView, ...],
    actions: list[Action],
    fence: Fence,
) -> list[ActionResult]:
    executor = Executor(
        store,  # type: ignore[arg-type]
        pods,
        lambda worker_id: {},
        name_prefix="gpu",
        max_task_attempts=3,
        actor="test",
    )
    now = views[0].created_at
    snapshot = Snapshot(now=now, workers=views, holds=(), queue=QueueStats(0, None))
    plan = Plan(tuple(actions), desired_workers=0, capacity=0, unmet_demand=0)
    return await executor.apply(plan, snapshot, asyncio.Event(), fence)


async def test_a_slow_launch_does_not_hold_back_the_writes_of_quicker_actions(
    store: PostgresStore,
) -> None:
    fence = await _fence(store)
    views, fails = await _silent_workers(store, fence, 1)
    counting = _CountingStore(store)
    spawn = Action(ActionKind.SPAWN, Reason.QUEUE_DEMAND, "test", offering="local")
    results = await _apply(counting, _Pods(create_sec=0.5), views, [*fails, spawn], fence)
    assert [r.outcome for r in results] == ["done", "done"]
    # together before the provider; the failure's release while the launch still waits
    assert counting.batches == [2, 1, 1]


@pytest.mark.parametrize("spawns,failures", [(2, 1), (12, 9)])
async def test_a_cycles_writes_cost_the_same_calls_however_many_actions(
    store: PostgresStore, spawns: int, failures: int
) -> None:
    fence = await _fence(store)
    views, fails = await _silent_workers(store, fence, failures)
    silent = [w.id for w in views]
    spawn = Action(ActionKind.SPAWN, Reason.QUEUE_DEMAND, "test", offering="local")
    actions = [*fails, *[spawn] * spawns]
    counting = _CountingStore(store)
    pods = _Pods()
    results = await _apply(counting, pods, views, actions, fence)

    assert {(r.kind, r.outcome) for r in results} == {
        (ActionKind.FAIL, "done"),
        (ActionKind.SPAWN, "done"),
    }
    assert sorted(pods.terminated) == sorted(silent) and len(pods.created) == spawns
    # first wave (the failures and one launch): before and after the provider;
    # second wave (the other launches): the same
    assert counting.batches == [failures + 1, failures + 1, spawns - 1, spawns - 1]
    statuses = await _statuses(store)
    assert [statuses[w] for w in silent] == ["error"] * failures
    assert list(statuses.values()).count("spawning") == spawns
    assert (
        await store.pool.fetchval("select count(*) from workers where terminated_at is not null")
        == failures
    )


async def test_writes_of_a_cancelled_action_are_never_sent(store: PostgresStore) -> None:
    counting = _CountingStore(store)
    barrier = WriteBarrier(counting, None, members=2)  # type: ignore[arg-type]
    waiting = asyncio.create_task(barrier.write(writes.create_worker("gpu-1", "local", {})))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await barrier.leave()  # the last member: the barrier opens, with nothing to send
    assert counting.batches == []
    assert await _statuses(store) == {}
