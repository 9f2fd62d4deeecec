"""`decide`: one snapshot in, one plan out. Observed failures first, then the
breaker and capacity gates, then scaling."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import (
    Action,
    ActionKind,
    BreakerState,
    BreakerView,
    Expected,
    OfferingBackoff,
    Plan,
    PolicyConfig,
    Reason,
    ServedRequests,
    Snapshot,
    WorkerStatus,
)
from .breaker import assess_breaker
from .capacity import billing_hold, offering_backoffs
from .health import health_actions, observation_gap
from .reconcile import (
    expecting_pods,
    foreign_pods,
    pod_sightings,
    reconcile_actions,
    unsafe_pod_list,
)
from .scaling import desired_workers, drain_candidates, queue_demand

# Status sets tested per worker: a set test is cheaper than reading an Enum member
# off its class (~70 ns in Python 3.11) for every row.
_ACCEPTS_TASKS = frozenset({WorkerStatus.SPAWNING, WorkerStatus.ACTIVE})
_BOOTING = frozenset({WorkerStatus.SPAWNING})
_MAY_BILL = frozenset(WorkerStatus) - {WorkerStatus.EXTERNAL}  # external workers are not ours


@dataclass(frozen=True)
class _Launches:
    count: int
    probe: bool
    held_back: tuple[Reason, ...]


def decide(snapshot: Snapshot, cfg: PolicyConfig) -> Plan:
    """The plan for this cycle. Pure: same snapshot and config, same plan."""
    gap = observation_gap(snapshot, cfg)
    blind_until = snapshot.now if gap is not None else snapshot.blind_until
    holds = snapshot.holds_by_worker()
    expecting = expecting_pods(snapshot, cfg)
    unsafe = unsafe_pod_list(snapshot, expecting)
    health = health_actions(snapshot, cfg, holds, blind_until)
    judged = {a.worker_id for a in health if a.worker_id}
    health += reconcile_actions(snapshot, cfg, judged, unsafe, blind_until)
    leaving = {a.worker_id for a in health if a.kind in (ActionKind.FAIL, ActionKind.STOP)}

    serving = [w for w in snapshot.workers if w.status in _ACCEPTS_TASKS and w.id not in leaving]
    capacity = len(serving)
    booting = sum(1 for w in serving if w.status in _BOOTING)
    busy = sum(1 for w in serving if holds.get(w.id))
    demand = queue_demand(snapshot.queue, busy, cfg)
    desired = desired_workers(demand, cfg)
    failing = {a.worker_id: a.reason for a in health if a.kind is ActionKind.FAIL and a.worker_id}
    breaker = assess_breaker(snapshot, cfg, failing)
    backoffs, open_offerings = _offerings(snapshot, cfg)

    pods = _billing_pods(snapshot)
    shortfall = max(0, desired - capacity)
    room = max(0, cfg.max_active_gpus - pods)
    unmet = (demand > capacity and snapshot.queue.queued > 0) or capacity < cfg.min_active_gpus
    hold = billing_hold(snapshot.launches, snapshot.now, cfg)
    retry_due = None if hold is None else snapshot.now >= hold[1]
    launches = _gate(
        shortfall,
        room,
        booting,
        unmet,
        breaker,
        snapshot.controls.spawning_paused,
        snapshot.controls.kill_switch,
        bool(open_offerings),
        retry_due,
        cfg,
    )
    served = _served_requests(snapshot, room - launches.count, bool(open_offerings), retry_due)

    actions = list(health)
    for n in range(launches.count):
        reason = (
            Reason.BREAKER_PROBE if launches.probe else _spawn_reason(capacity + n, demand, cfg)
        )
        actions.append(
            Action(
                ActionKind.SPAWN,
                reason,
                f"fleet {capacity + n} of {desired} wanted",
                offering=open_offerings[0],
                fallbacks=tuple(open_offerings[1:]),
                probe=launches.probe,
            )
        )
    if served is not None and served.allowed:  # allowed only with an offering open
        manual = Action(
            ActionKind.SPAWN,
            Reason.MANUAL,
            "operator spawn request",
            offering=open_offerings[0],
            fallbacks=tuple(open_offerings[1:]),
        )
        actions += [manual] * served.allowed
    if capacity > desired:
        idle = drain_candidates(serving, holds, snapshot.now, cfg)
        for w in idle[: capacity - desired]:
            actions.append(
                Action(
                    ActionKind.DRAIN,
                    Reason.SCALED_DOWN,
                    f"idle, fleet {capacity} above {desired} wanted",
                    worker_id=w.id,
                    expect=Expected(w.status, idle=True),
                )
            )
    return Plan(
        actions=tuple(actions),
        desired_workers=desired,
        capacity=capacity,
        unmet_demand=shortfall - launches.count,
        held_back=launches.held_back,
        breaker=breaker,
        backoffs=backoffs,
        unsafe=unsafe if snapshot.pods is not None else None,
        sightings=pod_sightings(snapshot, expecting, unsafe),
        foreign_pods=foreign_pods(snapshot, cfg),
        served_requests=served,
        billing_hold_since=None if hold is None else hold[0],
        observation_gap=gap,
    )


def _gate(
    shortfall: int,
    room: int,
    booting: int,
    unmet: bool,
    breaker: BreakerView,
    paused: bool,
    killed: bool,
    offering_open: bool,
    billing_retry_due: bool | None,
    cfg: PolicyConfig,
) -> _Launches:
    """How many launches this cycle, whether it is the probe, and what held the
    rest back. Order: kill switch, billing hold, no offering, breaker, pause,
    ceiling, ramps. `billing_retry_due`: None without a billing hold, else whether
    its one retry is due."""
    if shortfall == 0 and not (breaker.state is BreakerState.HALF_OPEN and unmet):
        return _Launches(0, False, ())
    if killed:
        return _Launches(0, False, (Reason.KILL_SWITCH,))
    if billing_retry_due is False:
        return _Launches(0, False, (Reason.BILLING_HOLD,))
    if not offering_open:
        return _Launches(0, False, (Reason.ALL_OFFERINGS_BACKING_OFF,))
    if breaker.state is BreakerState.OPEN:
        return _Launches(0, False, (Reason.BREAKER_OPEN,))
    if breaker.state is BreakerState.HALF_OPEN:
        if breaker.probe_worker is not None:
            return _Launches(0, False, (Reason.PROBE_IN_FLIGHT,))
        if not unmet:
            return _Launches(0, False, (Reason.BREAKER_OPEN,))
        if room == 0:
            return _Launches(0, False, (Reason.MAX_ACTIVE_REACHED,))
        return _Launches(1, True, (Reason.BREAKER_OPEN,) if shortfall > 1 else ())
    if paused:
        return _Launches(0, False, (Reason.SPAWNING_PAUSED,))
    limits = [(room, Reason.MAX_ACTIVE_REACHED), (cfg.max_spawns_per_cycle, Reason.RAMP_LIMIT)]
    if billing_retry_due:
        limits.append((1, Reason.BILLING_HOLD))  # one create tells whether it was paid
    if breaker.booting_limit is not None:
        limits.append((max(0, breaker.booting_limit - booting), Reason.RECOVERY_RAMP))
    count = min([shortfall] + [limit for limit, _ in limits])
    # Name the limit that bound this cycle (the smallest), not merely one below demand.
    held = tuple(reason for limit, reason in limits if limit == count < shortfall)
    return _Launches(count, False, held[:1])


def _billing_pods(snapshot: Snapshot) -> int:
    """Pods that may still bill: every row not released, failing ones included until
    their termination is confirmed (external workers are not ours)."""
    return sum(1 for w in snapshot.workers if w.status in _MAY_BILL)


def _offerings(
    snapshot: Snapshot, cfg: PolicyConfig
) -> tuple[tuple[OfferingBackoff, ...], list[str]]:
    """The offerings backing off, and the others in preference order."""
    backoffs = offering_backoffs(snapshot.launches, snapshot.now, cfg)
    waiting = {b.offering for b in backoffs}
    return backoffs, [o for o in cfg.offerings if o not in waiting]


def _spawn_reason(capacity: int, demand: int, cfg: PolicyConfig) -> Reason:
    if capacity < min(demand, cfg.max_active_gpus):
        return Reason.QUEUE_DEMAND
    if capacity < cfg.min_active_gpus:
        return Reason.MIN_ACTIVE
    return Reason.IDLE_BUFFER


def _served_requests(
    snapshot: Snapshot, room: int, offering_open: bool, billing_retry_due: bool | None
) -> ServedRequests | None:
    """Operator `spawn` requests, served by the leader: within `MAX_ACTIVE_GPUS`
    (`room` left after this plan's own launches), never with the kill switch on,
    during a billing hold or with every offering backing off. The breaker and a
    pause are the operator's call (the request is audited)."""
    controls = snapshot.controls
    if controls.requested_spawns <= 0 or controls.spawn_request_id is None:
        return None
    asked, request_id = controls.requested_spawns, controls.spawn_request_id
    if controls.kill_switch:
        return ServedRequests(request_id, asked, 0, (Reason.KILL_SWITCH,))
    if billing_retry_due is not None:
        return ServedRequests(request_id, asked, 0, (Reason.BILLING_HOLD,))
    if not offering_open:
        return ServedRequests(request_id, asked, 0, (Reason.ALL_OFFERINGS_BACKING_OFF,))
    allowed = min(asked, max(0, room))
    held = (Reason.MAX_ACTIVE_REACHED,) if allowed < asked else ()
    return ServedRequests(request_id, asked, allowed, held)
