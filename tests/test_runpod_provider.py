"""The Runpod provider against the fake Runpod v2 API (every request validated
against the OpenAPI document), alone and under the real loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fake_runpod import FakeRunpod
from store_writes import write
from structlog.testing import capture_logs

from gpu_orchestrator.config import Settings, load_settings
from gpu_orchestrator.errors import (
    BalanceError,
    CapacityError,
    OfferingForbidden,
    RequestRejected,
    TransientProviderError,
)
from gpu_orchestrator.models import ActionKind
from gpu_orchestrator.providers.base import PodSpec, worker_environment
from gpu_orchestrator.providers.runpod import Pacer, RunpodProvider
from gpu_orchestrator.runtime import Runtime, open_runtime
from gpu_orchestrator.store import writes

KEY = "rp_MARKER_0f9e8d7c6b5a"  # must never appear in a log line or an error


def runpod_settings(dsn: str = "postgresql://u:db-pw@db.example/app", **kw: object) -> Settings:
    base: dict[str, object] = {
        "orchestrator_provider": "runpod",
        "runpod_api_key": KEY,
        "runpod_worker_image": "ghcr.io/acme/worker:1",
        "runpod_gpu_types": "NVIDIA A40,NVIDIA L40S",
        "runpod_data_center_ids": "EU-RO-1",
        "runpod_network_volume_id": "vol-123",
        "runpod_ports": "8080/http",
        "database_url": dsn,
        "orchestrator_id": "rp-test",
        "max_active_gpus": 4,
        "tasks_per_gpu_threshold": 1,
        "pod_grace_sec": 0.01,
        "log_format": "json",
    }
    base.update(kw)
    return load_settings(**base)


class Sleeps:
    """Records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunpod]:
    fake = FakeRunpod(api_key=KEY)
    yield fake
    assert fake.violations == []  # no request we sent broke the API contract
    assert fake.response_violations == []


def provider_for(fake: FakeRunpod, settings: Settings, sleeps: Sleeps | None = None):
    return RunpodProvider(
        settings,
        client=fake.client(),
        pacer=Pacer(rate_per_sec=10_000, burst=10_000),
        sleep=sleeps or Sleeps(),
    )


def spec(name: str, offering: str = "NVIDIA A40@EU-RO-1") -> PodSpec:
    return PodSpec(name, {"WORKER_ID": name, "DATABASE_URL": "postgresql://u:db-pw@h/d"}, offering)


async def test_create_sends_a_valid_body_and_reads_the_pod(fake):
    provider = provider_for(fake, runpod_settings())
    pod = await provider.create_pod(spec("gpu-20260101000000-aaaaaaaa"))

    (created,) = fake.pods_named("gpu-20260101000000-aaaaaaaa")
    assert pod.pod_id == created.id and pod.running
    assert pod.cost_per_hr is not None and pod.cost_per_hr > 0
    body = fake.requests_to("POST", "/v2/pods")[0].json
    assert body["gpu"] == {"id": "NVIDIA A40", "count": 1}
    assert body["dataCenterIds"] == ["EU-RO-1"]
    assert body["mounts"] == {"network": [{"volumeId": "vol-123", "path": "/workspace"}]}
    assert body["env"]["WORKER_ID"] == "gpu-20260101000000-aaaaaaaa"
    await provider.aclose()


async def test_a_headless_wan2gp_pod_gets_what_its_worker_reads_and_its_command(fake):
    settings = runpod_settings(
        worker_kind="headless-wan2gp",
        supabase_url="https://ref.supabase.co",
        supabase_service_role_key="service-key",
        runpod_worker_args="python worker.py --worker $WORKER_ID",
        runpod_worker_env="HF_HOME=/workspace/hf",
    )
    worker_id = "gpu-20260101000000-bbbbbbbb"
    provider = provider_for(fake, settings)
    env = worker_environment(settings, settings.database_url.get_secret_value(), worker_id)
    await provider.create_pod(PodSpec(worker_id, env, "NVIDIA A40@EU-RO-1"))
    await provider.aclose()

    body = fake.requests_to("POST", "/v2/pods")[0].json
    assert body["args"] == "python worker.py --worker $WORKER_ID"
    assert body["env"] == {
        "HF_HOME": "/workspace/hf",
        "WORKER_ID": worker_id,
        "SUPABASE_URL": "https://ref.supabase.co",
        "SUPABASE_SERVICE_ROLE_KEY": "service-key",
    }  # the old orchestrator's pod env; never our DSN


