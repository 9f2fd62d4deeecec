"""The status page: what `status` says, as one self-contained HTML page (no build
step, no CDN, no script; it reloads itself), plus what a person reads faster as a
picture: a timeline of launches, failures, breaker transitions and operator
levers over the last two failure windows. Read-only: no secrets, no write action
(levers stay in the audited CLI). Served at `GET /` by the daemon and written by
`status --html FILE`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape
from typing import Any

from ..models import Launch
from .health import HealthReport

_REFRESH_SEC = 10
_WIDTH, _HEIGHT = 900, 120
_COLORS = {"healthy": "#1a7f37", "degraded": "#9a6700", "blocked": "#cf222e", "unknown": "#6e7781"}
_LEVERS = {
    "breaker_reset",
    "spawning_paused",
    "spawning_resumed",
    "kill_switch_on",
    "kill_switch_off",
    "spawn_requested",
}


def _e(value: object) -> str:
    return escape("-" if value is None else str(value))


def render_page(report: HealthReport, events: Sequence[dict[str, Any]] = ()) -> str:
    """The page for one health report; `events`: recent `orchestrator_events`
    (`at` as a datetime, `kind`, `reason`, `actor`)."""
    doc = report.as_dict()
    b, q = doc["breaker"], doc["queue"]
    verdict = doc["verdict"]
    failures = "".join(
        f"<li>{_e(n)} x {_e(reason)}: {_e(b['hints'].get(reason, ''))}</li>"
        for reason, n in b["failures_by_reason"].items()
    )
    ages = ", ".join(_e(t) for t in b["failures_age_out_at"]) or "-"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{_REFRESH_SEC}">
<title>gpu-orchestrator: {_e(verdict)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1f2328; }}
.verdict {{ display: inline-block; padding: .2rem .6rem; border-radius: .3rem; color: #fff;
  background: {_COLORS.get(verdict, "#6e7781")}; font-weight: 600; }}
table {{ border-collapse: collapse; margin-top: .5rem; }}
td, th {{ border-bottom: 1px solid #d0d7de; padding: .2rem .6rem; text-align: left; }}
section {{ margin-top: 1.2rem; }}
</style></head><body>
<h1>gpu-orchestrator <span class="verdict" id="verdict">{_e(verdict.upper())}</span></h1>
<p id="summary">{_e(doc["summary"])}</p>
<p><b>What to do:</b> <span id="action">{_e(doc["recommended_action"])}</span></p>
<section><h2>Breaker</h2>
<p>state <b id="breaker-state">{_e(b["state"])}</b>;
failure rate {_e("-" if b["rate"] is None else f"{b['rate']:.1%}")}
(<span id="breaker-failed">{_e(b["failed"])}</span> failed /
<span id="breaker-proven">{_e(b["proven"])}</span> proven in the window);
next probe {_e(b["next_probe_at"])}</p>
<ul>{failures}</ul>
<p>failures leave the window at: {ages}; rate acceptable by {_e(b["rate_ok_at"])}</p>
</section>
<section><h2>Timeline</h2>{_timeline(report, events)}</section>
<section><h2>Fleet</h2>{_fleet(report)}</section>
<section><h2>Queue</h2>
<p><span id="queued">{_e(q["queued"])}</span> queued, {_e(q["in_progress"])} in progress,
oldest waiting {_e(q["oldest_queued_age_sec"])} s</p></section>
<p><small>observed {_e(doc["now"])} (database clock); reloads every {_REFRESH_SEC} s.
Levers: the audited CLI (<code>gpu-orchestrator breaker reset</code>, <code>spawning</code>,
<code>kill-switch</code>).</small></p>
</body></html>
"""


