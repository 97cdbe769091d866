"""deploy/postgres/init-airflow-db.sh creates Airflow's database next to the project's."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.session import make_engine
from tests.deploy.helpers import ROOT, missing

pytestmark = pytest.mark.postgres


def test_init_script_creates_the_airflow_database() -> None:
    url = os.environ.get("TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("needs TEST_DATABASE_URL pointing at Postgres")
    if shutil.which("psql") is None:
        missing("the psql client")
    server = make_url(url)
    name = f"airflow_init_test_{uuid.uuid4().hex[:8]}"
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": server.host or "127.0.0.1",
        "PGPORT": str(server.port or 5432),
        "PGPASSWORD": server.password or "",
        # What the postgres image's entrypoint gives its init scripts:
        "POSTGRES_USER": server.username or "postgres",
        "POSTGRES_DB": server.database,
        "AIRFLOW_DB_NAME": name,
    }
    result = subprocess.run(
        ["sh", str(ROOT / "deploy" / "postgres" / "init-airflow-db.sh")],
        env=env,
        capture_output=True,
        text=True,
    )
    engine = make_engine(url)
    try:
        assert result.returncode == 0, result.stderr
        with engine.connect() as conn:
            owner = conn.execute(
                text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
        assert owner == env["POSTGRES_USER"]
    finally:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
