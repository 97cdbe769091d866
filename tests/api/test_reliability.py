"""What a client sends cannot jam the prediction logs; a database outage is a 503, not a 500."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.session import make_engine, make_session_factory
from db.tables import PredictionLog, Product
from tests.api.conftest import ADMIN, SELLER, bearer, login
from tests.api.serving import publish
from tests.api.test_predict import TITLE, predict

# Nothing listens there: connecting fails at once, as with a stopped server.
DEAD_DATABASE = "postgresql+psycopg2://postgres@127.0.0.1:1/down"


def logged_ids(session_factory) -> list[str]:
    with session_factory() as session:
        return list(session.scalars(select(PredictionLog.request_id)))


def test_a_malformed_request_id_is_replaced_and_logging_goes_on(client, session_factory):
    """On main, a 37-character id sent with no token made every later batch insert fail."""
    sent = "x" * 37
    response = client.post("/predict", data={"designation": TITLE}, headers={"X-Request-ID": sent})
    assert response.status_code == 401
    assert response.headers["X-Request-ID"] != sent
    for _ in range(5):
        client.post("/predict", data={"designation": TITLE})
    assert client.app.state.log_writer.flush()
    assert len(logged_ids(session_factory)) == 6


@pytest.mark.parametrize("sent", ["a b", "id\u00e9".encode(), "../../etc", "a" * 37])
def test_request_ids_outside_the_format_are_not_echoed(client, sent):
    response = client.get("/health", headers={"X-Request-ID": sent})
    assert str(uuid.UUID(response.headers["X-Request-ID"])) == response.headers["X-Request-ID"]


def test_a_well_formed_request_id_is_kept(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"


def test_an_id_sent_twice_is_dead_lettered_once_and_never_jams_the_writer(client, session_factory, settings):
    """On main, one id sent twice made every later batch insert fail."""
    for _ in range(2):
        client.post("/predict", data={"designation": TITLE}, headers={"X-Request-ID": "same-id"})
    for _ in range(10):
        client.post("/predict", data={"designation": TITLE})
    assert client.app.state.log_writer.flush()
    assert len(logged_ids(session_factory)) == 11
    assert len((settings.LOG_SPILL_DIR / "dead-letter.jsonl").read_text().splitlines()) == 1
    assert "prediction_log_dead_letters_total 1.0" in client.get("/metrics").text


def take_database_down(client: TestClient) -> None:
    """Point the routes at a database server that refuses connections (the writer keeps its own)."""
    engine = make_engine(DEAD_DATABASE, connect_timeout=1)
    client.app.state.engine = engine
    client.app.state.session_factory = make_session_factory(engine)


def test_routes_that_need_the_database_answer_503_with_retry_after_during_an_outage(
    client, admin_token, seller_token
):
    """On main, 224 of 3,189 requests got a 500 during a 10 s Postgres stop."""
    take_database_down(client)
    for method, path, kwargs in [
        ("GET", "/users/me", {"headers": bearer(seller_token)}),
        ("GET", "/logs/me", {"headers": bearer(seller_token)}),
        ("GET", "/logs", {"headers": bearer(admin_token)}),
        ("GET", "/products", {"headers": bearer(admin_token)}),
        ("GET", "/categories", {}),
        ("POST", "/login", {"data": {"username": SELLER[0], "password": SELLER[1]}}),
        (
            "POST",
            "/products",
            {"json": {"designation": TITLE, "prdtypecode": 2583}, "headers": bearer(seller_token)},
        ),
    ]:
        response = client.request(method, path, **kwargs)
        assert response.status_code == 503, (path, response.status_code, response.text)
        assert response.headers["Retry-After"] == "5"
        assert "database" in response.json()["detail"].lower()
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["database"] == "unreachable"
    assert client.get("/health").status_code == 200


def test_predict_for_an_unknown_user_during_an_outage_is_a_503(client, seller_token):
    client.app.state.user_cache = type(client.app.state.user_cache)(0)  # nobody remembered
    take_database_down(client)
    response = client.post("/predict", data={"designation": TITLE}, headers=bearer(seller_token))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"


@pytest.fixture
def limited_settings(settings):
    return settings.model_copy(update={"RATE_LIMIT_PREDICT": "3/minute", "RATE_LIMIT_PRODUCTS": "2/minute"})


def test_predict_is_rate_limited_per_user_with_retry_after(limited_settings, seller_token_factory):
    from api.main import create_app

    with TestClient(create_app(limited_settings)) as client:
        seller = seller_token_factory(client)
        admin = login(client, *ADMIN)
        answers = [
            client.post("/predict", data={"designation": TITLE}, headers=bearer(seller)) for _ in range(4)
        ]
        assert [a.status_code for a in answers[:3]] == [503] * 3  # no model here; counted all the same
        assert answers[3].status_code == 429
        assert 1 <= int(answers[3].headers["Retry-After"]) <= 60
        # Another user has a budget of their own.
        assert client.post("/predict", data={"designation": TITLE}, headers=bearer(admin)).status_code == 503
        products = [
            client.post("/products", json={"designation": TITLE, "prdtypecode": 2583}, headers=bearer(seller))
            for _ in range(3)
        ]
        assert [p.status_code for p in products] == [201, 201, 429]
        assert "Retry-After" in products[2].headers
        client.app.state.log_writer.flush()
        with client.app.state.session_factory() as session:  # closed: Postgres would keep its lock
            outcomes = list(session.scalars(select(PredictionLog.outcome)))
        assert outcomes.count("rate_limited") == 1


def test_metrics_need_the_token_when_one_is_set(settings):
    from api.main import create_app

    with TestClient(create_app(settings.model_copy(update={"METRICS_TOKEN": "scrape-token"}))) as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/metrics", headers=bearer("wrong")).status_code == 404
        assert client.get("/metrics", headers=bearer("scrape-token")).status_code == 200


def test_api_docs_can_be_turned_off(settings):
    from api.main import create_app

    with TestClient(create_app(settings.model_copy(update={"API_DOCS_ENABLED": False}))) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404


# -- with a model: predictions that are answered ------------------------------------------


@pytest.fixture
def served_client(settings, quick_bundle):
    from api.main import create_app

    publish(settings.MODEL_STORE_URI, quick_bundle)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.slow
def test_predict_answers_from_the_model_during_an_outage_for_a_user_seen_recently(
    served_client, seller_token_factory, settings
):
    seller = seller_token_factory(served_client)
    assert predict(served_client, seller, designation=TITLE).status_code == 200  # remembered
    take_database_down(served_client)
    during = predict(served_client, seller, designation=TITLE)
    assert during.status_code == 200, during.text
    # A token that does not verify is refused without the database too.
    assert predict(served_client, seller + "x", designation=TITLE).status_code == 401


@pytest.mark.slow
def test_a_second_confirmation_of_a_prediction_updates_its_product(served_client, seller_token_factory):
    seller = seller_token_factory(served_client)
    request_id = predict(served_client, seller, designation=TITLE).json()["request_id"]
    body = {"designation": TITLE, "prdtypecode": 2583, "request_id": request_id}
    first = served_client.post("/products", json=body, headers=bearer(seller))
    assert first.status_code == 201, first.text
    second = served_client.post("/products", json=body | {"prdtypecode": 1560}, headers=bearer(seller))
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]
    with served_client.app.state.session_factory() as session:
        stored = session.scalars(select(Product)).all()
    assert [(p.request_id, p.prdtypecode) for p in stored] == [(request_id, 1560)]


@pytest.mark.slow
def test_a_seller_cannot_confirm_another_sellers_prediction(served_client, seller_token_factory):
    """On main, a seller could attach a product to anyone's request_id and skew the hit rates."""
    seller = seller_token_factory(served_client)
    admin = login(served_client, *ADMIN)
    served_client.post(
        "/register", json={"username": "seller2", "password": "Another-seller-pass-2"}, headers=bearer(admin)
    )
    other = login(served_client, "seller2", "Another-seller-pass-2")
    theirs = predict(served_client, other, designation=TITLE).json()["request_id"]
    refused = served_client.post(
        "/products",
        json={"designation": TITLE, "prdtypecode": 2583, "request_id": theirs},
        headers=bearer(seller),
    )
    assert refused.status_code == 422
    unknown = served_client.post(
        "/products",
        json={"designation": TITLE, "prdtypecode": 2583, "request_id": "never-predicted"},
        headers=bearer(seller),
    )
    assert unknown.status_code == 422
    failed = predict(served_client, seller, designation="   ").json()["request_id"]  # a 422 answer
    assert (
        served_client.post(
            "/products",
            json={"designation": TITLE, "prdtypecode": 2583, "request_id": failed},
            headers=bearer(seller),
        ).status_code
        == 422
    )
