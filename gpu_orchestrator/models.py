"""The data the policy reads (Snapshot) and writes (Plan), and the vocabulary they share.

Everything here is a frozen value: the pure policy takes a `Snapshot` and a
`PolicyConfig` and returns a `Plan`. No I/O, no clock: `Snapshot.now` is the
database server's time at observation. The row types a snapshot holds by the
thousand (`WorkerView`, `Launch`, `TaskHold`) are named tuples: as immutable as a
frozen dataclass, built four times faster (change one with `_replace`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import NamedTuple


class WorkerStatus(StrEnum):
    """`workers.status` values. The first five are ours; the rest are legacy values
    written by the system we replace, read without crashing and never written."""

    SPAWNING = "spawning"
    ACTIVE = "active"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    ERROR = "error"
    INACTIVE = "inactive"
    EXTERNAL = "external"
    CRASHED = "crashed"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> WorkerStatus:
        # a status written by another version or system reads as UNKNOWN, never a crash
        return cls.UNKNOWN


# The worker state machine, written once. Each edge names its trigger. Legacy and
# terminal statuses map to nothing: we never move a row out of them.
TRANSITIONS: dict[WorkerStatus, frozenset[WorkerStatus]] = {
    WorkerStatus.SPAWNING: frozenset(
        {
            WorkerStatus.ACTIVE,  # first heartbeat (SQL heartbeat function)
            WorkerStatus.TERMINATING,  # scale-down or operator drain before boot
            WorkerStatus.ERROR,  # spawn_failed, boot_timeout, crashed
        }
    ),
    WorkerStatus.ACTIVE: frozenset(
        {
            WorkerStatus.TERMINATING,  # drain requested (idle scale-down, operator)
            WorkerStatus.ERROR,  # heartbeat_lost, stuck_task, crashed
        }
    ),
    WorkerStatus.TERMINATING: frozenset(
        {
            WorkerStatus.TERMINATED,  # drained (idle) or drain_timeout; pod terminated
            WorkerStatus.ERROR,  # heartbeat_lost, stuck_task, crashed while draining
        }
    ),
    WorkerStatus.TERMINATED: frozenset(),
    WorkerStatus.ERROR: frozenset(),  # its pod is terminated, then `terminated_at` is set
    WorkerStatus.INACTIVE: frozenset(),
    WorkerStatus.EXTERNAL: frozenset(),
    WorkerStatus.CRASHED: frozenset(),
    WorkerStatus.UNKNOWN: frozenset(),
}

# Statuses whose pod we launched and may still be running (and billing).
LIVE_STATUSES = frozenset({WorkerStatus.SPAWNING, WorkerStatus.ACTIVE, WorkerStatus.TERMINATING})


def sources_of(target: WorkerStatus) -> tuple[str, ...]:
    """Statuses a row may be in for a move to `target` (the compare-and-set set)."""
    return tuple(sorted(s.value for s, dests in TRANSITIONS.items() if target in dests))


class Reason(StrEnum):
    """Machine-readable reason codes carried by every action and worker event."""

    # why we spawn
    QUEUE_DEMAND = "queue_demand"
    MIN_ACTIVE = "min_active"
    IDLE_BUFFER = "idle_buffer"
    # failures (DESIGN §4)
    SPAWN_FAILED = "spawn_failed"
    BOOT_TIMEOUT = "boot_timeout"
    BOOT_FAILED = "boot_failed"  # the pod exited before its first heartbeat
    HEARTBEAT_LOST = "heartbeat_lost"
    CRASHED = "crashed"
    STUCK_TASK = "stuck_task"
    POD_VANISHED = "pod_vanished"
    # normal exits
    SCALED_DOWN = "scaled_down"
    DRAINED = "drained"
    DRAIN_TIMEOUT = "drain_timeout"
    MANUAL = "manual"
    # neutral
    CAPACITY = "capacity"  # no pod was created: the offering had none
    OFFERING_FORBIDDEN = "offering_forbidden"  # 403: the account may not use that offering
    RATE_LIMITED = "rate_limited"  # 429 on create: nothing was created
    ORPHAN = "orphan"
    # a create whose answer was lost (5xx, timeout) and whose pod no list ever
    # showed by the boot deadline: nothing proves a pod ran, nor that it failed
    CREATE_LOST = "create_lost"
    CREATE_UNRESOLVED = "create_unresolved"  # why a listed pod is adopted by its row
    # 402: the account cannot pay. No pod was created and the worker did nothing
    # wrong; every spawn stops until a create succeeds (retried at the probe interval)
    BILLING_HOLD = "billing_hold"
    # normal exits and neutral outcomes, continued
    TASK_CAUSED = "task_caused"  # died holding a task later quarantined as poison
    # breaker
    BREAKER_PROBE = "breaker_probe"  # the one spawn a half-open breaker admits
    BREAKER_TRIPPED = "breaker_tripped"
    PROBE_FAILED = "probe_failed"
    PROBATION_FAILED = "probation_failed"  # a failure before recovery was proven
    PROBE_PROVEN = "probe_proven"
    EVIDENCE = "evidence"  # a worker spawned after the newest failure proved itself
    AGED_OUT = "aged_out"  # the failures left the window
    OPERATOR_RESET = "operator_reset"
    # why spawning is held back
    MAX_ACTIVE_REACHED = "max_active_reached"
    RAMP_LIMIT = "ramp_limit"
    BREAKER_OPEN = "breaker_open"
    PROBE_IN_FLIGHT = "probe_in_flight"
    RECOVERY_RAMP = "recovery_ramp"  # after the breaker closed: slow start
    ALL_OFFERINGS_BACKING_OFF = "all_offerings_backing_off"
    SPAWNING_PAUSED = "spawning_paused"
    KILL_SWITCH = "kill_switch"
    # a reason read back from the database that this version does not know
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> Reason:
        return cls.UNKNOWN


# DESIGN §4: outcomes that count against the breaker. Everything else that ends a
# worker before it was ready (capacity, manual, orphan, task-caused) is neutral.
FAILURE_REASONS = frozenset(
    {
        Reason.SPAWN_FAILED,
        Reason.BOOT_TIMEOUT,
        Reason.BOOT_FAILED,
        Reason.HEARTBEAT_LOST,
        Reason.CRASHED,
        Reason.STUCK_TASK,
        Reason.POD_VANISHED,
    }
)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"  # ordinary spawns blocked; waiting for the next probe
    HALF_OPEN = "half_open"  # one probe spawn admitted (or in flight)


class Launch(NamedTuple):
    """A worker launched, failed or proven within the breaker's horizon, or still
    live: the raw material of the failure rate, probes, evidence and backoff."""

    worker_id: str
    created_at: datetime
    offering: str | None  # where it was placed, e.g. "NVIDIA A40@EU-RO-1"
    probe: bool  # spawned as a half-open probe
    pod_created: bool  # the provider accepted the launch
    live: bool  # its pod may still be running
    ready_at: datetime | None
    failed_at: datetime | None
    failure: Reason | None  # its termination reason, when it ended in `error`
    task_caused: bool  # died holding a task later quarantined as poison
    tasks_completed: int = 0
    fingerprint: str | None = None  # what it was launched as (see `PolicyConfig.fingerprint`)


# Launch order, ties broken by id (deterministic); a C-level sort key.
LAUNCH_ORDER = attrgetter("created_at", "worker_id")


@dataclass(frozen=True)
class BreakerRecord:
    """The last breaker transition written to `orchestrator_events`."""

    state: BreakerState  # OPEN or CLOSED
    at: datetime
    reason: Reason
    probe_interval_sec: float  # for OPEN: the wait before the next probe


@dataclass(frozen=True)
class Controls:
    """Operator levers, each the latest of its audited events."""

    spawning_paused: bool = False  # no ordinary spawns; probes still allowed
    kill_switch: bool = False  # nothing is spawned, probes included
    breaker_reset_at: datetime | None = None  # failures before this are forgiven
    requested_spawns: int = 0  # operator `spawn` requests not yet served by a leader
    spawn_request_id: int | None = None  # the newest of those requests


class TaskHold(NamedTuple):
    """An `In Progress` task and who holds it."""

    task_id: str
    worker_id: str | None  # None: claimed by nobody we know (corrupt or legacy row)
    started_at: datetime | None  # `generation_started_at` (claim time)
    attempts: int
    task_type: str | None = None


class WorkerView(NamedTuple):
    """One `workers` row as the policy sees it."""

    id: str
    status: WorkerStatus
    created_at: datetime
    ready_at: datetime | None  # first heartbeat
    last_heartbeat: datetime | None
    drain_requested_at: datetime | None  # set when moved to `terminating`
    terminated_at: datetime | None  # pod confirmed gone
    last_task_finished_at: datetime | None
    tasks_completed: int = 0
    pod_id: str | None = None
    termination_reason: Reason | None = None
    cost_per_hr: float | None = None  # USD/h the provider quoted for its pod
    # first successful pod list that did not show its pod (None: the last one did)
    pod_missing_since: datetime | None = None

    @property
    def pod_released(self) -> bool:
        """True once nothing of this worker can still be running or billing."""
        return self.terminated_at is not None

    def idle_since(self) -> datetime | None:
        """When it last became idle: ready time or its last finished task."""
        if self.ready_at is None:
            return None
        if self.last_task_finished_at is None:
            return self.ready_at
        return max(self.ready_at, self.last_task_finished_at)


@dataclass(frozen=True)
class Pod:
    """A pod as the provider lists it. Its name is the worker id."""

    pod_id: str
    name: str
    running: bool  # False: it exited (or errored) but still exists
    status: str | None = None  # the provider's own word, for people
    cost_per_hr: float | None = None


@dataclass(frozen=True)
class QueueStats:
    """The queue as one cycle sees it."""

    queued: int  # claimable `Queued` tasks, counted up to the snapshot's cap
    oldest_queued_at: datetime | None
    capped: bool = False  # the count stopped at the cap: at least `queued`
    completed_recently: int = 0  # tasks that reached `Complete` within the horizon
    failed_recently: int = 0  # tasks that reached `Failed` within the horizon


@dataclass(frozen=True)
class Snapshot:
    """Everything one cycle needs, read in one database call."""

    now: datetime  # the database server's clock
    # live and `external` rows, plus `error` rows whose pod is not yet released
    workers: tuple[WorkerView, ...]
    holds: tuple[TaskHold, ...]  # every `In Progress` task
    queue: QueueStats
    launches: tuple[Launch, ...] = ()  # see `Launch`; kept in `LAUNCH_ORDER`
    breaker: BreakerRecord | None = None  # None: never opened
    controls: Controls = field(default_factory=Controls)
    pods: tuple[Pod, ...] | None = None  # None: the pod list was not read this cycle
    # when the lease was renewed before this cycle (None: never): the orchestrators'
    # previous contact with the database
    last_contact_at: datetime | None = None
    # the end of the latest recorded spell during which nobody could read the
    # database: workers could not heartbeat either, so silence before it is not theirs
    blind_until: datetime | None = None
    # an adopted Headless-Wan2GP / Reigh database: pods named as the old orchestrator
    # named them (`{prefix}-YYYYMMDD_HHMMSS-xxxxxxxx`) are ours too
    adopted: bool = False

    def __post_init__(self) -> None:
        # Sorted once here (with a C-level key), so that the breaker, the backoffs
        # and the alert rules read history in order without sorting it again.
        object.__setattr__(self, "launches", tuple(sorted(self.launches, key=LAUNCH_ORDER)))

    def holds_by_worker(self) -> dict[str, list[TaskHold]]:
        out: dict[str, list[TaskHold]] = {}
        for hold in self.holds:
            if hold.worker_id is not None:
                out.setdefault(hold.worker_id, []).append(hold)
        return out


@dataclass(frozen=True)
class PolicyConfig:
    """The settings the policy reads (built from `config.Settings`)."""

    min_active_gpus: int = 0
    max_active_gpus: int = 4
    tasks_per_gpu_threshold: int = 3
    machines_to_keep_idle: int = 0
    overcapacity_idle_timeout_sec: float = 300.0
    min_worker_lifetime_sec: float = 300.0
    max_spawns_per_cycle: int = 4
    spawning_timeout_sec: float = 600.0
    gpu_idle_timeout_sec: float = 300.0
    task_stuck_timeout_sec: float = 3600.0
    # (task type pattern, seconds), first match wins; 0: never judged stuck (e.g.
    # `*_orchestrator` tasks wait hours for their children)
    task_stuck_timeout_by_type: tuple[tuple[str, float], ...] = ()
    graceful_shutdown_timeout_sec: float = 600.0
    max_task_attempts: int = 3
    max_worker_failure_rate: float = 0.8
    failure_window_sec: float = 1800.0
    min_workers_for_rate_check: int = 5
    breaker_probe_interval_sec: float = 300.0
    breaker_probe_max_interval_sec: float = 3600.0
    breaker_evidence_sec: float = 300.0
    capacity_backoff_sec: float = 60.0
    capacity_backoff_max_sec: float = 1800.0
    # where a pod may be placed, in order of preference ("gpu type@data center")
    offerings: tuple[str, ...] = ("local",)
    name_prefix: str = "gpu"  # pods named `{prefix}-...` are ours
    # hash of what a launch runs (image, start command, GPU types, non-secret pod
    # env): failures of another fingerprint do not hold back this one
    fingerprint: str | None = None
    pod_grace_sec: float = 120.0  # a pod or row this young may not be listed yet
    # a pod missing from every list this long, from a worker silent this long, vanished
    pod_missing_sec: float = 60.0
    # a gap between two contacts with the database longer than two whole cycles
    # (each its budget, then a poll) is a blind spell
    observation_gap_sec: float = 180.0

    def stuck_after_sec(self, task_type: str | None) -> float | None:
        """How long a task of this type may run before its worker is judged stuck
        (None: never)."""
        for pattern, seconds in self.task_stuck_timeout_by_type:
            if task_type is not None and fnmatch.fnmatchcase(task_type, pattern):
                return seconds or None
        return self.task_stuck_timeout_sec

    @property
    def queue_cap(self) -> int:
        """Queued tasks beyond this change no decision: demand is then above
        `MAX_ACTIVE_GPUS` whatever the exact count."""
        return self.tasks_per_gpu_threshold * (self.max_active_gpus + 1)

    @property
    def horizon_sec(self) -> float:
        """How far back the breaker and capacity backoff need launch history: a
        window, a backoff, and long enough for a one-GPU fleet to fail the minimum
        sample one boot deadline at a time (at most four windows)."""
        streak = self.min_workers_for_rate_check * (self.spawning_timeout_sec + 60.0)
        streak = min(streak, 4 * self.failure_window_sec)
        return max(self.failure_window_sec, self.capacity_backoff_max_sec, streak)


class ActionKind(StrEnum):
    SPAWN = "spawn"  # write an intent row, then ask the provider for a pod
    FAIL = "fail"  # live -> error; then release (requeue tasks, terminate pod)
    DRAIN = "drain"  # spawning/active -> terminating: claims refused from now on
    STOP = "stop"  # terminating -> terminated: requeue leftovers, terminate pod
    RELEASE = "release"  # an `error` row whose pod may still run: requeue, terminate pod
    REQUEUE_ORPHAN = "requeue_orphan"  # an `In Progress` task whose holder is gone
    TERMINATE_ORPHAN_POD = "terminate_orphan_pod"  # a pod of ours with no live row
    ADOPT_POD = "adopt_pod"  # a listed pod whose create answer was lost: record it


@dataclass(frozen=True)
class Expected:
    """What the plan judged a worker on. Its transition is a compare-and-set on
    this: when the row moved on meanwhile (another status, a newer heartbeat, a
    task claimed), the action is a harmless `lost_race`."""

    status: WorkerStatus
    heartbeat: datetime | None = None  # the last heartbeat the plan saw
    heartbeat_judged: bool = False  # judged on silence: a newer heartbeat voids it
    idle: bool = False  # judged idle: a task claimed since voids it


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    reason: Reason
    message: str  # one line for humans
    worker_id: str | None = None  # None for SPAWN (the shell names the worker)
    task_id: str | None = None  # REQUEUE_ORPHAN only
    pod_id: str | None = None  # TERMINATE_ORPHAN_POD only
    offering: str | None = None  # SPAWN: where to place the pod
    fallbacks: tuple[str, ...] = ()  # SPAWN: offerings to try next when that one refuses
    probe: bool = False  # SPAWN: the half-open breaker's probe
    expect: Expected | None = None  # FAIL, DRAIN, STOP: the state it was judged on
    cost_per_hr: float | None = None  # ADOPT_POD: the listed pod's price


@dataclass(frozen=True)
class BreakerTransition:
    """A breaker state change the executor records before acting on the plan."""

    to: BreakerState  # OPEN or CLOSED
    reason: Reason
    probe_interval_sec: float
    message: str


@dataclass(frozen=True)
class BreakerView:
    """The breaker as this cycle judges it, with its forecast."""

    state: BreakerState
    failed: int  # counted failures in the window
    proven: int  # proven workers in the window (or still healthy)
    rate: float | None  # failed / (failed + proven); None with no sample
    failures_by_reason: tuple[tuple[Reason, int], ...]
    tripped: bool  # sample >= minimum and rate strictly above the threshold
    evidence_worker: str | None  # spawned after the newest failure and proven
    probe_interval_sec: float
    next_probe_at: datetime | None  # OPEN: when a probe becomes due
    probe_worker: str | None  # the probe in flight
    probation: bool  # closed, but no new worker has proven itself yet
    booting_limit: int | None  # recovery ramp: most workers booting at once
    aging_out: tuple[datetime, ...]  # when each counted failure leaves the window
    rate_ok_at: datetime | None  # when the rate falls to the threshold if nothing new happens
    transition: BreakerTransition | None = None
    failed_fingerprints: tuple[str, ...] = ()  # launch fingerprints of the counted failures
    fingerprint: str | None = None  # the fingerprint launches get now (probed when fresh)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, for the cycle log, `once` and the health report."""

        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        move = self.transition
        return {
            "state": self.state.value,
            "rate": None if self.rate is None else round(self.rate, 4),
            "failed": self.failed,
            "proven": self.proven,
            "failures_by_reason": {r.value: n for r, n in self.failures_by_reason},
            "tripped": self.tripped,
            "evidence_worker": self.evidence_worker,
            "probe_interval_sec": self.probe_interval_sec,
            "next_probe_at": iso(self.next_probe_at),
            "probe_worker": self.probe_worker,
            "probation": self.probation,
            "booting_limit": self.booting_limit,
            "failures_age_out_at": [iso(t) for t in self.aging_out],
            "rate_ok_at": iso(self.rate_ok_at),
            "failed_fingerprints": list(self.failed_fingerprints),
            "fingerprint": self.fingerprint,
            "transition": None
            if move is None
            else {"to": move.to.value, "reason": move.reason.value, "message": move.message},
        }


