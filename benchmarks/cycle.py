"""One orchestrator cycle, whole: lease, observe, list pods, decide, act.

The real `Orchestrator.run_cycle` (loop.py) with the real `Executor` and
`PostgresStore`, against `NoopProvider`, which creates, lists and terminates pods
in memory only. For fleets of 10, 100 and 1,000 workers over 100,000 queued
tasks, with a realistic mix of worker statuses, one task in progress per active
worker, and a history of ended workers, completed tasks and events:

  * observe + decide (the issue's target), split into the snapshot call
    (incl. JSON decode), `parse_snapshot` and `decide`;
  * whole cycles at a steady fleet (`MAX_ACTIVE_GPUS` = the fleet: nothing to
    launch): time and database round trips;
  * at 1,000 workers, cycles that launch N workers and fail M silent ones
    (`heartbeat_lost`: status write, tasks requeued, pod terminated, released):
    round trips per cycle and per spawn/termination.

Round trips are counted on the wire (`_wire.py`: a TCP proxy reading the client's
Sync and Query messages), so they include whatever the driver sends. Observe,
decide and steady cycles are timed on a direct connection and counted in a
separate pass through the proxy; the acting cycles, which cannot be replayed, are
timed through it.

Run: .venv/bin/python benchmarks/cycle.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any
from unittest import mock

import asyncpg
import structlog
from _db import QUEUED_TASKS_SQL, add_dsn_argument, median, p95, scratch_database, table
from _wire import WireCounts, counting_proxy

from gpu_orchestrator.config import Settings
from gpu_orchestrator.executor import Executor
from gpu_orchestrator.loop import Orchestrator
from gpu_orchestrator.models import Pod, PolicyConfig
from gpu_orchestrator.policy import decide
from gpu_orchestrator.providers.base import PodSpec
from gpu_orchestrator.store import postgres
from gpu_orchestrator.store.postgres import PostgresStore

TARGET_MS = 15.0
POLICY = PolicyConfig(
    min_active_gpus=0,
    max_active_gpus=2000,
    tasks_per_gpu_threshold=3,
    machines_to_keep_idle=2,
    max_spawns_per_cycle=20,
    offerings=("NVIDIA A40@EU-RO-1", "NVIDIA L40S@US-TX-3"),
    # as deployed: the default per-type stuck timeouts are matched against every held task
    task_stuck_timeout_by_type=Settings.model_fields["task_stuck_timeout_by_type"].default,
)
HORIZON_SEC = POLICY.horizon_sec  # what the loop passes to `observe`


class NoopProvider:
    """A provider that touches no cloud: pods live in a dict."""

    name = "runpod"

    def __init__(self, pods: list[Pod]) -> None:
        self._pods = {p.name: p for p in pods}

    async def create_pod(self, spec: PodSpec) -> Pod:
        pod = Pod(pod_id=f"noop-{spec.worker_id}", name=spec.worker_id, running=True)
        self._pods[pod.name] = pod
        return pod

    async def list_pods(self) -> list[Pod]:
        return list(self._pods.values())

    async def terminate_pod(self, worker_id: str, pod_id: str | None) -> None:
        self._pods.pop(worker_id, None)

    async def aclose(self) -> None:
        pass


# ---------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class Mix:
    active: int
    spawning: int
    terminating: int
    error: int  # failed, pod not yet released (read by the snapshot)

    @classmethod
    def of(cls, fleet: int) -> Mix:
        spawning = max(1, round(fleet * 0.08))
        terminating = max(1, round(fleet * 0.05))
        error = round(fleet * 0.02)
        return cls(fleet - spawning - terminating - error, spawning, terminating, error)


SEED_SQL = {
    "history workers": """
        insert into workers (id, status, provider, offering, pod_id, cost_per_hr, created_at,
                             ready_at, last_heartbeat, drain_requested_at, failed_at,
                             terminated_at, termination_reason, last_task_finished_at,
                             tasks_completed, metadata)
        select 'w-old-' || g, case when failed then 'error' else 'terminated' end,
               'runpod', ($2::text[])[1 + g % 2], 'pod-old-' || g, 0.44,
               b, b + interval '90 seconds', e, e,
               case when failed then e end, e + interval '2 minutes',
               case when failed then 'heartbeat_lost' else 'scaled_down' end,
               e - interval '1 minute', 20,
               '{"vram_total_mb": 24576, "gpu": "RTX 4090"}'::jsonb
        from generate_series(1, $1::int) g,
             -- one in 10 ended within the last half hour (inside the breaker's horizon)
             lateral (select g % 10 = 0 as recent, g % 40 = 0 as failed) f,
             lateral (select case when recent then now() - interval '29 minutes'
                                                  + (g % 20) * interval '10 seconds'
                                  else now() - interval '2 hours' - g * interval '7 minutes'
                             end as b) x,
             lateral (select case when recent then b + interval '15 minutes'
                                  else b + interval '1 hour' end as e) y
    """,
    "live workers": """
        insert into workers (id, status, provider, offering, pod_id, cost_per_hr, created_at,
                             ready_at, last_heartbeat, drain_requested_at, failed_at,
                             termination_reason, last_task_finished_at, tasks_completed,
                             metadata)
        select 'w-' || lpad(g::text, 5, '0'), s,
               'runpod', ($5::text[])[1 + g % 2], 'pod-' || g, 0.44,
               case when s = 'spawning' then now() - (g % 120) * interval '1 second' else b end,
               case when s = 'spawning' then null else b + interval '90 seconds' end,
               case when s = 'spawning' then null
                    when s = 'error' then now() - interval '10 minutes'
                    else now() - (g % 20) * interval '1 second' end,
               case when s = 'terminating' then now() - (g % 60) * interval '1 second' end,
               case when s = 'error' then now() - interval '1 minute' end,
               case when s = 'error' then 'heartbeat_lost' end,
               case when s in ('active', 'terminating')
                    then now() - (g % 600) * interval '1 second' end,
               g % 50,
               '{"vram_total_mb": 24576, "vram_used_mb": 20000, "gpu": "RTX 4090"}'::jsonb
        from generate_series(1, $1::int + $2::int + $3::int + $4::int) g,
             lateral (select case when g <= $1 then 'active'
                                  when g <= $1 + $2 then 'spawning'
                                  when g <= $1 + $2 + $3 then 'terminating'
                                  else 'error' end as s,
                             now() - interval '10 minutes' - (g % 240) * interval '1 minute' as b) x
    """,
    "worker_events": """
        insert into worker_events (worker_id, at, kind, reason, detail)
        select w.id, w.created_at + k * interval '1 minute',
               (array['spawning', 'pod_created', 'active', 'terminating', 'terminated'])[k],
               case k when 1 then 'queue_demand' when 4 then 'scaled_down' end,
               jsonb_build_object('from', 'x', 'pod_id', w.pod_id)
        from workers w,
             generate_series(1, case when w.terminated_at is null then 3 else 5 end) k
    """,
    "orchestrator_events": """
        insert into orchestrator_events (at, kind, actor, reason, detail)
        select now() - interval '3 days' + g * interval '1 hour',
               (array['breaker_opened', 'breaker_closed', 'spawning_paused',
                      'spawning_resumed'])[1 + g % 4],
               'orchestrator', 'benchmark history', '{"probe_interval_sec": 300}'::jsonb
        from generate_series(1, 40) g
    """,
    "in-progress tasks": """
        insert into tasks (task_type, params, status, worker_id, attempts, created_at,
                           updated_at, generation_started_at)
        select 'wan_2_2_t2v', jsonb_build_object('prompt', 'held by ' || w.id, 'seed', 1),
               'In Progress', w.id, 0, now() - interval '30 minutes', now(),
               now() - (length(w.id) + right(w.id, 3)::int % 900) * interval '1 second'
        from workers w
        where w.terminated_at is null and w.status in ('active', 'terminating')
    """,
    "completed tasks": """
        insert into tasks (task_type, params, status, worker_id, attempts, created_at,
                           updated_at, generation_started_at, generation_processed_at,
                           result_data, output_location)
        select 'wan_2_2_t2v', jsonb_build_object('prompt', 'done ' || g, 'seed', g),
               'Complete', 'w-old-' || (1 + g % $2::int), 1,
               now() - interval '1 day' + g * interval '1 second', now(),
               now() - interval '1 day', now() - interval '23 hours',
               jsonb_build_object('output_location', 's3://bucket/' || g || '.mp4'),
               's3://bucket/' || g || '.mp4'
        from generate_series(1, $1::int) g
    """,
    "queued tasks": QUEUED_TASKS_SQL,
}


async def seed(
    conn: asyncpg.Connection, fleet: int, queued: int, completed: int, *, vacuum: bool = False
) -> Mix:
    mix = Mix.of(fleet)
    offerings = list(POLICY.offerings)
    await conn.execute(
        "truncate tasks, workers, worker_events, orchestrator_events restart identity"
    )
    await conn.execute(SEED_SQL["history workers"], 5 * fleet, offerings)
    await conn.execute(
        SEED_SQL["live workers"], mix.active, mix.spawning, mix.terminating, mix.error, offerings
    )
    await conn.execute(SEED_SQL["worker_events"])
    await conn.execute(SEED_SQL["orchestrator_events"])
    await conn.execute(SEED_SQL["in-progress tasks"])
    await conn.execute(SEED_SQL["completed tasks"], completed, 5 * fleet)
    await conn.execute(SEED_SQL["queued tasks"], queued)
    tables = "tasks, workers, worker_events, orchestrator_events"
    await conn.execute(f"vacuum analyze {tables}" if vacuum else f"analyze {tables}")
    return mix


# ---------------------------------------------------------------------------
# measuring


class ParseTimer:
    """Times `parse_snapshot` where the store calls it (whatever its signature)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._parse = getattr(postgres, "parse_snapshot")  # noqa: B009 (not re-exported)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = self._parse(*args, **kwargs)
        self.samples.append((time.perf_counter() - start) * 1000.0)
        return out


@dataclass
class FleetResult:
    fleet: int
    mix: Mix
    observe: list[float]
    parse: list[float]
    decide: list[float]
    both: list[float]
    observe_round_trips: float
    cycle: list[float]
    cycle_round_trips: list[int]
    snapshot_bytes: int


@dataclass
class ActingResult:
    spawns: int  # launched (outcome done)
    terminations: int  # failed and released (outcome done)
    other_actions: int
    round_trips: int
    write_round_trips: int  # beyond the lease and the snapshot
    cycle_ms: float


async def live_pods(conn: asyncpg.Connection) -> list[Pod]:
    rows = await conn.fetch(
        "select id, pod_id from workers where terminated_at is null and pod_id is not null"
    )
    return [Pod(pod_id=r["pod_id"], name=r["id"], running=True) for r in rows]


def orchestrator(
    store: PostgresStore, provider: NoopProvider, policy: PolicyConfig
) -> Orchestrator:
    executor = Executor(
        store,
        provider,
        lambda worker_id: {"WORKER_ID": worker_id},
        name_prefix=policy.name_prefix,
        max_task_attempts=3,
        actor="bench",
    )
    return Orchestrator(
        store, executor, policy, holder="bench", lease_sec=120, cycle_timeout_sec=60
    )


async def _observe_decide(
    store: PostgresStore, iterations: int, warmup: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    timer = ParseTimer()
    with mock.patch.object(postgres, "parse_snapshot", timer):
        for _ in range(warmup):
            decide(await store.observe(HORIZON_SEC, POLICY.queue_cap), POLICY)
        timer.samples.clear()
        observe_ms: list[float] = []
        decide_ms: list[float] = []
        both_ms: list[float] = []
        for _ in range(iterations):
            start = time.perf_counter()
            snap = await store.observe(HORIZON_SEC, POLICY.queue_cap)
            mid = time.perf_counter()
            decide(snap, POLICY)
            end = time.perf_counter()
            observe_ms.append((mid - start) * 1000.0)
            decide_ms.append((end - mid) * 1000.0)
            both_ms.append((end - start) * 1000.0)
    return observe_ms, list(timer.samples), decide_ms, both_ms


async def _observe_round_trips(store: PostgresStore, wire: WireCounts, iterations: int) -> float:
    await store.observe(HORIZON_SEC, POLICY.queue_cap)  # the statement is prepared
    trips = wire.round_trips
    for _ in range(iterations):
        await store.observe(HORIZON_SEC, POLICY.queue_cap)
    return (wire.round_trips - trips) / iterations


async def snapshot_bytes(conn: asyncpg.Connection) -> int:
    """The size of one snapshot document."""
    return int(
        await conn.fetchval(
            "select length(orch_snapshot($1, $2)::text)", HORIZON_SEC, POLICY.queue_cap
        )
    )


async def _timed_cycle(orch: Orchestrator, wire: WireCounts) -> tuple[float, int, Any]:
    trips = wire.round_trips
    start = time.perf_counter()
    report = await orch.run_cycle()
    elapsed = (time.perf_counter() - start) * 1000.0
    if report.outcome != "ok":
        raise SystemExit(f"cycle ended {report.outcome}: {report.reason}")
    return elapsed, wire.round_trips - trips, report


async def _steady_cycles(
    store: PostgresStore,
    admin: asyncpg.Connection,
    steady: PolicyConfig,
    cycles: int,
    wire: WireCounts,
) -> tuple[list[float], list[int]]:
    """Cycles with nothing to launch: (ms, round trips) of each. The first cycle
    releases the seeded failed workers and runs the hourly maintenance, so it is
    left out."""
    orch = orchestrator(store, NoopProvider(await live_pods(admin)), steady)
    await orch.run_cycle()
    cycle_ms: list[float] = []
    cycle_trips: list[int] = []
    for _ in range(cycles):
        elapsed, trips, _ = await _timed_cycle(orch, wire)
        cycle_ms.append(elapsed)
        cycle_trips.append(trips)
    return cycle_ms, cycle_trips


async def measure(
    admin: asyncpg.Connection, dsn: str, fleet: int, args: argparse.Namespace
) -> FleetResult:
    mix = await seed(admin, fleet, args.queued, args.completed)
    doc = await snapshot_bytes(admin)
    # Times are taken on a direct connection, as the daemon has one; round trips
    # are counted in a second pass through the counting proxy, whose copying of
    # every byte in this process would otherwise be timed too.
    steady = replace(POLICY, max_active_gpus=fleet)
    store = await PostgresStore.connect(dsn)
    try:
        observe_ms, parse_ms, decide_ms, both_ms = await _observe_decide(
            store, args.iterations, args.warmup
        )
        cycle_ms, _ = await _steady_cycles(store, admin, steady, args.cycles, WireCounts())
    finally:
        await store.close()
    async with counting_proxy(dsn) as (proxied, wire):
        store = await PostgresStore.connect(proxied)
        try:
            per_observe = await _observe_round_trips(store, wire, args.warmup)
            _, cycle_trips = await _steady_cycles(store, admin, steady, args.cycles, wire)
        finally:
            await store.close()
    return FleetResult(
        fleet,
        mix,
        observe_ms,
        parse_ms,
        decide_ms,
        both_ms,
        per_observe,
        cycle_ms,
        cycle_trips,
        doc,
    )


SILENCE_SQL = """
update workers set last_heartbeat = now() - interval '1 hour'
where id in (select id from workers
             where status = 'active' and terminated_at is null
             order by id limit $1)
"""


async def measure_acting(
    admin: asyncpg.Connection, dsn: str, cases: list[tuple[int, int]], args: argparse.Namespace
) -> list[ActingResult]:
    """At 1,000 workers: one warm-up cycle per case (its launches, the seeded
    failures and the hourly maintenance), then M workers fall silent and one cycle
    is measured."""
    await seed(admin, 1000, args.queued, args.completed)
    # The seeded breaker history ends in a close without proof (probation: one
    # launch at a time); here launches are what is measured.
    await admin.execute("delete from orchestrator_events where kind like 'breaker_%'")
    provider = NoopProvider(await live_pods(admin))
    out: list[ActingResult] = []
    async with counting_proxy(dsn) as (proxied, wire):
        store = await PostgresStore.connect(proxied)
        try:
            for spawns, terminations in cases:
                orch = orchestrator(store, provider, replace(POLICY, max_spawns_per_cycle=spawns))
                await orch.run_cycle()
                await admin.execute(SILENCE_SQL, terminations)
                elapsed, trips, report = await _timed_cycle(orch, wire)
                kinds = [(r.kind.value, r.outcome) for r in report.results]
                launched = kinds.count(("spawn", "done"))
                failed = kinds.count(("fail", "done"))
                out.append(
                    ActingResult(
                        launched, failed, len(kinds) - launched - failed, trips, trips - 2, elapsed
                    )
                )
        finally:
            await store.close()
    return out


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def report(
    fleets: list[FleetResult], acting: list[ActingResult], server: str, args: argparse.Namespace
) -> None:
    print(f"server: {server}")
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    print(
        f"queue: {args.queued:,} queued + {args.completed:,} completed tasks (analyze, autovacuum "
        f"off); {args.iterations} iterations after {args.warmup} warm-up; times in ms"
    )
    print()
    print("data set per fleet")
    print(
        table(
            ["fleet", "active", "spawning", "terminating", "error", "snapshot bytes"],
            [
                [
                    r.fleet,
                    r.mix.active,
                    r.mix.spawning,
                    r.mix.terminating,
                    r.mix.error,
                    f"{r.snapshot_bytes:,}",
                ]
                for r in fleets
            ],
        )
    )
    print()
    print("observe + decide (store.observe = snapshot call + JSON decode + parse_snapshot)")
    print(
        table(
            [
                "fleet",
                "observe med",
                "of which parse med",
                "decide med",
                "observe+decide med",
                "observe+decide p95",
                "round trips/observe",
            ],
            [
                [
                    r.fleet,
                    _fmt(median(r.observe)),
                    _fmt(median(r.parse)),
                    _fmt(median(r.decide)),
                    _fmt(median(r.both)),
                    _fmt(p95(r.both)),
                    f"{r.observe_round_trips:g}",
                ]
                for r in fleets
            ],
        )
    )
    print()
    print(
        f"whole cycles at a steady fleet (Orchestrator.run_cycle; MAX_ACTIVE_GPUS = fleet), "
        f"{args.cycles} cycles after one warm-up"
    )
    print(
        table(
            ["fleet", "cycle med", "cycle p95", "round trips/cycle (min-max)"],
            [
                [
                    r.fleet,
                    _fmt(median(r.cycle)),
                    _fmt(p95(r.cycle)),
                    f"{min(r.cycle_round_trips)}-{max(r.cycle_round_trips)}",
                ]
                for r in fleets
            ],
        )
    )
    print()
    print(
        "cycles that act, 1,000 workers: N launches (MAX_SPAWNS_PER_CYCLE = N) and M workers "
        "silent for an hour (heartbeat_lost: fail, requeue, terminate pod, release); timed "
        "through the counting proxy"
    )
    base = acting[0].write_round_trips if acting else 0
    print(
        table(
            [
                "spawns",
                "terminations",
                "other actions",
                "round trips/cycle",
                "of which writes",
                "writes per spawn/termination",
                "cycle ms",
            ],
            [
                [
                    a.spawns,
                    a.terminations,
                    a.other_actions,
                    a.round_trips,
                    a.write_round_trips,
                    "-"
                    if a.spawns + a.terminations == 0
                    else f"{(a.write_round_trips - base) / (a.spawns + a.terminations):.2f}",
                    _fmt(a.cycle_ms),
                ]
                for a in acting
            ],
        )
    )
    print("(round trips/cycle include the lease and the snapshot: 2)")
    print()
    last = fleets[-1]
    verdict = "met" if median(last.both) <= TARGET_MS else "MISSED"
    print(
        f"target: observe + decide <= {TARGET_MS:g} ms median at {last.fleet:,} workers: "
        f"{_fmt(median(last.both))} ms -> {verdict}"
    )
    print()
    print("reproduce: " + " ".join(["python", "benchmarks/cycle.py", *sys.argv[1:]]))


def _cases(text: str) -> list[tuple[int, int]]:
    return [(int(n), int(m)) for n, m in (pair.split("x") for pair in text.split(","))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dsn_argument(parser)
    parser.add_argument("--fleets", default="10,100,1000", help="comma-separated fleet sizes")
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--completed", type=int, default=50_000, help="completed tasks of history")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=10, help="whole cycles per fleet")
    parser.add_argument(
        "--acting",
        default="0x0,1x1,10x10,20x50",
        help="spawns x terminations per measured cycle at 1,000 workers",
    )
    args = parser.parse_args()
    fleets = [int(f) for f in args.fleets.split(",")]
    # The loop's log lines are built as in production, then dropped.
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())

    async with scratch_database(args.dsn) as db:
        admin = await asyncpg.connect(db.dsn)
        try:
            for name in ("tasks", "workers", "worker_events", "orchestrator_events"):
                await admin.execute(f"alter table {name} set (autovacuum_enabled = false)")
            results = [await measure(admin, db.dsn, fleet, args) for fleet in fleets]
            acting = await measure_acting(admin, db.dsn, _cases(args.acting), args)
            report(results, acting, db.server, args)
        finally:
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
