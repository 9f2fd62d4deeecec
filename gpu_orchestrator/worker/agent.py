"""The reference worker agent: runs inside a pod, heartbeats, claims tasks, runs them
and reports them, through the four worker-facing SQL functions (DESIGN §3, §4).

Start-up order matters (seed "Prevention 3"): the first heartbeat goes out right
after the database connection, before any slow step, so the orchestrator sees the
pod alive while a model loads; each step is logged with its duration.

Stopping: a drain request (heartbeat answer `should_drain`) finishes the task under
way and exits 0. SIGTERM/SIGINT (or the `stop` event) interrupts the task and
reports it failed so the SQL requeues it, sends a last heartbeat and exits 0; a
second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from ..config import Settings
from ..errors import SettingsError, StoreError
from ..store.base import WorkerStore
from .handlers import Task, TaskFailed, TaskHandler, make_handler
from .health import HealthServer
from .logbuffer import LogBuffer

log = structlog.get_logger()

AgentStatus = Literal["starting", "running", "draining", "stopping"]

_CONNECT_ATTEMPTS = 5  # then exit 1: the orchestrator's boot deadline reaps the pod
# A finished task's outcome is retried with backoff for this long before the agent
# gives up on it (and only then claims anything else): a database blip of minutes
# must not turn a finished task into a stuck one.
_REPORT_BUDGET_SEC = 300.0
_REPORT_MAX_DELAY_SEC = 30.0
_CANCEL_GRACE_SEC = 5.0  # how long an interrupted handler may take to clean up

# Replaced in tests: a second signal must not end the test process.
_force_exit: Callable[[int], None] = os._exit


def check_settings(settings: Settings, need_database_url: bool = True) -> str:
    """The worker id; raises `SettingsError` naming the first missing variable."""
    if not settings.worker_id:
        raise SettingsError("WORKER_ID is not set: the worker agent needs its worker id")
    if need_database_url and settings.store_kind == "embedded":
        raise SettingsError(
            "DATABASE_URL is not set (nor SUPABASE_URL with SUPABASE_WORKER_KEY): the worker "
            "agent needs the state store"
        )
    return settings.worker_id


class WorkerAgent:
    """One agent per pod. `run` returns the process exit code."""

    def __init__(
        self,
        settings: Settings,
        stop: asyncio.Event | None = None,
        handler: TaskHandler | None = None,
    ) -> None:
        self.worker_id = check_settings(settings, need_database_url=False)
        self._settings = settings
        self._stop = stop if stop is not None else asyncio.Event()
        self._stop_reason = "stop request"
        self._handler = handler or make_handler(settings.worker_task_command, self.worker_id)
        self._logs = LogBuffer()
        self._wake = asyncio.Event()  # set once, by drain or stop: ends every idle wait
        self._draining = False
        self._ready = False
        self._store: WorkerStore | None = None
        self._health: HealthServer | None = None
        self._current: Task | None = None
        self._started = time.monotonic()
        self._last_ok: tuple[float, datetime] | None = None  # (monotonic, wall clock)
        self.heartbeat_failures = 0
        self.tasks_completed = 0
        self.tasks_failed = 0

    # state seen from outside ------------------------------------------------

    @property
    def status(self) -> AgentStatus:
        if self._stop.is_set():
            return "stopping"
        if self._draining:
            return "draining"
        return "running" if self._ready else "starting"

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def health_port(self) -> int | None:
        return self._health.port if self._health is not None else None

    def request_stop(self, reason: str) -> None:
        """First stop request wins; `reason` ends up in the interrupted task's error."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    def kill_task(self) -> None:
        """Last resort before a hard exit: leave no task process behind."""
        self._handler.kill()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """For `GET /health`: healthy while the last heartbeat succeeded recently."""
        now = time.monotonic()
        window = 3 * self._settings.worker_heartbeat_sec
        healthy = self._last_ok is not None and now - self._last_ok[0] <= window
        return healthy, {
            "worker_id": self.worker_id,
            "status": self.status,
            "current_task_id": self._current.id if self._current else None,
            "last_heartbeat_ok_at": self._last_ok[1].isoformat() if self._last_ok else None,
            "heartbeat_failures": self.heartbeat_failures,
            "tasks_completed": self.tasks_completed,
            "tasks_failed": self.tasks_failed,
            "uptime_sec": round(now - self._started, 3),
        }

    # lifecycle --------------------------------------------------------------

    async def run(self, store: WorkerStore | None = None) -> int:
        """Connects (unless given a store, which the caller then closes), works until
        drained or stopped. 0: clean exit; 1: no store or the agent crashed."""
        with structlog.contextvars.bound_contextvars(worker_id=self.worker_id):
            relay = asyncio.create_task(self._relay_stop(), name="worker-stop-relay")
            try:
                started = time.monotonic()
                owned = store is None
                store = store if store is not None else await self._connect()
                if store is None:
                    return 0 if self._stop.is_set() else 1
                self._step_done("connect_db", started)
                try:
                    return await self._run_with(store)
                finally:
                    if owned:
                        await store.close()
            finally:
                relay.cancel()

    async def _connect(self) -> WorkerStore | None:
        check_settings(self._settings)
        for attempt in range(1, _CONNECT_ATTEMPTS + 1):
            try:
                return await self._open_store()
            except StoreError as exc:
                log.warning("connect_db_failed", attempt=attempt, error=str(exc))
            if attempt < _CONNECT_ATTEMPTS and await self._stopped_within(min(2.0**attempt, 30)):
                return None
        log.error("connect_db_gave_up", attempts=_CONNECT_ATTEMPTS)
        return None

    async def _open_store(self) -> WorkerStore:
        """DATABASE_URL, else the REST path with the worker key (SUPABASE_WORKER_KEY)."""
        settings = self._settings
        if settings.database_url is not None:
            from ..store.postgres import PostgresStore  # asyncpg only when really connecting

            return await PostgresStore.connect(settings.database_url.get_secret_value(), 2)
        from ..store.supabase import SupabaseStore

        key = settings.supabase_worker_key or settings.supabase_service_role_key
        assert settings.supabase_url is not None and key is not None  # check_settings
        return await SupabaseStore.connect(settings.supabase_url, key.get_secret_value())

    async def _run_with(self, store: WorkerStore) -> int:
        self._store = store
        beats = asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat")
        crashed = False
        try:
            if await self._start_up():
                await self._work_loop()
        except Exception:
            crashed = True
            log.exception("worker_crashed")
        finally:
            beats.cancel()
            await asyncio.wait({beats}, timeout=_CANCEL_GRACE_SEC)
            await self._finish(crashed)
        return 1 if crashed else 0

    async def _start_up(self) -> bool:
        """The slow steps, after the heartbeat task started. False when stopped."""
        port = self._settings.worker_health_port
        if port is not None:
            started = time.monotonic()
            server = HealthServer(self.health, port)
            try:
                await server.start()
            except OSError as exc:  # a busy port must not keep the pod from working
                log.error("health_server_failed", port=port, error=str(exc))
            else:
                self._health = server
                self._step_done("health_server", started, port=server.port)
        started = time.monotonic()
        prepare = asyncio.ensure_future(self._handler.prepare())
        if not await self._race_stop(prepare):
            return False
        prepare.result()  # a handler that cannot start is a crash (exit 1)
        self._step_done("handler_ready", started, handler=type(self._handler).__name__)
        await self._resolve_leftovers()
        self._ready = True
        return True

    async def _resolve_leftovers(self) -> None:
        """Tasks still held by this worker id were running when an earlier agent
        process of this pod died: their outcome is unknown, so they go back to the
        queue (attempts + 1) now rather than after the stuck-task timeout."""
        assert self._store is not None
        store = self._store
        try:
            held = await store.tasks_held(self.worker_id)
        except StoreError as exc:
            log.warning("leftover_check_failed", error=str(exc))
            return
        error = f"worker {self.worker_id} restarted while running it"
        limit = self._settings.max_task_attempts
        for task_id in held:
            accepted = await self._report(
                "fail_task",
                functools.partial(store.fail_task, task_id, self.worker_id, error, limit),
            )
            self._logs.record("warning", "leftover_task_released", task_id=task_id, ok=accepted)

    async def _finish(self, crashed: bool) -> None:
        """Last heartbeat (it ships the remaining log lines), then the health server."""
        why = "crashed" if crashed else "stopped" if self._stop.is_set() else "drained"
        self._logs.record(
            "info",
            "worker_exiting",
            reason=why,
            tasks_completed=self.tasks_completed,
            tasks_failed=self.tasks_failed,
        )
        await self._beat("crashed" if crashed else "active")
        if self._health is not None:
            await self._health.close()

    async def _relay_stop(self) -> None:
        await self._stop.wait()
        self._logs.record("info", "stop_requested", reason=self._stop_reason)
        self._wake.set()

    def _step_done(self, step: str, started: float, **fields: Any) -> None:
        ms = round((time.monotonic() - started) * 1000, 1)
        self._logs.record("info", "startup_step", step=step, duration_ms=ms, **fields)

    # heartbeat --------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._beat()
            await asyncio.sleep(self._settings.worker_heartbeat_sec)

    async def _beat(self, status: str = "active") -> None:
        """One heartbeat. Failures are logged and counted, never raised: the next
        tick retries, and unsent log lines wait for it."""
        assert self._store is not None
        batch = self._logs.take()
        current = self._current.id if self._current else None
        timeout = max(2 * self._settings.worker_heartbeat_sec, 5.0)
        answer: dict[str, Any] | None = None
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel.
            async with asyncio.timeout(timeout):
                answer = await self._store.heartbeat(self.worker_id, batch, current, status)
        except (StoreError, TimeoutError) as exc:
            self.heartbeat_failures += 1
            log.warning(
                "heartbeat_failed",
                error=str(exc) or type(exc).__name__,
                failures=self.heartbeat_failures,
            )
        except Exception:  # a bug in a store must not silence the heartbeat for good
            self.heartbeat_failures += 1
            log.exception("heartbeat_error", failures=self.heartbeat_failures)
        finally:
            if answer is None:
                self._logs.restore(batch)
        if answer is not None:
            self._on_answer(answer)

    def _on_answer(self, answer: dict[str, Any]) -> None:
        if answer.get("success"):
            self._last_ok = (time.monotonic(), datetime.now(UTC))
        else:  # e.g. an unknown worker: its row is gone, it must not hold a GPU
            self.heartbeat_failures += 1
            log.warning("heartbeat_rejected", error=answer.get("error"))
        if answer.get("should_drain") and not self._draining:
            self._draining = True
            self._logs.record(
                "info",
                "drain_requested",
                worker_status=answer.get("status"),
                current_task_id=self._current.id if self._current else None,
            )
            self._wake.set()

    # tasks ------------------------------------------------------------------

    async def _work_loop(self) -> None:
        while not self._stop.is_set() and not self._draining:
            task = await self._claim()
            if task is None:
                await self._wait_for_wake(self._settings.worker_poll_sec)
                continue
            await self._run_task(task)

    async def _claim(self) -> Task | None:
        assert self._store is not None
        try:
            row = await self._store.claim_task(self.worker_id)
        except StoreError as exc:
            log.warning("claim_failed", error=str(exc))
            return None
        return None if row is None else Task.from_row(row)

    async def _run_task(self, task: Task) -> None:
        self._current = task
        self._logs.record(
            "info",
            "task_claimed",
            task_id=task.id,
            task_type=task.task_type,
            attempts=task.attempts,
        )
        started = time.monotonic()
        try:
            outcome = await self._execute(task)
            ms = round((time.monotonic() - started) * 1000, 1)
            if isinstance(outcome, dict):
                self.tasks_completed += 1
                self._logs.record("info", "task_completed", task_id=task.id, duration_ms=ms)
                await self._report_complete(task, outcome)
            else:
                self.tasks_failed += 1
                self._logs.record(
                    "warning", "task_failed", task_id=task.id, duration_ms=ms, error=outcome[:500]
                )
                await self._report_failed(task, outcome)
        finally:
            self._current = None

    async def _execute(self, task: Task) -> dict[str, Any] | str:
        """The result, or the error message when the task failed or was interrupted."""
        timeout = self._settings.worker_task_timeout_sec
        work = asyncio.ensure_future(self._run_handler(task, timeout))
        if not await self._race_stop(work):
            return f"worker {self.worker_id} stopped by {self._stop_reason}"
        try:
            result = work.result()
        except TimeoutError:
            return f"task timed out after {timeout:g}s (WORKER_TASK_TIMEOUT_SEC)"
        except TaskFailed as exc:
            return str(exc) or "task failed"
        except Exception as exc:
            log.exception("task_handler_error", task_id=task.id)
            return f"{type(exc).__name__}: {exc}"
        if not isinstance(result, dict):
            return f"handler returned {type(result).__name__}, not a JSON object"
        return result

    async def _run_handler(self, task: Task, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await self._handler.run(task)

    async def _race_stop(self, work: asyncio.Future[Any]) -> bool:
        """Waits for `work` or a stop request. On stop `work` is cancelled (the handler
        kills what it started) and False returned."""
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if work.done():
            return True
        work.cancel()
        await asyncio.wait({work}, timeout=_CANCEL_GRACE_SEC)
        return False

    async def _report_complete(self, task: Task, result: dict[str, Any]) -> None:
        assert self._store is not None
        store = self._store
        accepted = await self._report(
            "complete_task", lambda: store.complete_task(task.id, self.worker_id, result)
        )
        self._check_accepted(task, "complete_task", accepted)

    async def _report_failed(self, task: Task, error: str) -> None:
        assert self._store is not None
        store, limit = self._store, self._settings.max_task_attempts
        accepted = await self._report(
            "fail_task", lambda: store.fail_task(task.id, self.worker_id, error, limit)
        )
        self._check_accepted(task, "fail_task", accepted)

    def _check_accepted(self, task: Task, call: str, accepted: bool | None) -> None:
        if accepted is False:  # the task left this worker (reaped, cancelled, requeued)
            self._logs.record("warning", "task_result_rejected", task_id=task.id, call=call)
        elif accepted is None:  # the orchestrator's stuck-task sweep will release it
            self._logs.record("error", "task_report_failed", task_id=task.id, call=call)

    async def _report(self, call: str, send: Callable[[], Awaitable[bool]]) -> bool | None:
        """The store's answer, retried on `StoreError` with backoff for up to
        `_REPORT_BUDGET_SEC`; None when it never answered."""
        deadline = time.monotonic() + _REPORT_BUDGET_SEC
        delay, attempt = 0.5, 0
        while True:
            attempt += 1
            try:
                return await send()
            except StoreError as exc:
                log.warning("report_failed", call=call, attempt=attempt, error=str(exc))
            if time.monotonic() + delay > deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, _REPORT_MAX_DELAY_SEC)

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        return self._stop.is_set()

    async def _wait_for_wake(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()


def install_signal_handlers(agent: WorkerAgent) -> Callable[[], None]:
    """SIGTERM/SIGINT: the first asks `agent` to stop; the second kills the task's
    processes and exits at once (128 + signal number). Returns the uninstaller."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if agent.stop_requested:
            log.warning("second_signal_exit_now", signal=sig.name)
            agent.kill_task()
            _force_exit(128 + sig.value)
            return
        log.info("signal_received", signal=sig.name)
        agent.request_stop(sig.name)

    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            log.warning("signal_handler_unavailable", signal=sig.name)
        else:
            installed.append(sig)

    def uninstall() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return uninstall


async def run_worker(
    settings: Settings,
    store: WorkerStore | None = None,
    stop: asyncio.Event | None = None,
    *,
    handler: TaskHandler | None = None,
) -> int:
    """The `worker` command. Without `store` it connects to DATABASE_URL (and closes
    it after); without `stop` it installs SIGTERM/SIGINT handlers. Returns the exit
    code. Raises `SettingsError` when WORKER_ID or DATABASE_URL is missing."""
    check_settings(settings, need_database_url=store is None)
    agent = WorkerAgent(settings, stop=stop, handler=handler)
    uninstall = install_signal_handlers(agent) if stop is None else None
    try:
        return await agent.run(store)
    finally:
        if uninstall is not None:
            uninstall()
