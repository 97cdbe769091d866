"""docker-compose.yml and its replicas override, validated without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    AIRFLOW_SERVICES,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    PROJECT_SERVICES,
    REPLICAS_FILE,
    ROOT,
    THIRD_PARTY_ENV,
    command_text,
    compose_config,
    module_path,
    python_modules,
    read_env_file,
    run_compose,
    settings_fields,
)

SECRETS = (
    "SECRET_KEY",
    "FIRST_ADMIN_PASSWORD",
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "S3_SECRET_ACCESS_KEY",
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_JWT_SECRET",
)
AIRFLOW_COMMANDS = {
    "version",
    "api-server",
    "scheduler",
    "dag-processor",
    "triggerer",
    "celery worker",
    "celery flower",
}


@pytest.fixture(scope="module")
def config() -> dict:
    return compose_config()


@pytest.fixture(scope="module")
def services(config: dict) -> dict[str, dict]:
    return config["services"]


def test_compose_config_is_valid_with_the_example_env() -> None:
    result = run_compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_config_is_valid_with_the_replicas_override() -> None:
    result = run_compose("config", "--quiet", files=(COMPOSE_FILE, REPLICAS_FILE))
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_secrets() -> None:
    result = run_compose("config", "--quiet", env_file=None)
    assert result.returncode != 0
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET"):
        assert name in result.stderr


def test_every_secret_is_required_not_defaulted() -> None:
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = re.findall(r"(?<!\$)\$\{" + name + r"([^}]*)\}", text)
        assert uses, f"{name} is not used by docker-compose.yml"
        for rest in uses:
            assert rest.startswith(":?"), f"${{{name}{rest}}} must be ${{{name}:?message}}"


def test_example_env_holds_placeholders_not_secrets() -> None:
    values, _ = read_env_file()
    for name in SECRETS:
        assert name in values, f".env.example lacks {name}"
        assert "changethis" in values[name], f"{name} in .env.example must be an obvious placeholder"
    assert not (ROOT / ".env").is_file() or ".env" in (ROOT / ".gitignore").read_text().split()


def test_every_interpolated_variable_is_in_the_example_env() -> None:
    values, commented = read_env_file()
    used = set()
    for path in (COMPOSE_FILE, REPLICAS_FILE):
        lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        used |= set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", "\n".join(lines)))
    undocumented = sorted(used - set(values) - commented)
    assert not undocumented, f"add to .env.example: {undocumented}"


def test_project_services_only_set_settings_fields_or_known_third_party_variables(services: dict) -> None:
    fields = settings_fields()
    for name in (*PROJECT_SERVICES, *AIRFLOW_SERVICES):
        unknown = sorted(
            key
            for key in services[name].get("environment", {})
            if key not in fields and not THIRD_PARTY_ENV.match(key)
        )
        assert not unknown, f"{name} sets variables config.Settings does not know: {unknown}"


def test_every_project_process_reaches_the_same_stores(services: dict) -> None:
    for name in (*PROJECT_SERVICES, *AIRFLOW_SERVICES):
        env = services[name]["environment"]
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"], name
        assert env["MODEL_STORE_URI"].startswith("s3://models/"), name
        assert env["IMAGE_STORE_URI"].startswith("s3://"), name
        assert env["DATA_STORE_URI"].startswith("s3://"), name
        assert env["DATABASE_URL"].startswith("postgresql+psycopg2://") and env["DATABASE_URL"].endswith(
            "/rakuten"
        )


def test_every_python_module_the_stack_runs_exists(services: dict) -> None:
    modules: set[str] = set()
    for service in services.values():
        modules |= python_modules(
            command_text(service.get("entrypoint")) + " " + command_text(service.get("command"))
        )
    assert {"api", "db.migrate", "pipelines.bootstrap"} <= modules
    for module in sorted(modules):
        assert module_path(module) is not None, f"python -m {module}: no such module in the repository"


def test_init_migrates_then_bootstraps(services: dict) -> None:
    command = command_text(services["init"]["command"])
    assert command.index("python -m db.migrate upgrade") < command.index("python -m pipelines.bootstrap")
    assert "&&" in command  # the bootstrap never runs on an unmigrated database


def test_airflow_services_run_airflow_commands(services: dict) -> None:
    for name in AIRFLOW_SERVICES:
        assert command_text(services[name]["command"]) in AIRFLOW_COMMANDS, name


def test_api_waits_for_its_dependencies(services: dict) -> None:
    depends = services["api"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["init"]["condition"] == "service_completed_successfully"
    assert services["init"]["depends_on"]["minio-setup"]["condition"] == "service_completed_successfully"
    assert "/ready" in command_text(services["api"]["healthcheck"]["test"])
    assert services["api"]["environment"]["HOST"] == "0.0.0.0"


def test_one_shot_services_are_awaited_by_a_long_running_one(services: dict) -> None:
    """`docker compose up --wait` fails on an exited container nobody depends on."""
    awaited = {
        dep
        for service in services.values()
        for dep, spec in (service.get("depends_on") or {}).items()
        if spec.get("condition") == "service_completed_successfully"
    }
    for name, service in services.items():
        if service.get("profiles"):
            continue
        if service.get("restart") == "no":
            assert name in awaited, f"one-shot {name} must be a service_completed_successfully dependency"
        else:
            assert "healthcheck" in service, f"long-running {name} needs a healthcheck (for up --wait)"


def test_airflow_runs_the_celery_executor_on_redis_and_its_own_database(services: dict) -> None:
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/1"
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].endswith("@postgres:5432/airflow")
        if name != "airflow-init":  # the one-shot migration needs no broker
            assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["TRAIN_MODE"] == "docker"
        assert env["TRAIN_IMAGE"] == services["init"]["image"]
        assert env["PYTHONPATH"] == "/opt/rakuten"
        targets = {v["target"]: v for v in services[name]["volumes"]}
        assert Path(targets["/opt/airflow/dags"]["source"]) == ROOT / "airflow" / "dags"
        assert Path(targets["/opt/rakuten/pipelines"]["source"]) == ROOT / "pipelines"
        assert "/var/run/docker.sock" in targets


def test_celery_workers_can_be_scaled_and_the_api_shares_its_counters_in_redis(services: dict) -> None:
    worker = services["airflow-worker"]
    assert command_text(worker["command"]) == "celery worker"
    assert "inspect ping" in command_text(worker["healthcheck"]["test"])
    assert not worker.get("ports") and not worker.get("container_name")  # --scale airflow-worker=N
    api = services["api"]["environment"]
    assert api["RATE_LIMIT_STORAGE_URI"] == "redis://redis:6379/0"  # not the broker's database
    assert api["API_WORKERS"] == "1"
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_postgres_creates_the_airflow_database(services: dict) -> None:
    mounts = {v["target"]: Path(v["source"]) for v in services["postgres"]["volumes"] if v["type"] == "bind"}
    scripts = [
        source for target, source in mounts.items() if target.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert scripts and all(s.is_file() for s in scripts)
    assert any("CREATE DATABASE" in s.read_text() for s in scripts)


def test_every_bind_mount_and_build_file_exists(services: dict) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and not volume["source"].startswith("/var/run/"):
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']} does not exist"
        if build := service.get("build"):
            assert (Path(build["context"]) / build["dockerfile"]).is_file(), name


def test_images_are_pinned(services: dict) -> None:
    for name, service in services.items():
        image = service.get("image", "")
        if "build" in service or image.startswith("rakuten-"):
            continue
        tag = image.rpartition(":")[2]
        assert ":" in image and tag not in ("latest", "") and re.search(r"\d", tag), f"{name}: pin {image}"


def test_replicas_override_puts_a_load_balancer_in_front(tmp_path: Path) -> None:
    config = compose_config(COMPOSE_FILE, REPLICAS_FILE)
    api, lb = config["services"]["api"], config["services"]["lb"]
    assert api["deploy"]["replicas"] >= 2
    assert not api.get("ports"), "replicas cannot share a published port"
    assert [p["target"] for p in lb["ports"]] == [8000]
    conf = next(Path(v["source"]) for v in lb["volumes"] if v["target"].startswith("/etc/nginx/"))
    text = conf.read_text()
    assert "resolver 127.0.0.11" in text and "http://api:8000" in text


def test_prometheus_scrapes_the_api_metrics() -> None:
    import yaml

    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"]
    api = next(job for job in scrape if job["job_name"] == "rakuten-api")
    assert api["metrics_path"] == "/metrics"
    assert api["dns_sd_configs"][0]["names"] == ["api"] and api["dns_sd_configs"][0]["port"] == 8000


def test_example_env_is_what_ci_copies() -> None:
    assert ENV_EXAMPLE.is_file()
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert "cp .env.example .env" in ci
