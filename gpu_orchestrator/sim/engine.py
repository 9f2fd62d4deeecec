"""Runs a scenario under a policy: every `poll_sec` the world is played up to the
cycle, observed into a `Snapshot`, judged by the policy, and the plan applied.
Each cycle leaves a `Sample` for the scorecard and the plots."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..models import BreakerState, Plan, Reason, WorkerStatus
from .policies import SimPolicy
from .scenarios import Scenario
from .shell import Shell
from .world import World

# What holds spawns back as the breaker's doing (not a ceiling or a ramp).
_BREAKER_HOLDS = frozenset({Reason.BREAKER_OPEN, Reason.PROBE_IN_FLIGHT})


@dataclass(frozen=True)
class Sample:
    """The world as one cycle saw it, and what the plan made of it."""

    at: datetime
    queued: int
    spawning: int
    active: int
    terminating: int
    pods: int  # pods running (and billing) at the provider
    breaker: BreakerState
    blocked: bool  # the breaker held back spawns the queue asked for


@dataclass
class Run:
    scenario: Scenario
    policy: SimPolicy
    seed: int
    world: World
    samples: list[Sample]

    @property
    def end(self) -> datetime:
        return self.world.until

    def launches_per_hour(self) -> list[int]:
        """Spawn actions in each whole hour since the start."""
        counts = [0] * int(self.scenario.hours)
        for at in self.world.launches:
            hour = int((at - self.scenario.start).total_seconds() // 3600)
            if hour < len(counts):
                counts[hour] += 1
        return counts

    def trips(self) -> list[datetime]:
        """When the breaker went from closed (as every run starts) to open."""
        states = [BreakerState.CLOSED, *(s.breaker for s in self.samples)]
        return [
            sample.at
            for before, sample in zip(states, self.samples, strict=False)
            if before is BreakerState.CLOSED and sample.breaker is BreakerState.OPEN
        ]


def simulate(scenario: Scenario, policy: SimPolicy, seed: int = 0) -> Run:
    rng = random.Random(seed)
    start = scenario.start
    until = start + timedelta(hours=scenario.hours)
    world = World(
        scenario.config,
        scenario.platform,
        scenario.traits,
        start,
        until,
        rng,
        counts_attempts=policy.counts_attempts,
        poison_kills_after_sec=scenario.workload.poison_kills_after_sec,
        cancel_after_sec=scenario.workload.cancel_after_sec,
    )
    scenario.populate(world)
    shell = Shell(world, policy)
    samples: list[Sample] = []
    poll = timedelta(seconds=scenario.poll_sec)
    now = start
    while now <= until:
        world.advance(now)
        snapshot = world.snapshot(now, world.provider.list_pods(now))
        plan = policy.decide(snapshot, scenario.config)
        samples.append(_sample(world, plan, now))
        shell.apply(plan, now)
        now += poll
    return Run(scenario, policy, seed, world, samples)


def _sample(world: World, plan: Plan, now: datetime) -> Sample:
    by_status = {
        s: 0 for s in (WorkerStatus.SPAWNING, WorkerStatus.ACTIVE, WorkerStatus.TERMINATING)
    }
    for row in world.rows.values():
        if row.live:
            by_status[row.status] += 1
    queued = world.queue.queued()
    assert plan.breaker is not None
    return Sample(
        at=now,
        queued=queued,
        spawning=by_status[WorkerStatus.SPAWNING],
        active=by_status[WorkerStatus.ACTIVE],
        terminating=by_status[WorkerStatus.TERMINATING],
        pods=sum(1 for p in world.provider.pods.values() if p.ended_at is None),
        breaker=plan.breaker.state,
        blocked=plan.unmet_demand > 0 and bool(_BREAKER_HOLDS.intersection(plan.held_back)),
    )
