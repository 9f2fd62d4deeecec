"""The embedded Postgres (`pgserver`) used when no database is configured.

It lives under `ORCHESTRATOR_DATA_DIR/pg`. A process that starts it stops it when
it exits (normally, on Ctrl-C or SIGTERM), unless `keep` (EMBEDDED_POSTGRES_KEEP)
asks to leave it running for the next run; a server that was already running is
left as it was found.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from pathlib import Path

import asyncpg

from ..errors import StoreError

DATABASE = "gpu_orchestrator"


def _start_server(data_dir: Path, keep: bool) -> str:
    pg_dir = data_dir / "pg"
    pg_dir.mkdir(parents=True, exist_ok=True)
    # pgserver stops the server when the last process that asked for it exits;
    # a server found running (kept, or another program's) is not ours to stop.
    ours = not keep and not (pg_dir / "postmaster.pid").exists()
    with warnings.catch_warnings():
        # pgserver asks platformdirs for XDG_RUNTIME_DIR, which containers often lack;
        # the fallback it warns about is fine for us.
        warnings.simplefilter("ignore", UserWarning)
        import pgserver  # imported here: it is only needed without DATABASE_URL

        server = pgserver.get_server(  # type: ignore[attr-defined]
            pg_dir, cleanup_mode="stop" if ours else None
        )
    return str(server.get_uri())


def with_database(uri: str, database: str) -> str:
    """The same server URI pointed at another database."""
    base, sep, query = uri.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{database}{sep}{query}"


async def embedded_dsn(data_dir: Path, database: str = DATABASE, *, keep: bool = False) -> str:
    """Starts (or reuses) the embedded server and returns a DSN for `database`,
    creating the database on first use."""
    try:
        admin_uri = await asyncio.to_thread(_start_server, data_dir, keep)
        conn = await asyncpg.connect(admin_uri)
        try:
            exists = await conn.fetchval("select 1 from pg_database where datname = $1", database)
            if not exists:
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # a racing process
                    await conn.execute(f'create database "{database}"')
        finally:
            await conn.close()
    except Exception as exc:  # pgserver raises bare exceptions from initdb and pg_ctl
        raise StoreError(f"embedded Postgres under {data_dir} failed to start: {exc}") from exc
    return with_database(admin_uri, database)