@pytest.mark.parametrize(
    ("knob", "error"),
    [
        (lambda f: f.capacity_for("NVIDIA A40"), CapacityError),
        (lambda f: f.forbid("NVIDIA A40"), OfferingForbidden),
        (lambda f: f.balance_exhausted(), BalanceError),
    ],
    ids=["400-capacity", "403-forbidden", "402-balance"],
)
async def test_create_errors_are_classified(fake, knob, error):
    knob(fake)
    provider = provider_for(fake, runpod_settings())
    with pytest.raises(error):
        await provider.create_pod(spec("gpu-20260101000000-bbbbbbbb"))
    assert fake.live_pods() == []


async def test_unknown_template_is_a_request_error_never_retried(fake):
    provider = provider_for(
        fake, runpod_settings(runpod_template_id="no-such-template", runpod_worker_image=None)
    )
    with pytest.raises(RequestRejected):
        await provider.create_pod(spec("gpu-20260101000000-cccccccc"))
    assert len(fake.requests_to("POST", "/v2/pods")) == 1


async def test_a_500_on_create_that_created_the_pod_finds_it_by_name(fake):
    fake.fail_create_after_creating(1)
    provider = provider_for(fake, runpod_settings())
    pod = await provider.create_pod(spec("gpu-20260101000000-dddddddd"))

    (only,) = fake.live_pods()
    assert pod.pod_id == only.id
    assert len(fake.requests_to("POST", "/v2/pods")) == 1  # looked up, not re-created


async def test_a_timeout_on_create_that_created_nothing_is_transient(fake):
    fake.timeout_next(1, seconds=2.0, method="POST")
    provider = RunpodProvider(
        runpod_settings(),
        client=fake.client(timeout=0.2),
        pacer=Pacer(rate_per_sec=10_000, burst=10_000),
        sleep=Sleeps(),
    )
    with pytest.raises(TransientProviderError):
        await provider.create_pod(spec("gpu-20260101000000-eeeeeeee"))
    assert fake.live_pods() == []


async def test_429_is_retried_after_the_retry_after_it_names(fake):
    sleeps = Sleeps()
    provider = provider_for(fake, runpod_settings(), sleeps)
    fake.rate_limit(times=2, retry_after=7)
    assert await provider.list_pods() == []
    assert sleeps.calls.count(7.0) == 2


async def test_terminate_retries_a_failed_delete_and_confirms_the_pod_is_gone(fake):
    provider = provider_for(fake, runpod_settings())
    pod = await provider.create_pod(spec("gpu-20260101000000-ffffffff"))
    fake.fail_deletes(1)
    await provider.terminate_pod(pod.name, pod.pod_id)
    assert fake.live_pods() == []
    assert len(fake.requests_to("DELETE")) == 2


async def test_terminate_without_a_pod_id_finds_the_pod_by_name(fake):
    provider = provider_for(fake, runpod_settings())
    await provider.create_pod(spec("gpu-20260101000000-abababab"))
    await provider.terminate_pod("gpu-20260101000000-abababab", None)
    assert fake.live_pods() == []
    await provider.terminate_pod("gpu-20260101000000-never000", None)  # nothing to do


async def test_the_api_key_never_reaches_logs_or_errors(fake):
    provider = provider_for(fake, runpod_settings())
    errors: list[str] = []
    with capture_logs() as logs:
        await provider.create_pod(spec("gpu-20260101000000-12121212"))
        fake.capacity_for("NVIDIA A40")
        for _ in range(2):
            try:
                await provider.create_pod(spec("gpu-20260101000000-34343434"))
            except CapacityError as exc:
                errors.append(str(exc))
        fake.server_errors(times=10, status=503)
        try:
            await provider.list_pods()
        except TransientProviderError as exc:
            errors.append(str(exc))
    assert errors
    assert KEY not in repr(logs) + " ".join(errors)
    assert "db-pw" not in repr(logs) + " ".join(errors)


# -- under the real loop -------------------------------------------------------------


@pytest.fixture
async def loop_with_fake(dsn, fake, tmp_path) -> AsyncIterator[tuple[Runtime, FakeRunpod]]:
    settings = runpod_settings(dsn, orchestrator_data_dir=tmp_path, spawning_timeout_sec=0.5)
    runtime = await open_runtime(settings, dsn=dsn, provider=provider_for(fake, settings))
    yield runtime, fake
    await runtime.aclose()


async def rows(runtime: Runtime) -> list[dict[str, object]]:
    async with runtime.store.pool.acquire() as conn:
        found = await conn.fetch(
            "select id, status, pod_id, offering, termination_reason, terminated_at"
            " from workers order by created_at, id"
        )
    return [dict(r) for r in found]


