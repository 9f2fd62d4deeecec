"""Issue 8 against the real database, the real loop and the fake Runpod: stale
leaders are fenced off, a plan's judgment loses to what changed while it was
acting, partial or garbled answers fail nothing, an unanswered create is adopted.

Races use real timing: the fake's pod list is slowed down, and the change (a
heartbeat, a claim) lands while the cycle waits for it, between observe and act.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import structlog
from fake_runpod import FakeRunpod
from store_writes import write
from structlog.testing import capture_logs
from test_runpod_provider import KEY, provider_for, runpod_settings

from gpu_orchestrator.errors import LeaseLost
from gpu_orchestrator.executor import Executor
from gpu_orchestrator.loop import LEASE_NAME, Orchestrator
from gpu_orchestrator.models import Action, ActionKind, Plan, PolicyConfig, Reason, WorkerStatus
from gpu_orchestrator.ops.health import read_report, render_text
from gpu_orchestrator.providers.base import PodSpec
from gpu_orchestrator.runtime import Runtime, open_runtime
from gpu_orchestrator.store import writes
from gpu_orchestrator.store.base import Fence
from gpu_orchestrator.store.postgres import PostgresStore

NAME = "gpu-20260101000000-0badc0de"
SLOW_LIST_SEC = 1.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunpod]:
    fake = FakeRunpod(api_key=KEY)
    yield fake
    assert fake.violations == []


async def _runtime(dsn: str, fake: FakeRunpod, tmp_path, **settings: object) -> Runtime:
    cfg = runpod_settings(dsn, orchestrator_data_dir=tmp_path, **settings)
    return await open_runtime(cfg, dsn=dsn, provider=provider_for(fake, cfg))


@pytest.fixture
async def runtime(dsn, fake, tmp_path) -> AsyncIterator[Runtime]:
    rt = await _runtime(
        dsn,
        fake,
        tmp_path,
        spawning_timeout_sec=0.5,
        gpu_idle_timeout_sec=1.0,
        gpu_overcapacity_idle_timeout_sec=0,
        min_worker_lifetime_sec=0,
    )
    yield rt
    await rt.aclose()


async def _worker_with_pod(runtime: Runtime, name: str = NAME) -> str:
    await write(runtime.store, writes.create_worker(name, "runpod", {"reason": "x"}))
    pod = await runtime.provider.create_pod(PodSpec(name, {}, "NVIDIA A40@EU-RO-1"))
    await write(runtime.store, writes.record_pod(name, pod.pod_id, None))
    return pod.pod_id


async def _row(runtime: Runtime, name: str = NAME) -> dict[str, object]:
    row = await runtime.store.pool.fetchrow(
        "select status, pod_id, termination_reason, drain_requested_at, pod_missing_since"
        " from workers where id = $1",
        name,
    )
    assert row is not None
    return dict(row)


async def _while_the_cycle_lists_pods(runtime: Runtime, fake: FakeRunpod, change) -> list:
    """Runs one cycle; `change` happens while it waits for the (slow) pod list."""
    fake.slow("listPods", SLOW_LIST_SEC)
    cycle = asyncio.create_task(runtime.orchestrator.run_cycle())
    await asyncio.sleep(SLOW_LIST_SEC / 2)
    await change()
    report = await cycle
    assert report.outcome == "ok", report.as_dict()
    return [r for r in report.results if r.worker_id == NAME]


# -- 1. fencing ---------------------------------------------------------------------------


async def test_every_leader_write_is_refused_once_its_lease_moved_on(store: PostgresStore) -> None:
    old = await store.acquire_lease(LEASE_NAME, "a", 30)
    fence = Fence(LEASE_NAME, old.epoch, time.monotonic() + 30)
    await write(
        store, writes.create_worker("gpu-1", "local", {}), fence=fence
    )  # still held: accepted
    await store.release_lease(LEASE_NAME, "a")
    new = await store.acquire_lease(LEASE_NAME, "b", 30)
    assert new.leader and new.epoch == old.epoch + 1

    stale_writes = [
        write(store, writes.create_worker("gpu-2", "local", {}), fence=fence),
        write(store, writes.record_pod("gpu-1", "pod-1", 0.5), fence=fence),
        store.transition_worker("gpu-1", WorkerStatus.ERROR, Reason.BOOT_TIMEOUT, fence=fence),
        write(store, writes.mark_released("gpu-1"), fence=fence),
        write(store, writes.release_tasks("gpu-1", None, 3, "x"), fence=fence),
        store.record_event("breaker_opened", "a", "breaker_tripped", fence=fence),
        write(store, writes.record_pod_sightings(["gpu-1"], []), fence=fence),
    ]
    for stale in stale_writes:
        with pytest.raises(LeaseLost):
            await stale
    rows = await store.pool.fetch("select id, status, pod_id, pod_missing_since from workers")
    assert [tuple(r) for r in rows] == [("gpu-1", "spawning", None, None)]
    assert await store.pool.fetchval("select count(*) from orchestrator_events") == 0


async def test_an_expired_lease_fences_its_holder_even_if_nobody_took_it(
    store: PostgresStore,
) -> None:
    old = await store.acquire_lease(LEASE_NAME, "a", 0.05)
    await asyncio.sleep(0.1)
    with pytest.raises(LeaseLost):
        await write(
            store,
            writes.create_worker("gpu-1", "local", {}),
            fence=Fence(LEASE_NAME, old.epoch, 1e12),
        )
    again = await store.acquire_lease(LEASE_NAME, "a", 30)
    assert again.epoch == old.epoch + 1  # a lapsed term is a new term, even for its holder


async def test_a_cycle_past_its_lease_deadline_touches_no_pod(runtime, fake) -> None:
    lease = await runtime.store.acquire_lease(LEASE_NAME, "rp-test", 30)
    stale = Fence(LEASE_NAME, lease.epoch, deadline=time.monotonic() - 0.001)
    spawn = Action(ActionKind.SPAWN, Reason.QUEUE_DEMAND, "x", offering="NVIDIA A40@EU-RO-1")
    plan = Plan(actions=(spawn, spawn), desired_workers=2, capacity=0, unmet_demand=0)
    snapshot = await runtime.store.observe()

    with pytest.raises(LeaseLost):
        await runtime.orchestrator.executor.apply(plan, snapshot, asyncio.Event(), stale)
    assert fake.requests_to("POST") == []


async def test_a_lost_lease_ends_the_cycle_as_skipped(runtime, fake) -> None:
    await runtime.store.enqueue_tasks([{}])
    fake.slow("listPods", SLOW_LIST_SEC)
    cycle = asyncio.create_task(runtime.orchestrator.run_cycle())
    await asyncio.sleep(SLOW_LIST_SEC / 2)
    # Another orchestrator takes over meanwhile (the lease expired under us).
    await runtime.store.pool.execute("update orchestrator_leases set expires_at = now()")
    assert (await runtime.store.acquire_lease(LEASE_NAME, "other", 30)).leader
    report = await cycle
    assert (report.outcome, report.reason.split(":")[0]) == ("skipped", "lease_lost")
    assert fake.requests_to("POST") == []
    assert await runtime.store.pool.fetchval("select count(*) from workers") == 0


# -- 2. compare-and-set on what the plan saw ------------------------------------------------


async def test_a_first_heartbeat_during_the_cycle_voids_its_boot_timeout(runtime, fake) -> None:
    await _worker_with_pod(runtime)
    await asyncio.sleep(0.6)  # past SPAWNING_TIMEOUT_SEC

    (result,) = await _while_the_cycle_lists_pods(
        runtime, fake, lambda: runtime.store.heartbeat(NAME, [], None)
    )

    assert (result.reason, result.outcome) == (Reason.BOOT_TIMEOUT, "lost_race")
    assert (await _row(runtime))["status"] == "active"
    assert fake.requests_to("DELETE") == [] and len(fake.live_pods()) == 1


async def test_a_heartbeat_during_the_cycle_voids_its_heartbeat_lost(runtime, fake) -> None:
    await _worker_with_pod(runtime)
    await runtime.store.heartbeat(NAME, [], None)
    await asyncio.sleep(1.1)  # past GPU_IDLE_TIMEOUT_SEC

    (result,) = await _while_the_cycle_lists_pods(
        runtime, fake, lambda: runtime.store.heartbeat(NAME, [], None)
    )

    assert (result.reason, result.outcome) == (Reason.HEARTBEAT_LOST, "lost_race")
    assert (await _row(runtime))["status"] == "active"
    assert fake.requests_to("DELETE") == []


async def test_a_claim_during_the_cycle_voids_the_drain_of_an_idle_worker(runtime, fake) -> None:
    await _worker_with_pod(runtime)
    await runtime.store.heartbeat(NAME, [], None)
    claimed: list[dict[str, object] | None] = []

    async def claim() -> None:
        await runtime.store.heartbeat(NAME, [], None)  # keep it fresh
        await runtime.store.enqueue_tasks([{}])
        claimed.append(await runtime.store.claim_task(NAME))

    (result,) = await _while_the_cycle_lists_pods(runtime, fake, claim)

    assert (result.kind, result.outcome) == (ActionKind.DRAIN, "lost_race")
    assert claimed[0] is not None
    row = await _row(runtime)
    assert (row["status"], row["drain_requested_at"]) == ("active", None)


# -- 4. partial answers are not proof -------------------------------------------------------


async def test_a_transient_empty_list_in_a_one_gpu_fleet_fails_nothing(runtime, fake) -> None:
    pod_id = await _worker_with_pod(runtime)
    await runtime.store.heartbeat(NAME, [], None)
    await runtime.store.enqueue_tasks([{}])
    assert await runtime.store.claim_task(NAME) is not None  # busy: not drained either
    fake.pods[pod_id].hidden_reads = 1  # the next list misses it

    first = await runtime.orchestrator.run_cycle()
    assert [r for r in first.results if r.worker_id == NAME] == []
    assert (await _row(runtime))["pod_missing_since"] is not None
    await runtime.store.heartbeat(NAME, [], None)
    second = await runtime.orchestrator.run_cycle()

    assert [r for r in second.results if r.worker_id == NAME] == []
    row = await _row(runtime)
    assert (row["status"], row["pod_missing_since"]) == ("active", None)
    assert fake.requests_to("DELETE") == []


# -- 5. an ambiguous create is not a failure ------------------------------------------------


async def test_a_create_answered_500_whose_lookups_fail_is_adopted_when_listed(
    runtime, fake
) -> None:
    await runtime.store.enqueue_tasks([{}])
    fake.fail_create_after_creating(1)
    # every try of the cycle's pod list, then every try of the lookup by name
    fake.server_errors(times=8, status=503, method="GET")

    first = await runtime.orchestrator.run_cycle()
    (spawn,) = first.results
    assert (spawn.kind, spawn.outcome, spawn.error_kind) == (
        ActionKind.SPAWN,
        "unresolved",
        "TransientProviderError",
    )
    name = spawn.worker_id
    assert name is not None
    assert (await _row(runtime, name))["status"] == "spawning"

    second = await runtime.orchestrator.run_cycle()
    assert [(r.kind, r.outcome) for r in second.results if r.worker_id == name] == [
        (ActionKind.ADOPT_POD, "done")
    ]
    (pod,) = fake.live_pods()
    row = await _row(runtime, name)
    assert (row["status"], row["pod_id"]) == ("spawning", pod.id)
    assert second.plan is not None and second.plan.breaker is not None
    assert second.plan.breaker.failed == 0
    assert fake.requests_to("DELETE") == []


async def test_a_create_that_never_shows_a_pod_ends_neutral_at_the_boot_deadline(
    runtime, fake
) -> None:
    await runtime.store.enqueue_tasks([{}])
    fake.server_errors(times=1, status=502, method="POST")  # nothing was created

    (spawn,) = (await runtime.orchestrator.run_cycle()).results
    assert spawn.outcome == "unresolved"
    await runtime.store.pool.execute("delete from tasks")  # no new demand meanwhile
    await asyncio.sleep(0.6)  # past SPAWNING_TIMEOUT_SEC
    report = await runtime.orchestrator.run_cycle()

    row = await _row(runtime, spawn.worker_id)
    assert (row["status"], row["termination_reason"]) == ("error", "create_lost")
    assert report.plan is not None and report.plan.breaker is not None
    assert report.plan.breaker.failed == 0


# -- 6. the loop never dies of one bad cycle ------------------------------------------------


async def test_html_answers_from_a_proxy_are_errors_not_crashes(runtime, fake) -> None:
    await runtime.store.enqueue_tasks([{}])
    fake.garble_next(times=4, method="GET")  # every try
    listing = await runtime.orchestrator.run_cycle()  # the list is garbled: not read
    assert listing.outcome == "ok" and listing.snapshot is not None
    assert listing.snapshot.pods is None

    fake.garble_next(times=1, method="POST")  # the create took effect, answered HTML
    await runtime.store.enqueue_tasks([{}])
    created = await runtime.orchestrator.run_cycle()
    assert created.outcome == "ok"
    assert len(fake.live_pods()) == 2  # found by name: each row owns its pod
    rows = await runtime.store.pool.fetch("select pod_id from workers order by created_at")
    assert sorted(r["pod_id"] for r in rows) == sorted(p.id for p in fake.live_pods())


class _BuggyProvider:
    """A provider with a bug: its pod list raises something no handler expects."""

    name = "buggy"

    async def list_pods(self):
        raise KeyError("status")


async def test_an_unexpected_exception_is_logged_with_its_cycle_and_the_loop_goes_on(
    store: PostgresStore,
) -> None:
    provider = _BuggyProvider()
    executor = Executor(
        store, provider, lambda _: {}, name_prefix="gpu", max_task_attempts=3, actor="t"
    )  # type: ignore[arg-type]
    orchestrator = Orchestrator(
        store, executor, PolicyConfig(), holder="t", lease_sec=30, cycle_timeout_sec=10
    )
    stop = asyncio.Event()
    reports = []

    def seen(report) -> None:
        reports.append(report)
        if len(reports) == 3:
            stop.set()

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await asyncio.wait_for(orchestrator.run_forever(stop, 0.01, on_cycle=seen), 10)

    assert [r.outcome for r in reports] == ["retry"] * 3
    assert orchestrator.failing_cycles == 3
    failed = [e for e in logs if e["event"] == "cycle_failed"]
    assert len(failed) == 3 and all(e["cycle_id"] and e["exc_info"] for e in failed)


# -- 3. pods that are not ours ----------------------------------------------------------


async def test_status_lists_foreign_pods_and_nothing_touches_them(dsn, fake, tmp_path) -> None:
    foreign = ["gpu-dev-box", "gpu-staging-20260101000000-0badc0de"]
    async with fake.client() as client:
        for name in foreign:
            body = {"name": name, "image": "x", "gpu": {"id": "NVIDIA A40"}}
            assert (await client.post("/v2/pods", json=body)).status_code == 201
    async with fake.serve() as url:
        settings = runpod_settings(dsn, orchestrator_data_dir=tmp_path, runpod_api_base_url=url)
        report = await read_report(settings, {})
        runtime = await open_runtime(settings, dsn=dsn)
        try:
            for _ in range(2):
                assert (await runtime.orchestrator.run_cycle()).outcome == "ok"
        finally:
            await runtime.aclose()

    assert report.as_dict()["pods"] == {"listed": True, "foreign": foreign, "legacy": []}
    assert f"foreign pods (not named as ours, never touched): 2: {', '.join(foreign)}" in (
        render_text(report)
    )
    assert fake.requests_to("DELETE") == [] and len(fake.live_pods()) == 2
