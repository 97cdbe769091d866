# Quick start: `make run` serves the API on the embedded default; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help venv run serve bench migrate test lint format clean learning-loop

help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# The first install downloads about 2.8 GB (TensorFlow and tf2onnx for training, spaCy's French
# vectors, ONNX Runtime, Airflow-free test tools): 3 to 5 minutes on a good connection. It says
# so up front, then prints one line per package as pip collects it.
# pip's warnings about configured package folders this machine lacks are noise, not progress.
PIP_NOISE := grep --line-buffered -v 'is ignored: it is neither a file nor a directory'

$(VENV)/.installed: requirements-serve.txt requirements.txt requirements-dev.txt
	@test -x $(PY) || { echo "== creating the virtualenv $(VENV) ($(PYTHON))"; $(PYTHON) -m venv $(VENV); }
	@echo "== installing the Python dependencies into $(VENV): about 2.8 GB, 3-5 minutes the first time"
	@$(PY) -m pip install --quiet --upgrade pip 2> >($(PIP_NOISE) >&2)
	@set -o pipefail; $(PY) -m pip install --progress-bar off -r requirements-dev.txt 2> >($(PIP_NOISE) >&2) \
	  | { grep --line-buffered -E '^(Collecting|Installing collected|Successfully installed)' || true; } \
	  | sed -u -E 's/^Collecting ([^ ;]+).*/   collecting \1/; s/^Installing collected packages.*/   installing them (a minute or two)/; s/^Successfully installed.*/   done/'
	@touch $@

venv: $(VENV)/.installed  ## Create the virtualenv and install the requirements

migrate: venv  ## Apply the database migrations
	$(PY) -m db.migrate upgrade

# The port is checked first (a busy one fails in a second, not after the model load); the
# bootstrap prints its progress lines only; the server prints a banner once it listens.
# BOOTSTRAP_DATA=DIR bootstraps from a challenge-layout folder instead of the synthetic catalogue.
run: venv  ## Bootstrap the embedded default if needed, then serve on http://127.0.0.1:PORT (8000)
	@PORT=$(PORT) $(PY) -m api.launch check-port
	@echo "== database migrations"
	@set -o pipefail; $(PY) -m db.migrate upgrade 2>&1 | { grep -v -E '^(Context impl|Will assume)' || true; }
	@echo "== first model (nothing to do when the model store already has one)"
	@$(PY) -m pipelines.bootstrap
	@echo "== starting the server on port $(PORT)"
	@PORT=$(PORT) LOG_LEVEL=$${LOG_LEVEL:-WARNING} $(PY) -m api --banner

serve: migrate  ## Serve without the bootstrap step
	PORT=$(PORT) $(PY) -m api

bench:  venv ## Serving and accuracy benchmarks (figures in docs/performance.md and docs/models.md)
	$(PY) -m benchmarks.serve
	$(PY) -m benchmarks.accuracy

# The main suite runs in TEST_WORKERS processes (pytest-xdist), a test file per process at a
# time: in one process it kept the second core idle most of the time (tests/conftest.py says
# what the processes share). TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: venv airflow-venv  ## Lint and check the import contracts, then run every test (DAG tests in the Airflow venv)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --ignore=tests/dags -m "not e2e"
	$(AIRFLOW_PY) -m pytest tests/dags

test-e2e: venv airflow-venv  ## End to end, as processes: the stack, the nginx balancer, the DAGs on Celery: minutes
	$(PY) -m pytest tests/deploy/test_stack_e2e.py tests/deploy/test_balancer.py

# The learning loop on the synthetic catalogue with quick models (benchmarks/learning_loop.py):
# the real API and DAGs; fails unless drift is flagged and repaired and the worse model refused.
LOOP_OUT ?= var/learning-loop
learning-loop: venv airflow-venv  ## The learning-loop scenario, quick (CI): report and chart in var/learning-loop/
	$(PY) -m benchmarks.learning_loop --quick --check $(if $(LOOP_DATABASE_URL),--database-url $(LOOP_DATABASE_URL)) \
	  --out $(LOOP_OUT)/report.json --chart $(LOOP_OUT)/hit-rate.png

lint: venv  ## Lint and check the import contracts (.importlinter) only
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

format: venv  ## Format the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:  ## Remove the virtualenvs and local state (var/)
	rm -rf $(VENV) var .pytest_cache .ruff_cache .import_linter_cache

# ---- the compose topology as local processes (scripts/stack.sh; docs/deploy.md) ----------
.PHONY: stack stack-down stack-retrain stack-status stack-airflow stack-monitor

stack: venv  ## Postgres + S3 (moto) + migrations + bootstrap + API on :8000, in the background
	PY=$(PY) STACK_PORT=$(PORT) scripts/stack.sh up

stack-down:  ## Stop what `make stack` started
	PY=$(PY) scripts/stack.sh down

stack-retrain: venv  ## Run the retraining DAG once against the running stack (END=ISO: that week)
	PY=$(PY) scripts/stack.sh retrain $(if $(END),--end $(END))

stack-airflow: venv airflow-venv  ## Airflow on the CeleryExecutor beside the stack: api-server, scheduler, dag-processor, a worker (Redis broker)
	PY=$(PY) scripts/stack.sh airflow-up

stack-monitor: venv  ## Run the monitoring DAG once on the stack's Airflow (after make stack-airflow)
	PY=$(PY) scripts/stack.sh monitor

stack-status:  ## What the stack runs, and the API's /ready
	PY=$(PY) scripts/stack.sh status

# ---- Airflow: its own virtualenv, since Airflow 3.3 pins fastapi below the API's (docs/pipelines.md)
AIRFLOW_VENV := .venv-airflow
AIRFLOW_PY := $(AIRFLOW_VENV)/bin/python
.PHONY: airflow-venv test-airflow

$(AIRFLOW_VENV)/.installed: requirements-airflow.txt requirements-dev.txt
	@test -x $(AIRFLOW_PY) || $(PYTHON) -m venv $(AIRFLOW_VENV)
	@echo "== installing Airflow 3 and the test tools into $(AIRFLOW_VENV): about 2.7 GB, 2-5 minutes the first time"
	@$(AIRFLOW_PY) -m pip install --quiet --upgrade pip 2> >($(PIP_NOISE) >&2)
	@# The test tools with the API venv's pins: pytest, pytest-timeout, moto.
	@grep -E '^(pytest|pytest-timeout|moto\[server\])==' requirements-dev.txt > $(AIRFLOW_VENV)/requirements-test.txt
	@$(AIRFLOW_PY) -m pip install --quiet -r requirements-airflow.txt -r $(AIRFLOW_VENV)/requirements-test.txt \
	  2> >($(PIP_NOISE) >&2)
	@echo "   done"
	@touch $@

airflow-venv: $(AIRFLOW_VENV)/.installed  ## Create .venv-airflow: Airflow 3 and the pipelines' dependencies

test-airflow: airflow-venv  ## Run the DAG tests (tests/dags) with the Airflow virtualenv
	$(AIRFLOW_PY) -m pytest tests/dags
