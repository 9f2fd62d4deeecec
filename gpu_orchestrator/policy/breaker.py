"""The failure-rate circuit breaker (DESIGN §5), judged afresh every cycle from the
persisted outcomes of recent launches and the last recorded breaker transition,
so a restarted orchestrator decides the same way.

- Only real failures count (FAILURE_REASONS); capacity errors, operator stops and
  deaths caused by a poison task are neutral. Outcomes are windowed on the time
  they happened (failure time, ready time, or now for a worker still healthy).
- CLOSED trips to OPEN when the sample reaches the minimum and the rate is
  strictly above the threshold, or, while the window holds less than the minimum
  sample (a small fleet cannot fail that many within one window), when the last
  `MIN_WORKERS_FOR_RATE_CHECK` resolved launches all failed; unless evidence shows
  spawning works again.
- OPEN admits one probe after the probe interval (HALF_OPEN). A proven probe, or
  any worker spawned after the newest failure that proves itself, closes it and
  forgives older failures; a failed probe reopens it with a doubled interval.
- After closing without proof (ageing out, operator reset) the breaker is in
  probation until a worker launched since proves itself, however long that takes:
  one booting worker at a time, and a failure meanwhile reopens it at once. The
  proof is recorded (a `breaker_closed` with reason `evidence`); then slow start
  for one window.
- Failures belong to a launch fingerprint: when the configured fingerprint has no
  failure and no launch since the breaker opened (a fix was deployed), the probe
  is due at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..models import (
    FAILURE_REASONS,
    BreakerRecord,
    BreakerState,
    BreakerTransition,
    BreakerView,
    Launch,
    PolicyConfig,
    Reason,
    Snapshot,
)

_PROOF_CLOSES = (Reason.PROBE_PROVEN, Reason.EVIDENCE)


def counted_failure(launch: Launch) -> bool:
    return (
        launch.failed_at is not None
        and launch.failure in FAILURE_REASONS
        and not launch.task_caused
    )


def proves(launch: Launch, now: datetime, cfg: PolicyConfig) -> bool:
    """Became ready and then completed a task, or has stayed healthy for
    `BREAKER_EVIDENCE_SEC`."""
    if launch.ready_at is None or launch.failed_at is not None:
        return False
    healthy = (now - launch.ready_at).total_seconds() >= cfg.breaker_evidence_sec
    return launch.tasks_completed > 0 or (launch.live and healthy)


@dataclass(frozen=True)
class _Sample:
    failures: tuple[Launch, ...]  # counted, in the window, not forgiven
    proven: tuple[Launch, ...]  # ready in the window, or still healthy

    @property
    def rate(self) -> float | None:
        total = len(self.failures) + len(self.proven)
        return None if total == 0 else len(self.failures) / total


def _with_failures_now(
    launches: tuple[Launch, ...], failing: Mapping[str, Reason], now: datetime
) -> tuple[Launch, ...]:
    """Workers this cycle's plan fails count as failed now, so the breaker reacts
    in the same cycle instead of spawning beside them."""
    if not failing:
        return launches
    return tuple(
        launch._replace(live=False, failed_at=now, failure=failing[launch.worker_id])
        if launch.worker_id in failing and launch.failed_at is None
        else launch
        for launch in launches
    )


def _sample(
    launches: tuple[Launch, ...], now: datetime, cfg: PolicyConfig, forgive_at: datetime | None
) -> _Sample:
    start = now - timedelta(seconds=cfg.failure_window_sec)
    failures: list[Launch] = []
    proven: list[Launch] = []
    for launch in launches:
        if launch.failed_at is None:
            ready = launch.ready_at
            if ready is not None and (launch.live or ready > start):  # healthy, or ready lately
                proven.append(launch)
        elif counted_failure(launch):
            if launch.failed_at > start and (forgive_at is None or launch.failed_at > forgive_at):
                failures.append(launch)
    return _Sample(tuple(failures), tuple(proven))


def _tripped(failed: int, proven: int, cfg: PolicyConfig) -> bool:
    total = failed + proven
    return total >= cfg.min_workers_for_rate_check and failed / total > cfg.max_worker_failure_rate


def _failing_streak(
    launches: tuple[Launch, ...], forgive_at: datetime | None, cfg: PolicyConfig
) -> int:
    """How many of the newest resolved launches (failed, or ready) failed in a row,
    at most `MIN_WORKERS_FOR_RATE_CHECK`, failures before `forgive_at` not counted."""
    streak = 0
    for launch in reversed(launches):
        if counted_failure(launch):
            assert launch.failed_at is not None
            if forgive_at is not None and launch.failed_at <= forgive_at:
                break
            streak += 1
            if streak == cfg.min_workers_for_rate_check:
                break
        elif launch.ready_at is not None and launch.failed_at is None:
            break
    return streak


def _rate_ok_for_open(failed: int, proven: int, cfg: PolicyConfig) -> bool:
    """An open breaker closes by ageing only once the failures are gone or the
    rate is back at or below the threshold on a full sample."""
    total = failed + proven
    if failed == 0:
        return True
    return total >= cfg.min_workers_for_rate_check and failed / total <= cfg.max_worker_failure_rate


def _forgive_at(snapshot: Snapshot) -> datetime | None:
    record = snapshot.breaker
    times = [snapshot.controls.breaker_reset_at]
    if (
        record is not None
        and record.state is BreakerState.CLOSED
        and record.reason in _PROOF_CLOSES
    ):
        times.append(record.at)
    present = [t for t in times if t is not None]
    return max(present) if present else None


def _ok_times(
    sample: _Sample, now: datetime, cfg: PolicyConfig, open_rule: bool
) -> tuple[tuple[datetime, ...], datetime | None]:
    """When each counted failure leaves the window, and the first moment the rate
    would be acceptable if nothing new happened (None: acceptable now)."""
    window = timedelta(seconds=cfg.failure_window_sec)
    leaving: list[tuple[datetime, bool]] = [
        (f.failed_at + window, True) for f in sample.failures if f.failed_at
    ]
    leaving += [(p.ready_at + window, False) for p in sample.proven if not p.live and p.ready_at]
    failed, proven = len(sample.failures), len(sample.proven)

    def ok() -> bool:
        if open_rule:
            return _rate_ok_for_open(failed, proven, cfg)
        return not _tripped(failed, proven, cfg)

    aging_out = tuple(sorted(t for t, is_failure in leaving if is_failure))
    if ok():
        return aging_out, None
    for at, is_failure in sorted(leaving):
        if is_failure:
            failed -= 1
        else:
            proven -= 1
        if ok():
            return aging_out, at
    return aging_out, None


def assess_breaker(
    snapshot: Snapshot, cfg: PolicyConfig, failing: Mapping[str, Reason] | None = None
) -> BreakerView:
    """The breaker's state for this cycle, any transition to record, and its forecast.
    `failing`: workers this cycle fails, with their reasons."""
    now = snapshot.now
    record = snapshot.breaker
    launches = _with_failures_now(snapshot.launches, failing or {}, now)
    forgive_at = _forgive_at(snapshot)
    sample = _sample(launches, now, cfg, forgive_at)
    failed, proven = len(sample.failures), len(sample.proven)
    # The rate needs the minimum sample within one window; a fleet too small to fail
    # that many in a window is judged on its latest launches instead.
    streak = (
        failed + proven < cfg.min_workers_for_rate_check
        and _failing_streak(launches, forgive_at, cfg) >= cfg.min_workers_for_rate_check
    )
    newest = max((f.failed_at for f in sample.failures if f.failed_at), default=None)
    evidence = (
        None
        if newest is None
        else next(
            (
                launch.worker_id
                for launch in launches
                if launch.created_at > newest and proves(launch, now, cfg)
            ),
            None,
        )
    )
    judged = (
        _judge_open(launches, snapshot, cfg, record, sample, evidence)
        if record is not None and record.state is BreakerState.OPEN
        else _judge_closed(launches, snapshot, cfg, record, sample, evidence, streak)
    )
    aging_out, rate_ok_at = _ok_times(sample, now, cfg, judged.state is not BreakerState.CLOSED)
    by_reason = Counter(f.failure for f in sample.failures if f.failure is not None)
    return BreakerView(
        state=judged.state,
        failed=failed,
        proven=proven,
        rate=sample.rate,
        failures_by_reason=tuple(sorted(by_reason.items())),
        tripped=_tripped(failed, proven, cfg) or streak,
        evidence_worker=evidence,
        probe_interval_sec=judged.interval,
        next_probe_at=judged.next_probe_at,
        probe_worker=judged.probe_worker,
        probation=judged.probation,
        booting_limit=judged.booting_limit,
        aging_out=aging_out,
        rate_ok_at=rate_ok_at,
        transition=judged.transition,
        failed_fingerprints=tuple(
            sorted({f.fingerprint for f in sample.failures if f.fingerprint})
        ),
        fingerprint=cfg.fingerprint,
    )


@dataclass(frozen=True)
class _Judged:
    state: BreakerState
    interval: float
    transition: BreakerTransition | None = None
    next_probe_at: datetime | None = None
    probe_worker: str | None = None
    probation: bool = False
    booting_limit: int | None = None


def _open(reason: Reason, interval: float, now: datetime, message: str) -> _Judged:
    return _Judged(
        BreakerState.OPEN,
        interval,
        BreakerTransition(BreakerState.OPEN, reason, interval, message),
        next_probe_at=now + timedelta(seconds=interval),
        booting_limit=0,
    )


def _close(reason: Reason, interval: float, message: str) -> _Judged:
    # A close on proof goes straight to slow start; one without proof (ageing out,
    # operator reset) starts in probation.
    probation = reason not in _PROOF_CLOSES
    return _Judged(
        BreakerState.CLOSED,
        interval,
        BreakerTransition(BreakerState.CLOSED, reason, interval, message),
        probation=probation,
        booting_limit=1 if probation else 2,
    )


def _doubled(interval: float, cfg: PolicyConfig) -> float:
    return min(interval * 2, cfg.breaker_probe_max_interval_sec)


def _judge_closed(
    launches: tuple[Launch, ...],
    snapshot: Snapshot,
    cfg: PolicyConfig,
    record: BreakerRecord | None,
    sample: _Sample,
    evidence: str | None,
    streak: bool,
) -> _Judged:
    now = snapshot.now
    base = cfg.breaker_probe_interval_sec
    failed, proven = len(sample.failures), len(sample.proven)
    since = [] if record is None else _since(launches, record)
    ready_since = sum(
        1 for launch in since if launch.ready_at is not None and not counted_failure(launch)
    )
    probation = record is not None and record.reason not in _PROOF_CLOSES
    if record is not None and probation:  # until a launch since the close proves itself
        proof = next((launch for launch in since if proves(launch, now, cfg)), None)
        if proof is not None:
            return _Judged(
                BreakerState.CLOSED,
                record.probe_interval_sec,
                BreakerTransition(
                    BreakerState.CLOSED,
                    Reason.EVIDENCE,
                    record.probe_interval_sec,
                    f"probation over: {proof.worker_id}, launched since the close, proved itself",
                ),
                booting_limit=max(2, 2 * ready_since),
            )
        if any(counted_failure(launch) for launch in since):
            return _open(
                Reason.PROBATION_FAILED,
                _doubled(record.probe_interval_sec, cfg),
                now,
                "a worker launched after the breaker closed failed before any proved itself",
            )
    if evidence is None and _tripped(failed, proven, cfg):
        return _open(Reason.BREAKER_TRIPPED, base, now, _trip_message(failed, proven, cfg))
    if evidence is None and streak:
        message = f"the last {cfg.min_workers_for_rate_check} resolved launches all failed"
        return _open(Reason.BREAKER_TRIPPED, base, now, message)
    if record is None:
        return _Judged(BreakerState.CLOSED, base)
    if probation:
        return _Judged(
            BreakerState.CLOSED, record.probe_interval_sec, probation=True, booting_limit=1
        )
    if (now - record.at).total_seconds() < cfg.failure_window_sec:  # slow start
        return _Judged(
            BreakerState.CLOSED, record.probe_interval_sec, booting_limit=max(2, 2 * ready_since)
        )
    return _Judged(BreakerState.CLOSED, base)


def _since(launches: tuple[Launch, ...], record: BreakerRecord) -> list[Launch]:
    """Launches of the closing cycle and after: they belong to the recovery."""
    return [launch for launch in launches if launch.created_at >= record.at]


def _trip_message(failed: int, proven: int, cfg: PolicyConfig) -> str:
    return (
        f"{failed}/{failed + proven} workers failed in the last "
        f"{cfg.failure_window_sec / 60:g} min (> {cfg.max_worker_failure_rate:.0%})"
    )


def _judge_open(
    launches: tuple[Launch, ...],
    snapshot: Snapshot,
    cfg: PolicyConfig,
    record: BreakerRecord,
    sample: _Sample,
    evidence: str | None,
) -> _Judged:
    now = snapshot.now
    interval = record.probe_interval_sec
    reset_at = snapshot.controls.breaker_reset_at
    probes = [
        launch
        for launch in launches
        if launch.probe and launch.created_at >= record.at and launch.failure is not Reason.CAPACITY
    ]
    probe = probes[-1] if probes else None
    if reset_at is not None and reset_at > record.at:
        return _close(Reason.OPERATOR_RESET, interval, "operator reset the breaker")
    if probe is not None and proves(probe, now, cfg):
        return _close(
            Reason.PROBE_PROVEN,
            cfg.breaker_probe_interval_sec,
            f"probe {probe.worker_id} proved itself",
        )
    if evidence is not None:
        return _close(
            Reason.EVIDENCE,
            cfg.breaker_probe_interval_sec,
            f"{evidence}, spawned after the newest failure, proved itself",
        )
    if probe is not None and counted_failure(probe):
        return _open(
            Reason.PROBE_FAILED,
            _doubled(interval, cfg),
            now,
            f"probe {probe.worker_id} failed ({probe.failure})",
        )
    # Ageing out is judged on the workers launched before the breaker opened:
    # launches since (probes) close it only by proving themselves.
    before = [launch for launch in sample.failures if launch.created_at < record.at]
    proven_before = [launch for launch in sample.proven if launch.created_at < record.at]
    if _rate_ok_for_open(len(before), len(proven_before), cfg):
        return _close(Reason.AGED_OUT, interval, "the failures left the window")
    # A fix deployed since (a fingerprint with no failure and no launch since the
    # breaker opened) is probed at once: the old fingerprint's failures say nothing of it.
    fresh = cfg.fingerprint is not None and not any(
        launch.fingerprint == cfg.fingerprint
        and (counted_failure(launch) or launch.created_at >= record.at)
        for launch in launches
    )
    due = now if fresh else record.at + timedelta(seconds=interval)
    in_flight = probe is not None and probe.live and probe.failed_at is None
    if in_flight:
        assert probe is not None
        return _Judged(
            BreakerState.HALF_OPEN,
            interval,
            next_probe_at=due,
            probe_worker=probe.worker_id,
            booting_limit=0,
        )
    if now >= due:
        return _Judged(BreakerState.HALF_OPEN, interval, next_probe_at=due, booting_limit=0)
    return _Judged(BreakerState.OPEN, interval, next_probe_at=due, booting_limit=0)
