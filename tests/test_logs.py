"""Log set-up: with LOG_FORMAT=json every line is one JSON object, the lines of
libraries (asyncpg's tracebacks, httpx) included."""

from __future__ import annotations

import json
import re
import subprocess
import sys

SCRIPT = """
import logging, structlog
from gpu_orchestrator.logs import configure_logging
configure_logging("json")
structlog.get_logger().warning("ours", worker_id="w1")
try:
    raise ConnectionResetError("connection lost")
except ConnectionResetError:
    logging.getLogger("asyncpg.pool").exception("Unexpected exception in a connection")
logging.getLogger("httpx").debug("below the level: not printed")
"""


def test_library_log_lines_are_json_too_tracebacks_included() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["message"] for line in lines] == [
        "ours",
        "Unexpected exception in a connection",
    ]
    ours, theirs = lines
    assert ours["worker_id"] == "w1" and ours["level"] == "warning"
    assert theirs["level"] == "error" and "ConnectionResetError" in theirs["exception"]


WORDS = """
import structlog
from gpu_orchestrator.logs import configure_logging
configure_logging("json")
log = structlog.get_logger()
log.warning("breaker_opened", message="4/4 workers failed in the last 2 min (> 80%)")
log.info("cycle", outcome="ok")
"""


def test_json_lines_keep_the_event_name_and_the_human_words_apart() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WORDS], capture_output=True, text=True, timeout=60, check=True
    )
    opened, cycle = (json.loads(line) for line in done.stderr.splitlines())
    assert opened["event"] == "breaker_opened"
    assert opened["message"] == "4/4 workers failed in the last 2 min (> 80%)"
    assert (cycle["event"], cycle["message"]) == ("cycle", "cycle")  # nothing to explain


CONSOLE = """
import structlog
from datetime import UTC, datetime
from gpu_orchestrator.logs import configure_logging
from gpu_orchestrator.loop import CycleReport, _log_cycle
from gpu_orchestrator.models import Plan, QueueStats, Snapshot
configure_logging("{fmt}")
snap = Snapshot(datetime(2026, 1, 1, tzinfo=UTC), (), (), QueueStats(3, None))
_log_cycle(CycleReport("c1", "ok", None, 12.0, snap, Plan((), 0, 0, 0)))
"""


def test_the_cycle_line_is_short_for_people_and_whole_for_machines() -> None:
    lines = {}
    for fmt in ("console", "json"):
        done = subprocess.run(
            [sys.executable, "-c", CONSOLE.format(fmt=fmt)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        lines[fmt] = re.sub(r"\x1b\[[0-9;]*m", "", done.stderr.strip())  # no colours
    assert "queued 3" in lines["console"] and "observed" not in lines["console"]
    assert len(lines["console"]) < 200, lines["console"]
    doc = json.loads(lines["json"])
    assert doc["observed"]["queued"] == 3 and doc["message"].startswith("12 ms;")
