# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

# Starts callfleet on the embedded default (SQLite, in-process dispatcher, phone
# simulator) and sends a demonstration batch, showing progress and outcomes.
demo: install
	@command -v espeak-ng >/dev/null || echo "note: the simulator's people speak with espeak-ng \
	(apt-get install espeak-ng); without it they only make speech-like noise."
	$(BIN)/callfleet demo

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# Unit, integration (SQLite and PostgreSQL on 127.0.0.1:5432) and acceptance tests;
# the test that restarts PostgreSQL runs alone, after everything else.
test: lint
	$(BIN)/python -m pytest -m "not pg_restart"
	$(BIN)/python -m pytest -m pg_restart
