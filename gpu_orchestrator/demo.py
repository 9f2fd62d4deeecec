"""`gpu-orchestrator demo`: the whole loop on the embedded default.

A fresh `gpuorch_demo` database on the embedded Postgres, local worker processes,
a batch of demo tasks; the real loop runs with a short poll until every task is
done and the fleet is back to `MIN_ACTIVE_GPUS`. It never uses `DATABASE_URL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shlex
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.live import Live

from .config import Settings
from .loop import CycleReport
from .models import BreakerState
from .ops.fleet_view import FleetView
from .providers.local import LocalProvider
from .runtime import open_runtime
from .signals import stop_on_signals
from .store.embedded import embedded_dsn, with_database

DEMO_DATABASE = "gpuorch_demo"
TIME_LIMIT_SEC = 110.0


class Scenario(StrEnum):
    SCALE = "scale"  # spawn for a batch, drain it, scale down
    BOOT_FAILURES = "boot-failures"  # the seed runbook's story: a broken image, then a fix


def demo_settings(
    settings: Settings, max_gpus: int, data_dir: Path, scenario: Scenario = Scenario.SCALE
) -> Settings:
    """Short timings so a whole scale-up and scale-down fits in a minute."""
    update: dict[str, object] = {
        "database_url": None,
        "orchestrator_data_dir": data_dir / "demo",
        "orchestrator_provider": "local",
        "local_worker_command": None,
        "orchestrator_id": "demo",
        "worker_name_prefix": "demo",
        "min_active_gpus": 0,
        "max_active_gpus": max_gpus,
        "tasks_per_gpu_threshold": 4,
        "machines_to_keep_idle": 0,
        "gpu_overcapacity_idle_timeout_sec": 3.0,
        "min_worker_lifetime_sec": 0.0,
        "spawning_timeout_sec": 60.0,
        "gpu_idle_timeout_sec": 20.0,
        "orchestrator_poll_sec": 1.0,
        "leader_lease_sec": 10.0,
        "worker_heartbeat_sec": 1.0,
        "worker_poll_sec": 0.5,
        "worker_task_command": None,
    }
    if scenario is Scenario.BOOT_FAILURES:
        fault = data_dir / "demo" / "image-is-broken"
        update.update(
            # The "image": exits before its first heartbeat while the fault file exists.
            local_worker_command=(
                f"if [ -e {shlex.quote(str(fault))} ]; then "
                "echo 'demo: image broken, exiting before the first heartbeat' >&2; exit 1; fi; "
                f"exec {shlex.quote(sys.executable)} -m gpu_orchestrator worker"
            ),
            spawning_timeout_sec=4.0,
            failure_window_minutes=2.0,
            min_workers_for_rate_check=3,
            max_worker_failure_rate=0.8,
            breaker_probe_interval_sec=4.0,
            breaker_probe_max_interval_sec=16.0,
            breaker_evidence_sec=3.0,
        )
    return settings.model_copy(update=update)


def fault_file(cfg: Settings) -> Path:
    return cfg.orchestrator_data_dir / "image-is-broken"


def demo_tasks(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"task_type": "demo", "params": {"n": i, "duration_sec": round(rng.uniform(0.5, 2.5), 2)}}
        for i in range(count)
    ]


async def _fresh_database(data_dir: Path, keep: bool) -> str:
    dsn = await embedded_dsn(data_dir, database="postgres", keep=keep)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'drop database if exists "{DEMO_DATABASE}" with (force)')
        await admin.execute(f'create database "{DEMO_DATABASE}"')
    finally:
        await admin.close()
    return with_database(dsn, DEMO_DATABASE)


async def _terminate_all(provider: LocalProvider) -> None:
    for pod in await provider.list_pods():
        await provider.terminate_pod(pod.name, pod.pod_id)


async def run_demo(
    settings: Settings,
    *,
    tasks: int,
    max_gpus: int,
    data_dir: Path | None = None,
    scenario: Scenario = Scenario.SCALE,
) -> int:
    """Returns the exit code: 0 when the queue drained and the fleet scaled down."""
    root = data_dir or settings.orchestrator_data_dir
    cfg = demo_settings(settings, max_gpus, root, scenario)
    provider = LocalProvider(cfg.orchestrator_data_dir, cfg.local_worker_command)
    fault = _Fault(fault_file(cfg), armed=scenario is Scenario.BOOT_FAILURES)
    await _terminate_all(provider)  # a demo interrupted earlier may have left pods
    dsn = await _fresh_database(root, settings.embedded_postgres_keep)
    runtime = await open_runtime(cfg, dsn=dsn, provider=provider)
    stop = stop_on_signals()
    console = Console(stderr=False)
    view = FleetView(f"gpu-orchestrator demo: {tasks} tasks, up to {max_gpus} local workers")
    spawned = 0
    started = time.monotonic()
    try:
        await runtime.store.enqueue_tasks(demo_tasks(tasks))
        live = Live(view.renderable(), console=console, refresh_per_second=4, transient=False)
        with live if console.is_terminal else contextlib.nullcontext():
            while not stop.is_set():
                report = await runtime.orchestrator.run_cycle(stop)
                spawned += sum(
                    1 for r in report.results if r.kind.value == "spawn" and r.outcome == "done"
                )
                counts = await runtime.store.task_counts()
                elapsed = time.monotonic() - started
                if fault.update(report):
                    note = f"{elapsed:6.1f}s fault cleared: the image boots again"
                    view.note(note)
                    if not console.is_terminal:
                        print(note, flush=True)
                view.update(report, counts, elapsed)
                if console.is_terminal:
                    live.update(view.renderable())
                else:
                    for line in view.fresh_notes:
                        print(line, flush=True)
                    print(view.plain_line(), flush=True)
                if _finished(report, counts, cfg.min_active_gpus) or elapsed > TIME_LIMIT_SEC:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), cfg.orchestrator_poll_sec)
        counts = await runtime.store.task_counts()
    finally:
        fault.clear()
        await _terminate_all(provider)
        await runtime.aclose()
    elapsed = time.monotonic() - started
    ok = counts.get("Complete", 0) + counts.get("Failed", 0) == tasks and not stop.is_set()
    print(
        f"demo {'finished' if ok else 'did NOT finish'} in {elapsed:.1f}s: "
        f"{counts.get('Complete', 0)} of {tasks} tasks complete, {counts.get('Failed', 0)} tasks "
        f"failed, {spawned} workers spawned, fleet back to {cfg.min_active_gpus}; "
        f"{view.story()}",
        file=sys.stdout,
    )
    return 0 if ok else 1


class _Fault:
    """The boot-failures scenario's broken image: in place until the breaker has
    been open for `HOLD_SEC` (long enough to see a probe fail), then fixed."""

    HOLD_SEC = 10.0

    def __init__(self, path: Path, armed: bool) -> None:
        self._path = path
        self._opened_at: float | None = None
        self.active = armed
        if armed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def update(self, report: CycleReport) -> bool:
        """True on the cycle that clears the fault."""
        breaker = report.plan.breaker if report.plan is not None else None
        if not self.active or breaker is None:
            return False
        if breaker.state is not BreakerState.CLOSED and self._opened_at is None:
            self._opened_at = time.monotonic()
        if self._opened_at is not None and time.monotonic() - self._opened_at >= self.HOLD_SEC:
            self.clear()
            return True
        return False

    def clear(self) -> None:
        self.active = False
        self._path.unlink(missing_ok=True)


def _finished(report: CycleReport, counts: dict[str, int], min_gpus: int) -> bool:
    snap = report.snapshot
    if snap is None:
        return False
    busy = counts.get("Queued", 0) + counts.get("In Progress", 0)
    return busy == 0 and len(snap.workers) <= min_gpus
