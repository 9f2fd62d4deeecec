"""The simulated cloud: pods placed on offerings with a price and a capacity that
changes over time, boots that take a random while or never complete, and an API
that can brown out (5xx and timeouts, some of which created the pod anyway).

It knows facts only; what the orchestrator makes of them is the policy's business.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from ..models import Pod


@dataclass(frozen=True)
class Steps:
    """A value that changes at given times: `points` are (seconds since the start,
    value) in time order; before the first point the value is `initial`."""

    initial: float
    points: tuple[tuple[float, float], ...] = ()

    def at(self, elapsed: float) -> float:
        value = self.initial
        for since, step in self.points:
            if elapsed < since:
                break
            value = step
        return value

    def nonzero_between(self, start: float, end: float) -> bool:
        """Whether the value is above zero at any time in [start, end]."""
        if self.at(start) > 0:
            return True
        return any(start <= since <= end and step > 0 for since, step in self.points)


@dataclass(frozen=True)
class Offering:
    name: str  # "gpu type@data center", as `PolicyConfig.offerings` names it
    usd_per_hr: float
    capacity: Steps = Steps(math.inf)  # pods it can run at once


@dataclass(frozen=True)
class Brownout:
    """A spell of API trouble: each call fails (5xx or timeout) with `error_p`; a
    failed create made its pod anyway with `created_p` (the answer was lost)."""

    start_sec: float
    end_sec: float
    error_p: float
    created_p: float = 0.5


@dataclass(frozen=True)
class Platform:
    offerings: tuple[Offering, ...]
    boot_sec: tuple[float, float] = (90.0, 240.0)  # first heartbeat after create, uniform
    boot_failure: Steps = Steps(0.0)  # probability that a pod created then never boots
    brownouts: tuple[Brownout, ...] = ()


@dataclass
class SimPod:
    name: str  # the worker id
    pod_id: str
    offering: Offering
    created_at: datetime
    boots_at: datetime | None  # None: it never sends a first heartbeat
    ended_at: datetime | None = None

    def usd(self, until: datetime) -> float:
        end = self.ended_at or until
        return (end - self.created_at).total_seconds() / 3600 * self.offering.usd_per_hr


class Created(Enum):
    YES = "yes"
    NO_CAPACITY = "no_capacity"
    ANSWER_LOST = "answer_lost"  # 5xx or timeout: a pod may or may not exist


class SimProvider:
    def __init__(self, platform: Platform, start: datetime, rng: random.Random) -> None:
        self._platform = platform
        self._start = start
        self._rng = rng
        self._offerings = {o.name: o for o in platform.offerings}
        self.pods: dict[str, SimPod] = {}  # every pod ever created, by name

    def _elapsed(self, now: datetime) -> float:
        return (now - self._start).total_seconds()

    def _api_fails(self, now: datetime) -> bool:
        elapsed = self._elapsed(now)
        return any(
            b.start_sec <= elapsed < b.end_sec and self._rng.random() < b.error_p
            for b in self._platform.brownouts
        )

    def _running_on(self, offering: str) -> int:
        return sum(
            1 for p in self.pods.values() if p.offering.name == offering and p.ended_at is None
        )

    def create(self, name: str, offering: str, now: datetime) -> tuple[Created, SimPod | None]:
        """A create call; the pod is returned when one was made, answered or not."""
        place = self._offerings[offering]
        if self._running_on(offering) >= place.capacity.at(self._elapsed(now)):
            return Created.NO_CAPACITY, None
        answered = not self._api_fails(now)
        if not answered and self._rng.random() >= self._created_p(now):
            return Created.ANSWER_LOST, None
        fails = self._rng.random() < self._platform.boot_failure.at(self._elapsed(now))
        low, high = self._platform.boot_sec
        boots_at = None if fails else now + timedelta(seconds=self._rng.uniform(low, high))
        return (Created.YES if answered else Created.ANSWER_LOST), self.place(
            name, offering, now, boots_at
        )

    def place(
        self, name: str, offering: str, created_at: datetime, boots_at: datetime | None
    ) -> SimPod:
        """Records a running pod (a create's, or one running before the simulation)."""
        pod = SimPod(
            name, f"pod-{len(self.pods) + 1}", self._offerings[offering], created_at, boots_at
        )
        self.pods[name] = pod
        return pod

    def _created_p(self, now: datetime) -> float:
        elapsed = self._elapsed(now)
        return max(
            (b.created_p for b in self._platform.brownouts if b.start_sec <= elapsed < b.end_sec),
            default=0.0,
        )

    def list_pods(self, now: datetime) -> tuple[Pod, ...] | None:
        """None: the list call failed (the cycle then reconciles nothing)."""
        if self._api_fails(now):
            return None
        return tuple(
            Pod(p.pod_id, p.name, True, "RUNNING", p.offering.usd_per_hr)
            for p in self.pods.values()
            if p.ended_at is None
        )

    def terminate(self, name: str, now: datetime) -> bool:
        """False: the call failed and the pod (if any) still runs."""
        if self._api_fails(now):
            return False
        pod = self.pods.get(name)
        if pod is not None and pod.ended_at is None:
            pod.ended_at = now
        return True
