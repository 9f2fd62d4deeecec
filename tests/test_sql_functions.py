"""The SQL functions of the migrations, called through `PostgresStore` on a real
Postgres (a fresh migrated database per test)."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from store_writes import write

from gpu_orchestrator.errors import StoreError
from gpu_orchestrator.models import Reason, WorkerStatus
from gpu_orchestrator.store import writes
from gpu_orchestrator.store.postgres import PostgresStore
from gpu_orchestrator.store.snapshot import parse_snapshot

# ---------------------------------------------------------------------------
# helpers


async def _add_tasks(store: PostgresStore, count: int, *, minutes_ago: int = 0) -> list[str]:
    """Adds `count` tasks, the first the oldest (one second apart); returns their ids."""
    rows = await store.pool.fetch(
        """insert into tasks (task_type, params, created_at)
           select 'demo', jsonb_build_object('n', i),
                  now() - make_interval(mins => $2) - make_interval(secs => $1 - i)
           from generate_series(1, $1) i
           returning id::text""",
        count,
        minutes_ago,
    )
    return [r["id"] for r in rows]


async def _worker(store: PostgresStore, worker_id: str, status: str = "active") -> None:
    """A worker row brought to `status` along the real transitions."""
    await write(store, writes.create_worker(worker_id, "local", {"reason": "queue_demand"}))
    if status == "spawning":
        return
    if status in ("active", "terminating", "terminated"):
        await store.heartbeat(worker_id, [], None)
    if status in ("terminating", "terminated"):
        assert await store.transition_worker(
            worker_id, WorkerStatus.TERMINATING, Reason.SCALED_DOWN, fence=None
        )
    if status == "terminated":
        assert await store.transition_worker(
            worker_id, WorkerStatus.TERMINATED, Reason.DRAINED, released=True, fence=None
        )
    if status == "error":
        assert await store.transition_worker(
            worker_id, WorkerStatus.ERROR, Reason.BOOT_TIMEOUT, fence=None
        )
    assert await _status(store, worker_id) == status


async def _status(store: PostgresStore, worker_id: str) -> str | None:
    status: str | None = await store.pool.fetchval(
        "select status from workers where id = $1", worker_id
    )
    return status


async def _task(store: PostgresStore, task_id: str) -> dict[str, Any]:
    row = await store.pool.fetchrow("select * from tasks where id = $1::uuid", task_id)
    assert row is not None
    return dict(row)


async def _events(store: PostgresStore, worker_id: str) -> list[tuple[str, str | None]]:
    rows = await store.pool.fetch(
        "select kind, reason from worker_events where worker_id = $1 order by id", worker_id
    )
    return [(r["kind"], r["reason"]) for r in rows]


# ---------------------------------------------------------------------------
# claiming


async def test_concurrent_claimers_take_each_task_exactly_once_until_the_queue_is_empty(
    store: PostgresStore, dsn: str
) -> None:
    claimers = [f"gpu-{i:02d}" for i in range(16)]
    for worker_id in claimers:
        await _worker(store, worker_id, "active")
    task_ids = await _add_tasks(store, 500)
    start = asyncio.Barrier(len(claimers))

    # Queued tasks left when each claimer was first told "nothing to claim".
    left_at_empty: list[int] = []

    async def claim_all(worker_id: str) -> list[str]:
        # Its own connection, as a separate worker process would have.
        conn = await asyncpg.connect(dsn)
        try:
            await start.wait()
            got: list[str] = []
            while (
                task_id := await conn.fetchval(
                    "select id::text from func_claim_available_task($1)", worker_id
                )
            ) is not None:
                got.append(task_id)
            left_at_empty.append(
                await conn.fetchval("select count(*) from tasks where status = 'Queued'")
            )
            return got
        finally:
            await conn.close()

    per_worker = await asyncio.gather(*(claim_all(w) for w in claimers))

    claimed = [task_id for got in per_worker for task_id in got]
    assert len(claimed) == 500 and set(claimed) == set(task_ids)  # each exactly once
    holders = {
        r["id"]: r["worker_id"]
        for r in await store.pool.fetch(
            "select id::text, worker_id from tasks where status = 'In Progress'"
        )
    }
    assert holders == {t: w for w, got in zip(claimers, per_worker, strict=True) for t in got}
    # A claimer is only turned away when every queued task is being claimed by
    # another one at that moment: losing a race must not look like an empty queue.
    assert max(left_at_empty) < len(claimers)
    assert sum(1 for got in per_worker if got) > 1  # the claims really interleaved


async def test_claim_returns_the_oldest_queued_task_first(store: PostgresStore) -> None:
    await _worker(store, "gpu-1")
    older = await _add_tasks(store, 3, minutes_ago=10)
    newer = await _add_tasks(store, 2)
    got = [await store.claim_task("gpu-1") for _ in range(5)]
    assert [t["id"] for t in got if t] == older + newer
    assert got[0] is not None and got[0]["params"] == {"n": 1} and got[0]["attempts"] == 0
    task = await _task(store, older[0])
    assert task["status"] == "In Progress" and task["worker_id"] == "gpu-1"
    assert task["generation_started_at"] is not None


async def test_claim_returns_nothing_when_the_queue_is_empty(store: PostgresStore) -> None:
    await _worker(store, "gpu-1")
    assert await store.claim_task("gpu-1") is None


async def test_claim_skips_tasks_that_are_not_gpu_tasks(store: PostgresStore) -> None:
    await _worker(store, "gpu-1")
    [task_id] = await _add_tasks(store, 1)
    await store.pool.execute("update tasks set run_type = 'api' where id = $1::uuid", task_id)
    assert await store.claim_task("gpu-1") is None


@pytest.mark.parametrize("status", ["unknown", "terminating", "terminated", "error"])
async def test_claim_returns_nothing_to_a_worker_that_may_not_claim(
    store: PostgresStore, status: str
) -> None:
    if status != "unknown":
        await _worker(store, "gpu-1", status)
    [task_id] = await _add_tasks(store, 1)
    assert await store.claim_task("gpu-1") is None
    assert (await _task(store, task_id))["status"] == "Queued"


async def test_a_draining_worker_may_not_claim_even_when_a_legacy_heartbeat_reset_its_status(
    store: PostgresStore,
) -> None:
    await _worker(store, "gpu-1", "terminating")
    # The worker of the system we replace sets `status = 'active'` on every heartbeat.
    await store.pool.execute("update workers set status = 'active' where id = 'gpu-1'")
    await _add_tasks(store, 1)
    assert await store.claim_task("gpu-1") is None
    assert (await store.heartbeat("gpu-1", [], None))["should_drain"] is True


async def test_a_spawning_worker_may_claim(store: PostgresStore) -> None:
    # The worker may claim before its first heartbeat has been recorded.
    await _worker(store, "gpu-1", "spawning")
    [task_id] = await _add_tasks(store, 1)
    claimed = await store.claim_task("gpu-1")
    assert claimed is not None and claimed["id"] == task_id


# ---------------------------------------------------------------------------
# heartbeat


async def test_first_heartbeat_makes_a_spawning_worker_active_and_records_an_event(
    store: PostgresStore,
) -> None:
    await _worker(store, "gpu-1", "spawning")
    answer = await store.heartbeat("gpu-1", [], None)
    assert answer["success"] is True and answer["should_drain"] is False
    row = await store.pool.fetchrow("select * from workers where id = 'gpu-1'")
    assert row is not None
    assert row["status"] == "active" and row["ready_at"] is not None
    assert row["last_heartbeat"] is not None
    assert await _events(store, "gpu-1") == [
        ("spawning", "queue_demand"),
        ("active", "first_heartbeat"),
    ]

    ready_at = row["ready_at"]
    await store.heartbeat("gpu-1", [], None)
    assert await store.pool.fetchval("select ready_at from workers where id = 'gpu-1'") == ready_at
    assert len(await _events(store, "gpu-1")) == 2  # no event without a transition


@pytest.mark.parametrize("status", ["terminating", "terminated", "error"])
async def test_heartbeat_never_revives_a_draining_or_finished_worker(
    store: PostgresStore, status: str
) -> None:
    await _worker(store, "gpu-1", status)
    events_before = await _events(store, "gpu-1")
    answer = await store.heartbeat("gpu-1", [], None, status="active")
    assert answer["success"] is True and answer["should_drain"] is True
    assert await _status(store, "gpu-1") == status
    assert await _events(store, "gpu-1") == events_before


async def test_heartbeat_reporting_a_crash_moves_the_worker_to_error(store: PostgresStore) -> None:
    await _worker(store, "gpu-1", "active")
    answer = await store.heartbeat("gpu-1", [], None, status="crashed")
    assert answer["should_drain"] is True
    row = await store.pool.fetchrow("select * from workers where id = 'gpu-1'")
    assert row is not None and row["status"] == "error" and row["termination_reason"] == "crashed"
    assert row["failed_at"] is not None
    assert (await _events(store, "gpu-1"))[-1] == ("error", "crashed")


async def test_heartbeat_of_an_unknown_worker_tells_it_to_drain(store: PostgresStore) -> None:
    answer = await store.heartbeat("ghost", [{"message": "hello"}], None)
    assert answer["success"] is False and answer["should_drain"] is True
    assert await store.pool.fetchval("select count(*) from workers") == 0


async def test_heartbeat_stores_log_lines_and_drops_what_it_cannot_read(
    store: PostgresStore,
) -> None:
    await _worker(store, "gpu-1", "active")
    logs: list[Any] = [
        {
            "timestamp": "2024-05-01T12:00:00+00:00",
            "level": "warning",
            "message": "hot",
            "task_id": "t-1",
            "metadata": {"temp_c": 91},
        },
        {"timestamp": "yesterday-ish", "message": "bad clock"},
        "not an object",
        {"message": "no level", "metadata": "not an object"},
    ]
    answer = await store.heartbeat("gpu-1", logs, "t-1")
    assert answer["success"] is True
    rows = await store.pool.fetch(
        "select * from system_logs where worker_id = 'gpu-1' order by message"
    )
    by_message = {r["message"]: r for r in rows}
    assert sorted(by_message) == ["bad clock", "hot", "no level"]
    hot = by_message["hot"]
    assert hot["log_level"] == "WARNING" and hot["task_id"] == "t-1"
    assert hot["timestamp"].isoformat() == "2024-05-01T12:00:00+00:00"
    assert hot["metadata"] == {"temp_c": 91} and hot["source_type"] == "worker"
    now = await store.pool.fetchval("select now()")
    assert abs(by_message["bad clock"]["timestamp"] - now) < timedelta(minutes=1)
    assert by_message["no level"]["log_level"] == "INFO"
    assert by_message["no level"]["metadata"] == {}
    metadata = await store.pool.fetchval("select metadata from workers where id = 'gpu-1'")
    assert metadata["current_task_id"] == "t-1"


async def test_heartbeat_with_logs_that_are_not_a_list_still_succeeds(
    store: PostgresStore,
) -> None:
    await _worker(store, "gpu-1", "active")
    answer = await store.pool.fetchval(
        "select func_worker_heartbeat_with_logs('gpu-1', 24000, 1000, $1::jsonb)",
        json.dumps({"message": "not a list"}),
    )
    assert answer["success"] is True
    assert await store.pool.fetchval("select count(*) from system_logs") == 0
    metadata = await store.pool.fetchval("select metadata from workers where id = 'gpu-1'")
    assert metadata["vram_total_mb"] == 24000 and metadata["reason"] == "queue_demand"


# ---------------------------------------------------------------------------
# completing, failing, releasing


async def test_complete_moves_only_an_in_progress_task_of_its_holder_and_credits_it(
    store: PostgresStore,
) -> None:
    await _worker(store, "gpu-1")
    await _worker(store, "gpu-2")
    [queued, held] = await _add_tasks(store, 2)
    claimed = await store.claim_task("gpu-1")
    assert claimed is not None and claimed["id"] == queued
    assert await store.complete_task(held, "gpu-1", {}) is False  # still Queued
    assert (await _task(store, held))["status"] == "Queued"

    assert await store.complete_task(queued, "gpu-2", {"x": 1}) is False  # not its holder
    assert (await _task(store, queued))["status"] == "In Progress"

    assert await store.complete_task(queued, "gpu-1", {"output_location": "s3://b/k"}) is True
    task = await _task(store, queued)
    assert task["status"] == "Complete" and task["output_location"] == "s3://b/k"
    assert task["result_data"] == {"output_location": "s3://b/k"}
    assert task["generation_processed_at"] is not None
    worker = await store.pool.fetchrow("select * from workers where id = 'gpu-1'")
    assert worker is not None
    assert worker["tasks_completed"] == 1 and worker["last_task_finished_at"] is not None
    other = await store.pool.fetchrow("select * from workers where id = 'gpu-2'")
    assert other is not None and other["tasks_completed"] == 0

    assert await store.complete_task(queued, "gpu-1", {}) is False  # already Complete
    assert await store.pool.fetchval("select tasks_completed from workers where id = 'gpu-1'") == 1


async def test_complete_without_a_worker_id_completes_whoever_holds_it(
    store: PostgresStore,
) -> None:
    await _worker(store, "gpu-1")
    [task_id] = await _add_tasks(store, 1)
    await store.claim_task("gpu-1")
    out = await store.pool.fetchval("select func_mark_task_complete($1::uuid, null)", task_id)
    assert out == {"success": True}
    assert (await _task(store, task_id))["status"] == "Complete"


async def test_failed_task_is_requeued_below_the_limit_and_dead_lettered_at_it(
    store: PostgresStore,
) -> None:
    await _worker(store, "gpu-1")
    [task_id] = await _add_tasks(store, 1)
    for attempt in (1, 2):
        assert await store.claim_task("gpu-1") is not None
        assert await store.fail_task(task_id, "gpu-1", f"oom {attempt}", max_attempts=3)
        task = await _task(store, task_id)
        assert task["status"] == "Queued" and task["attempts"] == attempt
        assert task["worker_id"] is None and task["generation_started_at"] is None
    assert await store.claim_task("gpu-1") is not None
    assert await store.fail_task(task_id, "gpu-1", "oom 3", max_attempts=3)
    task = await _task(store, task_id)
    assert task["status"] == "Failed" and task["attempts"] == 3
    assert task["error_message"] == "oom 3" and task["generation_processed_at"] is not None
    assert await store.claim_task("gpu-1") is None
    assert await store.fail_task(task_id, "gpu-1", "again", max_attempts=3) is False
    assert (await _task(store, task_id))["attempts"] == 3


async def test_fail_leaves_a_task_held_by_another_worker_untouched(store: PostgresStore) -> None:
    await _worker(store, "gpu-1")
    await _worker(store, "gpu-2")
    [task_id] = await _add_tasks(store, 1)
    await store.claim_task("gpu-1")
    assert await store.fail_task(task_id, "gpu-2", "not mine", max_attempts=3) is False
    task = await _task(store, task_id)
    assert task["status"] == "In Progress" and task["worker_id"] == "gpu-1"
    assert task["attempts"] == 0 and task["error_message"] is None


async def test_release_requeues_a_workers_tasks_and_dead_letters_those_at_the_limit(
    store: PostgresStore,
) -> None:
    await _worker(store, "gpu-1")
    await _worker(store, "gpu-2")
    fresh, worn, elsewhere = await _add_tasks(store, 3)
    await store.pool.execute("update tasks set attempts = 2 where id = $1::uuid", worn)
    for _ in range(2):
        await store.claim_task("gpu-1")
    await store.claim_task("gpu-2")

    released = await write(store, writes.release_tasks("gpu-1", None, 3, "heartbeat_lost"))
    assert released.requeued == (fresh,) and released.failed == (worn,)
    assert (await _task(store, fresh))["status"] == "Queued"
    assert (await _task(store, fresh))["attempts"] == 1
    dead = await _task(store, worn)
    assert dead["status"] == "Failed" and dead["attempts"] == 3
    assert dead["error_message"] == "heartbeat_lost"
    other = await _task(store, elsewhere)
    assert other["status"] == "In Progress" and other["worker_id"] == "gpu-2"
    assert other["attempts"] == 0
    assert (
        await store.pool.fetchval("select last_task_finished_at from workers where id = 'gpu-1'")
        is not None
    )

    again = await write(store, writes.release_tasks("gpu-1", None, 3, "heartbeat_lost"))
    assert again.requeued == () and again.failed == ()


async def test_release_of_one_task_leaves_the_workers_other_tasks_and_finished_tasks(
    store: PostgresStore,
) -> None:
    await _worker(store, "gpu-1")
    first, second = await _add_tasks(store, 2)
    await store.claim_task("gpu-1")
    await store.claim_task("gpu-1")
    released = await write(store, writes.release_tasks("gpu-1", second, 3, "stuck_task"))
    assert released.requeued == (second,)
    assert (await _task(store, first))["status"] == "In Progress"

    assert await store.complete_task(first, "gpu-1", {})
    late = await write(store, writes.release_tasks("gpu-1", first, 3, "stuck_task"))
    assert late.requeued == () and late.failed == ()
    assert (await _task(store, first))["status"] == "Complete"


async def test_orphaned_tasks_are_requeued_by_their_old_holder_or_by_no_holder(
    store: PostgresStore,
) -> None:
    by_gone_worker, by_nobody = await _add_tasks(store, 2)
    await store.pool.execute(
        """update tasks set status = 'In Progress', generation_started_at = now(),
                  worker_id = case when id = $1::uuid then 'gone-worker' end""",
        by_gone_worker,
    )
    out = await write(store, writes.release_tasks("gone-worker", by_gone_worker, 3, "orphan"))
    assert out.requeued == (by_gone_worker,)
    out = await write(store, writes.release_tasks(None, by_nobody, 3, "orphan"))
    assert out.requeued == (by_nobody,)
    for task_id in (by_gone_worker, by_nobody):
        task = await _task(store, task_id)
        assert task["status"] == "Queued" and task["attempts"] == 1
        assert task["error_message"] == "orphan"


async def _dies_holding(store: PostgresStore, worker_id: str, reason: Reason):
    """The executor's order: the worker is failed first, then what it held released."""
    assert await store.transition_worker(worker_id, WorkerStatus.ERROR, reason, fence=None)
    return await write(
        store, writes.release_tasks(worker_id, None, 5, reason.value, holder_died=True)
    )


