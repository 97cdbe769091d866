"""POST /predict/batch: every item answered like /predict, per-item errors, each item logged."""

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.tables import PredictionLog
from tests.api.conftest import bearer
from tests.api.serving import jpeg_bytes, publish

pytestmark = pytest.mark.slow

TITLES = ["Bâche de piscine hors sol 4x8 m", "Roman policier en poche", "Figurine Funko Pop Harry Potter"]


@pytest.fixture
def served(settings, quick_bundle):
    publish(settings.MODEL_STORE_URI, quick_bundle)
    return settings


def make_client(settings):  # type: ignore[no-untyped-def]
    from api.main import create_app

    return TestClient(create_app(settings))


@pytest.fixture
def client(served):
    with make_client(served) as test_client:
        yield test_client


def batch(client, token, items, **extra):  # type: ignore[no-untyped-def]
    return client.post("/predict/batch", json={"items": items, **extra}, headers=bearer(token))


def test_every_item_is_answered_like_predict_and_logged_with_its_own_id(
    client, seller_token, session_factory
):
    image = base64.b64encode(jpeg_bytes()).decode()
    items = [
        {"designation": TITLES[0]},
        {"designation": TITLES[1], "description": "<p>Un polar</p>"},
        {"image_base64": image},
        {"designation": TITLES[2], "image_base64": image},
    ]
    response = batch(client, seller_token, items, top_k=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["answered"], body["failed"]) == (4, 0)
    assert [item["model"] for item in body["items"]] == ["text", "text", "image", "fusion"]
    for item in body["items"]:
        assert len(item["predictions"]) == 3 and item["suggestions"]
        assert sorted(item) == sorted(
            ["request_id", "model", "model_version", "predictions", "suggestions", "latency_ms"]
        )

    # The same answer as /predict for the same input.
    single = client.post(
        "/predict", data={"designation": TITLES[0], "top_k": 3}, headers=bearer(seller_token)
    )
    assert [p["prdtypecode"] for p in single.json()["predictions"]] == [
        p["prdtypecode"] for p in body["items"][0]["predictions"]
    ]
    np.testing.assert_allclose(
        [p["probability"] for p in single.json()["predictions"]],
        [p["probability"] for p in body["items"][0]["predictions"]],
        atol=1e-5,
    )

    client.app.state.log_writer.flush()
    with session_factory() as session:
        logs = {log.request_id: log for log in session.scalars(select(PredictionLog))}
    ids = [item["request_id"] for item in body["items"]]
    assert len(set(ids)) == 4 and set(ids) <= set(logs)
    assert [logs[i].model_kind for i in ids] == ["text", "text", "image", "fusion"]
    assert [logs[i].designation for i in ids] == [TITLES[0], TITLES[1], None, TITLES[2]]


def test_a_bad_item_gets_its_own_error_without_failing_the_batch(client, seller_token, session_factory):
    items = [
        {"designation": TITLES[0]},
        {"designation": "<p> </p>"},
        {"image_base64": "not base64!"},
        {"image_base64": base64.b64encode(b"these bytes are not a photo").decode()},
        {"designation": "x" * 20001},
    ]
    body = batch(client, seller_token, items).json()
    assert (body["answered"], body["failed"]) == (1, 4)
    assert body["items"][0]["model"] == "text"
    assert [item.get("status_code") for item in body["items"][1:]] == [422, 422, 422, 422]
    assert "Nothing to classify" in body["items"][1]["detail"]
    assert "base64" in body["items"][2]["detail"]
    assert "could not be read" in body["items"][3]["detail"]
    client.app.state.log_writer.flush()
    with session_factory() as session:
        outcomes = sorted(log.status_code for log in session.scalars(select(PredictionLog)))
    assert outcomes == [200, 422, 422, 422, 422]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"items": []}, 422),
        ({"items": [{"designation": "a"}], "top_k": 0}, 422),
        ({"items": [{"designation": "a", "extra": 1}]}, 422),
        ({"items": [{"designation": "a"}] * 101}, 422),
    ],
)
def test_a_malformed_or_oversized_batch_is_refused_whole(client, seller_token, body, status):
    response = client.post("/predict/batch", json=body, headers=bearer(seller_token))
    assert response.status_code == status, response.text


def test_a_batch_needs_a_token_and_json(client, seller_token):
    assert client.post("/predict/batch", json={"items": [{"designation": "a"}]}).status_code == 401
    response = client.post("/predict/batch", data={"items": "x"}, headers=bearer(seller_token))
    assert response.status_code in (415, 422)


def test_each_item_counts_against_the_predict_rate_limit(served, seller_token_factory):
    with make_client(served.model_copy(update={"RATE_LIMIT_PREDICT": "5/minute"})) as client:
        token = seller_token_factory(client)
        assert batch(client, token, [{"designation": "a"}] * 4).status_code == 200
        refused = batch(client, token, [{"designation": "a"}] * 2)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert batch(client, token, [{"designation": "a"}]).status_code == 200  # the fifth
        assert client.post("/predict", data={"designation": "a"}, headers=bearer(token)).status_code == 429
