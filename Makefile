# Quick start: `make run` serves the API on the embedded default; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help venv run serve bench migrate test lint format clean

help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-serve.txt requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.installed  ## Create the virtualenv and install the requirements

migrate: venv  ## Apply the database migrations
	$(PY) -m db.migrate upgrade

run: migrate  ## Bootstrap the embedded default if needed, then serve on http://127.0.0.1:PORT (8000)
	$(PY) -m pipelines.bootstrap
	PORT=$(PORT) $(PY) -m api

serve: migrate  ## Serve without the bootstrap step
	PORT=$(PORT) $(PY) -m api

bench:  venv ## Serving and accuracy benchmarks (figures in docs/performance.md and docs/models.md)
	$(PY) -m benchmarks.serve
	$(PY) -m benchmarks.accuracy

test: venv airflow-venv  ## Lint and check the import contracts, then run every test (DAG tests in the Airflow venv)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest --ignore=tests/dags -m "not e2e"
	$(AIRFLOW_PY) -m pytest tests/dags

test-e2e: venv airflow-venv  ## The end-to-end stack test (Postgres, S3, API, retraining DAG): minutes
	$(PY) -m pytest tests/deploy/test_stack_e2e.py

lint: venv  ## Lint and check the import contracts (.importlinter) only
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

format: venv  ## Format the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:  ## Remove the virtualenvs and local state (var/)
	rm -rf $(VENV) var .pytest_cache .ruff_cache .import_linter_cache

# ---- the compose topology as local processes (scripts/stack.sh; docs/deploy.md) ----------
.PHONY: stack stack-down stack-retrain stack-status

stack: venv  ## Postgres + S3 (moto) + migrations + bootstrap + API on :8000, in the background
	PY=$(PY) STACK_PORT=$(PORT) scripts/stack.sh up

stack-down:  ## Stop what `make stack` started
	PY=$(PY) scripts/stack.sh down

stack-retrain: venv  ## Run the retraining DAG once against the running stack (END=ISO: that week)
	PY=$(PY) scripts/stack.sh retrain $(if $(END),--end $(END))

stack-status:  ## What the stack runs, and the API's /ready
	PY=$(PY) scripts/stack.sh status

# ---- Airflow: its own virtualenv, since Airflow 3.3 pins fastapi below the API's (docs/pipelines.md)
AIRFLOW_VENV := .venv-airflow
AIRFLOW_PY := $(AIRFLOW_VENV)/bin/python
.PHONY: airflow-venv test-airflow

$(AIRFLOW_VENV)/.installed: requirements-airflow.txt requirements-dev.txt
	@test -x $(AIRFLOW_PY) || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_PY) -m pip install --quiet --upgrade pip
	@# The test tools with the API venv's pins: pytest, pytest-timeout, moto.
	grep -E '^(pytest|pytest-timeout|moto\[server\])==' requirements-dev.txt > $(AIRFLOW_VENV)/requirements-test.txt
	$(AIRFLOW_PY) -m pip install --quiet -r requirements-airflow.txt -r $(AIRFLOW_VENV)/requirements-test.txt
	@touch $@

airflow-venv: $(AIRFLOW_VENV)/.installed  ## Create .venv-airflow: Airflow 3 and the pipelines' dependencies

test-airflow: airflow-venv  ## Run the DAG tests (tests/dags) with the Airflow virtualenv
	$(AIRFLOW_PY) -m pytest tests/dags
