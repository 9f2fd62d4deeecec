"""The breaker with the real loop, the local provider and real worker processes:
an image that exits before its first heartbeat trips it; fixing the image lets the
next probe prove itself and spawning resume."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from pathlib import Path

import asyncpg
import pytest
from e2e_support import cycle_until, drained

from gpu_orchestrator.loop import CycleReport
from gpu_orchestrator.models import ActionKind, BreakerState

pytestmark = pytest.mark.e2e


def broken_image(fault: Path) -> str:
    """A pod entrypoint that exits before the first heartbeat while `fault` exists."""
    return (
        f"if [ -e {shlex.quote(str(fault))} ]; then echo 'image broken' >&2; exit 1; fi; "
        f"exec {shlex.quote(sys.executable)} -m gpu_orchestrator worker"
    )


async def test_boot_failures_trip_the_breaker_and_a_probe_proves_the_fix(
    dsn, make_runtime, tmp_path
):
    fault = tmp_path / "image-is-broken"
    fault.touch()
    runtime = await make_runtime(
        dsn,
        local_worker_command=broken_image(fault),
        spawning_timeout_sec=2.0,
        max_active_gpus=3,
        min_workers_for_rate_check=3,
        failure_window_minutes=10,
        breaker_probe_interval_sec=1.0,
        breaker_probe_max_interval_sec=4.0,
        breaker_evidence_sec=1.0,
    )
    tasks = [{"task_type": "demo", "params": {"duration_sec": 0.2}} for _ in range(6)]
    await runtime.store.enqueue_tasks(tasks)

    def open_(report: CycleReport, _counts: dict[str, int]) -> bool:
        breaker = report.plan.breaker if report.plan else None
        return breaker is not None and breaker.state is BreakerState.OPEN

    reports: list[CycleReport] = []
    await cycle_until(runtime, open_, timeout=40, reports=reports)
    tripped = reports[-1].plan
    assert tripped is not None and tripped.breaker is not None
    # the pods exit at once: the pod list shows it before any boot deadline
    assert dict(tripped.breaker.failures_by_reason)["boot_failed"] >= 3
    assert tripped.breaker.rate == 1.0
    assert not [a for a in tripped.actions if a.kind is ActionKind.SPAWN]

    fault.unlink()  # the image is fixed
    after: list[CycleReport] = []
    await cycle_until(runtime, drained, timeout=60, reports=after)

    assert await runtime.store.task_counts() == {"Complete": 6}
    probes = [
        r
        for rep in after
        for r in rep.results
        if r.kind is ActionKind.SPAWN and r.reason.value == "breaker_probe"
    ]
    assert probes, "spawning resumed through a probe"
    async with runtime.store.pool.acquire() as conn:
        events = await conn.fetch("select kind, reason from orchestrator_events order by id")
    kinds = [(e["kind"], e["reason"]) for e in events]
    assert kinds[0] == ("breaker_opened", "breaker_tripped")
    assert kinds[-1][0] == "breaker_closed"
    assert kinds[-1][1] in ("probe_proven", "evidence")


async def test_once_prints_breaker_state_rate_and_forecast(dsn, tmp_path):
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """
            insert into workers (id, status, created_at, failed_at, terminated_at,
                                 termination_reason, offering)
            select 'gpu-old-' || i, 'error', now() - interval '20 minutes',
                   now() - make_interval(mins => i), now(), 'boot_timeout', 'local'
            from generate_series(1, 6) i
            """
        )
        await conn.execute("select orch_enqueue_tasks('[{}]'::jsonb)")
    finally:
        await conn.close()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "ORCHESTRATOR_DATA_DIR": str(tmp_path),
        "ORCHESTRATOR_PROVIDER": "local",
        "LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpu_orchestrator",
        "once",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    out = json.loads(stdout)
    breaker = out["breaker"]
    assert breaker["state"] == "open"
    assert (breaker["failed"], breaker["proven"], breaker["rate"]) == (6, 0, 1.0)
    assert breaker["failures_by_reason"] == {"boot_timeout": 6}
    assert len(breaker["failures_age_out_at"]) == 6
    assert breaker["next_probe_at"] is not None and breaker["rate_ok_at"] is not None
    assert breaker["transition"]["reason"] == "breaker_tripped"
    assert out["plan"]["held_back"] == ["breaker_open"]
    assert not [a for a in out["actions"] if a["kind"] == "spawn"]
