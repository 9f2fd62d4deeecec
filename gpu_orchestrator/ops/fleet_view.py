"""What a person watching the fleet sees: a live rich view on a terminal, one plain
line per cycle elsewhere. Rendering only; the numbers come from cycle reports."""

from __future__ import annotations

from collections import deque
from datetime import datetime

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from ..loop import CycleReport
from ..models import Snapshot


def _age(now: datetime, then: datetime | None) -> str:
    return "-" if then is None else f"{(now - then).total_seconds():.0f}s"


class FleetView:
    def __init__(self, title: str, history: int = 8) -> None:
        self._title = title
        self._recent: deque[str] = deque(maxlen=history)
        self._report: CycleReport | None = None
        self._counts: dict[str, int] = {}
        self._elapsed = 0.0
        # the whole run's story, for the closing line
        self.worker_failures: dict[str, int] = {}  # failure reason -> workers
        self.breaker_moves: list[str] = []  # "opened (breaker_tripped)", ...

    def update(self, report: CycleReport, counts: dict[str, int], elapsed: float) -> None:
        self._report, self._counts, self._elapsed = report, counts, elapsed
        self.fresh_notes: list[str] = []  # this cycle's notes, for plain output
        move = report.plan.breaker.transition if report.plan and report.plan.breaker else None
        if move is not None:
            word = "opened" if move.to.value == "open" else "closed"
            self.breaker_moves.append(f"{word} ({move.reason.value})")
            note = f"[{elapsed:6.1f}s] breaker {word}: {move.message}"
            self.note(note)
            self.fresh_notes.append(note)
        for r in report.results:
            if r.kind.value == "fail" and r.outcome == "done":
                reason = r.reason.value
                self.worker_failures[reason] = self.worker_failures.get(reason, 0) + 1
            who = r.worker_id or r.task_id or ""
            failed = f" ({r.outcome}: {r.error})" if r.outcome == "error" else ""
            self._recent.append(
                f"{elapsed:6.1f}s {r.kind.value:<15} {r.reason.value:<14} {who}{failed}"
            )

    def note(self, line: str) -> None:
        self._recent.append(line)

    def breaker_line(self) -> str:
        plan = self._report.plan if self._report is not None else None
        if plan is None or plan.breaker is None:
            return "breaker: unknown"
        b = plan.breaker
        rate = "-" if b.rate is None else f"{b.rate:.0%} ({b.failed}/{b.failed + b.proven})"
        reasons = ", ".join(f"{r.value} x{n}" for r, n in b.failures_by_reason)
        line = f"breaker: {b.state.value} rate {rate}"
        if reasons:
            line += f" [{reasons}]"
        if b.state.value != "closed" and b.next_probe_at is not None:
            line += f"; next probe at {b.next_probe_at:%H:%M:%S}"
        if b.probe_worker:
            line += f"; probe {b.probe_worker} booting"
        if b.rate_ok_at is not None:
            line += f"; rate acceptable by {b.rate_ok_at:%H:%M:%S} if nothing changes"
        if b.booting_limit is not None and b.state.value == "closed":
            line += f"; recovery ramp: {b.booting_limit} booting at most"
        if plan.held_back:
            line += f"; held back: {', '.join(r.value for r in plan.held_back)}"
        return line

    def queue_line(self) -> str:
        c = self._counts
        return (
            f"queued={c.get('Queued', 0)} running={c.get('In Progress', 0)} "
            f"done={c.get('Complete', 0)} failed={c.get('Failed', 0)}"
        )

    def plain_line(self) -> str:
        """One line per cycle for logs and pipes."""
        report = self._report
        assert report is not None
        workers = report.as_dict().get("observed", {}).get("workers", {})
        fleet = " ".join(f"{k}={v}" for k, v in sorted(workers.items())) or "none"
        acts: dict[str, int] = {}
        for r in report.results:
            key = f"{r.kind.value}({r.reason.value})"
            acts[key] = acts.get(key, 0) + 1
        done = " ".join(f"{k}x{v}" for k, v in sorted(acts.items())) or "-"
        # The cycle's outcome only when it is not a normal one: the breaker says the rest.
        outcome = "" if report.outcome == "ok" else f"{report.outcome}: {report.reason} "
        return (
            f"[{self._elapsed:6.1f}s] {outcome}{self.queue_line()} "
            f"workers: {fleet} actions: {done} | {self.breaker_line()}"
        )

    def story(self) -> str:
        """What happened to the fleet over the run, for the closing line."""
        failures = ", ".join(f"{n} {reason}" for reason, n in sorted(self.worker_failures.items()))
        line = f"worker failures: {failures or 'none'}"
        if self.breaker_moves:
            line += f"; breaker {', then '.join(self.breaker_moves)}"
        return line

    def renderable(self) -> Group:
        report = self._report
        header = f"{self._title}  t={self._elapsed:.1f}s  {self.queue_line()}"
        if report is not None and report.plan is not None:
            p = report.plan
            header += f"  desired={p.desired_workers} capacity={p.capacity}"
        parts: list[Panel | Table] = [Panel(f"{header}\n{self.breaker_line()}")]
        if report is not None and report.snapshot is not None:
            parts.append(_workers_table(report.snapshot))
        parts.append(Panel("\n".join(self._recent) or "(no actions yet)", title="recent actions"))
        return Group(*parts)


def _workers_table(snapshot: Snapshot) -> Table:
    holds = snapshot.holds_by_worker()
    table = Table(title="workers", expand=True)
    for col in ("worker", "status", "heartbeat", "tasks done", "holding"):
        table.add_column(col)
    for w in snapshot.workers:
        held = holds.get(w.id, [])
        table.add_row(
            w.id,
            w.status.value,
            _age(snapshot.now, w.last_heartbeat),
            str(w.tasks_completed),
            held[0].task_id[:8] if held else "-",
        )
    return table
