"""Airflow's requirements are kept apart from the API's, with the same pins for what both need."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)")
# What only the API process needs: Airflow's resolver picks its own (fastapi must stay < 0.137).
API_SERVER_ONLY = {
    "fastapi",
    "fastapi-offline",  # Swagger UI and ReDoc assets for /docs and /redoc
    "starlette",
    "uvicorn",
    "python-multipart",
    "pwdlib",
    "pyjwt",
    "prometheus-client",
    "redis",  # the rate limiter's shared storage
}


def pins(name: str) -> dict[str, str]:
    """Package -> pinned version of a requirements file, following `-r` includes."""
    found: dict[str, str] = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("-r "):
            found.update(pins(line[3:].strip()))
        elif match := PIN.match(line):
            found[match.group(1).lower().replace("_", "-")] = match.group(3)
    return found


def test_everything_the_pipelines_need_is_pinned_alike_in_both_files():
    api, airflow = pins("requirements.txt"), pins("requirements-airflow.txt")

    pipeline_half = {name: version for name, version in api.items() if name not in API_SERVER_ONLY}
    assert {"tensorflow-cpu", "keras", "numpy", "sqlalchemy", "boto3"} <= set(pipeline_half)
    assert {
        name: airflow.get(name) for name in pipeline_half if airflow.get(name) != pipeline_half[name]
    } == {}


def test_airflow_and_the_api_server_stay_out_of_each_others_requirements():
    api, airflow = pins("requirements.txt"), pins("requirements-airflow.txt")

    assert "apache-airflow" in airflow and "apache-airflow" not in api
    # Airflow 3.3 needs fastapi < 0.137; the API's own pin would make the file unsatisfiable.
    assert not {"fastapi", "starlette", "uvicorn"} & set(airflow)
    assert "pytest" not in airflow  # test tools come from requirements-dev.txt (make airflow-venv)
