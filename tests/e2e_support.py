"""Helpers for end-to-end tests: real loop, local provider, worker processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from gpu_orchestrator.config import Settings, load_settings
from gpu_orchestrator.loop import CycleReport
from gpu_orchestrator.runtime import Runtime


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
