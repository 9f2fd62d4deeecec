"""What the worker agent runs for a claimed task: a shell command (`WORKER_TASK_COMMAND`)
or, when none is set, a built-in demo handler.

A handler returns the task's result (a JSON object) or raises `TaskFailed`. The agent
owns timeouts and stop requests: it cancels `run`, and a handler must then leave
nothing running behind (the shell handler kills the command's process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Bounds on what we keep from a command's output, so one chatty task cannot bloat a row.
STDERR_TAIL_CHARS = 2000
STDOUT_MAX_CHARS = 10_000
DEMO_MAX_DURATION_SEC = 300.0

# The agent's own credential: the agent reports for the task, the task never needs it.
_ENV_NOT_PASSED = ("DATABASE_URL",)


class TaskFailed(Exception):
    """The task ran and failed; the message becomes the task's `error_message`."""


@dataclass(frozen=True)
class Task:
    """A claimed task, as `claim_task` returns it."""

    id: str
    task_type: str
    params: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Task:
        params = row.get("params")
        if isinstance(params, str):  # a legacy `text` column, or a driver without codecs
            with contextlib.suppress(ValueError):
                params = json.loads(params)
        return cls(
            id=str(row["id"]),
            task_type=str(row.get("task_type") or ""),
            params=params if isinstance(params, dict) else {},
            attempts=int(row.get("attempts") or 0),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "task_type": self.task_type,
                "params": self.params,
                "attempts": self.attempts,
            }
        )


class TaskHandler:
    """Base handler. `prepare` is the slow start-up (loading a model, say); it runs
    after the first heartbeat. `kill` is the last resort on a second signal."""

    async def prepare(self) -> None:
        return None

    async def run(self, task: Task) -> dict[str, Any]:
        raise NotImplementedError

    def kill(self) -> None:
        return None


class DemoHandler(TaskHandler):
    """Sleeps `params.duration_sec` (bounded), fails when `params.fail` is truthy,
    else echoes the params."""

    def __init__(self, worker_id: str) -> None:
        self._worker_id = worker_id

    async def run(self, task: Task) -> dict[str, Any]:
        try:
            duration = float(task.params.get("duration_sec", 1.0))
        except (TypeError, ValueError):
            bad = task.params.get("duration_sec")
            raise TaskFailed(f"duration_sec={bad!r} is not a number") from None
        await asyncio.sleep(min(max(duration, 0.0), DEMO_MAX_DURATION_SEC))
        if task.params.get("fail"):
            raise TaskFailed(f"demo task {task.id} failed on purpose (params.fail)")
        return {"echo": task.params, "handled_by": self._worker_id}


class ShellHandler(TaskHandler):
    """Runs `command` through the shell, the task JSON on stdin. Exit 0: stdout is the
    result (a JSON object, else `{"stdout": text}`); otherwise the stderr tail is the
    error. The command runs in its own session so its whole process group can be
    killed on timeout or stop."""

    def __init__(self, command: str) -> None:
        self._command = command
        self._running: set[asyncio.subprocess.Process] = set()

    async def prepare(self) -> None:
        if not self._command.strip():
            raise TaskFailed("WORKER_TASK_COMMAND is empty")

    async def run(self, task: Task) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if k not in _ENV_NOT_PASSED}
        env["TASK_ID"] = task.id
        proc = await asyncio.create_subprocess_shell(
            self._command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self._running.add(proc)
        try:
            stdout, stderr = await proc.communicate(task.to_json().encode())
        except BaseException:  # cancelled (timeout, stop): leave no process behind
            _kill_group(proc)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
            raise
        finally:
            self._running.discard(proc)
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace")[-STDERR_TAIL_CHARS:]
            raise TaskFailed(f"task command exited with code {proc.returncode}: {tail}")
        return parse_result(stdout.decode(errors="replace"))

    def kill(self) -> None:
        for proc in list(self._running):
            _kill_group(proc)


def parse_result(stdout: str) -> dict[str, Any]:
    """A JSON object on stdout is the result; anything else is kept as text."""
    try:
        value = json.loads(stdout)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    return {"stdout": stdout[-STDOUT_MAX_CHARS:]}


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # The shell leads its own session, so its pid is the group id; the group (and so
    # that id) lives on while any child of the command does, even after the shell exits.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def make_handler(command: str | None, worker_id: str) -> TaskHandler:
    return ShellHandler(command) if command else DemoHandler(worker_id)
