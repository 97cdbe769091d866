#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory (files in
# /docker-entrypoint-initdb.d): creates Airflow's metadata database next to the project's own
# (POSTGRES_DB), owned by the same user. A server that already has data skips this script;
# create the database by hand there (docs/deploy.md).
set -eu
db="${AIRFLOW_DB_NAME:-airflow}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<EOSQL
CREATE DATABASE "$db" OWNER "$POSTGRES_USER";
EOSQL
echo "created database $db for Airflow"