async def test_a_task_held_by_two_workers_that_died_while_others_worked_is_quarantined(
    store: PostgresStore,
) -> None:
    await store.set_setting("max_task_attempts", 5)
    for worker_id in ("gpu-1", "gpu-2", "gpu-3"):
        await _worker(store, worker_id)
    [task_id, other] = await _add_tasks(store, 2)
    assert (await store.claim_task("gpu-1"))["id"] == task_id
    first = await _dies_holding(store, "gpu-1", Reason.HEARTBEAT_LOST)
    assert first.requeued == (task_id,) and first.quarantined == ()

    # The platform works meanwhile: another worker completes another task.
    claimed = await store.claim_task("gpu-3")
    assert claimed is not None and claimed["id"] == task_id
    await write(store, writes.release_tasks("gpu-3", None, 5, "drained", holder_died=False))
    assert (await store.claim_task("gpu-3"))["id"] == task_id  # oldest first
    assert (await store.claim_task("gpu-3"))["id"] == other
    await store.complete_task(other, "gpu-3", {"ok": True})
    await write(store, writes.release_tasks("gpu-3", task_id, 5, "drained", holder_died=False))

    await store.claim_task("gpu-2")
    second = await _dies_holding(store, "gpu-2", Reason.CRASHED)
    assert second.quarantined == (task_id,) and second.requeued == second.failed == ()
    task = await _task(store, task_id)
    assert task["status"] == "Failed" and task["quarantined_at"] is not None
    assert task["lost_by"] == ["gpu-1", "gpu-2"]
    assert "gpu-1" in task["error_message"] and "gpu-2" in task["error_message"]
    caused = await store.pool.fetch("select id from workers where task_caused order by id")
    assert [r["id"] for r in caused] == ["gpu-1", "gpu-2"]
    assert ("reclassified", "task_caused") in await _events(store, "gpu-1")
    assert await store.claim_task("gpu-3") is None


