# Two commands for a newcomer: `make demo` and `make test`. Both create and reuse .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Prefect state stays inside the project; no telemetry; the first ephemeral start runs
# migrations for ~27 s, past Prefect's default 20 s startup timeout.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test lint typecheck pytest bench serve clean constraints

# Re-install only when the dependency files change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tradingml demo

test: lint typecheck pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# make bench            -- every benchmark
# make bench ONLY=ingest -- a subset (names or prefixes, comma-separated)
bench: $(STAMP)
	$(PY) -m benchmarks.run $(if $(ONLY),--only $(ONLY))

# Local Prefect server + process worker + every deployment in prefect.yaml + the automations of
# automations.yaml (a run killed with its worker becomes Crashed); Ctrl-C stops all.
serve: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH scripts/serve.sh

constraints: $(STAMP)
	$(VENV)/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'

clean:
	rm -rf .prefect data/warehouse.duckdb data/warehouse.duckdb.wal
