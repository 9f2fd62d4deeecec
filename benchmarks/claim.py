"""Claim throughput: `func_claim_available_task` beside a bare skip-locked UPDATE.

For 1, 4 and 16 concurrent claimers (each its own asyncpg connection and its own
active worker row), every claimer loops one claim statement until a fixed number
of claims has been made in total. Before every run the queue is reset to the same
size, so the function and the bare statement see the same queue.

Run: /tmp/venv/bin/python benchmarks/claim.py [--dsn postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass

import asyncpg
from _db import QUEUED_TASKS_SQL, add_dsn_argument, scratch_database, table

TARGET_RATIO = 0.8

FUNCTION = "select * from func_claim_available_task($1)"
# The brief's bare statement plus `run_type = 'gpu'`: without it the statement
# cannot use the queue's partial index `tasks_queued_idx` (... where status =
# 'Queued' and run_type = 'gpu') and sorts the whole queue on every claim, which
# would compare the function against a straw man (see --explain).
BARE = """
update tasks set status = 'In Progress', worker_id = $1, generation_started_at = now()
where id = (select id from tasks
            where status = 'Queued' and run_type = 'gpu'
            order by created_at, id limit 1 for update skip locked)
returning *
"""
BARE_LITERAL = """
update tasks set status = 'In Progress', worker_id = $1, generation_started_at = now()
where id = (select id from tasks where status = 'Queued'
            order by created_at, id limit 1 for update skip locked)
