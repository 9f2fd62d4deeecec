"""The daemon's footprint: RSS and CPU of the real loop at 1,000 workers.

A child process runs `Orchestrator.run_forever` (the loop `gpu-orchestrator run`
runs) with the real `Executor` and `PostgresStore` and cycle.py's `NoopProvider`,
every `--poll` seconds (the default `ORCHESTRATOR_POLL_SEC`), over cycle.py's
1,000-worker data set and 100,000 queued tasks, `MAX_ACTIVE_GPUS` = 1,000. Meanwhile
this process heartbeats for the live workers every 20 s (one UPDATE, as 1,000
agents would), so the fleet stays healthy; booting rows that never heartbeat
fail their boot deadline, as they would. The child's RSS (VmRSS, VmHWM) and CPU
(utime + stime) are read from /proc every `--sample` seconds.

Run: .venv/bin/python benchmarks/daemon.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
     [--minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import structlog
from _db import add_dsn_argument, median, scratch_database, table
from cycle import POLICY, NoopProvider, live_pods, orchestrator, seed

from gpu_orchestrator.loop import CycleReport
from gpu_orchestrator.store.postgres import PostgresStore

FLEET = 1000
HEARTBEAT_SEC = 20.0
TICK_SEC = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

SCRIPT = os.path.abspath(__file__)
HEARTBEATS_SQL = """
update workers set last_heartbeat = now()
where terminated_at is null and status in ('active', 'terminating')
"""


async def child(dsn: str, poll: float) -> None:
    """The loop, until SIGTERM; prints its cycle outcomes as JSON."""
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    admin = await asyncpg.connect(dsn)
    try:
        provider = NoopProvider(await live_pods(admin))
    finally:
        await admin.close()
    store = await PostgresStore.connect(dsn)
    orch = orchestrator(store, provider, replace(POLICY, max_active_gpus=FLEET))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    outcomes: Counter[str] = Counter()
    durations: list[float] = []

    def on_cycle(report: CycleReport) -> None:
        outcomes[report.outcome] += 1
        durations.append(report.duration_ms)

    try:
        await orch.run_forever(stop, poll, on_cycle=on_cycle)
    finally:
        await store.close()
    print(json.dumps({"outcomes": outcomes, "cycle_ms": durations}))


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the child started
    rss_kb: int
    hwm_kb: int
    cpu_sec: float


def sample(pid: int, started: float) -> Sample:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        ticks = stat.read().rsplit(")", 1)[1].split()
    return Sample(
        time.monotonic() - started,
        int(fields["VmRSS"].split()[0]),
        int(fields["VmHWM"].split()[0]),
        (int(ticks[11]) + int(ticks[12])) / TICK_SEC,
    )


async def parent(args: argparse.Namespace) -> None:
    async with scratch_database(args.dsn) as db:
        admin = await asyncpg.connect(db.dsn)
        try:
            for name in ("tasks", "workers", "worker_events", "orchestrator_events"):
                await admin.execute(f"alter table {name} set (autovacuum_enabled = false)")
            await seed(admin, FLEET, args.queued, args.completed)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                SCRIPT,
                "--child",
                "--dsn",
                db.dsn,
                "--poll",
                str(args.poll),
                stdout=asyncio.subprocess.PIPE,
            )
            started = time.monotonic()
            samples: list[Sample] = []
            next_beat = 0.0
            while (elapsed := time.monotonic() - started) < args.minutes * 60:
                if elapsed >= next_beat:
                    await admin.execute(HEARTBEATS_SQL)
                    next_beat += HEARTBEAT_SEC
                samples.append(sample(proc.pid, started))
                await asyncio.sleep(args.sample)
            samples.append(sample(proc.pid, started))
            proc.send_signal(signal.SIGTERM)
            out, _ = await proc.communicate()
        finally:
            await admin.close()
    report(samples, json.loads(out), db.server, args)


def report(
    samples: list[Sample], child_out: dict[str, Any], server: str, args: argparse.Namespace
) -> None:
    settled = [s for s in samples if s.at >= args.poll] or samples  # after the first cycle
    last = samples[-1]
    growth_kb = last.rss_kb - settled[0].rss_kb
    cycle_ms = child_out["cycle_ms"]
    print(f"server: {server}")
    print(
        f"daemon: the real loop in a child process, NoopProvider, {FLEET:,} workers, "
        f"{args.queued:,} queued tasks, poll {args.poll:g} s, {args.minutes:g} min; "
        f"CPU tick {1000 / TICK_SEC:g} ms"
    )
    print(f"cycles: {dict(child_out['outcomes'])}")
    print()
    print(
        table(
            ["measure", "value"],
            [
                ["RSS after the first cycle (MiB)", f"{settled[0].rss_kb / 1024:.1f}"],
                ["RSS at the end (MiB)", f"{last.rss_kb / 1024:.1f}"],
                ["RSS growth after the first cycle (MiB)", f"{growth_kb / 1024:.1f}"],
                ["peak RSS, VmHWM (MiB)", f"{last.hwm_kb / 1024:.1f}"],
                ["CPU, whole run (s)", f"{last.cpu_sec:.2f}"],
                ["CPU, average (% of a core)", f"{100 * last.cpu_sec / last.at:.2f}"],
                ["CPU per poll interval, start-up excluded (ms)", _per_poll(settled, args.poll)],
                ["cycle duration med (ms)", f"{median(cycle_ms):.1f}" if cycle_ms else "-"],
                ["cycle duration max (ms)", f"{max(cycle_ms):.1f}" if cycle_ms else "-"],
            ],
        )
    )
    print()
    print("reproduce: " + " ".join(["python", "benchmarks/daemon.py", *sys.argv[1:]]))


def _per_poll(settled: list[Sample], poll: float) -> str:
    """CPU from the first sample after the first cycle to the last, per `poll` s."""
    span = settled[-1].at - settled[0].at
    if span <= 0:
        return "-"
    return f"{1000 * (settled[-1].cpu_sec - settled[0].cpu_sec) * poll / span:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dsn_argument(parser)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=30.0, help="ORCHESTRATOR_POLL_SEC")
    parser.add_argument(
        "--sample", type=float, default=5.0, help="seconds between /proc reads (at most 20)"
    )
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--completed", type=int, default=50_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.dsn, args.poll))
    else:
        asyncio.run(parent(args))


if __name__ == "__main__":
    main()
