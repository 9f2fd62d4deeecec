#!/usr/bin/env python3
"""The operator's one command: `python scripts/check_system_health.py [--json]
[--watch N] [--set NAME=VALUE]`. A thin wrapper over `gpu-orchestrator status`."""

import sys

from gpu_orchestrator.cli import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "status", *sys.argv[1:]]
    main()
