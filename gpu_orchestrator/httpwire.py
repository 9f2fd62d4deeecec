"""The request side of our two tiny HTTP servers (the worker's /health and the
daemon's ops endpoints): they need a method and a path, nothing more."""

from __future__ import annotations

import asyncio

MAX_HEADER_LINES = 100  # a client sending more is not one of ours


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and target of the request line; headers are read and ignored."""
    parts = (await reader.readline()).decode("latin-1").split()
    if len(parts) != 3:
        raise ValueError("malformed request line")
    for _ in range(MAX_HEADER_LINES):
        if (await reader.readline()) in (b"\r\n", b"\n", b""):
            break
    return parts[0].upper(), parts[1]