def _fleet(report: HealthReport) -> str:
    snap = report.snapshot
    holds = snap.holds_by_worker()
    rows = []
    for w in sorted(snap.workers, key=lambda w: w.created_at, reverse=True):
        beat = None if w.last_heartbeat is None else (snap.now - w.last_heartbeat).total_seconds()
        task = ", ".join(h.task_id for h in holds.get(w.id, ())) or "-"
        rows.append(
            f"<tr><td>{_e(w.id)}</td><td>{_e(w.status.value)}</td>"
            f"<td>{(snap.now - w.created_at).total_seconds():.0f} s</td>"
            f"<td>{'-' if beat is None else f'{beat:.0f} s'}</td><td>{_e(task)}</td></tr>"
        )
    if not rows:
        return "<p>no workers</p>"
    return (
        "<table id='fleet'><tr><th>worker</th><th>status</th><th>age</th>"
        "<th>heartbeat</th><th>task</th></tr>" + "".join(rows) + "</table>"
    )


def _timeline(report: HealthReport, events: Sequence[dict[str, Any]]) -> str:
    """Inline SVG: launches (grey), proven (green), failures (red, one row per
    reason), breaker transitions and levers (vertical lines, labelled)."""
    snap = report.snapshot
    span = timedelta(seconds=2 * report.settings.policy().failure_window_sec)
    start = snap.now - span

    def x(at: datetime) -> float:
        return 40 + (_WIDTH - 50) * max(0.0, (at - start) / span)

    marks: list[str] = []
    for launch in snap.launches:
        marks += _launch_marks(launch, start, x)
    for event in events:
        at, kind = event["at"], str(event["kind"])
        if at < start:
            continue
        color = (
            "#8250df" if kind in _LEVERS else "#cf222e" if kind == "breaker_opened" else "#1a7f37"
        )
        label = f"{kind} ({event.get('reason')}) by {event.get('actor')}"
        marks.append(
            f"<line x1='{x(at):.1f}' x2='{x(at):.1f}' y1='5' y2='{_HEIGHT - 20}' stroke='{color}' "
            f"stroke-dasharray='3 2'><title>{_e(at.isoformat())} {_e(label)}</title></line>"
        )
    axis = (
        f"<line x1='40' x2='{_WIDTH - 10}' y1='{_HEIGHT - 20}' y2='{_HEIGHT - 20}' "
        "stroke='#6e7781'/>"
        f"<text x='40' y='{_HEIGHT - 5}' font-size='11'>{_e(start.strftime('%H:%M'))}</text>"
        f"<text x='{_WIDTH - 50}' y='{_HEIGHT - 5}' font-size='11'>"
        f"{_e(snap.now.strftime('%H:%M'))}</text>"
        "<text x='0' y='25' font-size='10'>launch</text>"
        "<text x='0' y='55' font-size='10'>ready</text>"
        "<text x='0' y='85' font-size='10'>failed</text>"
    )
    return (
        f"<svg id='timeline' width='{_WIDTH}' height='{_HEIGHT}' role='img' "
        f"aria-label='launches, failures and breaker transitions'>{axis}{''.join(marks)}</svg>"
    )


def _event_color(kind: str) -> str:
    if kind in _LEVERS:
        return "#8250df"  # an operator's lever
    return "#cf222e" if kind == "breaker_opened" else "#1a7f37"


def _launch_marks(launch: Launch, start: datetime, x: Any) -> list[str]:
    marks = []
    if launch.created_at >= start:
        marks.append(
            f"<rect x='{x(launch.created_at):.1f}' y='15' width='2' height='14' fill='#6e7781'>"
            f"<title>launched {_e(launch.worker_id)}</title></rect>"
        )
    if launch.ready_at is not None and launch.ready_at >= start:
        marks.append(
            f"<circle cx='{x(launch.ready_at):.1f}' cy='50' r='4' fill='#1a7f37'>"
            f"<title>{_e(launch.worker_id)} ready</title></circle>"
        )
    if launch.failed_at is not None and launch.failed_at >= start and launch.failure:
        marks.append(
            f"<circle class='failure' cx='{x(launch.failed_at):.1f}' cy='80' r='4' fill='#cf222e'>"
            f"<title>{_e(launch.worker_id)} {_e(launch.failure.value)}</title></circle>"
        )
    return marks
