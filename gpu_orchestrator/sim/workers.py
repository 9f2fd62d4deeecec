"""Simulated worker agents: the process inside a pod that heartbeats, claims and
runs tasks, and sometimes crashes (goes silent), hangs on a task (heartbeats go
on, the task never ends) or sits behind a slow network (silent spells shorter or
longer than the heartbeat timeout)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class WorkerTraits:
    heartbeat_sec: float = 20.0  # WORKER_HEARTBEAT_SEC
    crashes_per_hour: float = 0.0  # of uptime; a crash silences the agent, the pod runs on
    hang_p: float = 0.0  # per task claimed: the task never ends, heartbeats go on
    flap_every_sec: float = 0.0  # mean time between silent spells (0: none)
    flap_sec: tuple[float, float] = (0.0, 0.0)  # a silent spell's length, uniform


@dataclass
class Agent:
    worker_id: str
    ready_at: datetime  # its first heartbeat
    heartbeat_sec: float
    died_at: datetime | None = None  # crashed: silent from then on
    task_id: str | None = None  # the task it runs
    hung: bool = False  # stuck on `task_id` for good
    # silent spells (seconds since ready), in order and apart
    spells: list[tuple[float, float]] = field(default_factory=list)

    @classmethod
    def boot(
        cls,
        worker_id: str,
        ready_at: datetime,
        traits: WorkerTraits,
        until: datetime,
        rng: random.Random,
    ) -> Agent:
        """An agent that sent its first heartbeat at `ready_at`; its crash and its
        silent spells up to `until` are drawn now."""
        agent = cls(worker_id, ready_at, traits.heartbeat_sec)
        horizon = (until - ready_at).total_seconds()
        if traits.crashes_per_hour > 0:
            crash = rng.expovariate(traits.crashes_per_hour / 3600)
            if crash < horizon:
                agent.died_at = ready_at + timedelta(seconds=crash)
        if traits.flap_every_sec > 0:
            at = rng.expovariate(1 / traits.flap_every_sec)
            while at < horizon:
                end = at + rng.uniform(*traits.flap_sec)
                agent.spells.append((at, end))
                at = end + rng.expovariate(1 / traits.flap_every_sec)
        return agent

    def alive(self, now: datetime) -> bool:
        return self.died_at is None or now < self.died_at

    def idle(self, now: datetime) -> bool:
        return self.alive(now) and self.task_id is None

    def last_heartbeat(self, now: datetime) -> datetime:
        """Its newest heartbeat that reached the database by `now`."""
        end = now if self.died_at is None else min(now, self.died_at)
        since = (end - self.ready_at).total_seconds()
        beat = self._beat_before(since)
        for start, stop in self.spells:
            if start > beat:
                break
            if beat < stop:  # inside a spell: the last beat before it got through
                beat = self._beat_before(start)
                break
        return self.ready_at + timedelta(seconds=beat)

    def _beat_before(self, seconds: float) -> float:
        return max(0.0, math.floor(seconds / self.heartbeat_sec) * self.heartbeat_sec)
