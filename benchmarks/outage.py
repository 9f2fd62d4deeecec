"""Launches and dollars under a permanent outage (no pod ever boots), replayed with
the simulator for our policy and for the one we replace, with three kinds of
demand: a deep queue, one task, and 100 tasks every 3 hours that users give up on
after 20 minutes. The bound is the one docs/breaker.md states.

    python benchmarks/outage.py [--hours 24] [--max-gpus 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace

from gpu_orchestrator.sim.engine import simulate
from gpu_orchestrator.sim.policies import POLICIES
from gpu_orchestrator.sim.scenarios import CONFIG, outage
from gpu_orchestrator.sim.scorecard import score

DEMANDS = ("deep", "one", "comes-and-goes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--max-gpus", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = replace(CONFIG, max_active_gpus=args.max_gpus)
    boot, window = cfg.spawning_timeout_sec, cfg.failure_window_sec
    bound = math.floor(3600 / (min(cfg.breaker_probe_interval_sec, window) + boot)) + 1
    print(
        f"permanent outage, {args.hours} h, MAX_ACTIVE_GPUS={args.max_gpus}, window "
        f"{window / 60:g} min, boot deadline {boot:g} s (ours; the old one used the "
        f"heartbeat timeout, {cfg.gpu_idle_timeout_sec:g} s), probe interval "
        f"{cfg.breaker_probe_interval_sec:g}..{cfg.breaker_probe_max_interval_sec:g} s; "
        f"stated bound after the first trip: {bound} launches/h"
    )
    print()
    print(
        "| demand | policy | first trip (min) | launches | max/h after the trip hour "
        "| within bound | wasted $ | $ per day |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for demand in DEMANDS:
        for policy in POLICIES.values():
            run = simulate(outage(demand, args.hours, cfg, outage_hours=None), policy, args.seed)
            per_hour = run.launches_per_hour()
            trips = run.trips()
            first = None if not trips else (trips[0] - run.scenario.start).total_seconds()
            after = per_hour[int(first // 3600) + 1 :] if first is not None else per_hour
            wasted = score(run).wasted_usd
            print(
                f"| {demand} | {policy.name} | "
                f"{'never' if first is None else f'{first / 60:.1f}'} | {sum(per_hour)} | "
                f"{max(after, default=0)} | {'yes' if max(after, default=0) <= bound else 'NO'} | "
                f"{wasted:.2f} | {wasted * 24 / args.hours:.2f} |"
            )
    print()
    print("reproduce: python " + " ".join(["benchmarks/outage.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
