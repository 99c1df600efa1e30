# The two commands of the README: `make demo` and `make test`.
# Any Python from 3.11 to 3.13: `make demo PYTHON=python3.13`.
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	$$p -c 'import sys' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-suite lint install wheel-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

# Starts callfleet on the embedded default (SQLite, in-process dispatcher, phone
# simulator) and sends a demonstration batch, showing progress and outcomes.
demo: install
	$(BIN)/callfleet demo

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# Installs the Debian packages the tests need (as root; else prints the apt-get line
# and stops), starts a throw-away PostgreSQL when none answers on 127.0.0.1:5432,
# then runs the suite (scripts/test-env.sh).
test: install
	scripts/test-env.sh $(MAKE) --no-print-directory test-suite

# Integration (SQLite and PostgreSQL on 127.0.0.1:5432) and acceptance tests, then
# the unit tests, which mostly wait on 20 ms clocks, in four processes
# (pytest-xdist); the dashboard's browser tests run in a pytest process of their
# own, and the test that restarts PostgreSQL runs alone, after everything else (not
# against a throw-away server, which pg_ctlcluster cannot restart). The simulated people's lines
# are rendered first (once per machine), so no test call waits for Piper. Then the
# wheel, on every other Python.
test-suite: lint
	$(BIN)/callfleet simulator --render-voices
	$(BIN)/python -m pytest -m "not pg_restart and not browser" --ignore=tests/unit
	$(BIN)/python -m pytest tests/unit -n 4 --dist worksteal
	$(BIN)/python -m pytest -m browser
	@if [ -n "$$CALLFLEET_TEST_THROWAWAY_PG" ]; then \
	  echo "skipping the pg_restart test: it restarts a pg_ctlcluster server"; \
	else $(BIN)/python -m pytest -m pg_restart; fi
	$(MAKE) --no-print-directory wheel-check

# Builds the wheel and, on Python 3.12 and 3.13, installs it in a fresh virtual
# environment, runs the unit tests against it and one real call end to end.
wheel-check: install
	scripts/wheel-check.sh
