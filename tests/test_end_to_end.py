"""The real loop, the real local provider and real worker agent processes on a real
Postgres: the product as an operator runs it, only with short timings."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gpu_orchestrator.config import Settings, load_settings
from gpu_orchestrator.loop import CycleReport
from gpu_orchestrator.runtime import Runtime, open_runtime

pytestmark = pytest.mark.e2e


def fast_settings(dsn: str, data_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "database_url": dsn,
        "orchestrator_data_dir": data_dir,
        "orchestrator_provider": "local",
        "orchestrator_id": "e2e",
        "min_active_gpus": 0,
        "max_active_gpus": 3,
        "tasks_per_gpu_threshold": 3,
        "gpu_overcapacity_idle_timeout_sec": 1.0,
        "min_worker_lifetime_sec": 0.0,
        "spawning_timeout_sec": 60.0,
        "gpu_idle_timeout_sec": 20.0,
        "orchestrator_poll_sec": 0.3,
        "worker_heartbeat_sec": 0.5,
        "worker_poll_sec": 0.2,
        "leader_lease_sec": 10.0,
        "log_format": "json",
    }
    base.update(overrides)
    return load_settings(**base)


@pytest.fixture
async def make_runtime(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    opened: list[Runtime] = []

    async def make(dsn: str, **overrides: object) -> Runtime:
        runtime = await open_runtime(fast_settings(dsn, tmp_path / "orch", **overrides))
        opened.append(runtime)
        return runtime

    yield make
    for runtime in opened:  # never leak a worker process, whatever the test did
        for pod in await runtime.provider.list_pods():
            await runtime.provider.terminate_pod(pod.name, pod.pod_id)
        await runtime.aclose()


async def cycle_until(
    runtime: Runtime,
    done: Callable[[CycleReport, dict[str, int]], bool],
    timeout: float,
    reports: list[CycleReport] | None = None,
) -> None:
    """Runs real cycles every poll until `done` holds; fails after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        report = await runtime.orchestrator.run_cycle()
        assert report.outcome == "ok", report.as_dict()
        if reports is not None:
            reports.append(report)
        counts = await runtime.store.task_counts()
        if done(report, counts):
            return
        if loop.time() > deadline:
            pytest.fail(f"not done after {timeout}s: {counts} {report.as_dict()}")
        await asyncio.sleep(runtime.settings.orchestrator_poll_sec)


def drained(report: CycleReport, counts: dict[str, int]) -> bool:
    assert report.snapshot is not None
    idle = counts.get("Queued", 0) + counts.get("In Progress", 0) == 0
    return idle and not report.snapshot.workers


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
