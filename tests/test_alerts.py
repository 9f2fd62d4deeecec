"""Alerts: each condition fires and clears from a cycle report alone, the alerter
de-duplicates with a cooldown and says "resolved", and delivery to a real local
webhook never raises into nor blocks the loop."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from policy_builders import ACTIVE, SPAWNING, T0, TERMINATING, ago, breaker_view, snap, worker
from structlog.testing import capture_logs

from gpu_orchestrator.config import load_settings
from gpu_orchestrator.errors import ProviderError, SettingsError
from gpu_orchestrator.executor import ActionResult
from gpu_orchestrator.loop import CycleReport
from gpu_orchestrator.models import (
    Action,
    ActionKind,
    BreakerRecord,
    BreakerState,
    BreakerTransition,
    BreakerView,
    Launch,
    OfferingBackoff,
    Plan,
    Reason,
    Snapshot,
)
from gpu_orchestrator.ops.alert_rules import (
    ALERT_KEYS,
    ALL_OFFERINGS_BACKING_OFF,
    BREAKER_CLOSED,
    BREAKER_OPENED,
    FAILURE_RATE_HIGH,
    HEARTBEATS_STALE,
    NO_HEALTHY_WORKER,
    PROVIDER_AUTH_OR_BALANCE,
    STORE_UNREADABLE,
    TASK_FAILURE_RATE_HIGH,
    Alert,
    AlertConfig,
    TaskStats,
    evaluate,
    provider_problem,
)
from gpu_orchestrator.ops.alerts import Alerter, redact_url
from gpu_orchestrator.providers.base import PodSpec
from gpu_orchestrator.providers.runpod import Pacer, RunpodProvider

CFG = AlertConfig()

# -- builders -------------------------------------------------------------------------


def breaker(
    state: BreakerState = BreakerState.CLOSED,
    *,
    failed: int = 0,
    proven: int = 0,
    transition: BreakerTransition | None = None,
) -> BreakerView:
    failures = ((Reason.BOOT_TIMEOUT, failed),) if failed else ()
    view = breaker_view(state, failures=failures, proven=proven, transition=transition)
    return replace(view, tripped=False)


def plan(
    *,
    b: BreakerView | None = None,
    unmet: int = 0,
    held_back: Iterable[Reason] = (),
    backoffs: Iterable[OfferingBackoff] = (),
    spawns: int = 0,
) -> Plan:
    actions = tuple(Action(ActionKind.SPAWN, Reason.QUEUE_DEMAND, "x") for _ in range(spawns))
    return Plan(
        actions=actions,
        desired_workers=0,
        capacity=0,
        unmet_demand=unmet,
        held_back=tuple(held_back),
        breaker=b if b is not None else breaker(),
        backoffs=tuple(backoffs),
    )


def report(
    snapshot: Snapshot | None = None,
    p: Plan | None = None,
    results: Iterable[ActionResult] = (),
) -> CycleReport:
    snapshot = snapshot if snapshot is not None else snap()
    return CycleReport("c1", "ok", None, 1.0, snapshot, p or plan(), tuple(results))


def spawn_result(outcome: str, error: str | None = None) -> ActionResult:
    return ActionResult(ActionKind.SPAWN, Reason.QUEUE_DEMAND, "w", None, outcome, error)


def refusal(worker_id: str, age: float, now: datetime = T0) -> Launch:
    at = ago(age, now)
    assert at is not None
    return Launch(worker_id, at, "A40@EU", False, False, False, None, at, Reason.CAPACITY, False)


def placed(worker_id: str, age: float, now: datetime = T0) -> Launch:
    at = ago(age, now)
    assert at is not None
    return Launch(worker_id, at, "A40@EU", False, True, True, at, None, None, False)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def firing(rep: CycleReport, key: str, **kw: Any) -> bool | None:
    return evaluate(rep, replace(CFG, **kw) if kw else CFG)[key].firing


# -- failure rate ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failed", "proven", "expected"),
    [
        (6, 1, True),  # the seed: 85.7 %
        (3, 2, True),  # 60 % > 50 %
        (3, 3, False),  # exactly 50 %: not strictly above
        (4, 0, False),  # 4 workers: below the sample minimum of 5
        (0, 0, False),  # no sample
    ],
)
def test_failure_rate_alert_fires_strictly_above_threshold_with_enough_sample(
    failed: int, proven: int, expected: bool
) -> None:
    rep = report(p=plan(b=breaker(failed=failed, proven=proven)))
    assert firing(rep, FAILURE_RATE_HIGH) is expected


def test_failure_rate_message_names_rate_and_reasons() -> None:
    cond = evaluate(report(p=plan(b=breaker(failed=6, proven=1))), CFG)[FAILURE_RATE_HIGH]
    assert "86% (6/7)" in cond.message and "boot_timeout x6" in cond.message
    assert cond.fields["rate"] == pytest.approx(0.8571, abs=1e-4)


def test_a_cycle_that_observed_nothing_gives_no_evidence() -> None:
    rep = CycleReport("c1", "retry", "StoreError: down", 1.0, failing_cycles=1)
    conds = evaluate(rep, CFG)
    assert set(conds) == set(ALERT_KEYS)
    # only the store alert judges a failed read: once, not yet three times in a row
    assert conds.pop(STORE_UNREADABLE).firing is False
    assert all(c.firing is None for c in conds.values())


# -- no healthy worker ----------------------------------------------------------------


def test_no_healthy_worker_fires_when_tasks_waited_n_minutes_with_no_fresh_active_worker() -> None:
    rep = report(snap(worker("w1", SPAWNING, age=60), queued=2, oldest_queued_age=6 * 60))
    cond = evaluate(rep, CFG)[NO_HEALTHY_WORKER]
    assert cond.firing is True
    assert cond.fields["booting"] == 1 and cond.severity == "critical"


@pytest.mark.parametrize(
    ("workers", "queued", "oldest_age", "expected"),
    [
        ((), 2, 4 * 60, False),  # waited 4 of 5 minutes
        ((worker("w1", ACTIVE, heartbeat_age=10),), 2, 30 * 60, False),  # a healthy worker
        ((), 0, None, False),  # nothing waits
        # the only worker went silent 3 min ago (stale after 2): unhealthy for 1 min only
        ((worker("w1", ACTIVE, heartbeat_age=180),), 1, 30 * 60, False),
        # ... and silent for 8 min: unhealthy for 6 min
        ((worker("w1", ACTIVE, heartbeat_age=480),), 1, 30 * 60, True),
        # a draining worker claims nothing: unhealthy since its drain request
        ((worker("w1", TERMINATING, heartbeat_age=5, drain_age=400),), 1, 10 * 60, True),
        ((worker("w1", TERMINATING, heartbeat_age=5, drain_age=60),), 1, 10 * 60, False),
    ],
)
def test_no_healthy_worker_cases(
    workers: tuple[Any, ...], queued: int, oldest_age: float | None, expected: bool
) -> None:
    rep = report(snap(*workers, queued=queued, oldest_queued_age=oldest_age))
    assert firing(rep, NO_HEALTHY_WORKER) is expected


# -- heartbeats -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ages", "expected"),
    [
        ((300, 200), True),  # every worker silent beyond 120 s
        ((300, 20), False),  # one still beats
        ((), False),  # nobody is expected to heartbeat
    ],
)
def test_heartbeats_stale_fires_only_when_every_ready_worker_is_silent(
    ages: tuple[float, ...], expected: bool
) -> None:
    workers = [worker(f"w{n}", ACTIVE, heartbeat_age=a) for n, a in enumerate(ages)]
    assert firing(report(snap(*workers)), HEARTBEATS_STALE) is expected


def test_booting_workers_are_not_expected_to_heartbeat() -> None:
    rep = report(snap(worker("w1", SPAWNING, age=30), worker("w2", ACTIVE, heartbeat_age=400)))
    assert firing(rep, HEARTBEATS_STALE) is True


# -- task failure rate ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (None, None),  # the caller supplied no task outcomes: no evidence
        (TaskStats(completed=4, failed=6, window_sec=1800), True),
        (TaskStats(completed=5, failed=5, window_sec=1800), False),
        (TaskStats(completed=0, failed=3, window_sec=1800), False),  # 3 < minimum sample 5
    ],
)
def test_task_failure_rate_judged_from_supplied_stats(
    stats: TaskStats | None, expected: bool | None
) -> None:
    assert evaluate(report(), CFG, stats)[TASK_FAILURE_RATE_HIGH].firing is expected


# -- capacity -------------------------------------------------------------------------

BACKING_OFF = plan(unmet=2, held_back=[Reason.ALL_OFFERINGS_BACKING_OFF])


def test_capacity_alert_fires_after_n_minutes_without_a_placed_launch() -> None:
    launches = (placed("w0", 3000), refusal("w1", 20 * 60), refusal("w2", 60))
    rep = report(replace(snap(), launches=launches), BACKING_OFF)
    cond = evaluate(rep, CFG)[ALL_OFFERINGS_BACKING_OFF]
    assert cond.firing is True
    assert cond.fields["refused_for_sec"] == 20 * 60


@pytest.mark.parametrize(
    ("launches", "p", "results", "expected"),
    [
        # refused for 10 of 15 minutes
        ((refusal("w1", 600),), BACKING_OFF, (), False),
        # a pod was placed after the refusals
        ((refusal("w1", 1800), placed("w2", 60)), BACKING_OFF, (), False),
        # a launch placed this cycle
        ((refusal("w1", 1800),), plan(spawns=1), (spawn_result("done"),), False),
        # no demand waits
        ((refusal("w1", 1800),), plan(), (), False),
        # a backoff expired, the retry was refused: no evidence, so no flapping
        (
            (refusal("w1", 1800),),
            plan(spawns=1),
            (spawn_result("error", "POST /v2/pods: 400 no instances available"),),
            None,
        ),
        # held back by the breaker, not by capacity
        ((refusal("w1", 1800),), plan(unmet=1, held_back=[Reason.BREAKER_OPEN]), (), None),
    ],
)
def test_capacity_alert_cases(
    launches: tuple[Launch, ...],
    p: Plan,
    results: tuple[ActionResult, ...],
    expected: bool | None,
) -> None:
    rep = report(replace(snap(), launches=launches), p, results)
    assert firing(rep, ALL_OFFERINGS_BACKING_OFF) is expected


# -- provider auth or balance ---------------------------------------------------------


@dataclass(frozen=True)
class KindedResult(ActionResult):
    """ActionResult as the proposed executor change would record it."""

    error_kind: str | None = None


@pytest.mark.parametrize(
    ("results", "expected", "kinds"),
    [
        ((spawn_result("error", "POST /v2/pods: 402 insufficient balance"),), True, ["balance"]),
        ((spawn_result("error", "POST /v2/pods: 401 unauthorized"),), True, ["auth"]),
        ((spawn_result("error", "POST /v2/pods: 422 bad image"),), True, ["rejected"]),
        ((spawn_result("error", "POST /v2/pods: 400 no instances available"),), None, None),
        ((spawn_result("error", "POST /v2/pods: 503 upstream"),), None, None),
        ((spawn_result("done"),), False, None),  # the provider accepted a launch
        ((), None, None),  # no provider call: no evidence
        (
            (
                KindedResult(
                    ActionKind.SPAWN,
                    Reason.QUEUE_DEMAND,
                    "w",
                    None,
                    "error",
                    "nope",
                    "BalanceError",
                ),
            ),
            True,
            ["balance"],
        ),
        (
            (
                KindedResult(
                    ActionKind.SPAWN, Reason.QUEUE_DEMAND, "w", None, "error", "x", "CapacityError"
                ),
            ),
            None,
            None,
        ),
    ],
)
def test_provider_auth_or_balance_cases(
    results: tuple[ActionResult, ...], expected: bool | None, kinds: list[str] | None
) -> None:
    cond = evaluate(report(results=results), CFG)[PROVIDER_AUTH_OR_BALANCE]
    assert cond.firing is expected
    if kinds is not None:
        assert cond.fields["kinds"] == kinds


# -- the alerter: de-duplication, cooldown, resolution --------------------------------


def stale_fleet(now: datetime) -> CycleReport:
    return report(snap(worker("w1", ACTIVE, heartbeat_age=400, now=now), now=now))


def fresh_fleet(now: datetime) -> CycleReport:
    return report(snap(worker("w1", ACTIVE, heartbeat_age=5, now=now), now=now))


def sent(alerts: list[Alert]) -> list[tuple[str, str, bool]]:
    return [(a.key, a.status, a.repeat) for a in alerts]


def test_alerter_fires_once_repeats_after_cooldown_and_resolves() -> None:
    alerter = Alerter(CFG)  # no webhook: alerts are only logged
    with capture_logs() as logs:
        first = alerter.process(stale_fleet(at(0)))
        again = [alerter.process(stale_fleet(at(m))) for m in (1, 5, 14)]
        repeat = alerter.process(stale_fleet(at(15)))
        quiet = alerter.process(stale_fleet(at(16)))
        resolved = alerter.process(fresh_fleet(at(20)))
        after = alerter.process(fresh_fleet(at(21)))
    assert sent(first) == [(HEARTBEATS_STALE, "firing", False)]
    assert again == [[], [], []] and quiet == [] and after == []
    assert sent(repeat) == [(HEARTBEATS_STALE, "firing", True)]
    assert "firing for 15m" in repeat[0].message
    assert sent(resolved) == [(HEARTBEATS_STALE, "resolved", False)]
    assert resolved[0].message.startswith("cleared after 20m")
    assert [e["event"] for e in logs] == ["alert_firing", "alert_firing", "alert_resolved"]
    assert alerter.firing == frozenset()


def test_cycles_without_evidence_neither_resolve_nor_repeat() -> None:
    alerter = Alerter(CFG)
    assert sent(alerter.process(stale_fleet(at(0)))) == [(HEARTBEATS_STALE, "firing", False)]
    blind = CycleReport("c2", "retry", "cycle_timeout", 1.0)
    assert alerter.process(blind) == []
    assert alerter.firing == {HEARTBEATS_STALE}


def test_provider_alert_stays_firing_until_a_launch_succeeds() -> None:
    alerter = Alerter(CFG)
    refused = (spawn_result("error", "POST /v2/pods: 402 insufficient balance"),)
    assert sent(alerter.process(report(results=refused))) == [
        (PROVIDER_AUTH_OR_BALANCE, "firing", False)
    ]
    later = snap(now=at(30))
    assert alerter.process(report(later)) == []  # no launch tried: no evidence, no repeat
    ok = alerter.process(report(snap(now=at(31)), results=(spawn_result("done"),)))
    assert sent(ok) == [(PROVIDER_AUTH_OR_BALANCE, "resolved", False)]


def opened(prior: BreakerRecord | None, now: datetime, reason: Reason) -> CycleReport:
    move = BreakerTransition(BreakerState.OPEN, reason, 300.0, "6 of 7 workers failed")
    b = breaker(BreakerState.OPEN, failed=6, proven=1, transition=move)
    return report(replace(snap(now=now), breaker=prior), plan(b=b))


def closed(prior: BreakerRecord, now: datetime) -> CycleReport:
    move = BreakerTransition(BreakerState.CLOSED, Reason.EVIDENCE, 300.0, "w9 proved itself")
    b = breaker(BreakerState.CLOSED, failed=6, proven=2, transition=move)
    return report(replace(snap(now=now), breaker=prior), plan(b=b))


def test_breaker_opened_and_closed_are_one_shot_notices_deduplicated() -> None:
    alerter = Alerter(replace(CFG, failure_rate=1.0))  # only the breaker notices here
    rec_open = BreakerRecord(BreakerState.OPEN, at(0), Reason.BREAKER_TRIPPED, 300.0)
    rec_closed = BreakerRecord(BreakerState.CLOSED, at(2), Reason.EVIDENCE, 300.0)

    first = alerter.process(opened(None, at(0), Reason.BREAKER_TRIPPED))
    assert sent(first) == [(BREAKER_OPENED, "firing", False)]
    assert first[0].severity == "critical" and "86% (6/7)" in first[0].message
    # the transition could not be recorded: the next cycle judges it again
    assert alerter.process(opened(None, at(1), Reason.BREAKER_TRIPPED)) == []
    assert sent(alerter.process(closed(rec_open, at(2)))) == [(BREAKER_CLOSED, "firing", False)]
    # opened again later: a new notice, and never a "resolved" for one-shot notices
    again = alerter.process(opened(rec_closed, at(40), Reason.PROBATION_FAILED))
    assert sent(again) == [(BREAKER_OPENED, "firing", False)]
    assert alerter.process(report(snap(now=at(41)))) == []


def test_a_failed_probe_reopening_the_breaker_is_announced() -> None:
    alerter = Alerter(replace(CFG, failure_rate=1.0))
    rec1 = BreakerRecord(BreakerState.OPEN, at(0), Reason.BREAKER_TRIPPED, 300.0)
    assert alerter.process(opened(None, at(0), Reason.BREAKER_TRIPPED))
    reopened = alerter.process(opened(rec1, at(6), Reason.PROBE_FAILED))
    assert sent(reopened) == [(BREAKER_OPENED, "firing", False)]


def test_an_evaluation_bug_is_logged_and_never_raises() -> None:
    alerter = Alerter(CFG)
    broken = CycleReport("c1", "ok", None, 1.0, snap(), plan(), ("not a result",))  # type: ignore[arg-type]
    with capture_logs() as logs:
        assert alerter.process(broken) == []
    assert logs[0]["event"] == "alert_evaluation_failed"


# -- settings -------------------------------------------------------------------------


def test_format_follows_the_webhook_host_unless_set() -> None:
    slack = "https://hooks.slack.com/services/T0/B0/secret"
    assert AlertConfig(webhook_url=slack).format == "slack"
    assert AlertConfig(webhook_url="https://ops.example.com/hook").format == "generic"
    assert AlertConfig(webhook_url=slack, webhook_format="generic").format == "generic"
    assert "secret" not in repr(AlertConfig(webhook_url=slack))
    assert redact_url(slack) == "https://hooks.slack.com/…"


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"alert_failure_rate": 1.5}, "ALERT_FAILURE_RATE"),
        ({"alert_cooldown_sec": -1}, "ALERT_COOLDOWN_SEC"),
        ({"alert_webhook_timeout_sec": 0}, "ALERT_WEBHOOK_TIMEOUT_SEC"),
        ({"alert_webhook_timeout_sec": 61}, "ALERT_WEBHOOK_TIMEOUT_SEC"),
        ({"alert_heartbeat_stale_sec": 0}, "ALERT_HEARTBEAT_STALE_SEC"),
        ({"alert_task_failure_min_sample": 0}, "ALERT_TASK_FAILURE_MIN_SAMPLE"),
        ({"alert_webhook_url": "ftp://x/secret"}, "ALERT_WEBHOOK_URL"),
    ],
)
def test_invalid_settings_name_the_variable(overrides: dict[str, Any], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable) as err:
        load_settings(**overrides)
    assert "secret" not in str(err.value)


def test_alert_config_comes_from_settings() -> None:
    cfg = AlertConfig.from_settings(
        load_settings(alert_webhook_url="https://ops.example.com/hook", alert_cooldown_sec=60)
    )
    assert cfg.webhook_url == "https://ops.example.com/hook" and cfg.cooldown_sec == 60


# -- delivery to a real local webhook -------------------------------------------------


class Hook:
    """A tiny HTTP server on 127.0.0.1 that records request bodies and answers
    `status`, or never answers when `status` is None."""

    def __init__(self, status: int | None = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            found = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
            body = await reader.readexactly(int(found.group(1)) if found else 0)
            self.paths.append(head.split(b" ")[1].decode())
            self.bodies.append(json.loads(body))
            if self.status is None:
                await self.release.wait()
                return
            head_out = f"HTTP/1.1 {self.status} X\r\nContent-Length: 2\r\nConnection: close"
            writer.write(f"{head_out}\r\n\r\nok".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(status: int | None) -> AsyncIterator[Hook]:
    hook = Hook(status)
    server = await asyncio.start_server(hook.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hook.url = f"http://127.0.0.1:{port}/services/T0/B0/SeCrEtToKeN?token=QuErYsEcReT"
    try:
        yield hook
    finally:
        hook.release.set()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def hook_ok() -> AsyncIterator[Hook]:
    async for hook in serve(200):
        yield hook


@pytest.fixture
async def hook_500() -> AsyncIterator[Hook]:
    async for hook in serve(500):
        yield hook


@pytest.fixture
async def hook_hang() -> AsyncIterator[Hook]:
    async for hook in serve(None):
        yield hook


async def test_generic_payloads_reach_the_webhook_firing_then_resolved(hook_ok: Hook) -> None:
    alerter = Alerter(AlertConfig(webhook_url=hook_ok.url))
    with capture_logs() as logs:
        alerter.observe(stale_fleet(at(0)))  # the loop's `on_cycle` hook
        alerter.observe(fresh_fleet(at(3)))
        await alerter.flush()
        await alerter.aclose()
    assert [(b["alert"], b["status"]) for b in hook_ok.bodies] == [
        (HEARTBEATS_STALE, "firing"),
        (HEARTBEATS_STALE, "resolved"),
    ]
    body = hook_ok.bodies[0]
    assert body["severity"] == "critical" and body["at"] == at(0).isoformat()
    assert body["fields"]["workers"] == 1 and "silent" in body["message"]
    delivered = [e for e in logs if e["event"] == "alert_delivered"]
    assert len(delivered) == 2
    assert delivered[0]["webhook"].startswith("http://127.0.0.1:")
    assert "SeCrEt" not in repr(logs)


async def test_slack_payload_is_text_with_key_severity_and_resolution(hook_ok: Hook) -> None:
    alerter = Alerter(AlertConfig(webhook_url=hook_ok.url, webhook_format="slack"))
    alerter.process(report(snap(queued=3, oldest_queued_age=600)))
    alerter.process(report(snap(now=at(2))))
    await alerter.flush()
    await alerter.aclose()
    assert [set(b) for b in hook_ok.bodies] == [{"text"}, {"text"}]
    fired, resolved = (b["text"] for b in hook_ok.bodies)
    assert f"*CRITICAL* `{NO_HEALTHY_WORKER}`" in fired and "3 tasks waiting" in fired
    assert "queued=3" in fired
    assert resolved.startswith(f":white_check_mark: *RESOLVED* `{NO_HEALTHY_WORKER}`")


async def test_a_webhook_answering_500_is_logged_without_the_secret(hook_500: Hook) -> None:
    alerter = Alerter(AlertConfig(webhook_url=hook_500.url))
    with capture_logs() as logs:
        started = time.perf_counter()
        alerts = alerter.process(stale_fleet(at(0)))
        assert time.perf_counter() - started < 0.1  # observing never waits for delivery
        await alerter.flush()
        await alerter.aclose()
    assert len(alerts) == 1 and len(hook_500.bodies) == 1
    failed = [e for e in logs if e["event"] == "alert_delivery_failed"]
    assert len(failed) == 1 and failed[0]["error"] == "HTTP 500"
    assert failed[0]["alert"] == HEARTBEATS_STALE
    assert "SeCrEtToKeN" not in repr(logs) and "QuErYsEcReT" not in repr(logs)


async def test_a_hanging_webhook_times_out_without_blocking_or_raising(hook_hang: Hook) -> None:
    alerter = Alerter(AlertConfig(webhook_url=hook_hang.url, webhook_timeout_sec=0.3))
    with capture_logs() as logs:
        started = time.perf_counter()
        alerter.process(stale_fleet(at(0)))
        assert time.perf_counter() - started < 0.1
        await asyncio.wait_for(alerter.flush(), 2.0)
        elapsed = time.perf_counter() - started
        await alerter.aclose()
    assert 0.25 < elapsed < 1.5
    failed = [e for e in logs if e["event"] == "alert_delivery_failed"]
    assert len(failed) == 1 and failed[0]["error"] == "no answer within 0.3s"
    assert "SeCrEtToKeN" not in repr(logs)


async def test_an_unreachable_webhook_is_logged_and_the_next_alert_still_goes_out() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens on `port` any more
    url = f"http://127.0.0.1:{port}/hook/SeCrEtToKeN"
    alerter = Alerter(AlertConfig(webhook_url=url, webhook_timeout_sec=1.0))
    with capture_logs() as logs:
        alerter.process(stale_fleet(at(0)))
        alerter.process(fresh_fleet(at(1)))
        await asyncio.wait_for(alerter.flush(), 3.0)
        await alerter.aclose()
    failed = [e for e in logs if e["event"] == "alert_delivery_failed"]
    assert [e["status"] for e in failed] == ["firing", "resolved"]
    assert "SeCrEtToKeN" not in repr(logs)


# -- the provider's error text is the contract the text fallback reads ----------------


@pytest.mark.parametrize(
    ("status", "detail", "expected"),
    [
        (402, "Insufficient balance", "balance"),
        (401, "Unauthorized", "auth"),
        (422, "image is required", "rejected"),
        (400, "There are no longer any instances available", None),  # capacity
        (403, "forbidden for this account", None),  # skip that offering
    ],
)
async def test_runpod_refusals_are_classified_from_their_error_text(
    status: int, detail: str, expected: str | None
) -> None:
    settings = load_settings(
        orchestrator_provider="runpod",
        runpod_api_key="rp-key",
        runpod_worker_image="ghcr.io/acme/worker:1",
        runpod_gpu_types="NVIDIA A40",
        database_url="postgresql://u:pw@db.example/app",
    )
    transport = httpx.MockTransport(lambda req: httpx.Response(status, json={"detail": detail}))
    client = httpx.AsyncClient(transport=transport, base_url="https://api.runpod.io")
    provider = RunpodProvider(settings, client=client, pacer=Pacer(10_000, 10_000))
    with pytest.raises(ProviderError) as err:
        await provider.create_pod(PodSpec("gpu-x", {}, "NVIDIA A40@any"))
    await client.aclose()
    assert provider_problem(spawn_result("error", str(err.value))) == expected


def test_observe_judges_the_task_failure_rate_from_the_snapshot() -> None:
    alerter = Alerter(CFG)
    failing = snap()
    failing = replace(
        failing, queue=replace(failing.queue, completed_recently=2, failed_recently=8)
    )
    alerter.observe(report(failing))
    assert TASK_FAILURE_RATE_HIGH in alerter.firing
    healthy = replace(
        failing, queue=replace(failing.queue, completed_recently=98, failed_recently=2)
    )
    alerter.observe(report(healthy))
    assert TASK_FAILURE_RATE_HIGH not in alerter.firing
