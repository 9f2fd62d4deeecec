"""The policies a simulation can run: ours (the real `policy.decide`) and the one
we replace (`baseline`), with the shell behaviour each comes with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..models import Plan, PolicyConfig, Snapshot
from ..policy import decide
from .baseline import decide_baseline


@dataclass(frozen=True)
class SimPolicy:
    name: str
    decide: Callable[[Snapshot, PolicyConfig], Plan]
    # a create without an answer (5xx, timeout) marks the worker failed at once,
    # instead of waiting for a pod list to show whether a pod exists
    lost_create_fails: bool
    counts_attempts: bool  # a dead worker's tasks are requeued with `attempts + 1`


CURRENT = SimPolicy("current", decide, lost_create_fails=False, counts_attempts=True)
BASELINE = SimPolicy(
    "baseline",
    decide_baseline,
    # The runbook knows workers only as error/terminated (seed, "6 terminated/failed
    # workers"); "a missing answer is not a no" is one of our changes (DESIGN §2).
    lost_create_fails=True,
    counts_attempts=False,  # "orphan-task resets never incremented attempts" (DESIGN §1)
)
POLICIES = {p.name: p for p in (CURRENT, BASELINE)}