async def test_when_every_worker_dies_the_deaths_are_the_platforms_and_count(
    store: PostgresStore,
) -> None:
    """Nothing completed while the task killed its holders: the platform is not shown
    to work, so no death is reclassified and the task follows the attempts rule."""
    await store.set_setting("max_task_attempts", 5)
    for worker_id in ("gpu-1", "gpu-2", "gpu-3"):
        await _worker(store, worker_id)
    [task_id] = await _add_tasks(store, 1)
    for worker_id in ("gpu-1", "gpu-2", "gpu-3"):
        assert (await store.claim_task(worker_id))["id"] == task_id
        out = await _dies_holding(store, worker_id, Reason.CRASHED)
        assert out.requeued == (task_id,) and out.quarantined == ()
    task = await _task(store, task_id)
    assert (task["status"], task["attempts"], task["quarantined_at"]) == ("Queued", 3, None)
    caused = await store.pool.fetchval("select count(*) from workers where task_caused")
    assert caused == 0


async def test_the_attempts_limit_is_the_databases_whatever_a_caller_passes(
    store: PostgresStore,
) -> None:
    await store.set_setting("max_task_attempts", 2)
    await _worker(store, "gpu-1")
    [task_id] = await _add_tasks(store, 1)
    outcomes = []
    for limit in (None, 99):  # a worker passing nothing, or its own higher limit
        assert (await store.claim_task("gpu-1"))["id"] == task_id
        await store.pool.execute(
            "select func_mark_task_failed($1::uuid, 'boom', 'gpu-1', $2)", task_id, limit
        )
        outcomes.append((await _task(store, task_id))["status"])
    assert outcomes == ["Queued", "Failed"]  # dead-lettered at 2, not 99 nor never
    # A queued task already at the limit is never handed out, and maintenance
    # dead-letters it.
    [stale] = await _add_tasks(store, 1)
    await store.pool.execute("update tasks set attempts = 2 where id = $1::uuid", stale)
    assert await store.claim_task("gpu-1") is None
    await store.pool.execute(
        "insert into system_logs (timestamp, source_type, message) values"
        " (now() - interval '2 days', 'worker', 'old'), (now(), 'worker', 'new')"
    )
    done = await store.maintenance(86400, fence=None)
    assert done == {"logs_pruned": 1, "tasks_dead_lettered": 1}
    assert (await _task(store, stale))["status"] == "Failed"
    kept = await store.pool.fetch("select message from system_logs")
    assert [r["message"] for r in kept] == ["new"]


