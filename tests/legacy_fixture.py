"""The legacy Headless-Wan2GP / Reigh database of `data/legacy_reigh*.sql` (written
from the app's migrations, see the files), for the adoption tests and
`benchmarks/adopted_snapshot.py`."""

from __future__ import annotations

from pathlib import Path

import asyncpg

DATA = Path(__file__).parent / "data"


def _script(name: str) -> str:
    """A fixture file without its psql meta-commands."""
    text = (DATA / name).read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if not line.startswith("\\"))


async def load_legacy_database(conn: asyncpg.Connection) -> None:
    """The app's schema, then its rows in every legacy state."""
    await conn.execute(_script("legacy_reigh.sql"))
    await conn.execute(_script("legacy_reigh_seed.sql"))
