"""`python -m pipelines.monitor`: the monitoring DAG's report task from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from db.tables import MonitoringReport

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.monitor", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_says_what_the_command_does_and_how_to_call_it():
    result = run("--help")
    assert result.returncode == 0
    assert "--start" in result.stdout and "--end" in result.stdout
    assert "monitoring DAG" in result.stdout


def test_a_window_from_the_shell_stores_its_report(database_url, session_factory, tmp_path):
    env = {"DATABASE_URL": database_url, "MODEL_STORE_URI": str(tmp_path / "store")}
    result = run("--start", "2026-11-30T00:00", "--end", "2026-12-01T00:00", env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    with session_factory() as session:
        (row,) = session.scalars(select(MonitoringReport)).all()
    assert summary["report_id"] == row.id and summary["answered"] == 0
    assert summary["window_start"].startswith("2026-11-30T00:00:00")


def test_an_inverted_window_is_refused():
    result = run("--start", "2026-12-02", "--end", "2026-12-01")
    assert result.returncode == 2 and "--start must be before --end" in result.stderr