# ---------------------------------------------------------------------------
# worker transitions


# DESIGN §4, edge by edge, with a reason each edge is taken for.
ALLOWED_EDGES = [
    ("spawning", WorkerStatus.ACTIVE, Reason.QUEUE_DEMAND),
    ("spawning", WorkerStatus.TERMINATING, Reason.SCALED_DOWN),
    ("spawning", WorkerStatus.ERROR, Reason.BOOT_TIMEOUT),
    ("active", WorkerStatus.TERMINATING, Reason.SCALED_DOWN),
    ("active", WorkerStatus.ERROR, Reason.HEARTBEAT_LOST),
    ("terminating", WorkerStatus.TERMINATED, Reason.DRAINED),
    ("terminating", WorkerStatus.ERROR, Reason.STUCK_TASK),
]
OUR_STATUSES = ["spawning", "active", "terminating", "terminated", "error"]


async def test_every_allowed_transition_moves_the_worker_and_writes_one_event(
    store: PostgresStore,
) -> None:
    # One worker per edge, all in one database (a database per case is slow).
    for n, (start, to, reason) in enumerate(ALLOWED_EDGES):
        worker_id = f"gpu-{n}"
        edge = f"{start} -> {to.value}"
        await _worker(store, worker_id, start)
        before = await store.pool.fetchval("select max(id) from worker_events")
        assert (
            await store.transition_worker(worker_id, to, reason, {"why": "test"}, fence=None)
            is True
        ), edge
        assert await _status(store, worker_id) == to.value, edge
        events = await store.pool.fetch("select * from worker_events where id > $1", before)
        assert [(e["worker_id"], e["kind"], e["reason"], e["detail"]) for e in events] == [
            (worker_id, to.value, reason.value, {"why": "test"})
        ], edge
        row = await store.pool.fetchrow("select * from workers where id = $1", worker_id)
        assert row is not None
        draining = to is WorkerStatus.TERMINATING or start == "terminating"
        assert (row["drain_requested_at"] is not None) == draining, edge
        assert (row["terminated_at"] is not None) == (to is WorkerStatus.TERMINATED), edge
        assert (row["failed_at"] is not None) == (to is WorkerStatus.ERROR), edge
        if to in (WorkerStatus.ERROR, WorkerStatus.TERMINATED):
            assert row["termination_reason"] == reason.value, edge


