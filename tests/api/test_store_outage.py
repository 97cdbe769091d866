"""The API against the S3 model store: it starts and serves from its local cache when S3 is down."""

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import bearer
from tests.api.serving import publish
from tests.api.test_predict import TITLE, predict
from tests.store.s3server import create_bucket, running_moto_server, s3_environment

pytestmark = pytest.mark.slow


def test_the_api_starts_and_serves_from_its_cache_when_s3_is_down(
    settings, quick_bundle, monkeypatch, seller_token_factory
):
    from api.main import create_app

    with running_moto_server() as endpoint:
        for name, value in s3_environment(endpoint).items():
            monkeypatch.setenv(name, value)
        on_s3 = settings.model_copy(update={"MODEL_STORE_URI": f"s3://{create_bucket(endpoint)}/models"})
        version = publish(on_s3.MODEL_STORE_URI, quick_bundle)
        with TestClient(create_app(on_s3)) as client:
            assert client.app.state.models.status()["source"] == "store"
            assert (
                predict(client, seller_token_factory(client), designation=TITLE).json()["model_version"]
                == version
            )

    # The S3 server is gone: a new API process must still start, from the cached bundle.
    with TestClient(create_app(on_s3)) as client:
        status = client.app.state.models.status()
        assert (status["version"], status["source"]) == (version, "cache")
        token = seller_token_factory(client)
        assert predict(client, token, designation=TITLE).json()["model_version"] == version
        models = client.get("/models", headers=bearer(token)).json()
        assert models["store_reachable"] is False
        assert models["loaded"]["source"] == "cache"
        assert client.get("/ready").json()["model"]["source"] == "cache"
