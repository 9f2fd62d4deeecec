"""One PNG per scenario: queue depth, workers by state and the breaker's state over
time, a column per policy. Needs matplotlib (`pip install 'gpu-orchestrator[plot]'`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..models import BreakerState
from .engine import Run

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_LEVEL = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def plot_runs(runs: Sequence[Run], directory: Path) -> list[Path]:
    """Writes `sim-<scenario>.png` per scenario of `runs` into `directory`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    by_scenario: dict[str, list[Run]] = {}
    for run in runs:
        by_scenario.setdefault(run.scenario.name, []).append(run)
    written = []
    for name, group in by_scenario.items():
        fig, axes = plt.subplots(
            3, len(group), figsize=(5.5 * len(group), 7), sharex=True, squeeze=False
        )
        for column, run in enumerate(group):
            _draw(run, [axes[row][column] for row in range(3)])
        fig.suptitle(f"{name}: {group[0].scenario.summary}", fontsize=10)
        fig.tight_layout()
        path = directory / f"sim-{name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def _draw(run: Run, axes: list[Axes]) -> None:
    queue, workers, breaker = axes
    minutes = [(s.at - run.scenario.start).total_seconds() / 60 for s in run.samples]
    queue.plot(minutes, [s.queued for s in run.samples], color="tab:blue")
    queue.set_title(f"{run.policy.name} policy", fontsize=9)
    queue.set_ylabel("tasks queued")
    workers.stackplot(
        minutes,
        [s.active for s in run.samples],
        [s.spawning for s in run.samples],
        [s.terminating for s in run.samples],
        labels=["active", "spawning", "terminating"],
        colors=["tab:green", "tab:orange", "tab:gray"],
    )
    workers.set_ylabel("workers")
    workers.legend(loc="upper right", fontsize=7)
    breaker.step(minutes, [_LEVEL[s.breaker] for s in run.samples], where="post", color="tab:red")
    breaker.set_yticks(list(_LEVEL.values()), [s.value for s in _LEVEL])
    breaker.set_ylabel("breaker")
    breaker.set_xlabel("minutes")
