"""Promotion through the API verifies the version first; at startup a production version that
cannot be served gives way to the previous one, visibly; store URIs are for admins only.

Fast: the bundles are the servable fakes of tests/store/bundles.py (constant ONNX models)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from config import Settings
from store.model_store import ModelStore, open_model_store
from tests.api.conftest import bearer
from tests.api.serving import publish
from tests.api.test_predict import TITLE, predict
from tests.store.bundles import BROKEN_VERSIONS, make_servable_bundle, publish_broken

V1, V2, V3 = "v20261127-113005-ab12cd", "v20261204-090000-cd34ef", "v20261211-090000-ef56ab"


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    path = tmp_path / "bundles"
    path.mkdir()
    return path


@pytest.fixture
def store(settings: Settings) -> ModelStore:
    return open_model_store(settings.MODEL_STORE_URI)


@pytest.fixture
def client(settings: Settings, bundles: Path) -> Iterator[TestClient]:
    """The API serving V1, the production version."""
    from api.main import create_app

    publish(settings.MODEL_STORE_URI, make_servable_bundle(bundles, V1))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def start(settings: Settings) -> TestClient:
    from api.main import create_app

    return TestClient(create_app(settings))


# -- promotion ------------------------------------------------------------------------------------


def test_promoting_a_servable_version_moves_production_and_loads_it(client, store, bundles, admin_token):
    store.publish(make_servable_bundle(bundles, V2))

    response = client.post(f"/models/{V2}/promote", headers=bearer(admin_token))

    assert response.status_code == 200, response.text
    assert response.json()["production"] == V2
    assert response.json()["loaded"]["version"] == V2
    assert store.production() == V2


@pytest.mark.parametrize("how", BROKEN_VERSIONS)
def test_promoting_a_version_that_cannot_be_served_is_a_409_and_production_stays(
    how, client, store, tmp_path, admin_token, seller_token
):
    publish_broken(store, tmp_path, V2, how)

    response = client.post(f"/models/{V2}/promote", headers=bearer(admin_token))

    assert response.status_code == 409, response.text
    assert BROKEN_VERSIONS[how] in response.json()["detail"]
    assert [p.version for p in store.history()] == [V1]
    assert predict(client, seller_token, designation=TITLE).json()["model_version"] == V1


def test_promoting_an_unknown_version_is_a_404(client, admin_token):
    response = client.post("/models/v-nowhere/promote", headers=bearer(admin_token))
    assert response.status_code == 404
    assert "no version v-nowhere" in response.json()["detail"]


def test_a_rollback_to_a_version_broken_since_is_a_409_and_production_stays(
    client, store, bundles, admin_token
):
    assert client.post(
        f"/models/{store.publish(make_servable_bundle(bundles, V2))}/promote", headers=bearer(admin_token)
    ).is_success
    store.blobs.put(f"versions/{V1}/serving/image.onnx", b"rotted")

    response = client.post("/models/rollback", headers=bearer(admin_token))

    assert response.status_code == 409
    assert "serving/image.onnx" in response.json()["detail"]
    assert store.production() == V2


# -- startup fallback -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["corrupt onnx", "tampered"])
def test_a_production_version_that_cannot_be_served_gives_way_to_the_previous_one_at_startup(
    how, settings, store, bundles, tmp_path, seller_token_factory
):
    publish(settings.MODEL_STORE_URI, make_servable_bundle(bundles, V1))
    store.promote(publish_broken(store, tmp_path, V2, how), verify=None)  # e.g. an older release

    with start(settings) as client:
        ready = client.get("/ready")
        token = seller_token_factory(client)
        models = client.get("/models", headers=bearer(token)).json()
        answer = predict(client, token, designation=TITLE)

    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["degraded"] is True
    assert (ready.json()["model"]["version"], ready.json()["model"]["fallback"]) == (V1, True)
    assert ready.json()["model"]["reason"].startswith(f"production version {V2} could not be served: ")
    assert (models["production"], models["loaded"]["version"], models["loaded"]["fallback"]) == (V2, V1, True)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == V1
    # /ready is public: the reason must not tell where the store or the cache are.
    assert settings.MODEL_STORE_URI not in ready.text
    assert str(settings.MODEL_CACHE_DIR) not in ready.text


def test_the_fallback_comes_from_the_cache_when_the_history_has_nothing_loadable(
    settings, store, bundles, tmp_path
):
    publish(settings.MODEL_STORE_URI, make_servable_bundle(bundles, V1))
    with start(settings) as client:  # caches V1
        assert client.get("/ready").json()["degraded"] is False
    # A pointer whose only history is itself: V1 survives only in the API's cache.
    store.blobs.delete("production.json")
    store.promote(publish_broken(store, tmp_path, V2, "fails self-check"), verify=None)

    with start(settings) as client:
        status = client.app.state.models.status()

    assert (status["version"], status["source"], status["fallback"]) == (V1, "cache", True)


def test_the_fallback_ends_once_a_servable_version_is_promoted(settings, store, bundles, tmp_path):
    publish(settings.MODEL_STORE_URI, make_servable_bundle(bundles, V1))
    store.promote(publish_broken(store, tmp_path, V2, "corrupt onnx"), verify=None)
    from tests.api.conftest import ADMIN, login

    with start(settings) as client:
        admin = bearer(login(client, *ADMIN))
        assert client.get("/ready").json()["model"]["fallback"] is True
        store.publish(make_servable_bundle(bundles, V3))

        assert client.post(f"/models/{V3}/promote", headers=admin).status_code == 200
        ready = client.get("/ready").json()

    assert (ready["model"]["version"], ready["model"]["fallback"], ready["degraded"]) == (V3, False, False)


def test_polling_does_not_load_a_refused_production_version_again(settings, store, bundles, tmp_path):
    publish(settings.MODEL_STORE_URI, make_servable_bundle(bundles, V1))
    store.promote(publish_broken(store, tmp_path, V2, "corrupt onnx"), verify=None)
    loads: list[Path] = []

    with start(settings) as client:
        manager = client.app.state.models
        real_loader = manager._loader
        manager._loader = lambda path: loads.append(path) or real_loader(path)

        result = manager.reload(retry_refused=False)

    assert (result.changed, result.version) == (False, V1)
    assert loads == []
    assert f"version {V2} refused" in result.detail


# -- who sees what --------------------------------------------------------------------------------


def test_models_shows_store_uris_to_admins_only(client, settings, admin_token, seller_token):
    seller = client.get("/models", headers=bearer(seller_token))
    admin = client.get("/models", headers=bearer(admin_token)).json()

    assert seller.status_code == 200
    assert seller.json()["production"] == V1
    assert [v["version"] for v in seller.json()["versions"]] == [V1]
    assert "store" not in seller.json()
    assert all("location" not in v for v in seller.json()["versions"])
    assert str(Path(settings.MODEL_STORE_URI).resolve()) not in seller.text
    assert settings.MODEL_STORE_URI not in seller.text
    assert admin["store"] == str(Path(settings.MODEL_STORE_URI).resolve())
    assert admin["versions"][0]["location"] == f"{admin['store']}/versions/{V1}"