async def test_capacity_on_the_first_gpu_type_spawns_on_the_second(loop_with_fake):
    runtime, fake = loop_with_fake
    fake.capacity_for("NVIDIA A40")
    await runtime.store.enqueue_tasks([{}])

    report = await runtime.orchestrator.run_cycle()

    assert [r.outcome for r in report.results] == ["done"]
    refused, placed = await rows(runtime)
    assert (refused["offering"], refused["termination_reason"]) == (
        "NVIDIA A40@EU-RO-1",
        "capacity",
    )
    assert placed["offering"] == "NVIDIA L40S@EU-RO-1" and placed["status"] == "spawning"
    (pod,) = fake.live_pods()
    assert pod.id == placed["pod_id"]
    # the refusal backs A40 off and is not a failure
    plan = (await runtime.orchestrator.run_cycle()).plan
    assert plan is not None and plan.breaker is not None and plan.breaker.failed == 0
    assert [b.offering for b in plan.backoffs] == ["NVIDIA A40@EU-RO-1"]


async def test_a_500_on_create_leaves_exactly_one_pod_owned_by_its_row(loop_with_fake):
    runtime, fake = loop_with_fake
    fake.fail_create_after_creating(1)
    await runtime.store.enqueue_tasks([{}])

    await runtime.orchestrator.run_cycle()

    (row,) = await rows(runtime)
    (pod,) = fake.live_pods()
    assert row["pod_id"] == pod.id and pod.name == row["id"]


async def test_a_crash_between_intent_row_and_create_leaves_no_stuck_row(loop_with_fake):
    runtime, fake = loop_with_fake
    await write(
        runtime.store,
        writes.create_worker("gpu-20260101000000-0badc0de", "runpod", {"reason": "x"}),
    )
    await asyncio.sleep(0.05)  # past POD_GRACE_SEC: a pod would be listed by now

    await runtime.orchestrator.run_cycle()  # the "restarted" orchestrator
    (row,) = await rows(runtime)
    assert row["status"] == "spawning"  # its create may yet show a pod: wait for one
    await asyncio.sleep(0.6)  # past SPAWNING_TIMEOUT_SEC: no pod ever showed up
    await runtime.orchestrator.run_cycle()

    (row,) = await rows(runtime)
    assert (row["status"], row["termination_reason"]) == ("error", "create_lost")
    assert row["terminated_at"] is not None
    assert fake.live_pods() == []


async def test_a_crash_between_create_and_recording_the_pod_leaves_no_orphan(loop_with_fake):
    runtime, fake = loop_with_fake
    name = "gpu-20260101000000-5eed5eed"
    await write(runtime.store, writes.create_worker(name, "runpod", {"reason": "x"}))
    await runtime.provider.create_pod(spec(name))  # no record_pod

    first = await runtime.orchestrator.run_cycle()
    (adopted,) = [r for r in first.results if r.worker_id == name]  # its pod is listed
    assert (adopted.kind, adopted.outcome) == (ActionKind.ADOPT_POD, "done")
    (row,) = [r for r in await rows(runtime) if r["id"] == name]
    assert row["pod_id"] == fake.pods_named(name)[0].id
    await asyncio.sleep(0.6)  # past SPAWNING_TIMEOUT_SEC: it never heartbeats
    await runtime.orchestrator.run_cycle()

    (row,) = [r for r in await rows(runtime) if r["id"] == name]
    assert (row["status"], row["termination_reason"]) == ("error", "boot_timeout")
    assert row["terminated_at"] is not None
    assert fake.live_pods() == []


async def test_unknown_pods_with_our_prefix_are_terminated_others_never(loop_with_fake):
    runtime, fake = loop_with_fake
    provider = runtime.provider
    await provider.create_pod(spec("gpu-20200101000000-0ff1ce00"))
    await provider.create_pod(spec("someone-elses-pod"))

    report = await runtime.orchestrator.run_cycle()

    assert [(r.kind.value, r.worker_id) for r in report.results] == [
        ("terminate_orphan_pod", "gpu-20200101000000-0ff1ce00")
    ]
    assert [p.name for p in fake.live_pods()] == ["someone-elses-pod"]


async def test_a_fresh_pod_that_404s_for_a_moment_is_not_failed_within_the_grace(
    dsn, fake, tmp_path
):
    settings = runpod_settings(dsn, orchestrator_data_dir=tmp_path, pod_grace_sec=60)
    runtime = await open_runtime(settings, dsn=dsn, provider=provider_for(fake, settings))
    try:
        await runtime.store.enqueue_tasks([{}])
        fake.hide_new_pods(reads=3)
        await runtime.orchestrator.run_cycle()  # spawns; the new pod is not listed yet
        report = await runtime.orchestrator.run_cycle()
        assert not [r for r in report.results if r.kind.value == "fail"]
        (row,) = await rows(runtime)
        assert row["status"] == "spawning" and len(fake.live_pods()) == 1
    finally:
        await runtime.aclose()
