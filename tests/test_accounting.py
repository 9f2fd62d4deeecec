"""Issue 9 end to end: a 402 is a billing hold (the real loop against the fake
Runpod), operator spawns go through the leader's rules (the real CLI), and the
alerts and settings that come with them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from fake_runpod import FakeRunpod
from test_cli import Cli
from test_config import run_cli
from test_runpod_provider import KEY, provider_for, runpod_settings

from gpu_orchestrator.errors import SettingsError
from gpu_orchestrator.loop import CycleReport
from gpu_orchestrator.models import ActionKind, Reason
from gpu_orchestrator.ops.alert_rules import (
    BILLING_HOLD,
    STORE_UNREADABLE,
    AlertConfig,
    evaluate,
)
from gpu_orchestrator.ops.health import Verdict, judge
from gpu_orchestrator.ops.metrics import Metrics
from gpu_orchestrator.providers.base import worker_environment
from gpu_orchestrator.providers.local import LocalProvider
from gpu_orchestrator.runtime import Runtime, open_runtime

PROBE_SEC = 0.5


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunpod]:
    fake = FakeRunpod(api_key=KEY)
    yield fake
    assert fake.violations == []


@pytest.fixture
async def runtime(dsn, fake, tmp_path) -> AsyncIterator[Runtime]:
    settings = runpod_settings(
        dsn,
        orchestrator_data_dir=tmp_path,
        breaker_probe_interval_sec=PROBE_SEC,
        capacity_backoff_sec=PROBE_SEC,
    )
    rt = await open_runtime(settings, dsn=dsn, provider=provider_for(fake, settings))
    yield rt
    await rt.aclose()


def _spawns(report: CycleReport) -> list[tuple[str, str | None]]:
    return [(r.outcome, r.error_kind) for r in report.results if r.kind is ActionKind.SPAWN]


async def test_an_account_out_of_money_is_a_billing_hold_not_failed_workers(runtime, fake) -> None:
    await runtime.store.enqueue_tasks([{}] * 4)
    fake.balance_exhausted()

    first = await runtime.orchestrator.run_cycle()
    # one 402 stops the cycle's other launches at once
    assert sorted(_spawns(first)) == [("error", "BalanceError")] + [("skipped", None)] * 3
    assert len(fake.requests_to("POST")) == 1
    second = await runtime.orchestrator.run_cycle()
    assert _spawns(second) == [] and len(fake.requests_to("POST")) == 1
    plan = second.plan
    assert plan is not None and plan.held_back == (Reason.BILLING_HOLD,)
    assert plan.billing_hold_since is not None
    assert plan.breaker is not None and plan.breaker.failed == 0  # nothing counted

    report = judge(second.snapshot, runtime.settings, {})
    assert report.verdict is Verdict.BLOCKED and "402" in report.summary
    metrics = Metrics()
    metrics.observe_cycle(second)
    assert b"gpuorch_billing_hold 1.0" in metrics.render()
    alert = evaluate(second, AlertConfig())[BILLING_HOLD]
    assert alert.firing and "cannot pay (402)" in alert.message

    # The account is topped up: one create is retried after the probe interval,
    # it succeeds, and the hold is lifted.
    fake.balance_exhausted(False)
    await asyncio.sleep(PROBE_SEC + 0.1)
    retry = await runtime.orchestrator.run_cycle()
    assert _spawns(retry) == [("done", None)]
    after = await runtime.orchestrator.run_cycle()
    assert after.plan is not None and after.plan.billing_hold_since is None
    assert _spawns(after) == [("done", None)] * 3
    assert len(fake.live_pods()) == 4


def test_store_unreadable_alerts_after_three_failed_cycles() -> None:
    cfg = AlertConfig()
    report = CycleReport("c", "retry", "StoreError: connection refused", 1.0, failing_cycles=2)
    assert evaluate(report, cfg)[STORE_UNREADABLE].firing is False
    report = CycleReport("c", "retry", "StoreError: connection refused", 1.0, failing_cycles=3)
    alert = evaluate(report, cfg)[STORE_UNREADABLE]
    assert alert.firing and "3 cycles in a row" in alert.message


# -- 4. operator spawns go through the leader's rules ------------------------------------------


@pytest.fixture
async def cli(dsn, tmp_path):
    runner = Cli(dsn, tmp_path)
    yield runner
    await runner("kill-switch", "on", "--reason", "test teardown")


async def test_spawn_with_the_kill_switch_on_launches_nothing(cli) -> None:
    await cli("kill-switch", "on", "--reason", "budget")
    code, out, _ = await cli("spawn", "--count", "3", "--reason", "need more")
    assert code == 1 and "3 not launched: kill_switch" in out
    assert await cli.fetch("select id from workers") == []


async def test_spawn_while_a_daemon_leads_is_left_to_it_and_never_raced(cli) -> None:
    await cli.fetch(
        "insert into orchestrator_leases (name, holder, epoch, expires_at, renewed_at)"
        " values ('orchestrator', 'daemon', 1, now() + interval '1 hour', now())"
    )
    code, out, _ = await cli("spawn", "--count", "2", "--reason", "warm up")
    assert code == 0 and "request recorded; not_leader (held by daemon)" in out
    assert await cli.fetch("select id from workers") == []

    # The leader (here: the next one to hold the lease) carries it out, once.
    await cli.fetch("update orchestrator_leases set expires_at = now()")
    code, out, _ = await cli("once", MAX_ACTIVE_GPUS="4")
    spawned = [a for a in json.loads(out)["actions"] if a["reason"] == "manual"]
    assert len(spawned) == 2
    code, out, _ = await cli("once", MAX_ACTIVE_GPUS="4")
    assert [a for a in json.loads(out)["actions"] if a["reason"] == "manual"] == []
    pods = LocalProvider(cli.data_dir)  # stop the workers this test launched
    for pod in await pods.list_pods():
        await pods.terminate_pod(pod.name, pod.pod_id)


# -- settings -------------------------------------------------------------------------------


def test_a_worker_task_timeout_not_below_the_stuck_timeout_is_refused() -> None:
    result = run_cli("config", WORKER_TASK_TIMEOUT_SEC="3600", TASK_STUCK_TIMEOUT_SEC="3600")
    assert result.returncode == 2
    assert "WORKER_TASK_TIMEOUT_SEC=3600" in result.stderr and "TASK_STUCK" in result.stderr


def test_pods_get_the_task_timeout_and_it_is_below_the_stuck_timeout(tmp_path) -> None:
    with pytest.raises(SettingsError, match="WORKER_TASK_TIMEOUT_SEC=3000"):
        runpod_settings(orchestrator_data_dir=tmp_path, task_stuck_timeout_sec=900)
    settings = runpod_settings(
        orchestrator_data_dir=tmp_path, task_stuck_timeout_sec=900, worker_task_timeout_sec=600
    )
    env = worker_environment(settings, "postgresql://u:pw@h/d", "gpu-1")
    assert (env["WORKER_TASK_TIMEOUT_SEC"], env["TASK_STUCK_TIMEOUT_SEC"]) == ("600", "900")
