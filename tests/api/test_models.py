import threading
import time

import pytest
from fastapi.testclient import TestClient

from store.model_store import open_model_store
from tests.api.conftest import bearer
from tests.api.serving import copy_bundle_as, publish
from tests.api.test_predict import TITLE, predict

pytestmark = pytest.mark.slow


@pytest.fixture
def first_version(settings, quick_bundle):
    return publish(settings.MODEL_STORE_URI, quick_bundle)


@pytest.fixture
def client(settings, first_version):
    from api.main import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_models_lists_store_versions_production_and_loaded(client, seller_token, first_version):
    body = client.get("/models", headers=bearer(seller_token)).json()
    assert body["production"] == first_version
    assert [v["version"] for v in body["versions"]] == [first_version]
    assert body["loaded"]["version"] == first_version
    assert body["loaded"]["source"] == "store"
    assert client.get("/models").status_code == 401


def test_reload_is_for_admins_and_is_a_no_op_when_nothing_changed(client, seller_token, admin_token):
    assert client.post("/models/reload", headers=bearer(seller_token)).status_code == 403
    body = client.post("/models/reload", headers=bearer(admin_token)).json()
    assert body["changed"] is False


def test_reload_under_concurrent_requests_fails_none_of_them(
    client, settings, quick_bundle, tmp_path, admin_token, seller_token, first_version
):
    second = publish(settings.MODEL_STORE_URI, copy_bundle_as(quick_bundle, tmp_path / "v2", "v-second"))
    statuses, versions, stop = [], set(), threading.Event()

    def hammer():
        while not stop.is_set():
            response = predict(client, seller_token, designation=TITLE)
            statuses.append(response.status_code)
            if response.status_code == 200:
                versions.add(response.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    reload = client.post("/models/reload", headers=bearer(admin_token)).json()
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert reload == {
        "changed": True,
        "version": second,
        "previous": first_version,
        "detail": "loaded from store",
    }
    assert statuses and set(statuses) == {200}
    assert versions <= {first_version, second}
    assert predict(client, seller_token, designation=TITLE).json()["model_version"] == second


def test_a_broken_bundle_is_refused_and_the_old_version_keeps_serving(
    client, settings, quick_bundle, tmp_path, admin_token, seller_token, first_version
):
    publish(
        settings.MODEL_STORE_URI,
        copy_bundle_as(quick_bundle, tmp_path / "bad", "v-broken", break_file="serving/image.onnx"),
    )
    response = client.post("/models/reload", headers=bearer(admin_token))
    assert response.status_code == 409
    assert "v-broken refused" in response.json()["detail"]
    assert predict(client, seller_token, designation=TITLE).json()["model_version"] == first_version
    ready = client.get("/ready").json()
    assert ready["model"]["version"] == first_version
    assert "v-broken" in ready["model"]["last_error"]


def test_an_explicit_version_can_be_loaded(
    client, settings, quick_bundle, tmp_path, admin_token, seller_token
):
    other = publish(
        settings.MODEL_STORE_URI, copy_bundle_as(quick_bundle, tmp_path / "v3", "v-third"), promote=False
    )
    response = client.post("/models/reload", json={"version": other}, headers=bearer(admin_token))
    assert response.json()["version"] == other
    assert (
        client.post("/models/reload", json={"version": "v-missing"}, headers=bearer(admin_token)).status_code
        == 409
    )


def test_the_api_polls_the_production_pointer(settings, quick_bundle, tmp_path, first_version):
    from api.main import create_app

    polling = settings.model_copy(update={"MODEL_POLL_SECONDS": 0.2})
    with TestClient(create_app(polling)) as client:
        assert client.app.state.models.status()["version"] == first_version
        second = publish(settings.MODEL_STORE_URI, copy_bundle_as(quick_bundle, tmp_path / "v2", "v-polled"))
        deadline = time.monotonic() + 30
        while client.app.state.models.status()["version"] != second and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.app.state.models.status()["version"] == second


def test_without_any_model_predict_is_503_and_ready_says_so(settings, seller_token_factory):
    from api.main import create_app

    with TestClient(create_app(settings)) as client:
        token = seller_token_factory(client)
        response = predict(client, token, designation=TITLE)
        assert response.status_code == 503
        assert client.get("/ready").status_code == 503
        assert open_model_store(settings.MODEL_STORE_URI).production() is None
