"""Shared set-up for the benchmarks: a scratch database on a server, and timing helpers.

`--dsn` (default: env `DATABASE_URL`) is an admin DSN to a server: the benchmark
creates its own `gpo_bench_<random>` database there, migrates it with
`apply_migrations`, and drops it at the end. Without either, an embedded `pgserver`
is started in a temporary folder and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

import asyncpg

from gpu_orchestrator.store.embedded import with_database
from gpu_orchestrator.store.migrate import apply_migrations


def add_dsn_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=os.environ.get("DATABASE_URL"),
        help="admin DSN of a Postgres server (default: $DATABASE_URL; "
        "neither: an embedded pgserver in a temporary folder)",
    )


@dataclass(frozen=True)
class ScratchDb:
    dsn: str  # points at the scratch database
    server: str  # for the report: where it runs, which version


def _describe(admin_dsn: str) -> str:
    parsed = urlparse(admin_dsn)
    if parsed.hostname:
        return f"{parsed.hostname}:{parsed.port or 5432}"
    return "unix socket"


@contextlib.asynccontextmanager
async def _server(admin_dsn: str | None) -> AsyncIterator[tuple[str, str]]:
    """(admin DSN, label) of the given server, or of an embedded one for the duration."""
    if admin_dsn:
        yield admin_dsn, _describe(admin_dsn)
        return
    import pgserver

    folder = tempfile.mkdtemp(prefix="gpo-bench-")  # short: the socket path is limited
    server = await asyncio.to_thread(pgserver.get_server, folder, cleanup_mode="stop")
    try:
        yield str(server.get_uri()), f"embedded pgserver in {folder}"
    finally:
        await asyncio.to_thread(server.cleanup)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def scratch_database(
    admin_dsn: str | None,
    before_migrate: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> AsyncIterator[ScratchDb]:
    """A fresh, migrated `gpo_bench_<random>` database, dropped on exit.
    `before_migrate` fills it first (e.g. with a legacy database to adopt)."""
    async with _server(admin_dsn) as (admin_uri, label):
        name = f"gpo_bench_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(admin_uri)
        try:
            version = await admin.fetchval("show server_version")
            await admin.execute(f'create database "{name}"')
            try:
                dsn = with_database(admin_uri, name)
                conn = await asyncpg.connect(dsn)
                try:
                    if before_migrate is not None:
                        await before_migrate(conn)
                    await apply_migrations(conn)
                finally:
                    await conn.close()
                yield ScratchDb(dsn=dsn, server=f"PostgreSQL {version}, {label}, database {name}")
            finally:
                await admin.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await admin.close()


# ---------------------------------------------------------------------------
# numbers


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def p95(samples: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


# $1 realistic queued tasks, oldest first (the claim order), shared by the benchmarks.
QUEUED_TASKS_SQL = """
insert into tasks (task_type, params, created_at)
select 'wan_2_2_t2v',
       jsonb_build_object('prompt', 'a benchmark prompt, number ' || g
                                    || repeat(' with some more words', 8),
                          'seed', g, 'steps', 30, 'resolution', '1280x720'),
       now() - interval '3 hours' + g * interval '100 milliseconds'
from generate_series(1, $1::int) g
"""
