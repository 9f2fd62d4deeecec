"""The worker agent against an in-memory store: start-up order, heartbeats, drain,
stop and signals, the shell and demo handlers, and the health endpoint.

The DB-backed behaviour of the same four calls is tested against Postgres elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gpu_orchestrator.config import Settings
from gpu_orchestrator.errors import SettingsError, StoreError
from gpu_orchestrator.worker import agent as agent_module
from gpu_orchestrator.worker.agent import WorkerAgent, run_worker
from gpu_orchestrator.worker.handlers import ShellHandler, Task, TaskFailed, TaskHandler


class FakeStore:
    """Implements `WorkerStore` in memory with the SQL functions' rules: claims refused
    while draining, results accepted only from the holder of an `In Progress` task,
    failures requeue with `attempts + 1` until `max_attempts`."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.drain = False
        self.known = True
        self.heartbeat_error: Exception | None = None
        self.heartbeats: list[dict[str, Any]] = []  # successful ones
        self.calls: list[tuple[str, str | None]] = []  # (call, task id), in order
        self.heartbeat_seen = asyncio.Event()
        self.closed = False
        self.report_errors = 0  # the next reports (complete, fail) raise StoreError

    def add(self, task_id: str, params: dict[str, Any] | None = None) -> None:
        self.tasks[task_id] = {
            "id": task_id,
            "task_type": "demo",
            "params": params or {},
            "attempts": 0,
            "status": "Queued",
            "worker_id": None,
            "result": None,
            "error": None,
        }

    def count(self, call: str) -> int:
        return sum(1 for name, _ in self.calls if name == call)

    async def heartbeat(
        self,
        worker_id: str,
        logs: Sequence[Mapping[str, Any]],
        current_task_id: str | None,
        status: str = "active",
    ) -> dict[str, Any]:
        self.calls.append(("heartbeat", current_task_id))
        if self.heartbeat_error is not None:
            raise self.heartbeat_error
        if not self.known:
            return {"success": False, "error": "unknown worker", "should_drain": True}
        self.heartbeats.append(
            {"logs": [dict(x) for x in logs], "current_task_id": current_task_id, "status": status}
        )
        self.heartbeat_seen.set()
        return {
            "success": True,
            "status": "terminating" if self.drain else "active",
            "should_drain": self.drain,
        }

    async def claim_task(self, worker_id: str) -> dict[str, Any] | None:
        self.calls.append(("claim_task", None))
        await asyncio.sleep(0)  # a real store call suspends; a spinning loop must not hang tests
        if self.drain or not self.known:
            return None
        for task in self.tasks.values():
            if task["status"] == "Queued":
                task.update(status="In Progress", worker_id=worker_id)
                return {k: task[k] for k in ("id", "task_type", "params", "attempts")}
        return None

    def _held(self, task_id: str, worker_id: str) -> dict[str, Any] | None:
        task = self.tasks.get(task_id)
        if task is None or task["status"] != "In Progress" or task["worker_id"] != worker_id:
            return None
        return task

    async def tasks_held(self, worker_id: str) -> list[str]:
        return [
            t["id"]
            for t in self.tasks.values()
            if t["status"] == "In Progress" and t["worker_id"] == worker_id
        ]

    def _maybe_fail_report(self) -> None:
        if self.report_errors > 0:
            self.report_errors -= 1
            raise StoreError("report failed: connection refused")

    async def complete_task(self, task_id: str, worker_id: str, result: Mapping[str, Any]) -> bool:
        self.calls.append(("complete_task", task_id))
        self._maybe_fail_report()
        task = self._held(task_id, worker_id)
        if task is None:
            return False
        task.update(status="Complete", result=dict(result))
        return True

    async def fail_task(self, task_id: str, worker_id: str, error: str, max_attempts: int) -> bool:
        self.calls.append(("fail_task", task_id))
        self._maybe_fail_report()
        task = self._held(task_id, worker_id)
        if task is None:
            return False
        task["attempts"] += 1
        task["error"] = error
        if task["attempts"] >= max_attempts:
            task["status"] = "Failed"
        else:
            task.update(status="Queued", worker_id=None)
        return True

    async def close(self) -> None:
        self.closed = True


