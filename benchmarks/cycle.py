"""One orchestrator cycle: observe (`PostgresStore.observe()`) + decide, by fleet size.

For fleets of 10, 100 and 1,000 workers over a queue of 100,000 tasks, with a
realistic mix of worker statuses, one task in progress per active worker, and a
history of terminated workers, completed tasks and worker_events (which the
snapshot must not read), measures:

  * observe (`select orch_snapshot($1, $2)` + JSON decode + `parse_snapshot`),
  * decide (`gpu_orchestrator.policy.decide`),
  * observe + decide (one cycle),
  * the database round trips of one observe, counted on the asyncpg connection,
  * for comparison, a bare single-query jsonb snapshot of the same rows fetched as text.

Run: /tmp/venv/bin/python benchmarks/cycle.py [--dsn postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import asyncpg
from _db import QUEUED_TASKS_SQL, add_dsn_argument, median, p95, scratch_database, table

from gpu_orchestrator.models import PolicyConfig
from gpu_orchestrator.policy import decide
from gpu_orchestrator.store.postgres import PostgresStore, create_pool
from gpu_orchestrator.store.snapshot import parse_snapshot

TARGET_MS = 30.0
POLICY = PolicyConfig(
    min_active_gpus=0,
    max_active_gpus=2000,
    tasks_per_gpu_threshold=3,
    machines_to_keep_idle=2,
    max_spawns_per_cycle=20,
    offerings=("NVIDIA A40@EU-RO-1", "NVIDIA L40S@US-TX-3"),
)
HORIZON_SEC = POLICY.horizon_sec  # what the loop passes to `observe`

# ---------------------------------------------------------------------------
# round trips: every statement the pool's connections send is counted


class Counts:
    statements = 0  # fetch/fetchval/fetchrow/execute/executemany, incl. the pool's reset
    prepares = 0  # statement cache misses: one Parse/Describe round trip each

    @classmethod
    def snapshot(cls) -> tuple[int, int]:
        return cls.statements, cls.prepares


class CountingConnection(asyncpg.Connection):  # type: ignore[misc]
    """Counts each statement sent; each is one network round trip."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        Counts.statements += 1
        return await super().execute(*args, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        Counts.statements += 1
        return await super().executemany(*args, **kwargs)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        Counts.statements += 1
        return await super().fetch(*args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        Counts.statements += 1
        return await super().fetchval(*args, **kwargs)

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        Counts.statements += 1
        return await super().fetchrow(*args, **kwargs)

    async def _get_statement(self, query: str, timeout: Any, **kwargs: Any) -> Any:
        record_class = kwargs.get("record_class") or self._protocol.get_record_class()
        key = (query, record_class, kwargs.get("ignore_custom_codec", False))
        if self._stmt_cache.get(key, promote=False) is None:
            Counts.prepares += 1
        return await super()._get_statement(query, timeout, **kwargs)


async def _no_reset(conn: asyncpg.Connection) -> None:
    """A pool `reset` that sends nothing (the store keeps no session state)."""


@contextlib.asynccontextmanager
async def counting_store(dsn: str, *, skip_reset: bool = False) -> AsyncIterator[PostgresStore]:
    """The store exactly as production builds it (`create_pool`), on counting connections.
    `skip_reset`: the proposed variant whose pool sends no reset query on release."""
    extra: dict[str, Any] = {"reset": _no_reset} if skip_reset else {}
    patched = functools.partial(asyncpg.create_pool, connection_class=CountingConnection, **extra)
    with mock.patch.object(asyncpg, "create_pool", patched):
        pool = await create_pool(dsn)
    store = PostgresStore(pool)
    try:
        yield store
    finally:
        await store.close()


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


# The same rows as `orch_snapshot($1)` (workers, holds, queue, launches; the three
# single-row lookups of orchestrator_events left out), as one jsonb document
# fetched as text: whole rows via to_jsonb, no per-field json_build_object.
BARE_SNAPSHOT = """
select jsonb_build_object(
    'now', now(),
    'workers', (select coalesce(jsonb_agg(to_jsonb(w)), '[]'::jsonb) from workers w
                where w.terminated_at is null
                  and w.status in ('spawning', 'active', 'terminating', 'error', 'external')),
    'holds', (select coalesce(jsonb_agg(jsonb_build_object(
                  'task_id', t.id, 'worker_id', t.worker_id,
                  'started_at', t.generation_started_at, 'attempts', t.attempts)), '[]'::jsonb)
              from tasks t where t.status = 'In Progress'),
    'queue', (select jsonb_build_object('queued', count(*), 'oldest_queued_at', min(q.created_at))
              from tasks q where q.status = 'Queued' and q.run_type = 'gpu'),
    'launches', (select coalesce(jsonb_agg(to_jsonb(w)), '[]'::jsonb) from workers w
                 where w.created_at > now() - make_interval(secs => $1)
                    or w.failed_at > now() - make_interval(secs => $1)
                    or w.ready_at > now() - make_interval(secs => $1)
                    or (w.terminated_at is null
                        and w.status in ('spawning', 'active', 'terminating'))))::text
"""

# What one snapshot reads, per table (same connection, same transaction).
READS_SQL = """
select relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) as idx_scan,
       coalesce(idx_tup_fetch, 0) as idx_tup_fetch
from pg_stat_xact_user_tables
where relname in ('workers', 'worker_events', 'tasks', 'orchestrator_events')
order by relname
"""


# ---------------------------------------------------------------------------
# measuring


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


@dataclass
class FleetResult:
    fleet: int
    mix: Mix
    rows: dict[str, int]
    observe: list[float]
    decide: list[float]
    cycle: list[float]
    server: list[float]  # orch_snapshot's execution time inside the server
    fetch: list[float]  # `select orch_snapshot($1, $2)` through the pool, JSON decoded
    parse: list[float]  # `parse_snapshot` alone
    bare_text: list[float]
    bare_loads: list[float]
    statements_per_observe: float
    prepares_per_observe: float
    no_reset_statements: float
    no_reset_observe: list[float]
    snapshot_bytes: int
    bare_bytes: int
    reads: list[asyncpg.Record]
    plan_actions: int


async def _timed(samples: list[float], fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    out = await fn()
    samples.append(_ms(start))
    return out


async def _observe_loop(
    store: PostgresStore, iterations: int, warmup: int
) -> tuple[list[float], list[float], list[float], float, float, int]:
    """observe, decide and both, per iteration; statements and prepares per observe."""
    for _ in range(warmup):
        decide(await store.observe(HORIZON_SEC, POLICY.queue_cap), POLICY)
    observe_ms: list[float] = []
    decide_ms: list[float] = []
    cycle_ms: list[float] = []
    before = Counts.snapshot()
    actions = 0
    for _ in range(iterations):
        start = time.perf_counter()
        snap = await store.observe(HORIZON_SEC, POLICY.queue_cap)
        mid = time.perf_counter()
        actions = len(decide(snap, POLICY).actions)
        end = time.perf_counter()
        observe_ms.append((mid - start) * 1000.0)
        decide_ms.append((end - mid) * 1000.0)
        cycle_ms.append((end - start) * 1000.0)
    after = Counts.snapshot()
    return (
        observe_ms,
        decide_ms,
        cycle_ms,
        (after[0] - before[0]) / iterations,
        (after[1] - before[1]) / iterations,
        actions,
    )


async def measure(
    dsn: str, conn: asyncpg.Connection, fleet: int, args: argparse.Namespace
) -> FleetResult:
    iterations, warmup = args.iterations, args.warmup
    t0 = time.perf_counter()
    mix = await seed(conn, fleet, args.queued, args.completed, vacuum=args.vacuum)
    rows = {
        r["relname"]: r["n"]
        for r in await conn.fetch(
            "select 'workers' as relname, count(*) as n from workers "
            "union all select 'worker_events', count(*) from worker_events "
            "union all select 'tasks', count(*) from tasks"
        )
    }
    rows["seed_ms"] = round(_ms(t0))

    async with counting_store(dsn) as store:
        observe_ms, decide_ms, cycle_ms, statements, prepares, actions = await _observe_loop(
            store, iterations, warmup
        )
        # where observe's time goes: the database call (with JSON decode) and parsing
        fetch_ms: list[float] = []
        parse_ms: list[float] = []
        for _ in range(iterations):
            doc = await _timed(
                fetch_ms,
                lambda: store.pool.fetchval(
                    "select orch_snapshot($1, $2)", HORIZON_SEC, POLICY.queue_cap
                ),
            )
            start = time.perf_counter()
            parse_snapshot(doc, HORIZON_SEC, POLICY.queue_cap)
            parse_ms.append(_ms(start))
        snapshot_bytes = len(json.dumps(doc))

    # the same store with a pool that sends no reset query on release (a proposal)
    async with counting_store(dsn, skip_reset=True) as store:
        no_reset_observe, _, _, no_reset_statements, _, _ = await _observe_loop(
            store, iterations, warmup
        )

    # time spent inside the server (EXPLAIN ANALYZE without per-node timing)
    server_ms: list[float] = []
    for _ in range(max(5, iterations // 5)):
        plan = await conn.fetchval(
            "explain (analyze, timing off, format json) select orch_snapshot($1, $2)",
            HORIZON_SEC,
            POLICY.queue_cap,
        )
        server_ms.append(float(json.loads(plan)[0]["Execution Time"]))

    # the bare single-query jsonb snapshot, on a plain connection
    bare_text: list[float] = []
    bare_loads: list[float] = []
    for _ in range(warmup):
        await conn.fetchval(BARE_SNAPSHOT, HORIZON_SEC)
    for _ in range(iterations):
        text = await _timed(bare_text, lambda: conn.fetchval(BARE_SNAPSHOT, HORIZON_SEC))
        start = time.perf_counter()
        json.loads(text)
        bare_loads.append(bare_text[-1] + _ms(start))

    # A fresh connection: since PG 15 pg_stat_xact_* also shows a backend's
    # earlier, not yet flushed counts.
    fresh = await asyncpg.connect(dsn)
    try:
        async with fresh.transaction():
            await fresh.fetchval(
                "select orch_snapshot($1, $2)::text", HORIZON_SEC, POLICY.queue_cap
            )
            reads = await fresh.fetch(READS_SQL)
    finally:
        await fresh.close()

    return FleetResult(
        fleet=fleet,
        mix=mix,
        rows=rows,
        observe=observe_ms,
        decide=decide_ms,
        cycle=cycle_ms,
        server=server_ms,
        fetch=fetch_ms,
        parse=parse_ms,
        bare_text=bare_text,
        bare_loads=bare_loads,
        statements_per_observe=statements,
        prepares_per_observe=prepares,
        no_reset_statements=no_reset_statements,
        no_reset_observe=no_reset_observe,
        snapshot_bytes=snapshot_bytes,
        bare_bytes=len(text),
        reads=list(reads),
        plan_actions=actions,
    )


async def explain(conn: asyncpg.Connection) -> str:
    """EXPLAIN ANALYZE of the function's query planned as a SQL function plans it:
    once per call, generically, the horizon an unknown parameter."""
    body = await conn.fetchval("select prosrc from pg_proc where proname = 'orch_snapshot'")
    body = body.replace("horizon_sec_param", "$1")
    async with conn.transaction():
        await conn.execute("set local plan_cache_mode = force_generic_plan")
        await conn.execute(f"prepare bench_snapshot(double precision) as {body}")
        try:
            lines = await conn.fetch(
                f"explain (analyze, buffers) execute bench_snapshot({HORIZON_SEC:g})"
            )
        finally:
            await conn.execute("deallocate bench_snapshot")
    return "\n".join(r[0] for r in lines)


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def report(results: list[FleetResult], server: str, args: argparse.Namespace) -> None:
    print(f"server: {server}")
    print(
        f"queue: {args.queued:,} queued + {args.completed:,} completed tasks, then "
        f"{'vacuum analyze' if args.vacuum else 'analyze'} (autovacuum off on these tables); "
        f"{args.iterations} iterations after {args.warmup} warm-up; times in ms"
    )
    print(f"policy: max_active_gpus={POLICY.max_active_gpus}, horizon {HORIZON_SEC:g} s")
    print()
    print(
        "data set per fleet (history: 5x the fleet ended workers, 1 in 10 within the "
        "breaker's horizon; 5 events per ended worker, 3 per live one)"
    )
    print(
        table(
            [
                "fleet",
                "active",
                "spawning",
                "terminating",
                "error",
                "held tasks",
                "workers rows",
                "worker_events rows",
                "tasks rows",
                "seed ms",
            ],
            [
                [
                    r.fleet,
                    r.mix.active,
                    r.mix.spawning,
                    r.mix.terminating,
                    r.mix.error,
                    r.mix.active + r.mix.terminating,
                    r.rows["workers"],
                    r.rows["worker_events"],
                    r.rows["tasks"],
                    r.rows["seed_ms"],
                ]
                for r in results
            ],
        )
    )
    print()
    print("cycle time (ms)")
    print(
        table(
            [
                "fleet",
                "observe med",
                "observe p95",
                "decide med",
                "decide p95",
                "observe+decide med",
                "observe+decide p95",
                "plan actions",
            ],
            [
                [
                    r.fleet,
                    _fmt(median(r.observe)),
                    _fmt(p95(r.observe)),
                    _fmt(median(r.decide)),
                    _fmt(p95(r.decide)),
                    _fmt(median(r.cycle)),
                    _fmt(p95(r.cycle)),
                    r.plan_actions,
                ]
                for r in results
            ],
        )
    )
    print()
    print(
        "observe broken down (medians, ms): inside the server (EXPLAIN ANALYZE of "
        "select orch_snapshot($1, $2)), the pool call incl. JSON decode, parse_snapshot"
    )
    print(
        table(
            ["fleet", "server exec", "pool fetchval+decode", "parse_snapshot", "snapshot bytes"],
            [
                [
                    r.fleet,
                    _fmt(median(r.server)),
                    _fmt(median(r.fetch)),
                    _fmt(median(r.parse)),
                    f"{r.snapshot_bytes:,}",
                ]
                for r in results
            ],
        )
    )
    print()
    print(
        "for comparison: a bare single-query jsonb snapshot of the same rows (to_jsonb of "
        "whole rows: workers, holds, queue, launches), one connection, fetched as text (ms)"
    )
    print(
        table(
            [
                "fleet",
                "bare as text med",
                "bare as text p95",
                "bare + json.loads med",
                "bare bytes",
                "observe med",
            ],
            [
                [
                    r.fleet,
                    _fmt(median(r.bare_text)),
                    _fmt(p95(r.bare_text)),
                    _fmt(median(r.bare_loads)),
                    f"{r.bare_bytes:,}",
                    _fmt(median(r.observe)),
                ]
                for r in results
            ],
        )
    )
    print()
    print(
        "database round trips per observe (statements sent on the pool's connections, "
        "counted on asyncpg.Connection; the pool's reset on release is one of them)"
    )
    print(
        table(
            [
                "fleet",
                "statements/observe",
                "prepares/observe",
                "observe med",
                "pool reset=no-op: statements/observe",
                "observe med",
            ],
            [
                [
                    r.fleet,
                    f"{r.statements_per_observe:g}",
                    f"{r.prepares_per_observe:g}",
                    _fmt(median(r.observe)),
                    f"{r.no_reset_statements:g}",
                    _fmt(median(r.no_reset_observe)),
                ]
                for r in results
            ],
        )
    )
    print()
    print(
        "rows one snapshot reads, per table (pg_stat_xact_user_tables, one transaction on a "
        "fresh connection); compare with the table sizes above: a seq scan reads history too"
    )
    print(
        table(
            ["fleet", "table", "seq scans", "seq rows read", "index scans", "index rows fetched"],
            [
                [
                    r.fleet,
                    x["relname"],
                    x["seq_scan"],
                    x["seq_tup_read"],
                    x["idx_scan"],
                    x["idx_tup_fetch"],
                ]
                for r in results
                for x in r.reads
            ],
        )
    )
    print()
    last = results[-1]
    verdict = "met" if median(last.cycle) <= TARGET_MS else "MISSED"
    print(
        f"target: observe + decide <= {TARGET_MS:g} ms median at {last.fleet:,} workers: "
        f"{_fmt(median(last.cycle))} ms -> {verdict}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dsn_argument(parser)
    parser.add_argument("--fleets", default="10,100,1000", help="comma-separated fleet sizes")
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--completed", type=int, default=50_000, help="completed tasks of history")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--vacuum",
        action="store_true",
        help="vacuum analyze after seeding (all-visible pages, as after an "
        "autovacuum pass) instead of analyze",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print EXPLAIN ANALYZE of orch_snapshot's query at the last fleet",
    )
    args = parser.parse_args()
    fleets = [int(f) for f in args.fleets.split(",")]

    async with scratch_database(args.dsn) as db:
        conn = await asyncpg.connect(db.dsn)
        try:
            # Deterministic table state: no autovacuum pass in the middle of a run.
            for name in ("tasks", "workers", "worker_events", "orchestrator_events"):
                await conn.execute(f"alter table {name} set (autovacuum_enabled = false)")
            results = [await measure(db.dsn, conn, fleet, args) for fleet in fleets]
            report(results, db.server, args)
            if args.explain:
                print()
                print(f"EXPLAIN (ANALYZE, BUFFERS) of orch_snapshot's query, fleet {fleets[-1]}:")
                print(await explain(conn))
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
