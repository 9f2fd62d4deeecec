"""Local provider: a "pod" is a detached subprocess running the worker agent.

Each pod is recorded in `<data dir>/pods/<worker id>.json` (pid and process start
time, which guards against pid reuse), so an orchestrator restarted later can still
list and terminate pods an earlier run started. Worker settings travel in the
environment, never in argv.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any

from ..errors import ProviderError
from ..models import Pod
from .base import PodSpec

_STOP_GRACE_SEC = 10.0


def _start_time(pid: int) -> str | None:
    """The process start time (clock ticks since boot), or None if it is gone.
    Without /proc (macOS) liveness falls back to `kill(pid, 0)`."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _signal_zero(pid)
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # zombie: exited, waiting to be reaped
        return None
    return fields[19]


def _signal_zero(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return "?"
    return "?"


# The orchestrator's own credentials: a pod gets what `worker_environment` gives it
# (its DSN or worker key), never these through the inherited environment.
_ORCHESTRATOR_ONLY = frozenset(
    {
        "DATABASE_URL",
        "WORKER_DATABASE_URL",
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_WORKER_KEY",
        "RUNPOD_API_KEY",
        "ALERT_WEBHOOK_URL",
    }
)


class LocalProvider:
    name = "local"

    def __init__(self, data_dir: Path, command: str | None = None) -> None:
        self._dir = data_dir / "pods"
        # The "image": what a pod runs. None runs this Python's worker agent.
        self._command = command
        # Our own children, kept so their exit is reaped (no zombies).
        self._children: dict[str, asyncio.subprocess.Process] = {}

    def _record_path(self, worker_id: str) -> Path:
        return self._dir / f"{worker_id}.json"

    def _read(self, worker_id: str) -> dict[str, object] | None:
        try:
            record = json.loads(self._record_path(worker_id).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _alive(self, record: dict[str, object]) -> bool:
        pid, started = record.get("pid"), record.get("started")
        # No start time recorded: it had exited before we could read one.
        return isinstance(pid, int) and started is not None and _start_time(pid) == started

    async def create_pod(self, spec: PodSpec) -> Pod:
        existing = await self._find(spec.worker_id)
        if existing is not None:
            return existing  # a retried launch: the pod already exists
        await asyncio.to_thread(self._dir.mkdir, parents=True, exist_ok=True)
        try:
            log_path = self._dir / f"{spec.worker_id}.log"
            with await asyncio.to_thread(open, log_path, "ab") as log:
                proc = await self._start(spec, log)
        except OSError as exc:
            raise ProviderError(f"could not start local worker {spec.worker_id}: {exc}") from exc
        self._children[spec.worker_id] = proc
        await asyncio.to_thread(self._write_record, spec.worker_id, proc.pid)
        return Pod(spec.worker_id, spec.worker_id, running=True, status="RUNNING", cost_per_hr=0.0)

    async def _start(self, spec: PodSpec, log: IO[bytes]) -> asyncio.subprocess.Process:
        inherited = {k: v for k, v in os.environ.items() if k not in _ORCHESTRATOR_ONLY}
        options: dict[str, Any] = {
            "env": {**inherited, **spec.env},
            "stdin": asyncio.subprocess.DEVNULL,
            "stdout": log,
            "stderr": asyncio.subprocess.STDOUT,
            "start_new_session": True,  # survives the orchestrator; its own process group
        }
        if self._command:
            return await asyncio.create_subprocess_shell(self._command, **options)
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gpu_orchestrator", "worker", **options
        )

    # File and /proc reads run in a thread: the event loop serves heartbeats,
    # leases and HTTP meanwhile.

    def _write_record(self, worker_id: str, pid: int) -> None:
        record = {"pid": pid, "started": _start_time(pid), "name": worker_id}
        self._record_path(worker_id).write_text(json.dumps(record))

    def _pod(self, worker_id: str) -> Pod | None:
        record = self._read(worker_id)
        if record is None:
            return None
        alive = self._alive(record)
        return Pod(
            pod_id=worker_id,
            name=worker_id,
            running=alive,
            status="RUNNING" if alive else "EXITED",
            cost_per_hr=0.0,
        )

    def _pods(self) -> list[Pod]:
        if not self._dir.is_dir():
            return []
        pods = [self._pod(p.stem) for p in sorted(self._dir.glob("*.json"))]
        return [p for p in pods if p is not None]

    async def _find(self, worker_id: str) -> Pod | None:
        return await asyncio.to_thread(self._pod, worker_id)

    async def list_pods(self) -> list[Pod]:
        return await asyncio.to_thread(self._pods)

    async def terminate_pod(self, worker_id: str, pod_id: str | None) -> None:
        record = await asyncio.to_thread(self._read, worker_id)
        if record is not None and await asyncio.to_thread(self._alive, record):
            await self._stop(worker_id, record)
        self._children.pop(worker_id, None)
        await asyncio.to_thread(self._record_path(worker_id).unlink, missing_ok=True)

    async def _stop(self, worker_id: str, record: dict[str, object]) -> None:
        """SIGTERM to the pod's process group (the agent reports its task), then
        SIGKILL after a grace period."""
        pid = record["pid"]
        assert isinstance(pid, int)  # checked by _alive
        for sig, wait in ((signal.SIGTERM, _STOP_GRACE_SEC), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            if await self._exited(worker_id, record, wait):
                return
        raise ProviderError(f"local worker {worker_id} (pid {pid}) did not exit after SIGKILL")

    async def _exited(self, worker_id: str, record: dict[str, object], timeout: float) -> bool:
        child = self._children.get(worker_id)
        if child is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), timeout)
            return child.returncode is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not await asyncio.to_thread(self._alive, record):
                return True
            await asyncio.sleep(0.05)
        return not await asyncio.to_thread(self._alive, record)

    async def aclose(self) -> None:
        """Pods keep running: they belong to the fleet, not to this process."""
        self._children.clear()
