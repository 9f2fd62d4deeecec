"""Claim throughput: `func_claim_available_task` beside the bare skip-locked UPDATE.

For 1, 4 and 16 concurrent claimers (each its own asyncpg connection and its own
active worker row), every claimer loops one claim statement until a fixed number
of claims has been made in total. Before every run the queue is reset to the same
size (truncate, insert, analyze), so both statements see the same queue.

The verdict comes from paired runs: the function and the bare statement run back
to back (alternating which goes first), repeated; each pair gives a ratio, and
the verdict is the median of those ratios, with their spread. A disturbance of
the machine then moves one pair, not the verdict. Both statements select the
columns the worker agent reads (`PostgresStore.claim_task`).

Run: .venv/bin/python benchmarks/claim.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass

import asyncpg
from _db import QUEUED_TASKS_SQL, add_dsn_argument, scratch_database, table

TARGET_RATIO = 0.8

COLUMNS = "id::text, task_type, params, attempts"
FUNCTION = f"select {COLUMNS} from func_claim_available_task($1)"
# The function's claim without its checks (the worker row locked `for share` and
# its status, the database's attempts limit read from its settings): the same
# predicates on the queue, so the same index, and the same columns back.
BARE = f"""
update tasks set status = 'In Progress', worker_id = $1, generation_started_at = now(),
                 updated_at = now()
where id = (select id from tasks
            where status = 'Queued' and run_type = 'gpu' and attempts < 3
            order by created_at, id limit 1 for update skip locked)
  and status = 'Queued'
returning {COLUMNS}
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


@dataclass(frozen=True)
class Pair:
    function: Run
    bare: Run

    @property
    def ratio(self) -> float:
        return self.function.rate / self.bare.rate


async def paired_runs(
    conn: asyncpg.Connection, dsn: str, claimers: int, args: argparse.Namespace
) -> list[Pair]:
    pairs = []
    for n in range(args.pairs):
        order = ("function", "bare") if n % 2 == 0 else ("bare", "function")
        runs: dict[str, Run] = {}
        for variant in order:
            await reset_queue(conn, args.queue)
            runs[variant] = await run(dsn, variant, claimers, args.claims)
        pairs.append(Pair(runs["function"], runs["bare"]))
    return pairs


def verdict(results: list[tuple[int, list[Pair]]]) -> str:
    """From the per-pair ratios' interquartile ranges, so that a target within the
    machine's noise is reported as such instead of flipping between runs."""
    ranges = [quartiles([p.ratio for p in pairs]) for _, pairs in results]
    if all(low >= TARGET_RATIO for low, _ in ranges):
        return "met"
    if any(high < TARGET_RATIO for _, high in ranges):
        return "MISSED"
    return "too close to call"


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dsn_argument(parser)
    parser.add_argument("--claimers", default="1,4,16", help="comma-separated concurrency")
    parser.add_argument("--claims", type=int, default=5_000, help="claims per run, in total")
    parser.add_argument("--queue", type=int, default=100_000, help="queued tasks at each start")
    parser.add_argument("--pairs", type=int, default=5, help="paired runs per concurrency")
    args = parser.parse_args()
    levels = [int(n) for n in args.claimers.split(",")]
    if args.claims > args.queue:
        parser.error("--claims must not exceed --queue")

    async with scratch_database(args.dsn) as db:
        conn = await asyncpg.connect(db.dsn)
        try:
            await prepare_database(conn, max(levels))
            results = [(n, await paired_runs(conn, db.dsn, n, args)) for n in levels]
        finally:
            await conn.close()

    print(f"server: {db.server}")
    print(
        f"each run: queue reset to {args.queue:,} queued tasks (truncate, insert, analyze), "
        f"then {args.claims:,} claims in total by N claimers, one asyncpg connection and one "
        "active worker row each, autocommit, statements prepared before the clock starts"
    )
    print(f"function: {FUNCTION}")
    print("bare:     " + " ".join(BARE.split()))
    print()
    print(f"claims/s, {args.pairs} pairs per concurrency (function and bare back to back)")
    rows = []
    for claimers, pairs in results:
        ratios = [p.ratio for p in pairs]
        low, high = quartiles(ratios)
        runs = [r for p in pairs for r in (p.function, p.bare)]
        rows.append(
            [
                claimers,
                f"{statistics.median(p.function.rate for p in pairs):,.0f}",
                f"{statistics.median(p.bare.rate for p in pairs):,.0f}",
                f"{statistics.median(ratios):.2f}",
                f"{low:.2f}-{high:.2f}",
                f"{min(ratios):.2f}-{max(ratios):.2f}",
                " ".join(f"{r:.2f}" for r in ratios),
                "ok" if all(r.in_progress == r.claims and r.empty == 0 for r in runs) else "BAD",
            ]
        )
    print(
        table(
            [
                "claimers",
                "function med",
                "bare med",
                "ratio med",
                "ratio IQR",
                "ratio min-max",
                "per-pair ratios",
                "claims check",
            ],
            rows,
        )
    )
    print("(claims check: every run left exactly its claims In Progress, none came back empty)")
    print()
    print(
        f"target: function >= {TARGET_RATIO:g}x bare at every concurrency: {verdict(results)} "
        "(met: every ratio IQR at or above it; missed: one IQR wholly below; else too close "
        "to call on this machine)"
    )
    print()
    print("reproduce: " + " ".join(["python", "benchmarks/claim.py", *sys.argv[1:]]))


if __name__ == "__main__":
    asyncio.run(main())
