"""The real loop, the real local provider and real worker agent processes on a real
Postgres: the product as an operator runs it, only with short timings."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from e2e_support import cycle_until, drained

from gpu_orchestrator.loop import CycleReport

pytestmark = pytest.mark.e2e


async def test_loop_drains_a_queue_of_30_tasks_and_scales_back_down(dsn, make_runtime):
    runtime = await make_runtime(dsn)
    tasks = [{"task_type": "demo", "params": {"duration_sec": 0.2, "n": i}} for i in range(30)]
    await runtime.store.enqueue_tasks(tasks)
    reports: list[CycleReport] = []

    await cycle_until(runtime, drained, timeout=90, reports=reports)

    counts = await runtime.store.task_counts()
    assert counts == {"Complete": 30}
    spawned = [r for rep in reports for r in rep.results if r.kind.value == "spawn"]
    assert len(spawned) >= 1 and all(r.outcome == "done" for r in spawned)
    peak = max(len(rep.snapshot.workers) for rep in reports if rep.snapshot is not None)
    assert peak <= runtime.settings.max_active_gpus
    async with runtime.store.pool.acquire() as conn:
        rows = await conn.fetch("select status, termination_reason from workers")
        events = await conn.fetch("select kind, reason from worker_events")
    assert {(r["status"], r["termination_reason"]) for r in rows} == {("terminated", "drained")}
    assert ("terminating", "scaled_down") in {(e["kind"], e["reason"]) for e in events}
    assert await runtime.provider.list_pods() == []


def _pid_of(data_dir: Path, worker_id: str) -> int:
    record = json.loads((data_dir / "pods" / f"{worker_id}.json").read_text())
    return int(record["pid"])


async def test_worker_killed_mid_task_is_detected_by_heartbeat_loss_and_its_task_completes(
    dsn, make_runtime
):
    runtime = await make_runtime(dsn, max_active_gpus=1, gpu_idle_timeout_sec=2.0)
    await runtime.store.enqueue_tasks([{"task_type": "demo", "params": {"duration_sec": 4}}])

    def holding(report: CycleReport, counts: dict[str, int]) -> bool:
        return report.snapshot is not None and len(report.snapshot.holds) == 1

    await cycle_until(runtime, holding, timeout=30)
    victim = (await runtime.store.observe()).holds[0].worker_id
    assert victim is not None
    os.kill(_pid_of(runtime.settings.orchestrator_data_dir, victim), signal.SIGKILL)

    await cycle_until(runtime, drained, timeout=60)

    async with runtime.store.pool.acquire() as conn:
        task = await conn.fetchrow("select status, attempts, worker_id from tasks")
        victim_row = await conn.fetchrow(
            "select status, termination_reason from workers where id = $1", victim
        )
    assert task["status"] == "Complete"
    assert task["attempts"] == 1  # the lost run counted against the task
    assert task["worker_id"] != victim
    assert (victim_row["status"], victim_row["termination_reason"]) == ("error", "heartbeat_lost")
