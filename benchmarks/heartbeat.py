"""Heartbeats at fleet scale: `func_worker_heartbeat_with_logs` as the worker agent
calls it (`PostgresStore.heartbeat`, with the agent's `LogBuffer` lines and its
task in progress).

1,000 active workers (each holding a task) heartbeat every 20 s with 5 log lines
each: 50 calls/s. Two runs:

  * sustained: that schedule, each worker at its own offset in the 20 s, for
    `--seconds`: calls/s achieved, latency, and backend CPU per call;
  * flat out: every pool connection calling back to back, for `--seconds` / 3:
    the ceiling on this machine, and CPU per call under load.

The workers share a pool of `--connections` connections (a real fleet holds one
connection per worker, idle between beats); backend CPU is read from
/proc/<pid>/stat (utime + stime) of exactly those backends (their pids from
pg_stat_activity by application_name), so the benchmark must run on the
database's machine (a local server, or the embedded one without --dsn).
pg_stat_statements is not used: it is not installed by
default and would not count the trigger and plpgsql work outside the statement.

Run: .venv/bin/python benchmarks/heartbeat.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlparse

import asyncpg
import structlog
from _db import add_dsn_argument, median, p95, scratch_database, table

from gpu_orchestrator.store.postgres import PostgresStore
from gpu_orchestrator.worker.logbuffer import LogBuffer

APP_NAME = "gpo_heartbeat_bench"
PERIOD_SEC = 20.0
LINES = 5
TICK_SEC = os.sysconf("SC_CLK_TCK")

SEED_SQL = """
insert into workers (id, status, provider, pod_id, created_at, ready_at, last_heartbeat)
select 'hb-' || lpad(g::text, 4, '0'), 'active', 'runpod', 'pod-' || g,
       now() - interval '1 hour', now() - interval '59 minutes', now()
from generate_series(1, $1::int) g;
insert into tasks (task_type, params, status, worker_id, generation_started_at)
select 'wan_2_2_t2v', '{"prompt": "a heartbeat benchmark"}', 'In Progress',
       'hb-' || lpad(g::text, 4, '0'), now()
from generate_series(1, $1::int) g;
analyze workers;
analyze tasks;
"""


def _with_app_name(dsn: str) -> str:
    parsed = urlparse(dsn)
    query = "&".join(filter(None, [parsed.query, urlencode({"application_name": APP_NAME})]))
    return parsed._replace(query=query).geturl()


def _lines(worker: str) -> list[dict[str, object]]:
    """Five lines as the agent's buffer holds them."""
    buffer = LogBuffer()
    for n in range(LINES):
        buffer.record("info", "task_progress", step=n, of=LINES, worker=worker, frames=48)
    return buffer.take()


def _cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / TICK_SEC


@dataclass
class RunResult:
    label: str
    seconds: float
    latencies: list[float]  # ms
    cpu_seconds: float  # of the pool's backends
    errors: int

    @property
    def calls(self) -> int:
        return len(self.latencies)


async def _backend_pids(store: PostgresStore, connections: int) -> list[int]:
    # Fill the pool, then ask the server which backends are ours.
    async def hold() -> None:
        async with store.pool.acquire() as conn:
            await conn.fetchval("select 1")
            await asyncio.sleep(0.2)

    await asyncio.gather(*(hold() for _ in range(connections)))
    rows = await store.pool.fetch(
        "select pid from pg_stat_activity where application_name = $1", APP_NAME
    )
    return [r["pid"] for r in rows]


async def _beat(store: PostgresStore, worker: str, task: str, out: RunResult) -> None:
    start = time.perf_counter()
    try:
        await store.heartbeat(worker, _lines(worker), task, "active")
    except Exception:  # counted, reported: the run goes on
        out.errors += 1
        return
    out.latencies.append((time.perf_counter() - start) * 1000.0)


