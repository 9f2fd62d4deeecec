#!/usr/bin/env python3
"""The operator's one command: `python scripts/check_system_health.py [--json]
[--watch N] [--set NAME=VALUE]`. A thin wrapper over `gpu-orchestrator status`.

Runs with any Python 3.11+: when the package is not importable here (a system
Python on a fresh clone), it re-runs itself with the project's `.venv` (made by
`make demo` or `make test`), or says how to install."""

import os
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent.parent / ".venv"

try:
    from gpu_orchestrator.cli import main
except ModuleNotFoundError as exc:
    python = VENV / "bin" / "python"
    if python.exists() and Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(str(python), [str(python), __file__, *sys.argv[1:]])
    sys.exit(
        f"check_system_health: {exc.name} is not installed for {sys.executable}: run "
        "`make test` (or `make demo`) once from the repository, or `pip install .`"
    )

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "status", *sys.argv[1:]]
    main()
