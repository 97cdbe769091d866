import base64
import io
import time

import pytest
from PIL import Image
from sqlalchemy import select, update

from db.tables import Category, PredictionLog
from tests.api.conftest import bearer
from tests.api.serving import jpeg_bytes, publish

pytestmark = pytest.mark.slow

TITLE = "Bâche de piscine hors sol 4x8 m avec filtre à sable"


@pytest.fixture
def served(settings, quick_bundle):
    """Settings whose model store holds the quick bundle in production."""
    publish(settings.MODEL_STORE_URI, quick_bundle)
    return settings


@pytest.fixture
def client(served, session_factory):
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(served)) as test_client:
        yield test_client


def predict(client, token, *, json=None, **form):
    files = {}
    if "image" in form:
        files["image"] = ("photo.jpg", form.pop("image"), "image/jpeg")
    if json is not None:
        return client.post("/predict", json=json, headers=bearer(token))
    return client.post("/predict", data=form, files=files or None, headers=bearer(token))


def test_text_only_goes_to_the_text_model(client, seller_token):
    response = predict(client, seller_token, designation=TITLE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "text"
    assert body["model_version"]
    assert len(body["predictions"]) == 5
    assert body["latency_ms"] > 0


def test_image_only_goes_to_the_image_model(client, seller_token):
    response = predict(client, seller_token, image=jpeg_bytes())
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "image"


def test_text_and_image_go_to_the_fusion_model(client, seller_token):
    response = predict(
        client, seller_token, designation=TITLE, description="<p>Kit complet</p>", image=jpeg_bytes()
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "fusion"


def test_predictions_are_ranked_probabilities_of_known_categories(client, seller_token):
    body = predict(client, seller_token, designation=TITLE, top_k=27).json()
    probs = [p["probability"] for p in body["predictions"]]
    assert len(probs) == 27
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert sum(probs) == pytest.approx(1.0, abs=1e-3)
    codes = {c["prdtypecode"]: c["category"] for c in client.get("/categories").json()}
    assert all(codes[p["prdtypecode"]] == p["category"] for p in body["predictions"])


@pytest.mark.parametrize("top_k", [1, 3, 27])
def test_top_k_controls_the_number_of_predictions(client, seller_token, top_k):
    body = predict(client, seller_token, designation=TITLE, top_k=str(top_k)).json()
    assert len(body["predictions"]) == top_k


def test_suggestions_are_the_calibrated_set_most_likely_first(client, seller_token):
    body = predict(client, seller_token, designation=TITLE, top_k=27).json()
    suggestions = body["suggestions"]
    assert 1 <= len(suggestions) <= 27
    probs = [s["probability"] for s in suggestions]
    assert probs == sorted(probs, reverse=True)
    # The set is the head of the ranking (smallest set reaching the calibrated threshold).
    assert [s["prdtypecode"] for s in suggestions] == [
        p["prdtypecode"] for p in body["predictions"][: len(suggestions)]
    ]


def test_json_with_base64_image_matches_the_multipart_answer(client, seller_token):
    image = jpeg_bytes()
    multipart = predict(client, seller_token, designation=TITLE, image=image).json()
    as_json = predict(
        client, seller_token, json={"designation": TITLE, "image_base64": base64.b64encode(image).decode()}
    ).json()
    assert as_json["model"] == "fusion"
    assert as_json["predictions"] == multipart["predictions"]


def test_category_names_come_from_the_database_mapper(served, session_factory, seller_token_factory):
    from fastapi.testclient import TestClient

    from api.main import create_app

    with session_factory() as session:
        session.execute(update(Category).values(name=Category.name + " (renamed)"))
        session.commit()
    with TestClient(create_app(served)) as client:
        body = predict(client, seller_token_factory(client), designation=TITLE).json()
    assert all(p["category"].endswith("(renamed)") for p in body["predictions"])


def png_with_alpha() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 64), (255, 0, 0, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_any_image_format_pil_reads_is_accepted(client, seller_token):
    response = predict(client, seller_token, image=png_with_alpha())
    assert response.status_code == 200
    assert response.json()["model"] == "image"


def bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, format="PNG")  # 81 Mpx, a few kB compressed
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({}, 422, "Nothing to classify"),
        ({"designation": "   "}, 422, "Nothing to classify"),
        ({"designation": "<p><br/></p>", "description": "&nbsp;"}, 422, "Nothing to classify"),
        ({"designation": "x" * 20_001}, 422, "longer than the limit"),
        ({"designation": TITLE, "top_k": "0"}, 422, "top_k"),
        ({"designation": TITLE, "top_k": "28"}, 422, "top_k"),
        ({"designation": TITLE, "top_k": "five"}, 422, "top_k"),
        ({"image": b"%PDF-1.4 not an image"}, 422, "could not be read"),
        ({"image": jpeg_bytes()[:400]}, 422, "could not be read"),
        ({"image": bomb()}, 422, "over the limit"),
        ({"designation": TITLE, "colour": "red"}, 422, "Unknown form field"),
    ],
    ids=[
        "nothing",
        "blank",
        "html-only",
        "too-long",
        "top_k-0",
        "top_k-28",
        "top_k-text",
        "not-image",
        "truncated",
        "bomb",
        "unknown-field",
    ],
)
def test_bad_multipart_inputs_get_a_clear_4xx(client, seller_token, kwargs, status, fragment):
    response = predict(client, seller_token, **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"designation": TITLE, "image_base64": "***not base64***"}, "not valid base64"),
        ({"designation": TITLE, "top_k": 99}, "top_k"),
        ({"designation": TITLE, "top_k": "many"}, "top_k"),
        ({"designation": 42}, "designation"),
        ({"designation": TITLE, "extra": True}, "extra"),
        ([TITLE], "body"),
        ({}, "Nothing to classify"),
    ],
)
def test_bad_json_inputs_get_a_422(client, seller_token, body, fragment):
    response = predict(client, seller_token, json=body)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_malformed_json_is_a_422(client, seller_token):
    response = client.post(
        "/predict",
        content=b'{"designation": ',
        headers={**bearer(seller_token), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "Malformed JSON" in response.json()["detail"]


def test_an_image_over_the_size_limit_is_413(client, seller_token, served):
    too_big = b"\xff\xd8" + b"0" * (served.MAX_IMAGE_BYTES + 10)
    assert predict(client, seller_token, image=too_big).status_code == 413
    encoded = base64.b64encode(too_big).decode()
    assert predict(client, seller_token, json={"image_base64": encoded}).status_code == 413


def test_unsupported_content_type_is_415(client, seller_token):
    response = client.post(
        "/predict", content=TITLE.encode(), headers={**bearer(seller_token), "Content-Type": "text/plain"}
    )
    assert response.status_code == 415


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nonsense"}])
def test_predict_needs_a_valid_token(client, headers):
    response = client.post("/predict", data={"designation": TITLE}, headers=headers)
    assert response.status_code == 401


def _logs(session_factory, client):
    assert client.app.state.log_writer.flush()
    with session_factory() as session:
        return list(session.scalars(select(PredictionLog).order_by(PredictionLog.id)))


def test_every_prediction_is_logged_successful_or_not(client, seller_token, session_factory):
    image = jpeg_bytes()
    ok = predict(client, seller_token, designation=TITLE, image=image).json()
    predict(client, seller_token, image=b"not an image")
    client.post("/predict", data={"designation": TITLE})
    rows = _logs(session_factory, client)
    assert [r.outcome for r in rows] == ["ok", "invalid_input", "unauthorized"]
    good = rows[0]
    assert good.request_id == ok["request_id"]
    assert good.model_kind == "fusion"
    assert good.model_version == ok["model_version"]
    assert good.top_prdtypecode == ok["predictions"][0]["prdtypecode"]
    assert good.inputs["image_sha256"] and good.inputs["image_bytes"] == len(image)
    assert good.inputs["designation_chars"] == len(TITLE)
    assert "image" not in good.inputs  # never the raw image
    assert good.latency_ms > 0 and good.status_code == 200
    assert rows[1].status_code == 422 and "could not be read" in rows[1].error
    assert rows[2].user_id is None and rows[2].status_code == 401


def test_each_refusal_is_logged_with_its_status_and_counted(client, seller_token, session_factory, served):
    # One dependency (api/prediction_log.py) writes the row and the metrics however the request
    # ends: authentication (401), the body (413, 415), the model input (422).
    too_big = b"\xff\xd8" + b"0" * (served.MAX_IMAGE_BYTES + 10)
    predict(client, seller_token, image=too_big)
    client.post("/predict", content=b"x", headers={**bearer(seller_token), "Content-Type": "text/plain"})
    predict(client, seller_token, designation="")
    client.post("/predict", data={"designation": TITLE}, headers={"Authorization": "Bearer nonsense"})
    rows = _logs(session_factory, client)
    assert [(r.status_code, r.outcome) for r in rows] == [
        (413, "too_large"),
        (415, "unsupported_media_type"),
        (422, "invalid_input"),
        (401, "unauthorized"),
    ]
    assert all(r.error and r.latency_ms is not None for r in rows)
    metrics = client.get("/metrics").text
    assert 'predictions_total{model_kind="none",outcome="unauthorized"} 1.0' in metrics


def test_predict_authenticates_with_the_shared_dependency_after_opening_its_log():
    from api.deps import get_authenticated_user
    from api.prediction_log import logged_prediction
    from api.routes.predict import router

    (route,) = [r for r in router.routes if r.path == "/predict"]
    calls = [d.call for d in route.dependant.dependencies]
    assert calls.index(logged_prediction) < calls.index(get_authenticated_user)


def test_logs_are_flushed_on_shutdown(served, session_factory, seller_token_factory):
    from fastapi.testclient import TestClient

    from api.main import create_app

    app = create_app(served)
    with TestClient(app) as client:
        token = seller_token_factory(client)
        for _ in range(5):
            predict(client, token, designation=TITLE)
        app.state.log_writer._flush_seconds = 60  # nothing would be written before shutdown
    with session_factory() as session:
        assert len(session.scalars(select(PredictionLog)).all()) == 5


def test_ready_reports_the_loaded_version_and_metrics_are_exposed(client, seller_token):
    version = predict(client, seller_token, designation=TITLE).json()["model_version"]
    ready = client.get("/ready").json()
    assert ready["status"] == "ready"
    assert ready["model"]["version"] == version
    metrics = client.get("/metrics").text
    assert f'model_version_info{{version="{version}"}} 1.0' in metrics
    assert 'predictions_total{model_kind="text",outcome="ok"}' in metrics
    assert "prediction_log_queue_depth" in metrics
    assert 'api_requests_total{method="POST",route="/predict",status="200"}' in metrics
    assert "predicted_class_total" in metrics


def test_text_prediction_is_fast(client, seller_token):
    predict(client, seller_token, designation=TITLE)
    started = time.perf_counter()
    for _ in range(20):
        predict(client, seller_token, designation=TITLE)
    per_request = (time.perf_counter() - started) / 20
    assert per_request < 0.1  # generous here; benchmarks/serve.py measures the real figures
