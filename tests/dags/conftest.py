"""Airflow's test environment: a throwaway AIRFLOW_HOME with a SQLite metadata database.

Set here, at import, because Airflow reads its configuration when it is first imported. In a
virtualenv without Airflow (the API's `.venv`) nothing is set and the tests skip themselves:
`make test-airflow` runs them with `.venv-airflow`.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = ROOT / "airflow" / "dags"


def airflow_installed() -> bool:
    """Whether the Airflow package is installed, found WITHOUT importing it (it reads its config then).

    The repository's own airflow/ folder is a namespace package: it has no `__init__.py` origin.
    """
    spec = importlib.util.find_spec("airflow")
    return spec is not None and spec.origin is not None and spec.origin.endswith("__init__.py")


if airflow_installed():
    _home = Path(tempfile.mkdtemp(prefix="airflow-home-"))
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(_home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata database, created once per session (what `airflow db migrate` does)."""
    from airflow.utils import db

    db.resetdb()