async def test_a_transition_from_a_status_not_allowed_changes_nothing(
    store: PostgresStore,
) -> None:
    allowed = {(start, to.value) for start, to, _ in ALLOWED_EDGES}
    forbidden = [
        (start, to) for start in OUR_STATUSES for to in OUR_STATUSES if (start, to) not in allowed
    ]
    assert len(forbidden) == 25 - 7
    for n, (start, to) in enumerate(forbidden):
        worker_id = f"gpu-{n}"
        await _worker(store, worker_id, start)
        before = await store.pool.fetchrow("select * from workers where id = $1", worker_id)
        events = await store.pool.fetchval("select count(*) from worker_events")
        moved = await store.transition_worker(
            worker_id, WorkerStatus(to), Reason.MANUAL, fence=None
        )
        assert moved is False, f"{start} -> {to}"
        after = await store.pool.fetchrow("select * from workers where id = $1", worker_id)
        assert after == before, f"{start} -> {to}"
        assert await store.pool.fetchval("select count(*) from worker_events") == events


async def test_a_transition_of_an_unknown_worker_returns_false(store: PostgresStore) -> None:
    assert (
        await store.transition_worker("ghost", WorkerStatus.ERROR, Reason.CRASHED, fence=None)
        is False
    )
    assert await store.pool.fetchval("select count(*) from worker_events") == 0