returning *
"""
VARIANTS = {"function": FUNCTION, "bare": BARE}


def worker_id(n: int) -> str:
    return f"bench-claimer-{n:02d}"


async def prepare_database(conn: asyncpg.Connection, claimers: int) -> None:
    await conn.execute("alter table tasks set (autovacuum_enabled = false)")
    await conn.execute(
        """
        insert into workers (id, status, provider, created_at, ready_at, last_heartbeat)
        select 'bench-claimer-' || lpad(g::text, 2, '0'), 'active', 'local',
               now() - interval '1 hour', now() - interval '59 minutes', now()
        from generate_series(1, $1::int) g
        """,
        claimers,
    )
    await conn.execute("analyze workers")


async def reset_queue(conn: asyncpg.Connection, size: int) -> None:
    await conn.execute("truncate tasks")
    await conn.execute(QUEUED_TASKS_SQL, size)
    await conn.execute("analyze tasks")


@dataclass
class Run:
    variant: str
    claimers: int
    claims: int
    seconds: float
    in_progress: int  # rows `In Progress` afterwards (must equal claims)
    empty: int  # claims that found nothing (must be 0: the queue is big enough)

    @property
    def rate(self) -> float:
        return self.claims / self.seconds


async def run(dsn: str, variant: str, claimers: int, total: int) -> Run:
    sql = VARIANTS[variant]
    conns = [await asyncpg.connect(dsn) for _ in range(claimers)]
    try:
        stmts = [await c.prepare(sql) for c in conns]  # Parse once, outside the clock
        left = total
        empty = 0
        gate = asyncio.Event()

        async def claimer(n: int) -> int:
            nonlocal left, empty
            stmt, me, done = stmts[n], worker_id(n + 1), 0
            await gate.wait()
            while left > 0:
                left -= 1
                if await stmt.fetchrow(me) is None:
                    empty += 1
                else:
                    done += 1
            return done

        tasks = [asyncio.create_task(claimer(n)) for n in range(claimers)]
        await asyncio.sleep(0)
        start = time.perf_counter()
        gate.set()
        claimed = sum(await asyncio.gather(*tasks))
        seconds = time.perf_counter() - start
        in_progress = await conns[0].fetchval(
            "select count(*) from tasks where status = 'In Progress'"
        )
    finally:
        for c in conns:
            await c.close()
    return Run(variant, claimers, claimed, seconds, in_progress, empty)


async def explain(conn: asyncpg.Connection, sql: str) -> str:
    """EXPLAIN ANALYZE of one claim, rolled back."""
    tr = conn.transaction()
    await tr.start()
    try:
        lines = await conn.fetch(f"explain (analyze, buffers) {sql}", worker_id(1))
    finally:
        await tr.rollback()
    return "\n".join(r[0] for r in lines)


async def server_ms(conn: asyncpg.Connection, sql: str, samples: int = 200) -> float:
    """Median execution time of one claim inside the server (EXPLAIN ANALYZE without
    per-node timing, each rolled back); the first 10 of the session are left out."""
    times: list[float] = []
    for _ in range(samples + 10):
        tr = conn.transaction()
        await tr.start()
        try:
            plan = await conn.fetchval(
                f"explain (analyze, timing off, format json) {sql}", worker_id(1)
            )
        finally:
            await tr.rollback()
        times.append(float(json.loads(plan)[0]["Execution Time"]))
    return statistics.median(times[10:])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dsn_argument(parser)
    parser.add_argument("--claimers", default="1,4,16", help="comma-separated concurrency")
    parser.add_argument("--claims", type=int, default=20_000, help="claims per run, in total")
    parser.add_argument("--queue", type=int, default=100_000, help="queued tasks at each start")
    parser.add_argument("--rounds", type=int, default=2, help="runs per variant and level")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print EXPLAIN ANALYZE of one claim of each statement",
    )
    args = parser.parse_args()
    levels = [int(n) for n in args.claimers.split(",")]
    if args.claims > args.queue:
        parser.error("--claims must not exceed --queue")

    async with scratch_database(args.dsn) as db:
        conn = await asyncpg.connect(db.dsn)
        try:
            await prepare_database(conn, max(levels))
            # Rounds alternate the order (function first, then bare first, ...); the
            # best run of each variant is the one least disturbed by the rest of the
            # machine, all runs are listed.
            results: list[tuple[list[Run], list[Run]]] = []
            for n in levels:
                runs: dict[str, list[Run]] = {"function": [], "bare": []}
                for r in range(args.rounds):
                    order = ("function", "bare") if r % 2 == 0 else ("bare", "function")
                    for variant in order:
                        await reset_queue(conn, args.queue)
                        runs[variant].append(await run(db.dsn, variant, n, args.claims))
                results.append((runs["function"], runs["bare"]))

            print(f"server: {db.server}")
            print(
                f"each run: queue reset to {args.queue:,} queued tasks (truncate, insert, "
                f"analyze), then {args.claims:,} claims in total by N claimers, one asyncpg "
                "connection and one active worker row each, autocommit"
            )
            print(f"function: {FUNCTION}")
            print("bare:     " + " ".join(BARE.split()))
            print()
            rows = []
            ratios = []
            for fn_runs, bare_runs in results:
                f = max(fn_runs, key=lambda x: x.rate)
                b = max(bare_runs, key=lambda x: x.rate)
                ratios.append(f.rate / b.rate)
                rows.append(
                    [
                        f.claimers,
                        f"{f.rate:,.0f}",
                        f"{b.rate:,.0f}",
                        f"{f.rate / b.rate:.2f}",
                        " ".join(f"{x.rate:,.0f}" for x in fn_runs),
                        " ".join(f"{x.rate:,.0f}" for x in bare_runs),
                        "/".join(str(x.in_progress) for x in fn_runs + bare_runs),
                        sum(x.empty for x in fn_runs + bare_runs),
                    ]
                )
            print(f"claims/s, best of {args.rounds} runs per variant (all runs listed)")
            print(
                table(
                    [
                        "claimers",
                        "function claims/s",
                        "bare claims/s",
                        "function / bare",
                        "function runs",
                        "bare runs",
                        "in progress after each run",
                        "empty claims",
                    ],
                    rows,
                )
            )
            print()
            worst = min(ratios)
            verdict = "met" if worst >= TARGET_RATIO else "MISSED"
            print(
                f"target: function >= {TARGET_RATIO:g}x bare at every concurrency: "
                f"lowest ratio {worst:.2f} -> {verdict}"
            )
            if args.explain:
                await reset_queue(conn, args.queue)
                print()
                print(
                    "server execution time of one claim, median of 200 (EXPLAIN ANALYZE, "
                    "timing off, rolled back), ms:"
                )
                print(
                    table(
                        ["statement", "ms"],
                        [
                            [label, f"{await server_ms(conn, sql):.3f}"]
                            for label, sql in (("function", FUNCTION), ("bare", BARE))
                        ],
                    )
                )
                for label, sql in (
                    ("function", FUNCTION),
                    ("bare", BARE),
                    ("bare as briefed, without run_type", BARE_LITERAL),
                ):
                    print()
                    print(f"EXPLAIN (ANALYZE, BUFFERS), one claim, {label}:")
                    print(await explain(conn, sql))
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
