"""Launches per hour under a permanent outage (no pod ever boots, tasks always
waiting), replayed with the simulator over the real policy, beside the system we
replace: every spawn blocked until the failures age out of the window, then a burst
of MIN_WORKERS_FOR_RATE_CHECK launches that fail again.

    python benchmarks/outage.py [--hours 24] [--max-gpus 4]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from gpu_orchestrator.config import load_settings
from gpu_orchestrator.sim.fleet import SimFleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--max-gpus", type=int, default=4)
    args = parser.parse_args()

    settings = load_settings(max_active_gpus=args.max_gpus, database_url=None)
    cfg = settings.policy()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    sim = SimFleet(cfg, start, boots=lambda _at: False, queued=1000)
    began = time.perf_counter()
    for _ in range(int(args.hours * 3600 / settings.orchestrator_poll_sec)):
        sim.step(settings.orchestrator_poll_sec)
    elapsed = time.perf_counter() - began
    per_hour = sim.launches_per_hour(start, args.hours)

    window, boot = cfg.failure_window_sec, cfg.spawning_timeout_sec
    bound = int(3600 / (min(cfg.breaker_probe_interval_sec, window) + boot)) + 1
    old = cfg.min_workers_for_rate_check * 3600 / (window + boot)
    steady = per_hour[2:]
    print(
        f"permanent outage, {args.hours} h simulated in {elapsed:.2f} s "
        f"(defaults: MAX_ACTIVE_GPUS={args.max_gpus}, window {window / 60:g} min, "
        f"boot deadline {boot:g} s, probe interval {cfg.breaker_probe_interval_sec:g}"
        f"..{cfg.breaker_probe_max_interval_sec:g} s, poll {settings.orchestrator_poll_sec:g} s)"
    )
    print(f"launches per hour, hour by hour: {per_hour}")
    print(
        f"first hour: {per_hour[0]}; after: mean {sum(steady) / len(steady):.2f}, "
        f"max {max(steady)} (stated bound {bound})"
    )
    print(
        f"system we replace: ~{old:.1f} launches per hour "
        f"({cfg.min_workers_for_rate_check} every {(window + boot) / 60:g} min)"
    )
    print(f"total launches in {args.hours} h: {sum(per_hour)} vs ~{old * args.hours:.0f}")


if __name__ == "__main__":
    main()
