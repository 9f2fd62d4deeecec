"""What a run cost and achieved, as one scorecard row, and the table of rows."""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

from .engine import Run
from .queue import TaskStatus


@dataclass(frozen=True)
class Score:
    scenario: str
    policy: str
    blocked_min: float  # minutes the breaker held back spawns while tasks waited
    wasted_usd: float  # spent on pods that never became ready
    spent_usd: float  # spent on every pod
    wait_p50_min: float  # queue wait (enqueue to first claim; still waiting: until the end)
    wait_p95_min: float
    completed: int
    lost: int  # ordinary tasks dead-lettered, or held by a worker that is gone
    peak_pods: int
    launches_per_hour: float
    trips: int  # the breaker went from closed to open
    spurious_trips: int  # ... with no launch really failing within the window before


def _percentile(values: list[float], q: float) -> float:
    """Nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def score(run: Run) -> Score:
    world, end = run.world, run.end
    tasks = list(world.queue.tasks.values())
    waits = [
        ((t.first_claimed_at or end) - t.created_at).total_seconds() / 60
        for t in tasks
        if not t.poison and t.status is not TaskStatus.CANCELLED
    ]
    ready = {row.id for row in world.rows.values() if row.ready_at is not None}
    pods = world.provider.pods.values()
    trips = run.trips()
    poll_min = run.scenario.poll_sec / 60
    return Score(
        scenario=run.scenario.name,
        policy=run.policy.name,
        blocked_min=sum(poll_min for s in run.samples if s.blocked and s.queued > 0),
        wasted_usd=sum(p.usd(end) for p in pods if p.name not in ready),
        spent_usd=sum(p.usd(end) for p in pods),
        wait_p50_min=_percentile(waits, 0.5),
        wait_p95_min=_percentile(waits, 0.95),
        completed=sum(1 for t in tasks if t.status is TaskStatus.COMPLETE),
        lost=sum(1 for t in tasks if _lost(run, t.id)),
        peak_pods=max((s.pods for s in run.samples), default=0),
        launches_per_hour=len(world.launches) / run.scenario.hours,
        trips=len(trips),
        spurious_trips=sum(1 for at in trips if not run.scenario.genuine_fault(at)),
    )


def _lost(run: Run, task_id: str) -> bool:
    task = run.world.queue.tasks[task_id]
    if task.poison:
        return False  # dead-lettering or quarantining it is the right outcome
    if task.status is TaskStatus.FAILED:
        return True
    if task.status is TaskStatus.IN_PROGRESS:
        assert task.worker_id is not None
        return not run.world.rows[task.worker_id].live  # nobody will finish or requeue it
    return False


_HEADERS = (
    "scenario",
    "policy",
    "blocked min",
    "wasted $",
    "spent $",
    "wait p50 min",
    "wait p95 min",
    "completed",
    "lost",
    "peak pods",
    "launches/h",
    "trips",
    "spurious trips",
)
assert len(_HEADERS) == len(fields(Score))


def _cell(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def table(scores: list[Score]) -> str:
    """A Markdown table, one row per score."""
    rows = [_HEADERS, *(tuple(_cell(v) for v in astuple(s)) for s in scores)]
    widths = [max(len(row[n]) for row in rows) for n in range(len(_HEADERS))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
