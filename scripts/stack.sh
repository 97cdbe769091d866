#!/usr/bin/env bash
# The compose topology as local processes, for machines without a Docker engine:
# Postgres (this machine's server), an S3 server (moto), migrations + first-start bootstrap
# against them (what the compose `init` job does), and the API in the background.
#
#   scripts/stack.sh up        start everything, print the URLs      (make stack)
#   scripts/stack.sh down      stop what `up` started                (make stack-down)
#   scripts/stack.sh retrain [--end ISO]   run the retraining DAG once  (make stack-retrain)
#   scripts/stack.sh airflow-up   Airflow as compose runs it: api-server, scheduler, dag-processor
#                                 and a Celery worker (CeleryExecutor, Redis broker)  (make stack-airflow)
#   scripts/stack.sh monitor      run the monitoring DAG once
#   scripts/stack.sh status    what runs, and the API's /ready
#   scripts/stack.sh env       print the environment the processes share
#
# The stack is ephemeral: moto keeps objects in memory, so `up` starts from an empty
# database and empty buckets every time (the database is dropped and re-created).
#
# Environment (all optional):
#   STACK_DIR            var/stack       pid files, logs, the shared env file, caches
#   STACK_PORT           8000            API port (127.0.0.1)
#   STACK_DB             rakuten         the project's Postgres database
#   STACK_PG_HOST/PORT   127.0.0.1/5432  Postgres server (user postgres, trust auth)
#   STACK_S3_ENDPOINT    (empty)         use this S3 server (MinIO...) instead of starting moto;
#                                        credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
#   STACK_BUCKET_SUFFIX  (empty)         appended to the bucket names (tests use a random one)
#   STACK_N_PRODUCTS     1500            size of the bootstrap's synthetic catalogue
#   STACK_POLL_SECONDS   5               MODEL_POLL_SECONDS of the API
#   STACK_READY_TIMEOUT  300             seconds to wait for the API's /ready
#   STACK_DROP_DB        0               `down` also drops the databases when 1
#   PY                   .venv/bin/python   the project's interpreter
#   AIRFLOW_VENV         .venv-airflow   Airflow's virtualenv, for `retrain`
#   STACK_REDIS_URL      redis://127.0.0.1:6379/1   the Celery broker of `airflow-up`
#   STACK_AIRFLOW_PORT   8080            Airflow's api-server (127.0.0.1)
#   STACK_AIRFLOW_LOG_PORT 8793          the Celery worker's log server
#   STACK_DAG_TIMEOUT    1800            seconds a DAG run may take under `airflow-up`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STACK_DIR="${STACK_DIR:-$ROOT/var/stack}"
STACK_PORT="${STACK_PORT:-8000}"
STACK_DB="${STACK_DB:-rakuten}"
STACK_AIRFLOW_DB="${STACK_AIRFLOW_DB:-${STACK_DB}_airflow}"
STACK_PG_HOST="${STACK_PG_HOST:-127.0.0.1}"
STACK_PG_PORT="${STACK_PG_PORT:-5432}"
STACK_S3_ENDPOINT="${STACK_S3_ENDPOINT:-}"
STACK_BUCKET_SUFFIX="${STACK_BUCKET_SUFFIX:-}"
STACK_N_PRODUCTS="${STACK_N_PRODUCTS:-1500}"
STACK_POLL_SECONDS="${STACK_POLL_SECONDS:-5}"
STACK_READY_TIMEOUT="${STACK_READY_TIMEOUT:-300}"
STACK_DROP_DB="${STACK_DROP_DB:-0}"
PY="${PY:-$ROOT/.venv/bin/python}"
AIRFLOW_VENV="${AIRFLOW_VENV:-$ROOT/.venv-airflow}"
STACK_REDIS_URL="${STACK_REDIS_URL:-redis://127.0.0.1:6379/1}"
STACK_AIRFLOW_PORT="${STACK_AIRFLOW_PORT:-8080}"
STACK_AIRFLOW_LOG_PORT="${STACK_AIRFLOW_LOG_PORT:-8793}"
STACK_DAG_TIMEOUT="${STACK_DAG_TIMEOUT:-1800}"
AIRFLOW_SERVICES=(airflow-apiserver airflow-scheduler airflow-dag-processor airflow-worker)
VENV_BIN="$(dirname "$PY")"
ENV_FILE="$STACK_DIR/env"
PSQL=(env PGOPTIONS=--client-min-messages=warning psql -h "$STACK_PG_HOST" -p "$STACK_PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)

log() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

alive() {  # alive NAME: the process recorded in NAME.pid runs
  local pid_file="$STACK_DIR/$1.pid"
  [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

start_bg() {  # start_bg NAME CMD...: a detached process (own session), output to NAME.log
  local name="$1"; shift
  # setsid: the process outlives this script and the terminal, and Ctrl-C in the shell that
  # ran `make stack` does not reach it; `down` stops it by its pid.
  setsid nohup "$@" >>"$STACK_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$STACK_DIR/$name.pid"
}

stop_bg() {  # stop_bg NAME: SIGTERM the recorded process (and its group), SIGKILL after 20 s
  local name="$1" pid_file="$STACK_DIR/$1.pid" pid
  [[ -f "$pid_file" ]] || return 0
  pid="$(cat "$pid_file")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop in 20 s: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pid_file"
}

ensure_postgres() {
  if ! pg_isready -h "$STACK_PG_HOST" -p "$STACK_PG_PORT" -q; then
    [[ "$STACK_PG_HOST" == "127.0.0.1" || "$STACK_PG_HOST" == "localhost" ]] \
      || die "Postgres at $STACK_PG_HOST:$STACK_PG_PORT does not answer"
    command -v pg_ctlcluster >/dev/null || die "Postgres is down and pg_ctlcluster is missing"
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    log "starting the local Postgres $version cluster"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do pg_isready -h "$STACK_PG_HOST" -p "$STACK_PG_PORT" -q && break; sleep 1; done
  fi
  pg_isready -h "$STACK_PG_HOST" -p "$STACK_PG_PORT" -q || die "Postgres did not come up"
}

recreate_db() {  # recreate_db NAME: drop (closing its connections) and create
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)"
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE \"$1\""
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_http() {  # wait_http URL SECONDS PID_NAME: until URL answers 2xx, the process dies, or time runs out
  local url="$1" timeout="$2" name="$3" start=$SECONDS
  while (( SECONDS - start < timeout )); do
    if "$PY" - "$url" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=3)
EOF
    alive "$name" || { tail -n 40 "$STACK_DIR/$name.log" >&2; die "$name exited (log: $STACK_DIR/$name.log)"; }
    sleep 1
  done
  tail -n 40 "$STACK_DIR/$name.log" >&2
  die "$url did not answer within $timeout s (log: $STACK_DIR/$name.log)"
}

load_env() {
  [[ -f "$ENV_FILE" ]] || die "no stack environment ($ENV_FILE): run \`make stack\` first"
  set -a
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  set +a
}

write_env() {  # the variables every stack process shares (docker-compose.yml's x-project-env)
  local endpoint="$1" key="$2" secret="$3"
  local models="models$STACK_BUCKET_SUFFIX" data="rakuten-data$STACK_BUCKET_SUFFIX"
  cat >"$ENV_FILE" <<EOF
# Written by scripts/stack.sh up; sourced by the stack's processes.
APP_ENV=development
PYTHONPATH=$ROOT
TF_CPP_MIN_LOG_LEVEL=2
HOST=127.0.0.1
PORT=$STACK_PORT
API_URL=http://127.0.0.1:$STACK_PORT
DATABASE_URL=postgresql+psycopg2://postgres@$STACK_PG_HOST:$STACK_PG_PORT/$STACK_DB
MODEL_STORE_URI=s3://$models/registry
IMAGE_STORE_URI=s3://$data/images
DATA_STORE_URI=s3://$data/datasets
MODEL_CACHE_DIR=$STACK_DIR/model-cache
LOG_SPILL_DIR=$STACK_DIR/prediction-logs
MODEL_POLL_SECONDS=$STACK_POLL_SECONDS
FIRST_ADMIN_USERNAME=${FIRST_ADMIN_USERNAME:-admin}
FIRST_ADMIN_PASSWORD=${FIRST_ADMIN_PASSWORD:-changethis}
RATE_LIMIT_PREDICT=${RATE_LIMIT_PREDICT:-120/minute}
TRAIN_MODE=inprocess
AWS_ENDPOINT_URL=$endpoint
AWS_ACCESS_KEY_ID=$key
AWS_SECRET_ACCESS_KEY=$secret
AWS_DEFAULT_REGION=us-east-1
AWS_EC2_METADATA_DISABLED=true
S3_BUCKETS="$models $data"
EOF
}

create_buckets() {
  load_env
  # shellcheck disable=SC2086
  "$PY" - $S3_BUCKETS <<'EOF'
import sys

import boto3

client = boto3.client("s3")  # endpoint and credentials from the AWS_* variables
existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
for name in sys.argv[1:]:
    if name not in existing:
        client.create_bucket(Bucket=name)
print("buckets:", " ".join(sys.argv[1:]))
EOF
}

cmd_up() {
  mkdir -p "$STACK_DIR"
  if alive api || alive s3; then
    die "the stack already runs (scripts/stack.sh status); stop it with \`make stack-down\`"
  fi
  [[ -x "$PY" ]] || die "$PY not found: run \`make venv\` first"
  rm -f "$STACK_DIR"/*.log
  # A failed `up` stops what it started, so that the next `up` starts clean.
  UP_DONE=0
  trap '[[ $UP_DONE == 1 ]] || { log "up failed: stopping what it started"; stop_bg api; stop_bg s3; }' EXIT

  log "Postgres at $STACK_PG_HOST:$STACK_PG_PORT, database $STACK_DB (re-created)"
  ensure_postgres
  recreate_db "$STACK_DB"

  local endpoint key secret
  if [[ -n "$STACK_S3_ENDPOINT" ]]; then
    endpoint="$STACK_S3_ENDPOINT"
    key="${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID for STACK_S3_ENDPOINT}"
    secret="${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY for STACK_S3_ENDPOINT}"
    log "S3 at $endpoint (external)"
  else
    local s3_port
    s3_port="$(free_port)"
    endpoint="http://127.0.0.1:$s3_port"
    key=testing secret=testing
    log "S3: moto server on $endpoint"
    start_bg s3 "$VENV_BIN/moto_server" -H 127.0.0.1 -p "$s3_port"
    wait_http "$endpoint/moto-api/" 30 s3
  fi
  write_env "$endpoint" "$key" "$secret"
  create_buckets

  log "migrations and first-start bootstrap (what the compose init job runs; ~2 min)"
  (
    load_env
    "$PY" -m db.migrate upgrade
    "$PY" -m pipelines.bootstrap --n "$STACK_N_PRODUCTS"
  ) 2>&1 | tee "$STACK_DIR/init.log" | sed -u 's/^/[init] /'

  log "API on http://127.0.0.1:$STACK_PORT (log: $STACK_DIR/api.log)"
  # The API process cannot import what the API image does not install (no TensorFlow):
  # scripts/serve_only_site.py puts a blocker first on its PYTHONPATH.
  "$PY" "$ROOT/scripts/serve_only_site.py" "$STACK_DIR/serve-only" | sed 's/^/[stack] /'
  (load_env && PYTHONPATH="$STACK_DIR/serve-only:$PYTHONPATH" start_bg api "$PY" -m api)
  wait_http "http://127.0.0.1:$STACK_PORT/ready" "$STACK_READY_TIMEOUT" api
  UP_DONE=1

  cat <<EOF

  The stack is up.
    API           http://127.0.0.1:$STACK_PORT        (docs: /docs, metrics: /metrics, ready: /ready)
    S3            $endpoint
    Postgres      postgresql://postgres@$STACK_PG_HOST:$STACK_PG_PORT/$STACK_DB
    Admin         ${FIRST_ADMIN_USERNAME:-admin} / (FIRST_ADMIN_PASSWORD, default changethis)
    Logs, pids    $STACK_DIR
  Retrain once:   make stack-retrain      Stop:  make stack-down

EOF
}

cmd_down() {
  local name
  for name in "${AIRFLOW_SERVICES[@]}"; do stop_bg "$name"; done
  stop_bg api
  stop_bg s3
  if [[ "$STACK_DROP_DB" == "1" ]] && pg_isready -h "$STACK_PG_HOST" -p "$STACK_PG_PORT" -q; then
    log "dropping the databases $STACK_DB and $STACK_AIRFLOW_DB"
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS \"$STACK_DB\" WITH (FORCE)"
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS \"$STACK_AIRFLOW_DB\" WITH (FORCE)"
  fi
  log "stopped (Postgres, this machine's server, keeps running)"
}

cmd_status() {
  local name
  for name in s3 api "${AIRFLOW_SERVICES[@]}"; do
    if alive "$name"; then log "$name: running (pid $(cat "$STACK_DIR/$name.pid"))"; else log "$name: stopped"; fi
  done
  if alive api; then
    load_env
    "$PY" - "$API_URL/ready" <<'EOF' || true
import json, sys, urllib.error, urllib.request
try:
    body = urllib.request.urlopen(sys.argv[1], timeout=5).read()
except urllib.error.HTTPError as exc:
    body = exc.read()
print(json.dumps(json.loads(body), indent=2))
EOF
  fi
}

airflow_env() {  # airflow_env EXECUTOR: Airflow's settings, metadata in Postgres next to the project's
  local airflow_home="$STACK_DIR/airflow"
  mkdir -p "$airflow_home"
  export AIRFLOW_HOME="$airflow_home"
  export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/airflow/dags"
  export AIRFLOW__CORE__LOAD_EXAMPLES=false
  export AIRFLOW__CORE__EXECUTOR="$1"
  if "$AIRFLOW_VENV/bin/python" -c "import asyncpg" 2>/dev/null; then
    # Airflow 3 also opens an async engine on its metadata database: asyncpg for Postgres.
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://postgres@$STACK_PG_HOST:$STACK_PG_PORT/$STACK_AIRFLOW_DB"
    if [[ "$("${PSQL[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$STACK_AIRFLOW_DB'")" != "1" ]]; then
      "${PSQL[@]}" -d postgres -c "CREATE DATABASE \"$STACK_AIRFLOW_DB\""
    fi
  else
    [[ "$1" != CeleryExecutor ]] || die "asyncpg is not in $AIRFLOW_VENV: \`make airflow-venv\`"
    log "asyncpg is not in $AIRFLOW_VENV: Airflow's metadata in SQLite ($airflow_home/airflow.db)"
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$airflow_home/airflow.db"
  fi
  # What docker-compose.yml sets for its Airflow services (CeleryExecutor, Redis broker,
  # Celery results in the metadata database, the Task Execution API on the api-server).
  export AIRFLOW__CELERY__BROKER_URL="$STACK_REDIS_URL"
  export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql+psycopg2://postgres@$STACK_PG_HOST:$STACK_PG_PORT/$STACK_AIRFLOW_DB"
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$STACK_AIRFLOW_PORT/execution/"
  export AIRFLOW__API__PORT="$STACK_AIRFLOW_PORT"
  export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$STACK_AIRFLOW_LOG_PORT"
  # A secret of this stack's own, shared by its components (task tokens are signed with it).
  [[ -f "$airflow_home/jwt-secret" ]] || "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$airflow_home/jwt-secret"
  AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$airflow_home/jwt-secret")"
  export AIRFLOW__API_AUTH__JWT_SECRET
  export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=false
  # Only the runs asked for: the weekly and daily schedules never start one on their own here.
  export AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=false
  export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=30
}

airflow_migrate() {
  "$AIRFLOW_VENV/bin/airflow" db migrate >"$STACK_DIR/airflow-db.log" 2>&1 \
    || { tail -n 40 "$STACK_DIR/airflow-db.log" >&2; die "airflow db migrate failed"; }
}

airflow_running() {
  local name
  for name in "${AIRFLOW_SERVICES[@]}"; do alive "$name" || return 1; done
}

cmd_airflow_up() {
  alive api || die "the stack is not running: \`make stack\` first"
  [[ -x "$AIRFLOW_VENV/bin/airflow" ]] || die "no $AIRFLOW_VENV: \`make airflow-venv\` first"
  airflow_running && { log "Airflow already runs"; return 0; }
  "$PY" -c "import redis, sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=3).ping()" "$STACK_REDIS_URL" \
    || die "no Redis at $STACK_REDIS_URL (the Celery broker)"
  "$PY" -c "import socket, sys; socket.create_server(('127.0.0.1', int(sys.argv[1]))).close()" "$STACK_AIRFLOW_PORT" \
    2>/dev/null || die "port $STACK_AIRFLOW_PORT is taken: set STACK_AIRFLOW_PORT"
  load_env
  AIRFLOW_UP_DONE=0
  trap '[[ $AIRFLOW_UP_DONE == 1 ]] || { log "airflow-up failed: stopping what it started"; for n in "${AIRFLOW_SERVICES[@]}"; do stop_bg "$n"; done; }' EXIT
  log "Airflow: migrating its metadata database ($STACK_AIRFLOW_DB), CeleryExecutor, broker $STACK_REDIS_URL"
  airflow_env CeleryExecutor
  airflow_migrate
  # The DAGs in the metadata database now, not after the dag-processor's first pass.
  "$AIRFLOW_VENV/bin/airflow" dags reserialize >"$STACK_DIR/airflow-reserialize.log" 2>&1 \
    || { tail -n 40 "$STACK_DIR/airflow-reserialize.log" >&2; die "airflow dags reserialize failed"; }
  local airflow="$AIRFLOW_VENV/bin/airflow"
  start_bg airflow-apiserver "$airflow" api-server --port "$STACK_AIRFLOW_PORT" --host 127.0.0.1
  start_bg airflow-scheduler "$airflow" scheduler
  start_bg airflow-dag-processor "$airflow" dag-processor
  # Two task slots: a training task and the rest; the training is in process (TRAIN_MODE=inprocess).
  start_bg airflow-worker "$airflow" celery worker --concurrency 2 --celery-hostname "stack-$STACK_AIRFLOW_PORT@%h"
  wait_http "http://127.0.0.1:$STACK_AIRFLOW_PORT/api/v2/version" 180 airflow-apiserver
  local start=$SECONDS
  until grep -q "ready\." "$STACK_DIR/airflow-worker.log" 2>/dev/null; do
    alive airflow-worker || { tail -n 40 "$STACK_DIR/airflow-worker.log" >&2; die "the Celery worker exited"; }
    (( SECONDS - start < 180 )) || die "the Celery worker is not ready after 180 s (log: $STACK_DIR/airflow-worker.log)"
    sleep 1
  done
  AIRFLOW_UP_DONE=1
  log "Airflow up: http://127.0.0.1:$STACK_AIRFLOW_PORT, a Celery worker on $STACK_REDIS_URL"
}

dag_run() {  # dag_run DAG_ID [CONF_JSON]: trigger a run on the running Airflow, wait for its end
  local dag="$1" conf="${2:-}" run_id state start=$SECONDS
  run_id="stack-$(date -u +%Y%m%dT%H%M%S)-$RANDOM"
  load_env
  airflow_env CeleryExecutor
  local args=(dags trigger "$dag" --run-id "$run_id")
  [[ -z "$conf" ]] || args+=(--conf "$conf")
  "$AIRFLOW_VENV/bin/airflow" "${args[@]}" >>"$STACK_DIR/airflow-trigger.log" 2>&1 \
    || { tail -n 20 "$STACK_DIR/airflow-trigger.log" >&2; die "could not trigger $dag"; }
  log "$dag: run $run_id queued (scheduler -> Redis -> Celery worker)"
  while :; do
    state="$("${PSQL[@]}" -d "$STACK_AIRFLOW_DB" -c "SELECT state FROM dag_run WHERE dag_id = '$dag' AND run_id = '$run_id'")"
    [[ "$state" == success || "$state" == failed ]] && break
    airflow_running || die "an Airflow process exited (logs: $STACK_DIR/airflow-*.log)"
    (( SECONDS - start < STACK_DAG_TIMEOUT )) || die "$dag run $run_id still $state after $STACK_DAG_TIMEOUT s"
    sleep 3
  done
  "${PSQL[@]}" -d "$STACK_AIRFLOW_DB" -F ' ' -c \
    "SELECT task_id, state, hostname, external_executor_id FROM task_instance WHERE dag_id = '$dag' AND run_id = '$run_id' ORDER BY start_date" \
    | sed 's/^/[stack]   task /'
  [[ "$state" == success ]] || die "$dag run $run_id $state (task logs: $AIRFLOW_HOME/logs)"
  log "$dag run $run_id succeeded in $(( SECONDS - start )) s"
}

cmd_monitor() {
  alive api || die "the stack is not running: \`make stack\` first"
  airflow_running || die "Airflow is not running: scripts/stack.sh airflow-up"
  dag_run rakuten_monitor
}

cmd_retrain() {  # cmd_retrain [--end ISO8601]: the week before END (default: the DAG's interval)
  local end=""
  if [[ "${1:-}" == "--end" ]]; then
    end="${2:?--end needs an ISO 8601 instant}"
  elif [[ -n "${1:-}" ]]; then
    die "usage: scripts/stack.sh retrain [--end ISO8601]"
  fi
  alive api || die "the stack is not running: \`make stack\` first"
  load_env
  local conf=""
  [[ -z "$end" ]] || conf="{\"interval_end\": \"$end\"}"
  if airflow_running; then
    # `airflow-up` ran: the run goes through the scheduler and a Celery worker, as in compose.
    dag_run rakuten_retrain "$conf"
  elif [[ -x "$AIRFLOW_VENV/bin/airflow" && -f "$ROOT/airflow/dags/retrain.py" ]]; then
    # Airflow as in the compose stack (metadata in Postgres, next to the project's database),
    # but `dags test` runs the DAG's tasks in this process: no scheduler or api-server needed.
    log "Airflow: migrating its metadata database"
    airflow_env LocalExecutor
    airflow_migrate
    log "Airflow: dags test rakuten_retrain (log: $STACK_DIR/retrain.log)"
    local args=()
    [[ -z "$conf" ]] || args=(--conf "$conf")
    "$AIRFLOW_VENV/bin/airflow" dags test rakuten_retrain "${args[@]}" 2>&1 \
      | tee "$STACK_DIR/retrain.log" | sed -u 's/^/[retrain] /'
    # `dags test` can exit 0 on a failed run: the run's final state decides.
    grep -q "DagRun Finished: dag_id=rakuten_retrain, .*state=success" "$STACK_DIR/retrain.log" \
      || die "the rakuten_retrain run did not succeed (log: $STACK_DIR/retrain.log)"
    log "rakuten_retrain succeeded"
  else
    # No Airflow virtualenv (`make airflow-venv`) or no DAG yet: the same pipeline functions
    # the DAG's tasks call, run in order by the project's interpreter.
    log "no $AIRFLOW_VENV or airflow/dags/retrain.py: running the pipeline with python -m pipelines.retrain"
    local args=(run)
    [[ -z "$end" ]] || args+=(--end "$end")
    "$PY" -m pipelines.retrain "${args[@]}" 2>&1 | tee "$STACK_DIR/retrain.log" | sed -u 's/^/[retrain] /'
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  retrain) shift; cmd_retrain "$@" ;;
  airflow-up) cmd_airflow_up ;;
  monitor) cmd_monitor ;;
  env) load_env && grep -v '^#' "$ENV_FILE" ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
