"""`scripts/check_system_health.py` on the seed runbook's situation: six failed and
one healthy worker in a 30-minute window (85.7 % > 80 %), one task waiting."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_system_health.py"


async def seed_situation(dsn: str, *, healthy_after_failures: bool) -> dict[str, object]:
    """Six boot timeouts 10..20 minutes ago, one healthy busy worker (spawned before
    the failures, or after them), one task queued. Returns the failure times."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """
            insert into workers (id, status, created_at, failed_at, terminated_at,
                                 termination_reason, offering)
            select 'gpu-failed-' || i, 'error', now() - make_interval(mins => 20 + 2 * i),
                   now() - make_interval(mins => 10 + 2 * i), now(), 'boot_timeout', 'local'
            from generate_series(0, 5) i
            """
        )
        created = (
            "now() - interval '5 minutes'"
            if healthy_after_failures
            else ("now() - interval '3 hours'")
        )
        await conn.execute(
            f"""
            insert into workers (id, status, created_at, ready_at, last_heartbeat,
                                 tasks_completed, offering, pod_id)
            values ('gpu-healthy', 'active', {created}, {created} + interval '1 minute',
                    now() - interval '13 seconds', 12, 'local', 'gpu-healthy')
            """
        )
        await conn.execute("select orch_enqueue_tasks('[{}, {}]'::jsonb)")
        await conn.execute("select * from func_claim_available_task('gpu-healthy')")
        failed = await conn.fetch("select failed_at from workers where status = 'error'")
        counts = await conn.fetchval(
            "select (select count(*) from orchestrator_events) + (select count(*) from workers)"
            " + (select count(*) from worker_events)"
        )
    finally:
        await conn.close()
    return {"failed_at": sorted(r["failed_at"] for r in failed), "rows": counts}


async def run_script(dsn: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": dsn, "LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_seed_situation_with_an_old_healthy_worker_is_blocked(dsn):
    seeded = await seed_situation(dsn, healthy_after_failures=False)

    code, out = await run_script(dsn, "--json")

    assert code == 2, out
    doc = json.loads(out)
    assert doc["verdict"] == "blocked"
    breaker = doc["breaker"]
    assert (breaker["failed"], breaker["proven"]) == (6, 1)
    assert breaker["rate"] == pytest.approx(6 / 7, abs=1e-4)
    assert breaker["failures_by_reason"] == {"boot_timeout": 6}
    assert "first heartbeat" in breaker["hints"]["boot_timeout"]
    assert "predate the failures" in doc["recommended_action"]
    expected = [(t + timedelta(minutes=30)).isoformat() for t in seeded["failed_at"]]
    assert breaker["failures_age_out_at"] == expected
    assert breaker["next_probe_at"] is not None
    assert doc["workers"]["healthy"][0]["tasks_completed"] == 12
    assert doc["queue"]["queued"] == 1 and doc["queue"]["in_progress"] == 1
    assert doc["levers"]["MAX_WORKER_FAILURE_RATE"] == 0.8


async def test_human_report_answers_the_runbook(dsn):
    await seed_situation(dsn, healthy_after_failures=False)

    code, out = await run_script(dsn)

    assert code == 2
    assert "verdict: BLOCKED (exit 2)" in out
    assert "failure rate 85.7% (6 failed / 7 in the window)" in out
    assert "6 x boot_timeout" in out
    assert "gpu-healthy: heartbeat" in out and "12 task(s) completed" in out
    assert "failures leave the window at:" in out
    assert "recommended action:" in out


async def test_what_if_flips_the_verdict_and_writes_nothing(dsn):
    seeded = await seed_situation(dsn, healthy_after_failures=False)

    code, out = await run_script(dsn, "--json", "--set", "MAX_WORKER_FAILURE_RATE=0.95")

    doc = json.loads(out)
    assert code != 2 and doc["verdict"] != "blocked"
    assert doc["what_if"] == {"MAX_WORKER_FAILURE_RATE": "0.95"}
    assert [a["kind"] for a in doc["next_cycle"]["actions"]] == ["spawn"]
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval(
            "select (select count(*) from orchestrator_events) + (select count(*) from workers)"
            " + (select count(*) from worker_events)"
        )
    finally:
        await conn.close()
    assert rows == seeded["rows"]


async def test_a_healthy_worker_spawned_after_the_failures_keeps_spawning_going(dsn):
    await seed_situation(dsn, healthy_after_failures=True)

    code, out = await run_script(dsn, "--json")

    doc = json.loads(out)
    assert code == 1 and doc["verdict"] == "degraded"
    assert doc["breaker"]["evidence_worker"] == "gpu-healthy"
    assert "spawning continues" in doc["summary"]
    assert [a["kind"] for a in doc["next_cycle"]["actions"]] == ["spawn"]


async def test_an_idle_healthy_fleet_exits_0(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "insert into workers (id, status, created_at, ready_at, last_heartbeat)"
            " values ('gpu-ok', 'active', now() - interval '1 minute', now(), now())"
        )
    finally:
        await conn.close()
    code, out = await run_script(dsn)
    assert code == 0, out
    assert "verdict: HEALTHY" in out


async def test_unreadable_state_exits_3():
    code, out = await run_script("postgresql://nobody@127.0.0.1:1/none", "--json")
    assert code == 3
    assert json.loads(out.splitlines()[0])["verdict"] == "unknown"


async def test_watch_repeats_until_interrupted_and_exits_with_the_last_verdict(dsn):
    await seed_situation(dsn, healthy_after_failures=False)
    env = {**os.environ, "DATABASE_URL": dsn, "LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--watch",
        "1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen = 0
    while seen < 2:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        seen += line.startswith(b"verdict: BLOCKED")
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 2


async def test_the_script_runs_with_a_plain_system_python_as_the_runbook_says(dsn):
    """`python scripts/check_system_health.py` outside the venv, as README and
    docs/deploy.md tell operators: it finds the project's .venv by itself."""
    await seed_situation(dsn, healthy_after_failures=False)
    system_python = getattr(sys, "_base_executable", sys.executable)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "DATABASE_URL": dsn}
    proc = await asyncio.create_subprocess_exec(
        system_python,
        str(SCRIPT),
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, err.decode()
    assert json.loads(out)["verdict"] == "blocked"
