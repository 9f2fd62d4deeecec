"""Pod reconciliation: the provider's pod list against the worker rows.

- only a pod named exactly as this deployment names pods
  (`{prefix}-{yyyymmddHHMMSS}-{8 hex}`) is ours; any other pod is foreign: never
  touched, only reported;
- a pod of ours with no row in the snapshot is an orphan: terminated once older
  than the grace (read from the timestamp in its name);
- a `spawning` row without a pod id whose pod is listed lost its create's answer:
  the pod is adopted (its id recorded), not deleted;
- a booting worker whose pod exited failed to boot (`boot_failed`);
- a missing pod is evidence only over time: a live worker is `pod_vanished` once
  every successful list for `pod_missing_sec` missed its pod **and** it has been
  silent that long. One list that misses a pod (a partial answer) records when the
  absence began (`PodSightings`), nothing more.
Nothing is reconciled when the list was not read, or when it looks impossible
(empty while several rows expect a pod).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from ..models import (
    Action,
    ActionKind,
    Expected,
    Pod,
    PodSightings,
    PolicyConfig,
    Reason,
    Snapshot,
    WorkerStatus,
    WorkerView,
)
from .health import silence

_LIVE = frozenset({WorkerStatus.SPAWNING, WorkerStatus.ACTIVE, WorkerStatus.TERMINATING})
_POD_NAME = re.compile(r"(\d{14})-[0-9a-f]{8}")
# The old orchestrator's (`gpu-20260410_100000-a1a1a1a1`), ours on an adopted
# database. Its clock was the host's local time: read as UTC, the same as ours on
# a platform like Railway.
_LEGACY_POD_NAME = re.compile(r"(\d{8}_\d{6})-[0-9a-f]{8}")


def launched_at(name: str, prefix: str, legacy: bool = False) -> datetime | None:
    """The launch time of a pod named as ours, `{prefix}-{yyyymmddHHMMSS}-{8 hex}`
    (or, with `legacy`, `{prefix}-{yyyymmdd_HHMMSS}-{8 hex}`); None for any other
    name (not ours)."""
    if not name.startswith(f"{prefix}-"):
        return None
    rest = name[len(prefix) + 1 :]
    match = _POD_NAME.fullmatch(rest)
    layout = "%Y%m%d%H%M%S"
    if match is None and legacy:
        match, layout = _LEGACY_POD_NAME.fullmatch(rest), "%Y%m%d_%H%M%S"
    if match is None:
        return None
    try:
        return datetime.strptime(match[1], layout).replace(tzinfo=UTC)
    except ValueError:
        return None


def _older_than_grace(since: datetime, now: datetime, cfg: PolicyConfig) -> bool:
    return (now - since).total_seconds() > cfg.pod_grace_sec


def foreign_pods(snapshot: Snapshot, cfg: PolicyConfig) -> tuple[str, ...]:
    """Names of listed pods that are not ours (sorted): never touched, only shown."""
    return tuple(
        sorted(
            pod.name
            for pod in snapshot.pods or ()
            if launched_at(pod.name, cfg.name_prefix, snapshot.adopted) is None
        )
    )


def expecting_pods(snapshot: Snapshot, cfg: PolicyConfig) -> list[WorkerView]:
    """Live rows with a pod that every list should show by now (none when no list
    was read: there is nothing to hold them against)."""
    if snapshot.pods is None:
        return []
    return [
        w
        for w in snapshot.workers
        if w.status in _LIVE and w.pod_id and _older_than_grace(w.created_at, snapshot.now, cfg)
    ]


def unsafe_pod_list(snapshot: Snapshot, expecting: Sequence[WorkerView]) -> str | None:
    """Why the pod list must not be acted on this cycle, if it must not.
    `expecting`: `expecting_pods` of this snapshot."""
    if snapshot.pods is None:
        return "pod list not read"
    if not snapshot.pods and len(expecting) >= 2:
        return f"provider lists no pods while {len(expecting)} rows expect one"
    return None


def pod_sightings(
    snapshot: Snapshot, expecting: Sequence[WorkerView], unsafe: str | None
) -> PodSightings | None:
    """Which rows' pods this list missed for the first time, and which are back.
    `unsafe`: `unsafe_pod_list` of this snapshot."""
    if snapshot.pods is None or unsafe is not None:
        return None
    listed = {pod.name for pod in snapshot.pods}
    missing = tuple(w.id for w in expecting if w.id not in listed and w.pod_missing_since is None)
    seen = tuple(
        w.id for w in snapshot.workers if w.pod_missing_since is not None and w.id in listed
    )
    return PodSightings(missing, seen)


def reconcile_actions(
    snapshot: Snapshot,
    cfg: PolicyConfig,
    busy: Collection[str],
    unsafe: str | None,
    blind_until: datetime | None = None,
) -> list[Action]:
    """Actions from the pod list; `busy`: workers that already have an action;
    `unsafe`: `unsafe_pod_list` of this snapshot."""
    if snapshot.pods is None or unsafe is not None:
        return []
    pods = {pod.name: pod for pod in snapshot.pods}
    rows = {w.id for w in snapshot.workers}
    actions = []
    for pod in snapshot.pods:
        launched = launched_at(pod.name, cfg.name_prefix, snapshot.adopted)
        if (
            launched is not None
            and pod.name not in rows
            and _older_than_grace(launched, snapshot.now, cfg)
        ):
            actions.append(
                Action(
                    ActionKind.TERMINATE_ORPHAN_POD,
                    Reason.ORPHAN,
                    f"pod {pod.pod_id} has no live worker row",
                    worker_id=pod.name,
                    pod_id=pod.pod_id,
                )
            )
    for w in snapshot.workers:
        if w.status in _LIVE and w.id not in busy:
            action = _judge_pod(w, pods.get(w.id), snapshot.now, cfg, blind_until)
            if action is not None:
                actions.append(action)
    return actions


def _judge_pod(
    w: WorkerView, pod: Pod | None, now: datetime, cfg: PolicyConfig, blind_until: datetime | None
) -> Action | None:
    if pod is not None:
        if w.pod_id is None:
            return Action(
                ActionKind.ADOPT_POD,
                Reason.CREATE_UNRESOLVED,
                f"pod {pod.pod_id} listed for a create whose answer was lost",
                worker_id=w.id,
                pod_id=pod.pod_id,
                cost_per_hr=pod.cost_per_hr,
            )
        if w.status is WorkerStatus.SPAWNING and not pod.running:
            return Action(
                ActionKind.FAIL,
                Reason.BOOT_FAILED,
                f"pod exited before its first heartbeat (status {pod.status})",
                worker_id=w.id,
                expect=Expected(w.status),
            )
        return None
    if w.pod_id is None or w.pod_missing_since is None:
        return None  # a create still unresolved (see health), or missed only now
    missing = (now - w.pod_missing_since).total_seconds()
    silent = silence(w, now, blind_until)
    if min(missing, silent) < cfg.pod_missing_sec:
        return None
    return Action(
        ActionKind.FAIL,
        Reason.POD_VANISHED,
        f"its pod has been missing from every list for {missing:.0f}s "
        f"and the worker silent for {silent:.0f}s",
        worker_id=w.id,
        expect=Expected(w.status, w.last_heartbeat, heartbeat_judged=True),
    )