async def sustained(
    store: PostgresStore, pids: list[int], fleet: list[tuple[str, str]], seconds: float
) -> RunResult:
    out = RunResult("sustained: every worker every 20 s", 0.0, [], 0.0, 0)
    cpu = _cpu_seconds(pids)
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    n = 0
    while (due := n * PERIOD_SEC / len(fleet)) < seconds:
        await asyncio.sleep(max(0.0, start + due - time.monotonic()))
        worker, task = fleet[n % len(fleet)]
        beat = asyncio.create_task(_beat(store, worker, task, out))
        pending.add(beat)
        beat.add_done_callback(pending.discard)
        n += 1
    await asyncio.gather(*pending)
    out.seconds = time.monotonic() - start
    out.cpu_seconds = _cpu_seconds(pids) - cpu
    return out


async def flat_out(
    store: PostgresStore, pids: list[int], fleet: list[tuple[str, str]], seconds: float, lanes: int
) -> RunResult:
    out = RunResult(f"flat out: {lanes} callers back to back", 0.0, [], 0.0, 0)
    cpu = _cpu_seconds(pids)
    start = time.monotonic()

    async def lane(k: int) -> None:
        n = k
        while time.monotonic() - start < seconds:
            worker, task = fleet[n % len(fleet)]
            await _beat(store, worker, task, out)
            n += lanes

    await asyncio.gather(*(lane(k) for k in range(lanes)))
    out.seconds = time.monotonic() - start
    out.cpu_seconds = _cpu_seconds(pids) - cpu
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dsn_argument(parser)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="sustained run length")
    parser.add_argument("--connections", type=int, default=10)
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # the lines, no output

    async with scratch_database(args.dsn) as db:
        admin = await asyncpg.connect(db.dsn)
        try:
            await admin.execute(SEED_SQL.replace("$1", str(args.workers)))
            fleet = [
                (r["worker_id"], r["id"])
                for r in await admin.fetch(
                    "select worker_id, id::text from tasks order by worker_id"
                )
            ]
            logs_before = await admin.fetchval("select count(*) from system_logs")
        finally:
            await admin.close()
        store = await PostgresStore.connect(_with_app_name(db.dsn), max_size=args.connections)
        try:
            pids = await _backend_pids(store, args.connections)
            for worker, task in fleet[: args.connections]:  # warm the plan caches
                await store.heartbeat(worker, _lines(worker), task, "active")
            runs = [
                await sustained(store, pids, fleet, args.seconds),
                await flat_out(store, pids, fleet, args.seconds / 3, args.connections),
            ]
            logs = await store.pool.fetchval("select count(*) from system_logs") - logs_before
        finally:
            await store.close()

    print(f"server: {db.server}")
    print(
        f"fleet: {args.workers:,} active workers, each holding a task; {LINES} log lines per "
        f"heartbeat; one heartbeat per worker every {PERIOD_SEC:g} s = "
        f"{args.workers / PERIOD_SEC:g} calls/s needed; {args.connections} pooled connections "
        f"({len(pids)} backends measured)"
    )
    print()
    print(
        table(
            [
                "run",
                "seconds",
                "calls",
                "calls/s",
                "latency med ms",
                "latency p95 ms",
                "backend CPU ms/call",
                "backend CPU % of a core",
                "errors",
            ],
            [
                [
                    r.label,
                    f"{r.seconds:.1f}",
                    r.calls,
                    f"{r.calls / r.seconds:.1f}",
                    f"{median(r.latencies):.2f}",
                    f"{p95(r.latencies):.2f}",
                    f"{1000 * r.cpu_seconds / max(1, r.calls):.3f}",
                    f"{100 * r.cpu_seconds / r.seconds:.1f}",
                    r.errors,
                ]
                for r in runs
            ],
        )
    )
    print(
        f"system_logs rows written: {logs:,} (expected {LINES} x calls, warm-up included: "
        f"{LINES * (sum(r.calls for r in runs) + min(args.connections, len(fleet))):,})"
    )
    print(f"CPU clock tick: {1000 / TICK_SEC:g} ms")
    print()
    print("reproduce: " + " ".join(["python", "benchmarks/heartbeat.py", *sys.argv[1:]]))


if __name__ == "__main__":
    asyncio.run(main())