async def test_released_transition_marks_the_pod_gone(store: PostgresStore) -> None:
    await _worker(store, "gpu-1", "active")
    assert await store.transition_worker(
        "gpu-1", WorkerStatus.ERROR, Reason.POD_VANISHED, released=True, fence=None
    )
    row = await store.pool.fetchrow("select * from workers where id = 'gpu-1'")
    assert row is not None and row["status"] == "error" and row["terminated_at"] is not None
    assert row["termination_reason"] == "pod_vanished"


async def test_mark_released_sets_terminated_at_once_with_one_event(store: PostgresStore) -> None:
    await _worker(store, "gpu-1", "error")
    await write(store, writes.mark_released("gpu-1"))
    first = await store.pool.fetchval("select terminated_at from workers where id = 'gpu-1'")
    assert first is not None
    await write(store, writes.mark_released("gpu-1"))
    assert (
        await store.pool.fetchval("select terminated_at from workers where id = 'gpu-1'") == first
    )
    assert Counter(kind for kind, _ in await _events(store, "gpu-1"))["released"] == 1


async def test_record_pod_stores_the_pod_and_an_event(store: PostgresStore) -> None:
    await _worker(store, "gpu-1", "spawning")
    await write(store, writes.record_pod("gpu-1", "pod-abc", 0.69))
    row = await store.pool.fetchrow("select pod_id, cost_per_hr from workers where id = 'gpu-1'")
    assert row is not None and row["pod_id"] == "pod-abc" and float(row["cost_per_hr"]) == 0.69
    assert (await _events(store, "gpu-1"))[-1] == ("pod_created", None)


# ---------------------------------------------------------------------------
# leader lease


async def test_the_lease_goes_to_one_holder_at_a_time(store: PostgresStore) -> None:
    first = await store.acquire_lease("leader", "orch-a", 30)
    assert first.leader and first.holder == "orch-a"
    refused = await store.acquire_lease("leader", "orch-b", 30)
    assert not refused.leader and refused.holder == "orch-a" and refused.epoch == first.epoch
    renewed = await store.acquire_lease("leader", "orch-a", 30)
    assert renewed.leader and renewed.epoch == first.epoch
    assert renewed.expires_at >= first.expires_at


async def test_an_expired_lease_passes_to_the_next_holder_with_a_higher_epoch(
    store: PostgresStore,
) -> None:
    first = await store.acquire_lease("leader", "orch-a", 0.05)
    assert first.leader
    await asyncio.sleep(0.1)
    taken = await store.acquire_lease("leader", "orch-b", 30)
    assert taken.leader and taken.holder == "orch-b" and taken.epoch > first.epoch
    late = await store.acquire_lease("leader", "orch-a", 30)
    assert not late.leader and late.holder == "orch-b"


async def test_a_released_lease_can_be_taken_at_once(store: PostgresStore) -> None:
    first = await store.acquire_lease("leader", "orch-a", 30)
    await store.release_lease("leader", "orch-b")  # not the holder: no effect
    assert not (await store.acquire_lease("leader", "orch-b", 30)).leader
    await store.release_lease("leader", "orch-a")
    taken = await store.acquire_lease("leader", "orch-b", 30)
    assert taken.leader and taken.epoch == first.epoch + 1


async def test_leases_of_different_names_are_independent(store: PostgresStore) -> None:
    assert (await store.acquire_lease("leader", "orch-a", 30)).leader
    assert (await store.acquire_lease("other", "orch-b", 30)).leader


# ---------------------------------------------------------------------------
# snapshot


