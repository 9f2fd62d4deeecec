"""The agent's important log lines, logged with structlog and kept (bounded) until
the next heartbeat ships them to `system_logs`."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Any

import structlog

log = structlog.get_logger()

DEFAULT_CAPACITY = 500


class LogBuffer:
    """`record` logs an event and keeps it; `take` hands the kept lines to a heartbeat
    and `restore` puts them back when it failed. When full, the oldest are dropped:
    a worker cut off from its store must not grow without bound."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._lines: deque[dict[str, Any]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._lines)

    def record(self, level: str, event: str, *, task_id: str | None = None, **fields: Any) -> None:
        if task_id is not None:
            getattr(log, level)(event, task_id=task_id, **fields)
        else:
            getattr(log, level)(event, **fields)
        text = " ".join([event, *(f"{k}={v}" for k, v in fields.items())])
        self._lines.append(
            {
                "timestamp": datetime.now(UTC).isoformat(),
                "level": level.upper(),
                "message": text[:1000],
                "task_id": task_id,
                "metadata": {k: _json_safe(v) for k, v in fields.items()},
            }
        )

    def take(self) -> list[dict[str, Any]]:
        batch = list(self._lines)
        self._lines.clear()
        return batch

    def restore(self, batch: list[dict[str, Any]]) -> None:
        """Puts an unsent batch back before anything recorded since; keeps the newest."""
        newer = list(self._lines)
        self._lines.clear()
        self._lines.extend(batch + newer)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
