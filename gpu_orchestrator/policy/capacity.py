"""Capacity backoff: an offering (GPU type x data center) that answered "no
capacity" waits `CAPACITY_BACKOFF_SEC`, doubling per consecutive refusal up to
`CAPACITY_BACKOFF_MAX_SEC`; a successful launch there resets it. Capacity errors
are never worker failures. And the account-wide billing hold (402)."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..models import Launch, OfferingBackoff, PolicyConfig, Reason

# Answers that say "not here, not now" about an offering, not about our worker.
_REFUSALS = (Reason.CAPACITY, Reason.OFFERING_FORBIDDEN)


def offering_backoffs(
    launches: tuple[Launch, ...], now: datetime, cfg: PolicyConfig
) -> tuple[OfferingBackoff, ...]:
    """The offerings backing off at `now`, in preference order. `launches` in
    `LAUNCH_ORDER`, as a `Snapshot` holds them."""
    # each offering's refusals since its last placed pod, in one pass over history
    refused: dict[str | None, list[Launch]] = {offering: [] for offering in cfg.offerings}
    for launch in launches:
        streak = refused.get(launch.offering)
        if streak is None:
            continue
        if launch.pod_created:
            streak.clear()
        elif launch.failure in _REFUSALS:
            streak.append(launch)
    out: list[OfferingBackoff] = []
    for offering in cfg.offerings:
        refusals = refused[offering]
        if not refusals:
            continue
        last = refusals[-1]
        wait = min(
            cfg.capacity_backoff_sec * 2 ** (len(refusals) - 1), cfg.capacity_backoff_max_sec
        )
        until = (last.failed_at or last.created_at) + timedelta(seconds=wait)
        if until > now:
            out.append(OfferingBackoff(offering, len(refusals), until))
    return tuple(out)


def billing_hold(
    launches: tuple[Launch, ...], now: datetime, cfg: PolicyConfig
) -> tuple[datetime, datetime] | None:
    """(since, retry_at) while the account cannot pay: the newest create was
    answered 402 and none succeeded after it. One create is retried at
    `retry_at` (the probe interval after the last 402); the first that succeeds
    lifts the hold. Never a worker failure. `launches` in `LAUNCH_ORDER`."""
    since: datetime | None = None
    last: datetime | None = None
    for launch in launches:
        if launch.pod_created:
            since = last = None
        elif launch.failure is Reason.BILLING_HOLD:
            at = launch.failed_at or launch.created_at
            since, last = since or at, at
    if since is None or last is None:
        return None
    return since, last + timedelta(seconds=cfg.breaker_probe_interval_sec)
