# Two commands on a fresh machine with Python 3.11+ and make:
#   make demo   - the whole loop on an embedded Postgres with local workers
#   make test   - lint, types and the test suite
# Each creates .venv and installs what it needs on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check pytest bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,plot]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gpu-orchestrator demo

test: check pytest

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gpu_orchestrator

# PYTEST_ARGS: e.g. -m "not process" (CI runs the long process-level tests once)
pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# benchmarks/daemon.py (10 minutes; --minutes N) is run on its own
bench: $(STAMP)
	$(BIN)/python benchmarks/cycle.py
	$(BIN)/python benchmarks/claim.py
	$(BIN)/python benchmarks/heartbeat.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
