"""Alert delivery: the `Alerter` (one per daemon) turns each cycle's conditions
(`alert_rules.evaluate`) into messages: an alert when a key starts firing, a repeat
at most once per `cooldown_sec` while it keeps firing, and a "resolved" message
when it clears; breaker opened/closed are one-shot notices. Delivery is
fire-and-forget through a bounded queue and one sender task: a slow, failing or
hanging webhook is logged (`alert_delivery_failed`) and never raises into, nor
blocks, the loop. The webhook URL is a secret: only its scheme and host are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import httpx
import structlog

from ..loop import CycleReport
from .alert_rules import (
    Alert,
    AlertCondition,
    AlertConfig,
    TaskStats,
    age_sec,
    evaluate,
    minutes,
)

log = structlog.get_logger()

QUEUE_SIZE = 100  # alerts waiting for delivery; beyond this they are dropped (logged)


@dataclass
class _Firing:
    since: datetime
    last_sent: datetime


class Alerter:
    """One per daemon: de-duplicates conditions into alerts and delivers them.

    Memory (lost on restart, which at worst re-announces a firing alert): the keys
    firing now with when they started and were last sent, and the last breaker
    notice. `process` (and `observe`) is synchronous and never blocks: alerts go to
    a bounded queue that one sender task drains. Unusable after `aclose`."""

    def __init__(self, cfg: AlertConfig, client: httpx.AsyncClient | None = None) -> None:
        self._cfg = cfg
        self._client = client
        self._own_client = client is None
        self._firing: dict[str, _Firing] = {}
        self._last_notice: str | None = None
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(QUEUE_SIZE)
        self._sender: asyncio.Task[None] | None = None

    def observe(self, report: CycleReport) -> None:
        """`Orchestrator.run_forever(on_cycle=alerter.observe)`: `process` with the
        task outcomes the snapshot carries."""
        snap = report.snapshot
        stats = None
        if snap is not None:
            queue = snap.queue
            window = self._cfg.task_window_sec
            stats = TaskStats(queue.completed_recently, queue.failed_recently, window)
        self.process(report, stats)

    def process(self, report: CycleReport, task_stats: TaskStats | None = None) -> list[Alert]:
        """Judges one cycle, logs and queues what must be said, returns those alerts.
        Never raises and never waits for delivery."""
        try:
            alerts = self.step(evaluate(report, self._cfg, task_stats), report)
        except Exception as exc:  # a bug here must not stop the loop
            log.error("alert_evaluation_failed", error=f"{type(exc).__name__}: {exc}")
            return []
        for alert in alerts:
            self._emit(alert)
        return alerts

    def step(self, conditions: Mapping[str, AlertCondition], report: CycleReport) -> list[Alert]:
        """The alerts these conditions call for, updating the memory (no delivery)."""
        if report.snapshot is None:
            return []
        now = report.snapshot.now
        out: list[Alert] = []
        for key, cond in conditions.items():
            if cond.one_shot:
                if cond.firing and cond.fingerprint != self._last_notice:
                    self._last_notice = cond.fingerprint
                    out.append(Alert(key, "firing", cond.severity, cond.message, cond.fields, now))
                continue
            state = self._firing.get(key)
            if cond.firing is None:
                continue
            if cond.firing and state is None:
                self._firing[key] = _Firing(since=now, last_sent=now)
                out.append(Alert(key, "firing", cond.severity, cond.message, cond.fields, now))
            elif cond.firing and state is not None:
                if age_sec(now, state.last_sent) >= self._cfg.cooldown_sec:
                    state.last_sent = now
                    message = f"{cond.message} (firing for {minutes(age_sec(now, state.since))})"
                    out.append(
                        Alert(key, "firing", cond.severity, message, cond.fields, now, repeat=True)
                    )
            elif state is not None:
                del self._firing[key]
                lasted = minutes(max(0.0, age_sec(now, state.since)))
                message = f"cleared after {lasted}: {cond.message}"
                out.append(Alert(key, "resolved", cond.severity, message, cond.fields, now))
        return out

    @property
    def firing(self) -> frozenset[str]:
        """Keys firing now (for the health report)."""
        return frozenset(self._firing)

    def _emit(self, alert: Alert) -> None:
        level = "warning" if alert.status == "firing" and alert.severity != "info" else "info"
        getattr(log, level)(
            f"alert_{alert.status}",
            alert=alert.key,
            severity=alert.severity,
            message=alert.message,
            repeat=alert.repeat,
        )
        if self._cfg.webhook_url is None:
            return
        try:
            self._queue.put_nowait(alert)
            if self._sender is None or self._sender.done():
                self._sender = asyncio.get_running_loop().create_task(
                    self._send_all(), name="alert_sender"
                )
        except asyncio.QueueFull:
            log.warning("alert_dropped", alert=alert.key, status=alert.status, why="queue_full")
        except RuntimeError:  # no running loop: nothing can deliver it
            log.warning("alert_dropped", alert=alert.key, status=alert.status, why="no_loop")

    async def _send_all(self) -> None:
        while not self._queue.empty():
            alert = self._queue.get_nowait()
            try:
                await self.deliver(alert)
            finally:
                self._queue.task_done()

    async def deliver(self, alert: Alert) -> bool:
        """POSTs one alert; True when the webhook answered 2xx. Never raises (except
        cancellation); failures are logged without the URL's secret parts."""
        url = self._cfg.webhook_url
        if url is None:
            return False
        payload = alert.slack_payload() if self._cfg.format == "slack" else alert.generic_payload()
        where = redact_url(url)
        try:
            client = self._http()
            resp = await asyncio.wait_for(
                client.post(url, json=payload), self._cfg.webhook_timeout_sec
            )
        except TimeoutError:
            error = f"no answer within {self._cfg.webhook_timeout_sec:g}s"
        except Exception as exc:
            error = _scrub(f"{type(exc).__name__}: {exc}", url)
        else:
            if resp.is_success:
                log.info("alert_delivered", alert=alert.key, status=alert.status, webhook=where)
                return True
            error = f"HTTP {resp.status_code}"
        log.warning(
            "alert_delivery_failed",
            alert=alert.key,
            status=alert.status,
            webhook=where,
            error=error,
        )
        return False

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._cfg.webhook_timeout_sec), follow_redirects=False
            )
        return self._client

    async def flush(self) -> None:
        """Waits until every queued alert was delivered or failed."""
        await self._queue.join()

    async def aclose(self) -> None:
        """Gives queued alerts one timeout's grace, then stops the sender and closes
        the HTTP client it made."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), self._cfg.webhook_timeout_sec)
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None


def redact_url(url: str) -> str:
    """`https://hooks.slack.com/services/T/B/secret` -> `https://hooks.slack.com/…`."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def _scrub(text: str, url: str) -> str:
    """Removes the URL, and its path and query, from an error message."""
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query, parts.password or ""):
        if secret and secret != "/":
            text = text.replace(secret, "…")
    return text[:300]
