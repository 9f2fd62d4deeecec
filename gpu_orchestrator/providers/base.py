"""The provider contract: launch, list and terminate pods that run the worker agent.

A pod's name is its worker id, so a retried or crashed launch can be found again.
Implementations translate their errors into `ProviderError` (or `CapacityError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..config import Settings
from ..models import Pod


@dataclass(frozen=True)
class PodSpec:
    worker_id: str  # also the pod's name
    env: Mapping[str, str] = field(repr=False)  # holds secrets: never logged
    offering: str | None = None  # "gpu type@data center"; None: the provider's default


class Provider(Protocol):
    name: str

    async def create_pod(self, spec: PodSpec) -> Pod: ...

    async def list_pods(self) -> list[Pod]:
        """Every pod this provider launched that is not yet terminated."""

    async def terminate_pod(self, worker_id: str, pod_id: str | None) -> None:
        """Idempotent: a pod already gone counts as terminated."""

    async def aclose(self) -> None: ...


def worker_environment(settings: Settings, dsn: str | None, worker_id: str) -> dict[str, str]:
    """The environment a pod's worker agent starts with. Secrets go here only: the
    database DSN, or on the REST path the worker key (never the service role key)."""
    env = dict(settings.runpod_worker_env)
    if settings.worker_kind == "headless-wan2gp":
        return env | _headless_wan2gp_environment(settings, worker_id)
    if dsn is not None:
        env["DATABASE_URL"] = dsn
    elif settings.supabase_url is not None and settings.supabase_worker_key is not None:
        env["SUPABASE_URL"] = settings.supabase_url
        env["SUPABASE_WORKER_KEY"] = settings.supabase_worker_key.get_secret_value()
    env.update(
        WORKER_ID=worker_id,
        MAX_TASK_ATTEMPTS=str(settings.max_task_attempts),
        WORKER_TASK_TIMEOUT_SEC=f"{settings.worker_task_timeout_sec:g}",
        TASK_STUCK_TIMEOUT_SEC=f"{settings.task_stuck_timeout_sec:g}",
        WORKER_HEARTBEAT_SEC=str(settings.worker_heartbeat_sec),
        WORKER_POLL_SEC=str(settings.worker_poll_sec),
        LOG_FORMAT="json",
    )
    if settings.worker_task_command:
        env["WORKER_TASK_COMMAND"] = settings.worker_task_command
    return env


def _headless_wan2gp_environment(settings: Settings, worker_id: str) -> dict[str, str]:
    """What Headless-Wan2GP's worker.py reads (as the old orchestrator set it): it
    heartbeats and claims through Supabase with the service role key, and is named
    `--worker $WORKER_ID` by RUNPOD_WORKER_ARGS."""
    url, key = settings.supabase_url, settings.supabase_service_role_key
    assert url is not None and key is not None  # checked with the settings
    return {
        "WORKER_ID": worker_id,
        "SUPABASE_URL": url,
        "SUPABASE_SERVICE_ROLE_KEY": key.get_secret_value(),
    }
