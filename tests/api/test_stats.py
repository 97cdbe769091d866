"""`GET /stats`: traffic, latency, predicted classes and confirmed hit rates, computed in the database."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from db.tables import PredictionLog, Product
from tests.api.conftest import bearer

NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WINDOW = {"since": (NOON - timedelta(hours=3)).isoformat(), "until": NOON.isoformat()}


def log(
    at: datetime,
    kind: str | None = "text",
    *,
    outcome: str = "ok",
    latency: float = 10.0,
    ranking=(2583,),
    size=1,
):
    return PredictionLog(
        request_id=str(uuid.uuid4()),
        created_at=at,
        inputs={},
        model_kind=kind,
        model_version="v1" if outcome == "ok" else None,
        predictions=[{"prdtypecode": code, "probability": 0.1} for code in ranking]
        if outcome == "ok"
        else [],
        top_prdtypecode=ranking[0] if outcome == "ok" else None,
        top_probability=0.9 if outcome == "ok" else None,
        suggestion_size=size if outcome == "ok" else None,
        latency_ms=latency,
        outcome=outcome,
        status_code=200 if outcome == "ok" else 422,
    )


def product(request_id: str, prdtypecode: int) -> Product:
    return Product(
        product_id=f"seller-{uuid.uuid4().hex}",
        designation="x",
        description="",
        prdtypecode=prdtypecode,
        source="seller",
        label_status="unverified",
        request_id=request_id,
    )


@pytest.fixture
def add(session_factory):
    def add(*rows):
        with session_factory() as session:
            session.add_all(rows)
            session.commit()
        return rows

    return add


def stats(client, token, **params):
    response = client.get("/stats", params={**WINDOW, **params}, headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


def test_stats_are_for_admins_only(client, seller_token):
    assert client.get("/stats").status_code == 401
    assert client.get("/stats", headers=bearer(seller_token)).status_code == 403


def test_requests_are_counted_per_model_kind_and_time_bucket(client, admin_token, add):
    at = lambda h, m: NOON.replace(hour=h, minute=m)  # noqa: E731
    add(
        log(at(8, 59)),  # before the window
        log(at(10, 5)),
        log(at(10, 20)),
        log(at(10, 30), "image"),
        log(at(11, 15), "fusion"),
        log(at(11, 40), None, outcome="invalid_input"),
        log(NOON),  # the window's end is excluded
    )
    body = stats(client, admin_token, bucket="hour")
    assert body["bucket_seconds"] == 3600
    assert body["requests"] == 5
    assert body["outcomes"] == {"ok": 4, "invalid_input": 1}
    points = {(p["bucket_start"][:16], p["series"]): p["count"] for p in body["traffic"]}
    assert points == {
        ("2026-11-27T10:00", "image"): 1,
        ("2026-11-27T10:00", "text"): 2,
        ("2026-11-27T11:00", "failed"): 1,
        ("2026-11-27T11:00", "fusion"): 1,
    }


def test_the_bucket_follows_the_window_unless_given(client, admin_token):
    default = client.get("/stats", headers=bearer(admin_token)).json()
    assert default["bucket"] == "hour"
    span = datetime.fromisoformat(default["until"]) - datetime.fromisoformat(default["since"])
    assert span == timedelta(days=1)
    assert stats(client, admin_token, since=(NOON - timedelta(minutes=30)).isoformat())["bucket"] == "minute"
    assert stats(client, admin_token, since=(NOON - timedelta(days=30)).isoformat())["bucket"] == "day"
    assert stats(client, admin_token, bucket="day")["bucket_seconds"] == 86400


def test_latency_percentiles_are_nearest_rank_per_model_kind(client, admin_token, add):
    start = NOON - timedelta(hours=2)
    add(*(log(start + timedelta(seconds=i), latency=float(ms)) for i, ms in enumerate(range(100, 0, -1))))
    add(*(log(start, "image", latency=ms) for ms in (30.0, 10.0, 20.0)))
    add(log(start, None, outcome="invalid_input", latency=5000.0))  # failures are not model latency
    latency = {row["model_kind"]: row for row in stats(client, admin_token)["latency"]}
    assert set(latency) == {"text", "image"}
    text = latency["text"]
    assert (text["count"], text["mean_ms"], text["max_ms"]) == (100, 50.5, 100.0)
    assert (text["p50_ms"], text["p90_ms"], text["p95_ms"], text["p99_ms"]) == (50.0, 90.0, 95.0, 99.0)
    image = latency["image"]
    assert (image["p50_ms"], image["p90_ms"], image["p99_ms"]) == (20.0, 30.0, 30.0)


def test_predicted_classes_are_counted_with_their_category_names(client, admin_token, add):
    at = NOON - timedelta(hours=1)
    add(
        log(at, ranking=(10,)),
        log(at, ranking=(2583,)),
        log(at, ranking=(2583, 10)),
        log(at, None, outcome="no_model"),
    )
    classes = stats(client, admin_token)["classes"]
    assert classes == [
        {"prdtypecode": 2583, "category": "Piscine et accessoires", "count": 2},
        {"prdtypecode": 10, "category": "Livres occasion", "count": 1},
    ]


def test_hit_rates_compare_confirmed_products_with_the_logged_ranking(client, admin_token, add):
    at = NOON - timedelta(hours=1)
    top_hit = log(at, ranking=(2583, 10, 40), size=2)
    in_set = log(at, ranking=(2583, 10, 40), size=2)
    outside = log(at, ranking=(2583, 10, 40), size=2)
    unknowable = log(at, ranking=(2583, 10), size=5)  # the set is longer than the logged top_k
    changed_mind = log(at, "image", ranking=(50, 60), size=1)
    never_confirmed = log(at, ranking=(2583,))
    add(top_hit, in_set, outside, unknowable, changed_mind, never_confirmed)
    add(
        product(top_hit.request_id, 2583),
        product(in_set.request_id, 10),
        product(outside.request_id, 40),
        product(unknowable.request_id, 1140),
        # Confirmed 60, then 50: one product per prediction, updated to the latest choice.
        product(changed_mind.request_id, 50),
        product(str(uuid.uuid4()), 10),  # a product that answers no logged request
    )
    rates = {row["model_kind"]: row for row in stats(client, admin_token)["hit_rate"]}
    assert list(rates) == ["text", "image", "all"]
    text = rates["text"]
    counts = (text["confirmed"], text["top1_hits"], text["in_suggestions"], text["suggestions_unknown"])
    assert counts == (4, 1, 2, 1)
    assert text["top1_rate"] == 0.25
    assert text["suggestion_rate"] == round(2 / 3, 4)
    assert text["mean_suggestion_size"] == 2.75
    image = rates["image"]
    assert (image["confirmed"], image["top1_rate"], image["suggestion_rate"]) == (1, 1.0, 1.0)
    assert (rates["all"]["confirmed"], rates["all"]["top1_hits"], rates["all"]["in_suggestions"]) == (5, 2, 3)


def test_no_confirmation_means_no_hit_rate(client, admin_token, add):
    add(log(NOON - timedelta(hours=1)))
    assert stats(client, admin_token)["hit_rate"] == []


def test_times_with_an_offset_are_read_as_the_instant_they_name(client, admin_token, add):
    add(log(NOON.replace(hour=10, minute=30)))
    in_paris = {"since": "2026-11-27T12:00:00+02:00", "until": "2026-11-27T13:00:00+02:00"}  # 10:00-11:00 UTC
    assert stats(client, admin_token, **in_paris)["requests"] == 1
    naive = {"since": "2026-11-27T12:00:00", "until": "2026-11-27T13:00:00"}  # taken as UTC
    assert stats(client, admin_token, **naive)["requests"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"since": NOON.isoformat(), "until": (NOON - timedelta(hours=1)).isoformat()},
        {"since": (NOON - timedelta(days=200)).isoformat(), "until": NOON.isoformat(), "bucket": "minute"},
        {"bucket": "week"},
    ],
)
def test_impossible_windows_are_refused(client, admin_token, params):
    assert client.get("/stats", params=params, headers=bearer(admin_token)).status_code == 422