class GatedHandler(TaskHandler):
    """Runs until the test releases it; records being cancelled or killed."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False
        self.killed = False
        self.on_run: Callable[[Task], None] | None = None

    async def run(self, task: Task) -> dict[str, Any]:
        self.started.set()
        if self.on_run is not None:
            self.on_run(task)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return {"done": task.id}

    def kill(self) -> None:
        self.killed = True


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "worker_id": "w1",
        "database_url": None,
        "worker_heartbeat_sec": 0.05,
        "worker_poll_sec": 0.05,
        "worker_task_command": None,
        "worker_health_port": None,
        "worker_task_timeout_sec": 30,
        "max_task_attempts": 3,
    }
    return Settings(**{**values, **overrides})


async def wait_until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    """Polls a condition on state no event announces (counters, the fake's rows)."""
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(
    agent: WorkerAgent, store: FakeStore, stop: asyncio.Event
) -> AsyncIterator[asyncio.Task[int]]:
    """Runs the agent; always stops it afterwards so a failed test leaks nothing."""
    run = asyncio.create_task(agent.run(store))
    try:
        yield run
    finally:
        stop.set()
        await asyncio.wait({run}, timeout=5)
        run.cancel()


def start(
    settings: Settings | None = None, handler: TaskHandler | None = None
) -> tuple[WorkerAgent, asyncio.Event]:
    stop = asyncio.Event()
    return WorkerAgent(settings or make_settings(), stop=stop, handler=handler), stop


def all_logs(store: FakeStore) -> list[dict[str, Any]]:
    return [line for beat in store.heartbeats for line in beat["logs"]]


# settings -------------------------------------------------------------------


async def test_missing_worker_id_is_a_settings_error_naming_it() -> None:
    with pytest.raises(SettingsError, match=r"^WORKER_ID "):
        await run_worker(make_settings(worker_id=None), FakeStore(), asyncio.Event())


async def test_missing_database_url_is_a_settings_error_when_no_store_is_given() -> None:
    with pytest.raises(SettingsError, match=r"^DATABASE_URL "):
        await run_worker(make_settings(), None, asyncio.Event())


# start-up and heartbeat -----------------------------------------------------


async def test_first_heartbeat_is_sent_before_slow_startup_finishes() -> None:
    store = FakeStore()

    class SlowStart(GatedHandler):
        async def prepare(self) -> None:
            # Completes only if a heartbeat arrives while start-up is still under way.
            await asyncio.wait_for(store.heartbeat_seen.wait(), 2)

    agent, stop = start(handler=SlowStart())
    with capture_logs() as logs:
        async with running(agent, store, stop) as run:
            await wait_until(lambda: agent.status == "running")
            stop.set()
            assert await run == 0
    steps = [e for e in logs if e["event"] == "startup_step"]
    assert [e["step"] for e in steps] == ["connect_db", "handler_ready"]
    assert all(isinstance(e["duration_ms"], float) for e in steps)
    shipped = [line["metadata"].get("step") for line in all_logs(store)]
    assert {"connect_db", "handler_ready"} <= set(shipped)


async def test_heartbeat_failures_are_counted_and_retried_without_losing_logs() -> None:
    store = FakeStore()
    store.heartbeat_error = StoreError("heartbeat failed: connection refused")
    agent, stop = start()
    async with running(agent, store, stop) as run:
        await wait_until(lambda: store.count("heartbeat") >= 3)
        assert not run.done()
        assert agent.heartbeat_failures >= 3
        store.heartbeat_error = None
        await store.heartbeat_seen.wait()
        # Lines recorded while the store was down arrive with the first good heartbeat.
        first = store.heartbeats[0]["logs"]
        assert any(line["message"].startswith("startup_step step=connect_db") for line in first)
        stop.set()
        assert await run == 0


async def test_shipped_log_lines_have_the_system_logs_shape() -> None:
    store = FakeStore()
    store.add("t1", {"duration_sec": 0})
    agent, stop = start()
    async with running(agent, store, stop) as run:
        await wait_until(lambda: store.tasks["t1"]["status"] == "Complete")
        stop.set()
        assert await run == 0
    done = [line for line in all_logs(store) if line["message"].startswith("task_completed")]
    assert len(done) == 1
    line = done[0]
    assert set(line) == {"timestamp", "level", "message", "task_id", "metadata"}
    assert line["task_id"] == "t1" and line["level"] == "INFO"
    assert datetime.fromisoformat(line["timestamp"]).tzinfo is not None
    assert isinstance(line["metadata"]["duration_ms"], float)


async def test_unknown_worker_is_told_to_drain_and_exits_without_claiming() -> None:
    store = FakeStore()
    store.known = False
    store.add("t1")
    agent, stop = start()
    async with running(agent, store, stop) as run:
        assert await asyncio.wait_for(run, 3) == 0
    assert store.tasks["t1"]["status"] == "Queued"
    assert agent.heartbeat_failures >= 1


# drain and stop -------------------------------------------------------------


async def test_drain_finishes_the_current_task_then_exits_without_claiming_more() -> None:
    store = FakeStore()
    store.add("t1")
    store.add("t2")
    handler = GatedHandler()
    agent, stop = start(handler=handler)
    async with running(agent, store, stop) as run:
        await handler.started.wait()
        store.drain = True
        await wait_until(lambda: agent.status == "draining")
        assert not run.done()  # the task under way is finished, not dropped
        handler.release.set()
        assert await asyncio.wait_for(run, 3) == 0
    assert store.tasks["t1"]["status"] == "Complete"
    assert store.tasks["t1"]["result"] == {"done": "t1"}
    assert store.tasks["t2"]["status"] == "Queued"
    assert store.count("claim_task") == 1


async def test_a_finished_task_is_reported_through_a_database_blip_before_any_new_claim() -> None:
    store = FakeStore()
    store.add("t1")
    store.add("t2")
    store.report_errors = 3  # backoff 0.5 + 1 + 2 s: longer than the old give-up (~1.5 s)
    handler = GatedHandler()
    agent, stop = start(handler=handler)
    async with running(agent, store, stop):
        await handler.started.wait()
        handler.release.set()
        await wait_until(lambda: store.tasks["t1"]["status"] == "Complete", timeout=10)
    calls = [call for call in store.calls if call[0] != "heartbeat"]
    first = calls.index(("complete_task", "t1"))
    # four tries over ~3.5 s, and nothing claimed until the result is in
    assert calls[first : first + 4] == [("complete_task", "t1")] * 4
    assert ("claim_task", None) not in calls[:first][1:]


async def test_a_task_left_by_an_earlier_agent_of_this_pod_is_released_at_start() -> None:
    store = FakeStore()
    store.add("left")
    store.tasks["left"].update(status="In Progress", worker_id="w1")
    agent, stop = start(handler=GatedHandler())
    async with running(agent, store, stop):
        await wait_until(lambda: store.count("fail_task") == 1)
        # requeued with one more attempt (then claimed again as a new run)
        assert store.tasks["left"]["attempts"] == 1
        assert "restarted" in (store.tasks["left"]["error"] or "")
    assert store.calls.index(("fail_task", "left")) < store.calls.index(("claim_task", None))


async def test_stop_reports_the_in_flight_task_failed_then_sends_a_last_heartbeat() -> None:
    store = FakeStore()
    store.add("t1")
    handler = GatedHandler()
    stop = asyncio.Event()
    run = asyncio.create_task(run_worker(make_settings(), store, stop, handler=handler))
    await handler.started.wait()
    stop.set()
    assert await asyncio.wait_for(run, 3) == 0
    assert handler.cancelled
    task = store.tasks["t1"]
    assert (task["status"], task["attempts"]) == ("Queued", 1)
    assert task["error"] == "worker w1 stopped by stop request"
    assert store.calls[-2:] == [("fail_task", "t1"), ("heartbeat", None)]
    last_logs = [line["message"] for line in store.heartbeats[-1]["logs"]]
    assert any(m.startswith("worker_exiting reason=stopped") for m in last_logs)
    assert not store.closed  # a store passed in belongs to the caller


async def test_sigterm_names_the_signal_in_the_requeued_task_error() -> None:
    store = FakeStore()
    store.add("t1")
    handler = GatedHandler()
    run = asyncio.create_task(run_worker(make_settings(), store, None, handler=handler))
    try:
        await handler.started.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(run, 3) == 0
    finally:
        run.cancel()
    assert store.tasks["t1"]["error"] == "worker w1 stopped by SIGTERM"
    assert not handler.killed


async def test_second_signal_kills_the_task_and_exits_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exits: list[int] = []
    monkeypatch.setattr(agent_module, "_force_exit", exits.append)
    store = FakeStore()
    store.add("t1")
    handler = GatedHandler()
    run = asyncio.create_task(run_worker(make_settings(), store, None, handler=handler))
    try:
        await handler.started.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(run, 3)
    finally:
        run.cancel()
    assert exits == [128 + signal.SIGINT.value]
    assert handler.killed


async def test_a_result_for_a_task_taken_away_is_logged_as_rejected() -> None:
    store = FakeStore()
    store.add("t1")
    handler = GatedHandler()
    # An operator cancels the task while it runs.
    handler.on_run = lambda task: store.tasks[task.id].update(status="Cancelled")
    handler.release.set()
    agent, stop = start(handler=handler)
    with capture_logs() as logs:
        async with running(agent, store, stop):
            await wait_until(lambda: store.count("complete_task") == 1)
    rejected = [e for e in logs if e["event"] == "task_result_rejected"]
    assert rejected == [
        {
            "event": "task_result_rejected",
            "task_id": "t1",
            "call": "complete_task",
            "log_level": "warning",
        }
    ]


# demo handler ---------------------------------------------------------------


async def test_demo_handler_echoes_params_or_fails_on_request() -> None:
    store = FakeStore()
    store.add("ok", {"duration_sec": 0, "x": 1})
    store.add("bad", {"duration_sec": 0, "fail": True})
    agent, stop = start(make_settings(max_task_attempts=1))
    async with running(agent, store, stop):
        await wait_until(lambda: store.tasks["bad"]["status"] == "Failed")
    assert store.tasks["ok"]["status"] == "Complete"
    assert store.tasks["ok"]["result"] == {"echo": {"duration_sec": 0, "x": 1}, "handled_by": "w1"}
    assert "failed on purpose" in store.tasks["bad"]["error"]
    assert (agent.tasks_completed, agent.tasks_failed) == (1, 1)


# shell handler --------------------------------------------------------------

TASK = Task(id="t1", task_type="render", params={"n": 2}, attempts=1)


async def test_shell_command_reads_the_task_json_on_stdin_and_returns_json_stdout() -> None:
    result = await ShellHandler("cat").run(TASK)
    assert result == {"id": "t1", "task_type": "render", "params": {"n": 2}, "attempts": 1}


async def test_shell_command_non_json_stdout_is_kept_as_text() -> None:
    assert await ShellHandler("echo hello").run(TASK) == {"stdout": "hello\n"}
    assert await ShellHandler("echo '[1, 2]'").run(TASK) == {"stdout": "[1, 2]\n"}


async def test_shell_command_failure_carries_the_exit_code_and_stderr_tail() -> None:
    command = "python3 -c \"import sys; sys.stderr.write('x' * 5000 + 'LAST')\"; exit 3"
    with pytest.raises(TaskFailed) as caught:
        await ShellHandler(command).run(TASK)
    message = str(caught.value)
    assert message.startswith("task command exited with code 3: ")
    assert message.endswith("xLAST")
    assert len(message) < 2100


async def test_shell_command_does_not_receive_the_database_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:secret@db/x")
    command = 'echo "{\\"db\\": \\"${DATABASE_URL:-unset}\\", \\"task\\": \\"$TASK_ID\\"}"'
    assert await ShellHandler(command).run(TASK) == {"db": "unset", "task": "t1"}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has already died


@pytest.mark.parametrize("ending", ["timeout", "stop"])
async def test_interrupted_shell_task_is_failed_and_its_process_group_killed(
    ending: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    command = f"sleep 30 & echo $! > {pidfile}; wait"
    timeout = 0.3 if ending == "timeout" else 30
    settings = make_settings(
        worker_task_command=command, worker_task_timeout_sec=timeout, max_task_attempts=1
    )
    store = FakeStore()
    store.add("t1")
    agent, stop = start(settings)
    async with running(agent, store, stop) as run:
        await wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        child = int(pidfile.read_text())
        assert _alive(child)
        if ending == "stop":
            stop.set()
            assert await asyncio.wait_for(run, 5) == 0
        await wait_until(lambda: store.count("fail_task") == 1)
        await wait_until(lambda: not _alive(child))
    expected = "timed out after 0.3s" if ending == "timeout" else "stopped by stop request"
    assert store.tasks["t1"]["status"] == "Failed"
    assert expected in store.tasks["t1"]["error"]


# health endpoint ------------------------------------------------------------


async def http_get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_health_is_200_while_heartbeats_succeed_and_503_once_they_go_stale() -> None:
    store = FakeStore()
    agent, stop = start(make_settings(worker_health_port=0))
    async with running(agent, store, stop):
        await wait_until(lambda: agent.status == "running" and agent.health_port is not None)
        port = agent.health_port
        assert port is not None
        status, body = await http_get(port, "/health")
        assert status == 200
        assert body["worker_id"] == "w1" and body["status"] == "running"
        assert body["last_heartbeat_ok_at"] is not None
        assert set(body) == {
            "worker_id",
            "status",
            "current_task_id",
            "last_heartbeat_ok_at",
            "heartbeat_failures",
            "tasks_completed",
            "tasks_failed",
            "uptime_sec",
        }
        store.heartbeat_error = StoreError("heartbeat failed: timeout")
        # 3 x 0.05 s without a good heartbeat makes the pod unhealthy.
        await wait_until(lambda: not agent.health()[0])
        status, body = await http_get(port, "/health")
        assert status == 503
        assert body["heartbeat_failures"] >= 1


async def test_health_is_503_before_any_heartbeat_succeeds_and_404_elsewhere() -> None:
    store = FakeStore()
    store.heartbeat_error = StoreError("heartbeat failed: connection refused")
    agent, stop = start(make_settings(worker_health_port=0))
    async with running(agent, store, stop):
        await wait_until(lambda: agent.health_port is not None)
        port = agent.health_port
        assert port is not None
        status, body = await http_get(port, "/health")
        assert (status, body["last_heartbeat_ok_at"]) == (503, None)
        status, body = await http_get(port, "/metrics")
        assert (status, body) == (404, {"error": "not found"})