class _CountingPool:
    """Wraps an asyncpg pool and records every query it is asked to run."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._pool, name)
        if name in ("fetch", "fetchrow", "fetchval", "execute", "executemany", "acquire"):

            def recorded(*args: Any, **kwargs: Any) -> Any:
                self.calls.append((name, str(args[0]) if args else ""))
                return target(*args, **kwargs)

            return recorded
        return target


async def test_the_snapshot_shows_the_fleet_its_holds_and_the_queue_in_one_call(
    store: PostgresStore,
) -> None:
    for worker_id, status in [
        ("w-spawning", "spawning"),
        ("w-active", "active"),
        ("w-draining", "terminating"),
        ("w-error", "error"),
        ("w-gone", "terminated"),
    ]:
        await _worker(store, worker_id, status)
    await _worker(store, "w-error-released", "error")
    await write(store, writes.mark_released("w-error-released"))
    await store.pool.execute("insert into workers (id, status) values ('w-old', 'inactive')")

    oldest, *_ = await _add_tasks(store, 4, minutes_ago=5)
    held = await store.claim_task("w-active")
    assert held is not None and held["id"] == oldest
    # The newest queued task is not a GPU task: neither counted nor the oldest.
    await store.pool.execute(
        """update tasks set run_type = 'api'
           where id = (select id from tasks where status = 'Queued'
                       order by created_at desc limit 1)"""
    )
    oldest_queued = await store.pool.fetchval(
        "select min(created_at) from tasks where status = 'Queued' and run_type = 'gpu'"
    )

    counting = _CountingPool(store.pool)
    snapshot = await PostgresStore(counting).observe()
    assert len(counting.calls) == 1, counting.calls
    method, sql = counting.calls[0]
    assert method == "fetchval" and "orch_snapshot(" in sql

    statuses = {w.id: w.status for w in snapshot.workers}
    assert statuses == {
        "w-spawning": WorkerStatus.SPAWNING,
        "w-active": WorkerStatus.ACTIVE,
        "w-draining": WorkerStatus.TERMINATING,
        "w-error": WorkerStatus.ERROR,
    }
    views = {w.id: w for w in snapshot.workers}
    assert views["w-active"].ready_at is not None and views["w-spawning"].ready_at is None
    assert views["w-draining"].drain_requested_at is not None
    assert views["w-error"].termination_reason is Reason.BOOT_TIMEOUT
    assert [(h.task_id, h.worker_id, h.attempts) for h in snapshot.holds] == [
        (oldest, "w-active", 0)
    ]
    assert snapshot.holds[0].started_at is not None
    assert snapshot.queue.queued == 2
    assert snapshot.queue.oldest_queued_at == oldest_queued

    db_now = await store.pool.fetchval("select now()")
    assert snapshot.now.tzinfo is not None
    assert timedelta(0) <= db_now - snapshot.now < timedelta(seconds=5)


async def test_the_snapshot_of_an_empty_database_is_empty(store: PostgresStore) -> None:
    snapshot = await store.observe()
    assert snapshot.workers == () and snapshot.holds == ()
    assert snapshot.queue.queued == 0 and snapshot.queue.oldest_queued_at is None


async def test_the_snapshot_clock_is_the_database_clock(store: PostgresStore) -> None:
    # A database whose clock zone differs from ours still yields the same instant.
    async with store.pool.acquire() as conn:
        await conn.execute("set timezone = 'Asia/Kolkata'")
        try:
            doc = await conn.fetchval("select orch_snapshot()")
            db_now = await conn.fetchval("select now()")
        finally:
            await conn.execute("reset timezone")
    assert isinstance(doc["now"], float)  # epoch seconds: no zone to misread
    parsed = parse_snapshot(doc).now
    assert parsed.tzinfo is not None
    assert timedelta(0) <= db_now - parsed < timedelta(seconds=5)


# ---------------------------------------------------------------------------
# enqueue and retention


async def test_enqueue_adds_queued_gpu_tasks(store: PostgresStore) -> None:
    added = await store.enqueue_tasks([{"task_type": "t2v", "params": {"p": 1}}, {}])
    assert added == 2
    rows = await store.pool.fetch("select task_type, params, status, run_type from tasks")
    assert sorted((r["task_type"], r["params"] == {"p": 1}) for r in rows) == [
        ("default", False),
        ("t2v", True),
    ]
    assert {(r["status"], r["run_type"]) for r in rows} == {("Queued", "gpu")}


async def test_log_retention_deletes_only_lines_older_than_the_limit(store: PostgresStore) -> None:
    await store.pool.execute(
        """insert into system_logs (timestamp, source_type, message) values
           (now() - interval '10 days', 'worker', 'old'),
           (now() - interval '8 days', 'worker', 'older than a week'),
           (now() - interval '6 days', 'worker', 'recent'),
           (now(), 'orchestrator', 'now')"""
    )
    deleted = await store.pool.fetchval("select orch_prune_system_logs(interval '7 days')")
    assert deleted == 2
    kept = await store.pool.fetch("select message from system_logs order by timestamp")
    assert [r["message"] for r in kept] == ["recent", "now"]
    assert await store.pool.fetchval("select orch_prune_system_logs(interval '7 days')") == 0


async def test_the_snapshot_says_which_rows_the_cycle_acts_on_and_which_are_history(
    store: PostgresStore,
) -> None:
    await store.pool.execute(
        """
        insert into workers (id, status, provider, created_at, ready_at, failed_at,
                             terminated_at, termination_reason)
        values ('live', 'active', 'local', now() - interval '3 hours',
                now() - interval '3 hours', null, null, null),
               ('failing', 'error', 'local', now() - interval '3 hours', null,
                now() - interval '3 hours', null, 'boot_timeout'),
               ('failed-lately', 'error', 'local', now() - interval '3 hours', null,
                now() - interval '5 minutes', now() - interval '4 minutes', 'crashed'),
               ('ended-long-ago', 'terminated', 'local', now() - interval '3 hours',
                now() - interval '3 hours', null, now() - interval '2 hours', 'drained'),
               ('external', 'external', 'local', now() - interval '3 hours', null, null,
                null, null)
        """
    )
    snapshot = await store.observe(horizon_sec=1800)
    assert sorted(w.id for w in snapshot.workers) == ["external", "failing", "live"]
    launches = {launch.worker_id: launch for launch in snapshot.launches}
    assert sorted(launches) == ["failed-lately", "live"]
    assert launches["live"].live and not launches["failed-lately"].live
    assert launches["failed-lately"].failure is Reason.CRASHED
    assert launches["failed-lately"].failed_at is not None


async def test_every_field_of_a_row_reaches_the_policy_exactly(store: PostgresStore) -> None:
    """The document is decoded straight into `WorkerView` and `Launch` by position:
    each field must be the column of its name, times to the microsecond, and a
    reason this version does not know must read as UNKNOWN, not fail the cycle."""
    await store.pool.execute(
        """
        insert into workers (id, status, provider, offering, pod_id, cost_per_hr, created_at,
                             ready_at, last_heartbeat, drain_requested_at, failed_at,
                             termination_reason, last_task_finished_at, tasks_completed,
                             probe, task_caused, pod_missing_since, fingerprint)
        values ('busy', 'terminating', 'runpod', 'A40@EU', 'pod-1', 0.79,
                now() - interval '20 minutes 0.000001 seconds',
                now() - interval '19 minutes 0.123457 seconds',
                now() - interval '3.5 seconds', now() - interval '1 minute',
                null, null, now() - interval '2 minutes 0.5 seconds', 7, true, false,
                now() - interval '30 seconds', 'fp-1'),
               ('broken', 'error', 'runpod', 'L40S@US', null, null,
                now() - interval '10 minutes', null, null, null,
                now() - interval '4 minutes', 'reason_from_a_newer_version', null, 0,
                false, true, null, null)
        """
    )
    rows = {
        r["id"]: r
        for r in await store.pool.fetch("select * from workers where id in ('busy', 'broken')")
    }
    snapshot = await store.observe(horizon_sec=1800)
    views = {w.id: w for w in snapshot.workers}
    launches = {launch.worker_id: launch for launch in snapshot.launches}

    busy, row = views["busy"], rows["busy"]
    assert busy.status is WorkerStatus.TERMINATING
    for name in (
        "created_at",
        "ready_at",
        "last_heartbeat",
        "drain_requested_at",
        "last_task_finished_at",
        "pod_missing_since",
        "tasks_completed",
        "pod_id",
    ):
        assert getattr(busy, name) == row[name], name
    assert busy.terminated_at is None and busy.termination_reason is None
    assert busy.cost_per_hr == 0.79
    assert launches["busy"] == (
        "busy",
        row["created_at"],
        "A40@EU",
        True,
        True,
        True,
        row["ready_at"],
        None,
        None,
        False,
        7,
        "fp-1",
    )
    assert views["broken"].termination_reason is Reason.UNKNOWN
    broken = launches["broken"]
    assert (broken.failure, broken.failed_at) == (Reason.UNKNOWN, rows["broken"]["failed_at"])
    assert broken.task_caused and not broken.pod_created and not broken.live


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
async def test_try_timestamptz_reads_what_a_cast_reads_and_nothing_else(
    store: PostgresStore, zone: str
) -> None:
    """Its exception-free path for ISO 8601 must agree with the plain cast it
    stands in for; whatever the cast refuses is null."""
    values = [
        "2025-12-05T10:00:00.123456+00:00",  # Python's isoformat
        "2025-12-05T10:00:00+05:30",
        "2025-12-05 10:00:00.5-07",
        "2025-12-05T10:00:00",  # no zone: the session's
        "2025-12-05",
        "2025-12-05T10:00:00.123456Z",  # not ISO to jsonpath: the cast's path
        "Dec 5 2025 10:00 UTC",
        "10:00:00",  # a time alone is no timestamp
        "2025-02-30T10:00:00+00:00",
        "not a time",
        "",
        None,
    ]
    async with store.pool.acquire() as conn:
        await conn.execute(f"set timezone = '{zone}'")
        try:
            await conn.execute(
                """create function pg_temp.cast_or_null(value text) returns timestamptz
                   language plpgsql as $$
                   begin return value::timestamptz; exception when others then return null; end
                   $$"""
            )
            rows = await conn.fetch(
                "select v, orch_try_timestamptz(v) as got, pg_temp.cast_or_null(v) as want "
                "from unnest($1::text[]) v",
                values,
            )
        finally:
            await conn.execute("reset timezone")
    assert [(r["v"], r["got"]) for r in rows] == [(r["v"], r["want"]) for r in rows]
    assert sum(r["got"] is not None for r in rows) == 7


async def test_the_snapshot_counts_task_outcomes_within_the_horizon(store: PostgresStore) -> None:
    """Of tasks created within the last day (the bound that lets an adopted
    database's (status, created_at) index keep the count cheap)."""
    await store.pool.execute(
        """
        insert into tasks (task_type, params, status, created_at, generation_processed_at)
        values ('t', '{}', 'Complete', now() - interval '10 minutes', now() - interval '5 minutes'),
               ('t', '{}', 'Complete', now() - interval '3 hours', now() - interval '1 minute'),
               ('t', '{}', 'Failed', now() - interval '9 minutes', now() - interval '4 minutes'),
               ('t', '{}', 'Complete', now() - interval '3 hours', now() - interval '2 hours'),
               ('t', '{}', 'Complete', now() - interval '2 days', now() - interval '5 minutes')
        """
    )
    queue = (await store.observe(horizon_sec=1800)).queue
    assert (queue.completed_recently, queue.failed_recently) == (2, 1)


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (lambda doc: doc["workers"][0].__setitem__(2, "yesterday"), "$.workers[0][2]"),
        (lambda doc: doc["launches"][0].__delitem__(slice(5, None)), "$.launches[0]"),
        (lambda doc: doc.pop("queued"), "queued"),
    ],
    ids=["a time that is not a number", "a short row", "a missing count"],
)
async def test_a_malformed_snapshot_is_refused_with_the_place_it_breaks(
    store: PostgresStore, change: Any, names: str
) -> None:
    await _worker(store, "w-1", "active")
    doc = json.loads(await store.pool.fetchval("select orch_snapshot()::text"))
    change(doc)
    for form in (json.dumps(doc), doc):  # as the Postgres store and the REST store get it
        with pytest.raises(StoreError, match=r"malformed snapshot: .*" + re.escape(names)):
            parse_snapshot(form)
