"""Steps of the retraining pipeline that the end-to-end run cannot reach: the API call, Docker, races.

Plain Python (no Airflow needed): these also run in the API's virtualenv.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from config import Settings
from pipelines import retrain
from pipelines.registry_ops import promote_version, publish_bundle
from store.model_store import open_model_store
from tests.store.bundles import make_servable_bundle


def api_settings(**overrides: Any) -> Settings:
    return Settings(
        API_URL="http://api.test:8000",
        FIRST_ADMIN_USERNAME="admin",
        FIRST_ADMIN_PASSWORD="first-admin-pw",
        **overrides,
    )


def fake_api(calls: list[str], *, password: str = "first-admin-pw", reload_status: int = 200) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/login":
            form = dict(x.split("=", 1) for x in request.content.decode().split("&"))
            if form.get("password") != password:
                return httpx.Response(401, json={"detail": "Incorrect username or password"})
            return httpx.Response(200, json={"access_token": "tok", "token_type": "bearer"})
        if request.url.path == "/models/reload":
            assert request.headers["Authorization"] == "Bearer tok"
            if reload_status != 200:
                return httpx.Response(reload_status, json={"detail": "checksum mismatch"})
            return httpx.Response(
                200, json={"changed": True, "version": "v2", "previous": "v1", "detail": "ok"}
            )
        return httpx.Response(404)

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_the_api_is_asked_to_reload_with_an_admin_token():
    calls: list[str] = []

    result = retrain.request_reload(api_settings(), client=fake_api(calls))

    assert result == {"reloaded": True, "version": "v2", "changed": True}
    assert calls == ["POST /login", "POST /models/reload"]


def test_a_dedicated_pipeline_account_overrides_the_first_admin():
    calls: list[str] = []
    settings = api_settings(API_ADMIN_USERNAME="pipeline", API_ADMIN_PASSWORD="pipeline-pw")

    result = retrain.request_reload(settings, client=fake_api(calls, password="pipeline-pw"))

    assert result["reloaded"] is True


@pytest.mark.parametrize(
    ("client_kwargs", "expected"),
    [({"password": "another"}, "answered 401"), ({"reload_status": 409}, "answered 409")],
)
def test_a_refused_login_or_reload_is_a_warning_not_a_failure(caplog, client_kwargs, expected):
    with caplog.at_level(logging.WARNING, logger="pipelines.retrain"):
        result = retrain.request_reload(api_settings(), client=fake_api([], **client_kwargs))

    assert result["reloaded"] is False and expected in result["detail"]
    assert "polling" in caplog.text


def test_an_unreachable_api_is_a_warning_not_a_failure(caplog):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with caplog.at_level(logging.WARNING, logger="pipelines.retrain"):
        result = retrain.request_reload(
            api_settings(), client=httpx.Client(transport=httpx.MockTransport(refuse))
        )

    assert result["reloaded"] is False and "unreachable" in result["detail"]
    assert "pick the model up by polling" in caplog.text


def test_nothing_promoted_means_no_call_to_the_api(monkeypatch):
    monkeypatch.setattr(retrain, "request_reload", lambda *a, **k: pytest.fail("called the API"))

    assert retrain.reload_step(api_settings(), {"promoted": False, "production": "v1"})["reloaded"] is False


# -- training in the Docker image ---------------------------------------------------------------


def write_bundle(root: Path, version: str) -> Path:
    root.mkdir(parents=True)
    (root / "metadata.json").write_text(
        json.dumps({"version": version, "created_at": "2025-06-09T03:00:00+00:00"})
    )
    (root / "metrics.json").write_text(json.dumps({"text": {"n": 10, "weighted_f1": 0.5}}))
    (root / "text.keras").write_bytes(b"weights of " + version.encode())
    return root


class FakeContainer:
    def __init__(self, status: int, on_wait=None) -> None:  # type: ignore[no-untyped-def]
        self.status, self.on_wait, self.removed = status, on_wait, False

    def logs(self, stream: bool, follow: bool):  # type: ignore[no-untyped-def]
        return iter([b"epoch 1/1\n", b"done\n"])

    def wait(self) -> dict[str, int]:
        if self.on_wait:
            self.on_wait()
        return {"StatusCode": self.status}

    def remove(self, force: bool) -> None:
        self.removed = True


class FakeDocker:
    """Records `containers.run(...)` and returns a container that exits with `status`."""

    def __init__(self, status: int = 0, on_wait=None) -> None:  # type: ignore[no-untyped-def]
        self.runs: list[dict[str, Any]] = []
        self.container = FakeContainer(status, on_wait)
        self.containers = self

    def run(self, image: str, **kwargs: Any) -> FakeContainer:
        self.runs.append({"image": image, **kwargs})
        return self.container


def docker_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        TRAIN_MODE="docker",
        TRAIN_IMAGE="rakuten-classifier-train:test",
        TRAIN_QUICK=True,
        TRAIN_EPOCHS=3,
        TRAIN_DOCKER_NETWORK="rakuten",
        DATA_STORE_URI=str(tmp_path / "datasets"),
        MODEL_STORE_URI=str(tmp_path / "registry"),
        **overrides,
    )


def test_docker_training_runs_the_training_image_on_the_snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("SECRET_KEY", "not-for-the-trainer")
    settings = docker_settings(tmp_path)
    snapshot = {"uri": "s3://data/datasets/snapshots/A_B", "key": "snapshots/A_B"}
    run_folder = f"{settings.DATA_STORE_URI}/runs/A_B"
    # What the real container does: publish the bundle to the model store, record it in the run.
    docker = FakeDocker(
        on_wait=lambda: retrain.publish_candidate(
            write_bundle(tmp_path / "b", "v-docker"), settings.MODEL_STORE_URI, run_folder
        )
    )

    candidate = retrain.train_step(settings, snapshot, docker_client=docker)
    again = retrain.train_step(settings, snapshot, docker_client=docker)

    location = open_model_store(settings.MODEL_STORE_URI).location("v-docker")
    assert candidate == again == {"version": "v-docker", "location": location}
    assert len(docker.runs) == 1  # the retry found the bundle and did not train again
    run = docker.runs[0]
    assert run["image"] == "rakuten-classifier-train:test"
    assert run["entrypoint"] == ["python"]
    assert run["command"] == [
        "-m", "pipelines.retrain", "train", "--snapshot", snapshot["uri"],
        "--model-store", settings.MODEL_STORE_URI, "--out", run_folder, "--quick", "--epochs", "3",
    ]  # fmt: skip
    assert run["network"] == "rakuten"
    # The backbone's features outlive the container: a named volume, read through FEATURE_CACHE_DIR.
    assert run["volumes"] == {"rakuten-feature-cache": {"bind": "/app/var/feature-cache", "mode": "rw"}}
    assert run["environment"]["FEATURE_CACHE_DIR"] == "/app/var/feature-cache"
    assert run["environment"]["AWS_ACCESS_KEY_ID"] == "key-id"
    assert run["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert "SECRET_KEY" not in run["environment"]
    assert docker.container.removed


def test_a_failed_training_container_fails_the_step_and_is_removed(tmp_path):
    docker = FakeDocker(status=1)

    with pytest.raises(retrain.TrainingFailedError, match="exited with status 1"):
        retrain.train_step(
            docker_settings(tmp_path), {"uri": "s3://x/s", "key": "snapshots/A_B"}, docker_client=docker
        )
    assert docker.container.removed


def test_the_training_pod_runs_the_train_step_in_process_and_the_candidate_is_read_back(
    tmp_path, monkeypatch
):
    # TRAIN_MODE=kubernetes: the pod's command trains in the pod, never through Docker again.
    snapshot = {"uri": "s3://data/datasets/snapshots/A_B", "key": "snapshots/A_B"}
    settings = docker_settings(tmp_path)
    seen: dict[str, Any] = {}

    def fake_train_step(s: Settings, snap: dict[str, Any]) -> dict[str, Any]:
        seen.update(mode=s.TRAIN_MODE, snapshot=snap)
        run = retrain.run_uri(s, snap)
        return retrain.publish_candidate(write_bundle(tmp_path / "b", "v-pod"), s.MODEL_STORE_URI, run)

    monkeypatch.setattr(retrain, "train_step", fake_train_step)
    monkeypatch.setattr("config.get_settings", lambda: settings)

    assert retrain.main(["train-step", "--snapshot-json", json.dumps(snapshot)]) == 0
    assert seen == {"mode": "inprocess", "snapshot": snapshot}
    assert retrain.trained_candidate(settings, snapshot)["version"] == "v-pod"
    with pytest.raises(retrain.TrainingFailedError, match="published no candidate"):
        retrain.trained_candidate(settings, {"uri": "s3://x/s", "key": "snapshots/C_D"})


# -- publishing -------------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path, database_url, session_factory):  # type: ignore[no-untyped-def]
    settings = Settings(
        DATABASE_URL=database_url,
        MODEL_STORE_URI=str(tmp_path / "registry"),
        DATA_STORE_URI=str(tmp_path / "datasets"),
    )
    store = open_model_store(settings.MODEL_STORE_URI)
    # Servable bundles: promotion loads them with the serving runtime.
    publish_bundle(store, session_factory, make_servable_bundle(tmp_path, "v1"))
    promote_version(store, session_factory, "v1")
    # The training step's publication: in the store, unpromoted.
    store.publish(make_servable_bundle(tmp_path, "v2"))
    return settings, store, {"version": "v2", "location": store.location("v2")}


def gate(promote: bool, production_version: str | None) -> dict[str, Any]:
    return {"promote": promote, "reason": "test decision", "production_version": production_version}


def test_a_promotion_decided_against_a_production_that_changed_since_is_not_applied(
    registry, session_factory
):
    from db.model_versions import get_model_version

    settings, store, candidate = registry

    published = retrain.publish_step(
        settings, candidate, gate(True, None)
    )  # evaluated before v1 was promoted

    assert published["promoted"] is False and store.production() == "v1"
    with session_factory() as session:
        row = get_model_version(session=session, version="v2")
    assert row.status == "rejected"
    assert "production changed" in row.gate["reason"]


def test_publishing_is_idempotent_and_promotes_what_the_gate_accepted(registry, session_factory):
    settings, store, candidate = registry

    first = retrain.publish_step(settings, candidate, gate(True, "v1"))
    rerun = retrain.publish_step(settings, candidate, gate(True, "v1"))

    assert first["promoted"] is True and first["production"] == "v2"
    assert rerun == {"version": "v2", "promoted": False, "production": "v2", "reason": "already production"}
    assert [p.version for p in store.history()] == ["v2", "v1"]
