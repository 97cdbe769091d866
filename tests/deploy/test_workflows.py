"""The GitHub Actions workflows: least privilege, bounded, cached, and testing what they claim."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import ROOT, WORKFLOWS_DIR

WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml"))


def _load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


@pytest.fixture(scope="module")
def ci() -> dict:
    return _load(WORKFLOWS_DIR / "ci.yml")


def _steps_text(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) + " " + str(step.get("uses", "")) for step in job["steps"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_read_only_bounded_and_grouped(path: Path) -> None:
    workflow = _load(path)
    assert workflow["permissions"] == {"contents": "read"}
    assert "group" in workflow["concurrency"]
    for name, job in workflow["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 120, f"{name}: timeout-minutes"
        assert "permissions" not in job or job["permissions"] == {"contents": "read"}, name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_setup_python_caches_pip(path: Path) -> None:
    for name, job in _load(path)["jobs"].items():
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/setup-python"):
                assert step["with"]["cache"] == "pip", name
                for dependency_file in str(step["with"]["cache-dependency-path"]).split():
                    assert (ROOT / dependency_file).is_file(), f"{name}: {dependency_file}"


def test_ci_runs_on_push_to_main_and_pull_requests(ci: dict) -> None:
    assert ci["on"]["push"]["branches"] == ["main"]
    assert "pull_request" in ci["on"]


def test_ci_lints_and_runs_unit_tests(ci: dict) -> None:
    lint = _steps_text(ci["jobs"]["lint"])
    assert "ruff check" in lint and "ruff format --check" in lint
    assert "pytest" in _steps_text(ci["jobs"]["unit"])


def test_ci_integration_has_postgres_and_an_s3_server(ci: dict) -> None:
    job = ci["jobs"]["integration"]
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    assert job["env"]["TEST_DATABASE_URL"].startswith("postgresql+psycopg2://")
    text = _steps_text(job)
    assert "moto_server" in text and "STACK_S3_ENDPOINT" in text and "pytest" in text


def test_ci_docker_job_builds_both_images_and_checks_health_and_predict(ci: dict) -> None:
    text = _steps_text(ci["jobs"]["docker"])
    assert "cp .env.example .env" in text
    assert "-f Dockerfile.api" in text and "-f Dockerfile.train" in text
    assert "docker compose up -d --wait" in text
    assert "/health" in text and "/login" in text and "/predict" in text
    assert "down --volumes" in text


def test_ci_and_make_test_check_the_import_contracts(ci: dict) -> None:
    assert "lint-imports" in _steps_text(ci["jobs"]["lint"])
    makefile = (ROOT / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "lint-imports" in test_recipe
    assert (ROOT / ".importlinter").is_file()
