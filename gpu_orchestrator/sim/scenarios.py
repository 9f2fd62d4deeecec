"""Named scenarios: a platform (offerings, boots, faults), a workload, worker
traits, the settings, and for the seed incident the history it starts from.

Settings are the defaults of `PolicyConfig` (docs/configuration.md) with a few
named overrides, never the environment: a scenario means the same everywhere.
Prices are assumptions of the order of Runpod's (USD per hour).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from ..models import PolicyConfig, Reason, WorkerStatus
from .provider import Brownout, Offering, Platform, Steps
from .queue import SimTask
from .rows import WorkerRow
from .workers import WorkerTraits
from .world import World

START = datetime(2026, 1, 1, 19, 22, tzinfo=UTC)  # the seed's "Now: 19:22 UTC"
A100 = Offering("A100-80GB@EU-RO-1", 1.64)
A40 = Offering("A40@EU-RO-1", 0.44)
CONFIG = PolicyConfig(offerings=(A100.name, A40.name), fingerprint="image-v1")


@dataclass(frozen=True)
class Workload:
    initial: int = 0  # tasks queued a minute before the start
    batches: tuple[tuple[float, int], ...] = ()  # (seconds since start, tasks)
    streams: tuple[tuple[float, float, float], ...] = ()  # Poisson (from s, to s, per hour)
    duration_sec: tuple[float, float] = (120.0, 480.0)  # a task's run time, uniform
    poison_at_sec: tuple[float, ...] = ()  # tasks that kill the worker running them
    poison_kills_after_sec: float = 60.0
    cancel_after_sec: float | None = None  # users give up on a task queued this long


@dataclass(frozen=True)
class PastWorker:
    """A worker launched before the start (minutes relative to it)."""

    created_min: float
    ready_min: float | None = None
    failed_min: float | None = None  # failed then (boot deadline), else still running
    tasks_completed: int = 0
    fingerprint: str | None = CONFIG.fingerprint


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    hours: float
    platform: Platform
    workload: Workload
    traits: WorkerTraits = field(default_factory=WorkerTraits)
    config: PolicyConfig = CONFIG
    history: tuple[PastWorker, ...] = ()
    poll_sec: float = 30.0  # ORCHESTRATOR_POLL_SEC
    start: datetime = START

    def genuine_fault(self, at: datetime) -> bool:
        """Whether launches really failed within the failure window before `at`:
        a breaker trip then is no false alarm."""
        window = self.config.failure_window_sec
        elapsed = (at - self.start).total_seconds()
        past = any(
            w.failed_min is not None and 0 <= elapsed - w.failed_min * 60 <= window
            for w in self.history
        )
        return past or self.platform.boot_failure.nonzero_between(elapsed - window, elapsed)

    def populate(self, world: World) -> None:
        """Puts the history and the workload into a fresh world."""
        for n, past in enumerate(self.history):
            self._past_worker(world, n, past)
        for task in self._tasks(world):
            world.enqueue_later(task)

    def _past_worker(self, world: World, n: int, past: PastWorker) -> None:
        def at(minutes: float) -> datetime:
            return self.start + timedelta(minutes=minutes)

        created = at(past.created_min)
        offering = self.config.offerings[0]
        row = WorkerRow(
            f"{self.config.name_prefix}-{created:%Y%m%d%H%M%S}-{n:08x}",
            created,
            offering,
            False,
            past.fingerprint,
        )
        row.tasks_completed = past.tasks_completed
        world.rows[row.id] = row
        if past.failed_min is not None:  # its pod is gone; its cost was paid before
            row.pod_id = f"pod-past-{n}"
            row.transition(WorkerStatus.ERROR, Reason.BOOT_TIMEOUT, at(past.failed_min))
            row.terminated_at = row.failed_at
            return
        assert past.ready_min is not None
        pod = world.provider.place(row.id, offering, created, at(past.ready_min))
        row.pod_id, row.cost_per_hr = pod.pod_id, pod.offering.usd_per_hr
        world.boot(row.id, at(past.ready_min))
        row.last_task_finished_at = at(past.ready_min) if past.tasks_completed else None

    def _tasks(self, world: World) -> list[SimTask]:
        rng, load = world.rng, self.workload
        arrivals = [-60.0] * load.initial
        for at_sec, count in load.batches:
            arrivals += [at_sec] * count
        for begin, end, per_hour in load.streams:
            t = begin + rng.expovariate(per_hour / 3600)
            while t < end:
                arrivals.append(t)
                t += rng.expovariate(per_hour / 3600)
        tasks = [
            SimTask(
                f"task-{n:05d}",
                self.start + timedelta(seconds=at_sec),
                rng.uniform(*load.duration_sec),
            )
            for n, at_sec in enumerate(sorted(arrivals))
        ]
        tasks += [
            SimTask(f"poison-{n}", self.start + timedelta(seconds=at_sec), 0.0, poison=True)
            for n, at_sec in enumerate(load.poison_at_sec)
        ]
        return tasks


# The seed's "Current Situation" at 19:22: six workers launched 15-20 minutes ago
# failed their boot deadline; the platform works again; one healthy worker runs a
# task, one task waits, more keep coming.
_SIX_FAILED = tuple(
    PastWorker(created_min=-20 + n, failed_min=-15 + n, fingerprint="image-v1") for n in range(6)
)
_SEED_LOAD = Workload(initial=2, streams=((0, 3600, 12),), duration_sec=(240, 720))
_HEALTHY = Platform((A100, A40))


def _seed(name: str, summary: str, healthy: PastWorker, config: PolicyConfig = CONFIG) -> Scenario:
    return Scenario(
        name, summary, 1.0, _HEALTHY, _SEED_LOAD, config=config, history=(*_SIX_FAILED, healthy)
    )


_SPAWNED_AFTER = PastWorker(created_min=-9, ready_min=-7, tasks_completed=2)
_SPAWNED_BEFORE = PastWorker(
    created_min=-180, ready_min=-177, tasks_completed=20, fingerprint="image-v0"
)


def outage(
    demand: str, hours: float = 3.0, config: PolicyConfig = CONFIG, outage_hours: float | None = 2.0
) -> Scenario:
    """No pod boots for `outage_hours` (None: ever). `demand`: "deep" (100 tasks
    queued), "one" (one task), or "comes-and-goes" (100 tasks every 3 hours, given
    up after 20 minutes in the queue)."""
    loads = {
        "deep": Workload(initial=100),
        "one": Workload(initial=1),
        "comes-and-goes": Workload(
            batches=tuple((h * 3600.0, 100) for h in range(0, math.ceil(hours), 3)),
            cancel_after_sec=20 * 60,
        ),
    }
    failing = Steps(1.0) if outage_hours is None else Steps(1.0, ((outage_hours * 3600, 0.0),))
    span = "permanent" if outage_hours is None else f"{outage_hours:g}-hour"
    return Scenario(
        f"outage-{demand}",
        f"a {span} total outage (no pod boots), demand: {demand}",
        hours,
        Platform((A100, A40), boot_failure=failing),
        loads[demand],
        config=config,
    )


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "seed-after": lambda: _seed(
        "seed-after",
        "the seed incident; the healthy worker was spawned after the six failures",
        _SPAWNED_AFTER,
    ),
    "seed-before": lambda: _seed(
        "seed-before",
        "the seed incident; the healthy worker predates the six failures",
        _SPAWNED_BEFORE,
    ),
    "seed-new-image": lambda: _seed(
        "seed-new-image",
        "the seed incident; the fix was deployed as a new image (fingerprint image-v2)",
        _SPAWNED_BEFORE,
        replace(CONFIG, fingerprint="image-v2"),
    ),
    "outage-deep": lambda: outage("deep"),
    "outage-one": lambda: outage("one"),
    "capacity": lambda: Scenario(
        "capacity",
        "the preferred GPU type has no capacity for an hour; the other fits 2 pods",
        2.0,
        Platform(
            (
                replace(A100, capacity=Steps(0.0, ((3600.0, math.inf),))),
                replace(A40, capacity=Steps(2.0)),
            )
        ),
        Workload(initial=30, streams=((0, 7200, 20),)),
    ),
    "burst-200": lambda: Scenario(
        "burst-200",
        "200 tasks onto an empty fleet of at most 10 GPUs; some workers crash or hang",
        3.0,
        _HEALTHY,
        Workload(initial=200),
        WorkerTraits(crashes_per_hour=0.05, hang_p=0.01),
        replace(CONFIG, max_active_gpus=10),
    ),
    "poison": lambda: Scenario(
        "poison",
        "one task kills every worker that runs it, among ordinary tasks",
        2.5,
        _HEALTHY,
        Workload(streams=((0, 7200, 15),), poison_at_sec=(600.0,)),
    ),
    "flapping": lambda: Scenario(
        "flapping",
        "a slow network: heartbeats drop for 1-4 min every ~10 min, boots take 3-7 min",
        2.0,
        replace(_HEALTHY, boot_sec=(200.0, 420.0)),
        Workload(streams=((0, 7200, 20),)),
        WorkerTraits(flap_every_sec=600.0, flap_sec=(60.0, 240.0)),
    ),
    "brownout": lambda: Scenario(
        "brownout",
        "60 tasks arrive while Runpod's API fails 80% of calls (5xx, timeouts) for 10 minutes",
        1.5,
        replace(_HEALTHY, brownouts=(Brownout(1200.0, 1800.0, error_p=0.8),)),
        Workload(batches=((1260.0, 60),), streams=((0, 5400, 10),)),
        config=replace(CONFIG, max_active_gpus=10),
    ),
}


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]()
    except KeyError:
        raise KeyError(f"{name!r}: accepted: {', '.join(SCENARIOS)}") from None
