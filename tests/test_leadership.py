"""Two orchestrator processes on one database, against a Runpod that answers slowly.

Real daemons (`gpu-orchestrator run`), real timing: the pod list is sometimes slower
than the lease, the leader is paused (SIGSTOP) past its lease and later killed
(SIGKILL). Whatever happens, at most `MAX_ACTIVE_GPUS` pods live at once, no pod
is created twice, two orchestrators never create or delete pods at the same time,
and the standby takes over within the lease.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from fake_runpod import DEFAULT_API_KEY, FakeRunpod

from gpu_orchestrator.config import lease_margin

pytestmark = pytest.mark.process

LEASE_SEC = 3.0
POLL_SEC = 0.2
MAX_GPUS = 2


def _daemon_env(dsn: str, url: str, holder: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": dsn,
        "ORCHESTRATOR_DATA_DIR": str(data_dir),
        "ORCHESTRATOR_ID": holder,
        "ORCHESTRATOR_PROVIDER": "runpod",
        "RUNPOD_API_KEY": DEFAULT_API_KEY,
        "RUNPOD_API_BASE_URL": url,
        "RUNPOD_WORKER_IMAGE": "example/worker:1",
        "RUNPOD_GPU_TYPES": "NVIDIA GeForce RTX 4090",
        "MAX_ACTIVE_GPUS": str(MAX_GPUS),
        "TASKS_PER_GPU_THRESHOLD": "1",
        "SPAWNING_TIMEOUT_SEC": "5",  # pods of the fake never boot: churn launches
        "MIN_WORKERS_FOR_RATE_CHECK": "1000",  # keep spawning: this is not a breaker test
        "POD_GRACE_SEC": "30",
        "ORCHESTRATOR_POLL_SEC": str(POLL_SEC),
        "LEADER_LEASE_SEC": str(LEASE_SEC),
        "LOG_FORMAT": "json",
    }


async def _holder(conn: asyncpg.Connection) -> str | None:
    return await conn.fetchval(
        "select holder from orchestrator_leases where name = 'orchestrator' and expires_at > now()"
    )


async def _wait_for_leader(conn: asyncpg.Connection, other_than: str | None, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = await _holder(conn)
        if holder is not None and holder != other_than:
            return holder
        await asyncio.sleep(0.05)
    pytest.fail(f"no leader other than {other_than} after {timeout}s")


def _most_live_at_once(fake: FakeRunpod) -> int:
    events = []
    for pod in fake.pods.values():
        events.append((pod.created_real, 1))
        if pod.deleted_real is not None:
            events.append((pod.deleted_real, -1))
    live = peak = 0
    for _, step in sorted(events):
        live += step
        peak = max(peak, live)
    return peak


def _overlapping_leaders(fake: FakeRunpod) -> list[tuple[str, str, float]]:
    """Pod creates and deletes of one orchestrator followed by another's sooner than
    the lease margin allows: two leaders acting at once. A leader touches pods only
    until its lease's end less the margin, and a successor starts after that end."""
    acts = sorted(
        (r.at, r.headers.get("user-agent", "?"))
        for r in fake.requests
        if r.method in ("POST", "DELETE")
    )
    return [
        (first, then, round(t2 - t1, 3))
        for (t1, first), (t2, then) in itertools.pairwise(acts)
        if first != then and t2 - t1 < lease_margin(LEASE_SEC)
    ]


@pytest.fixture
async def daemons(
    dsn: str, tmp_path: Path
) -> AsyncIterator[tuple[FakeRunpod, dict[str, asyncio.subprocess.Process], Path]]:
    # A deleted pod reads as TERMINATED (as on Runpod), so a delete is confirmed
    # without another (slow) list.
    # seed 2: the first two lists take 4.3 s, past the lease, as both daemons start
    fake = FakeRunpod(seed=2, terminated_visible_seconds=1e9)
    fake.slow("listPods", 0.3, 4.5)  # often slower than the lease
    fake.slow("createPod", 0.2, 2.0)
    procs: dict[str, asyncio.subprocess.Process] = {}
    with fake.serve_in_thread() as url:
        try:
            for holder in ("a", "b"):
                log = (tmp_path / f"{holder}.log").open("wb")
                procs[holder] = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "gpu_orchestrator",
                    "run",
                    env=_daemon_env(dsn, url, holder, tmp_path / holder),
                    stdout=log,
                    stderr=log,
                )
                await asyncio.sleep(0.5)
            yield fake, procs, tmp_path
        finally:
            for proc in procs.values():
                if proc.returncode is None:
                    for sig in (signal.SIGCONT, signal.SIGKILL):
                        proc.send_signal(sig)
                    await proc.wait()


async def test_two_daemons_with_a_slow_provider_never_exceed_max_or_act_twice(
    dsn: str, daemons: tuple[FakeRunpod, dict[str, asyncio.subprocess.Process], Path]
) -> None:
    fake, procs, logs = daemons
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "select orch_enqueue_tasks($1::jsonb)", json.dumps([{"task_type": "t"}] * 12)
        )
        await asyncio.sleep(20)

        # The leader stalls past its lease (a GC pause, a frozen VM), then wakes up.
        stalled = await _wait_for_leader(conn, None, LEASE_SEC * 2)
        procs[stalled].send_signal(signal.SIGSTOP)
        await asyncio.sleep(LEASE_SEC + 1.5)
        procs[stalled].send_signal(signal.SIGCONT)
        await asyncio.sleep(6)

        # The leader dies; the standby leads within the lease.
        leader = await _wait_for_leader(conn, None, LEASE_SEC * 2)
        procs[leader].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await procs[leader].wait()
        successor = await _wait_for_leader(conn, leader, LEASE_SEC * 3)
        failover = time.monotonic() - killed_at
        await asyncio.sleep(4)
        survivor = procs[successor]
        survivor.send_signal(signal.SIGTERM)
        await asyncio.wait_for(survivor.wait(), 30)
    finally:
        await conn.close()

    creates = Counter(r.json["name"] for r in fake.requests_to("POST", "/v2/pods"))
    deletes = fake.requests_to("DELETE")
    overlaps = _overlapping_leaders(fake)
    report = (
        f"pods created {len(fake.pods)}, most live at once {_most_live_at_once(fake)}, "
        f"creates per name {creates.most_common(2)}, deletes {len(deletes)}, "
        f"leaders acting together {overlaps[:3]}, failover {failover:.2f}s"
    )
    print(report)
    assert len(fake.pods) > MAX_GPUS and deletes, f"the fleet never churned: {report}"
    assert _most_live_at_once(fake) <= MAX_GPUS, report
    assert max(creates.values()) == 1, report
    assert overlaps == [], report
    assert failover <= LEASE_SEC + 2 * POLL_SEC + 0.5, report
    assert fake.violations == []
    for holder in procs:
        text = (logs / f"{holder}.log").read_text()
        assert "Traceback" not in text, text[-3000:]