@dataclass(frozen=True)
class OfferingBackoff:
    offering: str
    capacity_errors: int  # consecutive, since its last successful launch
    until: datetime  # no launch there before this


@dataclass(frozen=True)
class ServedRequests:
    """Operator spawn requests up to `up_to_id`: `asked` launches, `allowed` of them
    in this plan, the rest refused for `held_back` (kill switch, MAX_ACTIVE_GPUS)."""

    up_to_id: int
    asked: int
    allowed: int
    held_back: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class PodSightings:
    """Changes in which live rows' pods a successful list showed, recorded before
    acting so later cycles can tell a pod gone for a while from one missed once."""

    missing: tuple[str, ...]  # worker ids whose pod was absent (first time)
    seen: tuple[str, ...]  # worker ids whose pod was absent before and is back

    def __bool__(self) -> bool:
        return bool(self.missing or self.seen)


@dataclass(frozen=True)
class Plan:
    """What one cycle will do, and what it will not do and why."""

    actions: tuple[Action, ...]
    desired_workers: int  # fleet size the queue asks for, within bounds
    capacity: int  # booting + active workers that accept tasks, after this plan's failures
    unmet_demand: int  # workers wanted but not spawned this cycle
    held_back: tuple[Reason, ...] = field(default=())  # why unmet demand was not spawned
    breaker: BreakerView | None = None
    backoffs: tuple[OfferingBackoff, ...] = ()  # offerings out of capacity right now
    # why pod reconciliation was skipped this cycle (e.g. an implausible pod list)
    unsafe: str | None = None
    sightings: PodSightings | None = None  # what this cycle's pod list showed of our rows
    foreign_pods: tuple[str, ...] = ()  # listed pods not named as ours: never touched
    # (from, to): a blind spell this cycle found, recorded before acting
    observation_gap: tuple[datetime, datetime] | None = None
    # operator spawn requests this plan serves (recorded as served before acting)
    served_requests: ServedRequests | None = None
    billing_hold_since: datetime | None = None  # a 402 holds every spawn since then

    def count(self, kind: ActionKind) -> int:
        return sum(1 for a in self.actions if a.kind is kind)
