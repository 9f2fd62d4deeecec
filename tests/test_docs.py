"""The docs name only what exists: every environment variable, every
`gpu-orchestrator` command and every flag written in README.md and docs/ is one
the program has (issue 12 item 11: docs that disagree with the program)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from gpu_orchestrator.cli import app
from gpu_orchestrator.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Named in the docs on purpose, not ours: Railway's names, and in docs/migrating.md
# the settings of the system we replace that have no counterpart here.
NOT_OURS = {"GITHUB_REPO", "ON_FAILURE"}
OLD_ORCHESTRATOR = {
    "RUNPOD_STORAGE_NAME", "AUTO_START_WORKER_PROCESS", "SCALE_UP_MULTIPLIER",
    "SCALE_DOWN_MULTIPLIER", "MIN_SCALING_INTERVAL_SEC", "SPAWNING_GRACE_PERIOD_SEC",
    "SCALE_DOWN_GRACE_PERIOD_SEC", "ERROR_CLEANUP_GRACE_PERIOD_SEC", "RUNPOD_RAM_TIER_FALLBACK",
    "RUNPOD_MIN_VCPU_COUNT", "RUNPOD_MIN_MEMORY_GB",
}  # fmt: skip


def _text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in DOCS)


def _commands() -> dict[str, Any]:
    """Every command path ("status", "breaker reset") and its click command."""
    root = typer.main.get_command(app)
    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, cmd in getattr(group, "commands", {}).items():
            path = f"{prefix} {name}".strip()
            found[path] = cmd
            walk(cmd, path)

    walk(root, "")
    return found


def test_every_environment_variable_in_the_docs_is_a_setting() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    named = set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)(?:=[^`]*)?`", _text()))
    assert named, "the scan found nothing: it checks nothing"
    assert sorted(named - settings - NOT_OURS - OLD_ORCHESTRATOR) == []


def test_every_command_and_flag_in_the_docs_exists() -> None:
    commands = _commands()
    # In backticks, or a code line: `gpu-orchestrator breaker reset --reason '...'`
    spans = re.findall(r"`gpu-orchestrator ([^`]+)`", _text())
    spans += re.findall(r"^\s*(?:\$ )?gpu-orchestrator (.+)$", _text(), flags=re.MULTILINE)
    uses = [
        (m.group(1), m.group(2))
        for span in spans
        if (m := re.match(r"((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)(.*)", span))
    ]
    assert uses, "the scan found nothing: it checks nothing"
    for words, rest in uses:
        path = words if words in commands else words.split()[0]
        assert path in commands, f"gpu-orchestrator {words}: no such command"
        options = {opt for p in commands[path].params for opt in getattr(p, "opts", [])}
        for flag in re.findall(r"(--[a-z][a-z-]*)", rest):
            assert flag in options | {"--help"}, f"gpu-orchestrator {path} {flag}: no such flag"
