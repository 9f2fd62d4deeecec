"""Tests write through the store the way the executor does: `apply_writes`, here
with one group of one write."""

from __future__ import annotations

from typing import Any

from gpu_orchestrator.store.base import Fence, OrchestratorStore, released_from
from gpu_orchestrator.store.writes import Write


async def write(store: OrchestratorStore, one: Write, *, fence: Fence | None = None) -> Any:
    """The write's answer (`release_tasks`: as `ReleasedTasks`); raises what undid it."""
    (answer,) = await store.apply_writes([[one]], fence=fence)
    if answer.error is not None:
        raise answer.error
    result = answer.answers[-1]
    return released_from(result) if one.op == "release_tasks" else result
