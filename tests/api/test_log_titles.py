"""The prediction log keeps the title as typed, cut to LOG_TITLE_MAX_CHARS, for a retention
period (api/retention.py clears it); the admin log view shows it and the product saved from it."""

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.retention import TitleRetention
from db.tables import PredictionLog
from tests.api.conftest import bearer
from tests.api.serving import publish

pytestmark = pytest.mark.slow

TITLE = "Bâche de piscine hors sol 4x8 m avec filtre à sable"


@pytest.fixture
def served(settings, quick_bundle):
    publish(settings.MODEL_STORE_URI, quick_bundle)
    return settings.model_copy(update={"LOG_TITLE_MAX_CHARS": 20})


@pytest.fixture
def client(served):
    from api.main import create_app

    with TestClient(create_app(served)) as test_client:
        yield test_client


def test_the_typed_title_is_logged_cut_to_the_setting_and_shown_to_admins(
    client, seller_token, admin_token, session_factory
):
    answer = client.post("/predict", data={"designation": TITLE}, headers=bearer(seller_token)).json()
    client.app.state.log_writer.flush()
    with session_factory() as session:
        log = session.scalar(select(PredictionLog).where(PredictionLog.request_id == answer["request_id"]))
    assert log.designation == TITLE[:20]

    saved = client.post(
        "/products",
        data={
            "designation": TITLE,
            "prdtypecode": str(answer["predictions"][0]["prdtypecode"]),
            "request_id": answer["request_id"],
        },
        headers=bearer(seller_token),
    )
    assert saved.status_code == 201, saved.text
    (item,) = client.get("/logs", headers=bearer(admin_token)).json()["items"]
    assert (item["designation"], item["product"]) == (TITLE[:20], saved.json()["id"])


def test_titles_are_not_kept_when_the_setting_is_zero(served, seller_token_factory, session_factory):
    from api.main import create_app

    with TestClient(create_app(served.model_copy(update={"LOG_TITLE_MAX_CHARS": 0}))) as client:
        token = seller_token_factory(client)
        client.post("/predict", data={"designation": TITLE}, headers=bearer(token))
        client.app.state.log_writer.flush()
    with session_factory() as session:
        assert session.scalars(select(PredictionLog.designation)).all() == [None]


def test_titles_older_than_the_retention_are_cleared(client, seller_token, session_factory, served):
    for title in ("old one", "new one"):
        client.post("/predict", data={"designation": title}, headers=bearer(seller_token))
    client.app.state.log_writer.flush()
    with session_factory() as session:
        session.execute(
            update(PredictionLog)
            .where(PredictionLog.designation == "old one")
            .values(created_at=datetime.now(UTC) - timedelta(days=served.LOG_TITLE_RETENTION_DAYS + 1))
        )
        session.commit()

    assert TitleRetention(session_factory, served).run_once() == 1
    with session_factory() as session:
        rows = session.execute(select(PredictionLog.designation, PredictionLog.top_prdtypecode)).all()
    assert sorted(r.designation or "" for r in rows) == ["", "new one"]
    assert all(r.top_prdtypecode is not None for r in rows)  # only the title goes
    assert TitleRetention(session_factory, served).run_once() == 0
