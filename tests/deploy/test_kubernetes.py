"""The Kubernetes manifests in deploy/k8s: valid YAML with the fields that matter."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import (
    K8S_DIR,
    THIRD_PARTY_ENV,
    find_binary,
    module_path,
    python_modules,
    settings_fields,
)

# The Kubernetes release the manifests target (EKS, GKE and AKS all offer it).
KUBERNETES_VERSION = "1.33.0"
HELM_VALUES = K8S_DIR / "helm" / "airflow-values.yaml"

# Key paths of the official Apache Airflow chart's values.yaml that helm/airflow-values.yaml
# uses, as that file documents them (apache/airflow, chart/values.yaml, the chart for Airflow
# 3.1: `apiServer`, `jwtSecretName`, `apiSecretKeySecretName` are Airflow 3's). Neither helm nor
# the chart can be installed here: this list is how a misspelt or invented key is caught.
CHART_VALUE_KEYS = {
    "defaultAirflowRepository", "defaultAirflowTag", "airflowVersion", "executor",
    "allowPodLaunching", "extraEnvFrom", "env", "postgresql", "postgresql.enabled", "data",
    "data.metadataSecretName", "fernetKeySecretName", "jwtSecretName", "apiSecretKeySecretName",
    "redis", "redis.enabled", "redis.persistence", "redis.persistence.enabled",
    "redis.persistence.size", "dags", "dags.gitSync", "dags.gitSync.enabled", "dags.gitSync.repo",
    "dags.gitSync.branch", "dags.gitSync.ref", "dags.gitSync.subPath", "dags.gitSync.period",
    "scheduler", "scheduler.replicas", "scheduler.resources", "dagProcessor",
    "dagProcessor.enabled", "dagProcessor.resources", "apiServer", "apiServer.replicas",
    "apiServer.resources", "workers", "workers.replicas", "workers.resources",
    "workers.persistence", "workers.persistence.enabled", "workers.terminationGracePeriodSeconds",
    "triggerer", "triggerer.enabled", "flower", "flower.enabled", "createUserJob",
    "createUserJob.enabled", "config",
}  # fmt: skip


def _documents() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    return docs


@pytest.fixture(scope="module")
def helm_values() -> dict:
    return yaml.safe_load(HELM_VALUES.read_text())


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return [doc for path, doc in _documents() if path.name != "kustomization.yaml"]


def _one(manifests: list[dict], kind: str, name: str | None = None) -> dict:
    found = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_specs(manifests: list[dict]) -> list[tuple[str, dict]]:
    specs = []
    for m in manifests:
        if m["kind"] in ("Deployment", "Job"):
            specs.append((m["metadata"]["name"], m["spec"]["template"]["spec"]))
        elif m["kind"] == "CronJob":
            specs.append((m["metadata"]["name"], m["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return specs


def test_every_manifest_has_api_version_kind_and_name(manifests: list[dict]) -> None:
    assert manifests
    for m in manifests:
        assert m.get("apiVersion") and m.get("kind"), m
        assert m.get("metadata", {}).get("name"), m


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}


def test_api_deployment_probes_health_and_ready(manifests: list[dict]) -> None:
    deployment = _one(manifests, "Deployment", "rakuten-api")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["command"] == ["python", "-m", "api"]
    assert container["ports"][0]["containerPort"] == 8000


def test_api_deployment_rolls_out_without_losing_capacity(manifests: list[dict]) -> None:
    deployment = _one(manifests, "Deployment", "rakuten-api")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the images' USER


def test_every_container_has_requests_and_memory_limits(manifests: list[dict]) -> None:
    for name, pod in _pod_specs(manifests):
        for container in pod["containers"]:
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), name
            assert "memory" in resources.get("limits", {}), name


def test_service_selects_the_api_pods(manifests: list[dict]) -> None:
    deployment = _one(manifests, "Deployment", "rakuten-api")
    service = _one(manifests, "Service", "rakuten-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ("http", 8000)


def test_hpa_scales_the_api_deployment_on_cpu(manifests: list[dict]) -> None:
    hpa = _one(manifests, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "rakuten-api")
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert (
        metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    )


def test_config_and_secret_references_resolve(manifests: list[dict]) -> None:
    configmaps = {m["metadata"]["name"] for m in manifests if m["kind"] == "ConfigMap"}
    secrets = {m["metadata"]["name"] for m in manifests if m["kind"] == "Secret"}  # the example
    for name, pod in _pod_specs(manifests):
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps, name
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, name


def test_config_and_secret_keys_are_settings_fields(manifests: list[dict]) -> None:
    fields = settings_fields()
    for m in manifests:
        if m["kind"] in ("ConfigMap", "Secret"):
            data = m.get("data") or m.get("stringData") or {}
            unknown = sorted(k for k in data if k not in fields and not THIRD_PARTY_ENV.match(k))
            assert not unknown, f"{m['metadata']['name']}: not config.Settings fields: {unknown}"
    for name, pod in _pod_specs(manifests):
        for container in pod["containers"]:
            unknown = sorted(
                e["name"]
                for e in container.get("env", [])
                if e["name"] not in fields and not THIRD_PARTY_ENV.match(e["name"])
            )
            assert not unknown, f"{name}: not config.Settings fields: {unknown}"


def test_secret_example_holds_no_secret(manifests: list[dict]) -> None:
    secret = _one(manifests, "Secret")
    for key, value in secret["stringData"].items():
        if key not in ("FIRST_ADMIN_USERNAME",):
            assert "REPLACE_ME" in value, key


def test_manifests_validate_against_the_kubernetes_schemas_of_the_targeted_version() -> None:
    # kubernetes-validate (requirements-dev.txt) ships the OpenAPI schemas of each release;
    # --strict also refuses a field the schema does not have (a typo, a misplaced key).
    files = [str(p) for p in sorted(K8S_DIR.glob("*.yaml")) if p.name != "kustomization.yaml"]
    result = subprocess.run(
        [find_binary("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == sum(1 for _ in _documents()) - 1


def test_the_retraining_cronjob_is_gone_airflow_schedules_it() -> None:
    # One retraining scheduler: the DAG, on Airflow from the Helm chart (helm/airflow-values.yaml).
    kinds = {doc["kind"] for _, doc in _documents()}
    assert "CronJob" not in kinds


def _key_paths(node: object, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return set()
    paths = set()
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else key
        paths.add(path)
        # `config` is airflow.cfg (any section and option), `resources` a Kubernetes object.
        if path != "config" and not path.endswith(".resources"):
            paths |= _key_paths(value, path)
    return paths


def test_the_helm_values_use_only_keys_the_chart_documents(helm_values: dict) -> None:
    unknown = sorted(_key_paths(helm_values) - CHART_VALUE_KEYS)
    assert not unknown, f"not keys of the Apache Airflow chart's values.yaml: {unknown}"


def test_the_helm_values_run_the_dags_on_celery_with_the_project_settings(helm_values: dict) -> None:
    assert helm_values["executor"] == "CeleryExecutor"
    assert helm_values["redis"]["enabled"] is True  # the broker
    assert helm_values["postgresql"]["enabled"] is False  # metadata in the managed Postgres
    assert helm_values["allowPodLaunching"] is True  # the train_pod task
    env = {e["name"]: e["value"] for e in helm_values["env"]}
    assert env["TRAIN_MODE"] == "kubernetes"
    assert env["TRAIN_IMAGE"].startswith("ghcr.io/example/rakuten-classifier-train:")
    sources = yaml.safe_load(helm_values["extraEnvFrom"])
    assert {"configMapRef": {"name": "rakuten-config"}} in sources
    assert {"secretRef": {"name": "rakuten-secrets"}} in sources
    sync = helm_values["dags"]["gitSync"]
    assert sync["enabled"] is True and sync["subPath"] == "airflow/dags"
    assert env["PYTHONPATH"] == "/opt/airflow/dags/repo"  # the synced repository's root
    fields = settings_fields()
    assert {k for k in env if not THIRD_PARTY_ENV.match(k)} <= fields
    for component in ("scheduler", "dagProcessor", "apiServer", "workers"):
        resources = helm_values[component]["resources"]
        assert resources["requests"] and resources["limits"], component


def test_the_api_counts_rate_limits_in_the_shared_redis(manifests: list[dict]) -> None:
    config = _one(manifests, "ConfigMap", "rakuten-config")["data"]
    assert config["RATE_LIMIT_STORAGE_URI"].startswith("redis://rakuten-redis.")
    service = _one(manifests, "Service", "rakuten-redis")
    assert service["spec"]["ports"][0]["port"] == 6379


def test_every_python_module_the_manifests_run_exists(manifests: list[dict]) -> None:
    for name, pod in _pod_specs(manifests):
        for container in pod["containers"]:
            line = " ".join(container.get("command", []) + container.get("args", []))
            for module in python_modules(line):
                assert module_path(module) is not None, f"{name}: python -m {module}: no such module"
