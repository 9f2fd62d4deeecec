"""structlog set-up: JSON lines for machines, console rendering on a terminal.
Log records of libraries (asyncpg, httpx, ...) go through the same renderer, so a
JSON log stays JSON, tracebacks included."""

from __future__ import annotations

import logging
import sys

import structlog


def _message_for_platforms(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    event.setdefault("message", event.get("event"))
    return event


# The cycle report's bulky fields: the console line keeps its one-line message.
_CYCLE_DETAIL = ("observed", "plan", "breaker", "actions")


def _short_cycle_for_people(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    if str(event.get("event", "")).startswith("cycle") and "message" in event:
        for key in _CYCLE_DETAIL:
            event.pop(key, None)
    return event


def configure_logging(fmt: str | None, level: str = "INFO") -> None:
    """`fmt` None picks console on a TTY and JSON elsewhere (Railway, CI, pods)."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    # JSON lines keep the event name in `event` and the human explanation in
    # `message`, the key log platforms (Railway) show as the line's text; a line
    # with no explanation shows its event name there. `level` is already there.
    tail: list[structlog.typing.Processor] = (
        [_short_cycle_for_people, structlog.dev.ConsoleRenderer()]
        if fmt == "console"
        else [_message_for_platforms, structlog.processors.JSONRenderer()]
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                *tail,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
