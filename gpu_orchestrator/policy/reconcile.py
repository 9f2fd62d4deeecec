"""Pod reconciliation: the provider's pod list against the worker rows.

- a pod named with our prefix and no row in the snapshot is an orphan: terminated
  (once older than the grace, read from the timestamp in its name);
- a booting worker whose pod exited failed to boot (`boot_failed`);
- a live worker whose pod is gone vanished (`pod_vanished`); an intent row that
  never got a pod (the orchestrator died before creating it) is cleaned up as
  neutral `orphan`.
A pod that exits after its first heartbeat is left to heartbeat loss. Nothing is
reconciled when the list was not read, or when it looks impossible (empty while
several rows expect a pod).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

from ..models import (
    Action,
    ActionKind,
    Pod,
    PolicyConfig,
    Reason,
    Snapshot,
    WorkerStatus,
    WorkerView,
)

_LIVE = (WorkerStatus.SPAWNING, WorkerStatus.ACTIVE, WorkerStatus.TERMINATING)


def launched_at(name: str, prefix: str) -> datetime | None:
    """The launch time encoded in `{prefix}-{yyyymmddHHMMSS}-{hex}`, if it parses."""
    stamp = name.removeprefix(f"{prefix}-").split("-", 1)[0]
    try:
        return datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _older_than_grace(since: datetime | None, now: datetime, cfg: PolicyConfig) -> bool:
    return since is None or (now - since).total_seconds() > cfg.pod_grace_sec


def unsafe_pod_list(snapshot: Snapshot, cfg: PolicyConfig) -> str | None:
    """Why the pod list must not be acted on this cycle, if it must not."""
    if snapshot.pods is None:
        return "pod list not read"
    expected = [
        w
        for w in snapshot.workers
        if w.status in _LIVE and w.pod_id and _older_than_grace(w.created_at, snapshot.now, cfg)
    ]
    if not snapshot.pods and len(expected) >= 2:
        return f"provider lists no pods while {len(expected)} rows expect one"
    return None


def reconcile_actions(snapshot: Snapshot, cfg: PolicyConfig, busy: Collection[str]) -> list[Action]:
    """Actions from the pod list; `busy`: workers that already have an action."""
    if snapshot.pods is None or unsafe_pod_list(snapshot, cfg) is not None:
        return []
    pods = {pod.name: pod for pod in snapshot.pods}
    rows = {w.id for w in snapshot.workers}
    actions = [
        Action(
            ActionKind.TERMINATE_ORPHAN_POD,
            Reason.ORPHAN,
            f"pod {pod.pod_id} has no live worker row",
            worker_id=pod.name,
            pod_id=pod.pod_id,
        )
        for pod in snapshot.pods
        if pod.name.startswith(f"{cfg.name_prefix}-")
        and pod.name not in rows
        and _older_than_grace(launched_at(pod.name, cfg.name_prefix), snapshot.now, cfg)
    ]
    for w in snapshot.workers:
        if w.status in _LIVE and w.id not in busy:
            action = _judge_pod(w, pods.get(w.id), snapshot.now, cfg)
            if action is not None:
                actions.append(action)
    return actions


def _judge_pod(w: WorkerView, pod: Pod | None, now: datetime, cfg: PolicyConfig) -> Action | None:
    if pod is not None:
        if w.status is WorkerStatus.SPAWNING and not pod.running:
            return Action(
                ActionKind.FAIL,
                Reason.BOOT_FAILED,
                f"pod exited before its first heartbeat (status {pod.status})",
                worker_id=w.id,
            )
        return None
    if not _older_than_grace(w.created_at, now, cfg):
        return None
    if w.status is WorkerStatus.SPAWNING and w.pod_id is None:
        return Action(
            ActionKind.FAIL,
            Reason.ORPHAN,
            "intent row whose pod was never created",
            worker_id=w.id,
        )
    return Action(ActionKind.FAIL, Reason.POD_VANISHED, "its pod is gone", worker_id=w.id)
