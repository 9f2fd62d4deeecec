"""Simulator speed: simulated hours per wall-clock second, per scenario and policy
(median of --repeat runs, each with its own seed).

    python benchmarks/sim_speed.py [--repeat 5] [--hours 24]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace

from gpu_orchestrator.sim.engine import simulate
from gpu_orchestrator.sim.policies import POLICIES
from gpu_orchestrator.sim.scenarios import Scenario, outage, scenario


def _cases(hours: float) -> list[Scenario]:
    """A quiet outage, a busy 10-GPU fleet, and the heaviest named scenario."""
    return [
        outage("deep", hours, outage_hours=None),
        replace(scenario("burst-200"), hours=hours),
        scenario("brownout"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()

    print("| scenario | policy | simulated h | cycles | wall s (median) | simulated h/s |")
    print("|---|---|---|---|---|---|")
    for case in _cases(args.hours):
        for policy in POLICIES.values():
            walls = []
            for seed in range(args.repeat):
                began = time.perf_counter()
                run = simulate(case, policy, seed)
                walls.append(time.perf_counter() - began)
            wall = statistics.median(walls)
            print(
                f"| {case.name} | {policy.name} | {case.hours:g} | {len(run.samples)} | "
                f"{wall:.3f} | {case.hours / wall:,.0f} |"
            )
    print()
    print("reproduce: python " + " ".join(["benchmarks/sim_speed.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
