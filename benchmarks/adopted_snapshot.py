"""The snapshot on an adopted Headless-Wan2GP / Reigh database with a long history.

Loads the legacy fixture (`tests/data/legacy_reigh*.sql`, written from the app's
migrations), adopts it, and adds the history a year of the old orchestrator
leaves behind:

  * `--finished` finished tasks (one every `--every` seconds, 5 % failed). The
    app's `tasks` has no index on `generation_processed_at` (and adoption adds
    none to the app's tables): the snapshot counts the outcomes of tasks created
    within the last day, which the app's `created_at` index serves;
  * `--ended-workers` ended worker rows, as the old orchestrator left them (half
    with the `terminated_at` it writes in `metadata`, half without). The
    snapshot reads them through the `orchestrator.workers` view, which maps
    every row (no index can skip them).

Then it times `orchestrator.orch_snapshot` on the server.

Run: .venv/bin/python benchmarks/adopted_snapshot.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import asyncpg
from _db import add_dsn_argument, median, p95, scratch_database, table

# the legacy fixture the adoption tests use
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from legacy_fixture import load_legacy_database

HORIZON_SEC = 1800.0

ENDED_WORKERS_SQL = """
insert into public.workers (id, instance_type, created_at, last_heartbeat, status, metadata)
select 'gpu-' || to_char(at, 'YYYYMMDD_HH24MISS') || '-' || lpad(to_hex(g), 8, '0'),
       'NVIDIA GeForce RTX 4090', at, at + interval '1 hour', 'terminated',
       jsonb_build_object('runpod_id', 'pod' || g, 'orchestrator_status', 'terminated')
       || case when g % 2 = 0 then jsonb_build_object(
              'terminated_at', to_char((at + interval '1 hour') at time zone 'UTC',
                                       'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
          else '{}'::jsonb end
from generate_series(1, $1::int) g,
     lateral (select now() - interval '2 days' - g * interval '10 minutes' as at) x
"""

FINISHED_SQL = """
insert into public.tasks (task_type, params, status, project_id, created_at, updated_at,
                          generation_started_at, generation_processed_at, attempts)
select (select task_type from public.tasks limit 1), '{"prompt": "history"}'::jsonb,
       case when g % 20 = 0 then 'Failed'::task_status else 'Complete'::task_status end,
       (select project_id from public.tasks limit 1),
       now() - g * $2 * interval '1 second', now(),
       now() - g * $2 * interval '1 second',
       now() - g * $2 * interval '1 second' + interval '1 second', 1
from generate_series(1, $1::int) g
"""

OUTCOMES_SQL = """
explain (analyze, costs off)
select count(*) filter (where t.status = 'Complete'), count(*) filter (where t.status = 'Failed')
from orchestrator.tasks t
where t.status in ('Complete', 'Failed')
  and t.generation_processed_at > now() - make_interval(secs => $1)
  and t.created_at > now() - make_interval(secs => $1) - interval '1 day'
"""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dsn_argument(parser)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between two tasks")
    parser.add_argument("--ended-workers", type=int, default=50_000)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    async with scratch_database(args.dsn, before_migrate=load_legacy_database) as db:
        conn = await asyncpg.connect(db.dsn)
        try:
            # the app's triggers guard its users' writes, not a bulk history load
            await conn.execute("alter table public.tasks disable trigger user")
            await conn.execute(FINISHED_SQL, args.finished, args.every)
            await conn.execute(ENDED_WORKERS_SQL, args.ended_workers)
            await conn.execute("alter table public.tasks enable trigger user")
            await conn.execute("analyze")
            call = "select orchestrator.orch_snapshot($1, 60) is null"
            for _ in range(3):
                await conn.fetchval(call, HORIZON_SEC)
            samples = []
            for _ in range(args.iterations):
                start = time.perf_counter()
                await conn.fetchval(call, HORIZON_SEC)
                samples.append((time.perf_counter() - start) * 1000.0)
            plan = [row[0] for row in await conn.fetch(OUTCOMES_SQL, HORIZON_SEC)]
        finally:
            await conn.close()
    print(f"server: {db.server}")
    print(
        f"adopted legacy fixture + {args.finished:,} finished tasks, one every "
        f"{args.every:g} s ({86400 / args.every:,.0f} a day), + {args.ended_workers:,} "
        "ended workers; times in ms"
    )
    print()
    print(
        table(
            ["call", "median", "p95"],
            [["orch_snapshot (server side)", f"{median(samples):.2f}", f"{p95(samples):.2f}"]],
        )
    )
    print()
    print("the outcome count's plan:")
    print("\n".join("  " + line for line in plan))
    print()
    print("reproduce: " + " ".join(["python", "benchmarks/adopted_snapshot.py", *sys.argv[1:]]))


if __name__ == "__main__":
    asyncio.run(main())
