"""Monitoring: hit rates, confidence and drift on seeded prediction logs with known answers; the admin endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from config import Settings
from db.tables import MonitoringReport, PredictionLog, Product
from pipelines.monitor import (
    LogRow,
    Reference,
    Report,
    Thresholds,
    build_report,
    bundle_class_shares,
    confidence_histogram,
    hit_rates,
    monitor_window,
    psi,
    set_coverage,
    shares,
    store_report,
    text_length_bin,
)
from tests.api.conftest import ADMIN, SELLER, bearer, login

START = datetime(2025, 6, 9, 2, tzinfo=UTC)
END = START + timedelta(days=1)
CODES = (10, 1560, 2583)


def test_psi_of_identical_distributions_is_zero_and_of_a_shifted_one_is_large():
    training = shares({10: 100, 1560: 100, 2583: 100})

    assert psi(training, shares({10: 50, 1560: 50, 2583: 50})) == pytest.approx(0.0, abs=1e-12)
    assert psi(training, shares({10: 36, 1560: 33, 2583: 31})) < 0.01
    shifted = psi(training, shares({10: 80, 1560: 15, 2583: 5}))
    # (0.8 - 1/3) ln(2.4) + (0.15 - 1/3) ln(0.45) + (0.05 - 1/3) ln(0.15) = 0.4086 + 0.1464 + 0.5375
    assert shifted == pytest.approx(1.0925, abs=1e-3)
    assert shifted > Thresholds().max_class_psi
    # A class never seen in training does not make it infinite.
    assert 0 < psi(training, shares({10: 1, 1560: 1, 2583: 1, 40: 3})) < 10


def test_hit_rates_count_only_confirmed_requests():
    logs = [
        LogRow("r1", "ok", top_prdtypecode=10, predicted=(10, 1560, 2583)),  # top-1 hit
        LogRow("r2", "ok", top_prdtypecode=10, predicted=(10, 1560, 2583)),  # top-3 hit only
        LogRow("r3", "ok", top_prdtypecode=10, predicted=(10, 1560, 2583)),  # miss
        LogRow("r4", "ok", top_prdtypecode=1560, predicted=(1560, 10)),  # top-1 hit
        LogRow("r5", "ok", top_prdtypecode=1560, predicted=(1560, 10)),  # not confirmed
    ]
    confirmed = {"r1": 10, "r2": 2583, "r3": 40, "r4": 1560, "nobody": 10}

    rates = hit_rates(logs, confirmed, k=3)

    assert rates == {"confirmed": 4, "top1_hit_rate": 0.5, "topk_hit_rate": 0.75, "k": 3}
    assert hit_rates(logs, confirmed, k=1)["topk_hit_rate"] == 0.5
    assert hit_rates(logs, {}, k=3)["top1_hit_rate"] is None


def test_the_training_class_mix_is_read_from_the_bundle_metadata_when_it_has_one():
    metadata = {"version": "v1", "train_class_distribution": {"10": 30, "1560": 10}}

    assert bundle_class_shares(metadata) == {"10": 0.75, "1560": 0.25}
    assert bundle_class_shares({"version": "v1"}) is None


def test_confidence_histogram_and_text_length_bins():
    assert confidence_histogram([0.05, 0.15, 0.95, 1.0, 0.999]) == {
        "0.0-0.1": 1,
        "0.1-0.2": 1,
        **{f"{i / 10:.1f}-{(i + 1) / 10:.1f}": 0 for i in range(2, 9)},
        "0.9-1.0": 3,
    }
    assert [text_length_bin(n) for n in (0, 1, 49, 50, 999, 2000, 10_000)] == [
        "0",
        "1-49",
        "1-49",
        "50-99",
        "500-999",
        "2000+",
        "2000+",
    ]


def reference() -> Reference:
    return Reference(
        class_shares=shares({c: 1 for c in CODES}),
        text_length_shares={"1-49": 1.0},
        image_share=0.5,
        text_chars_mean=20.0,
        source="test",
    )


def logs_like(
    codes: list[int], *, has_image=lambda i: i % 2 == 0, text_chars: int = 20, p: float = 0.9
) -> list[LogRow]:
    return [
        LogRow(
            f"r{i}",
            "ok",
            model_kind="fusion",
            model_version="v1",
            top_prdtypecode=code,
            top_probability=p,
            predicted=(code, *[c for c in CODES if c != code]),
            text_chars=text_chars,
            has_image=has_image(i),
        )
        for i, code in enumerate(codes)
    ]


def test_a_window_like_training_raises_no_flag():
    logs = logs_like([CODES[i % 3] for i in range(90)])
    confirmed = {log.request_id: log.top_prdtypecode for log in logs[:30]}

    report = build_report(logs, confirmed, reference(), Thresholds(min_requests=50, min_confirmed=20))

    assert report.flags == []
    assert report.figures["drift"]["class_psi"] == pytest.approx(0.0, abs=1e-9)
    assert report.figures["live_accuracy"]["top1_hit_rate"] == 1.0
    assert report.figures["confidence"]["mean"] == pytest.approx(0.9)
    assert report.figures["inputs"]["image_share"] == 0.5


def test_a_shifted_window_is_flagged_on_every_drifting_figure():
    logs = logs_like([10] * 80 + [1560] * 15 + [2583] * 5, has_image=lambda i: True, text_chars=700, p=0.3)
    confirmed = {log.request_id: 40 for log in logs[:40]}  # sellers chose a category never suggested

    report = build_report(logs, confirmed, reference(), Thresholds(min_requests=50, min_confirmed=20))

    codes = {f.code for f in report.flags}
    assert codes == {
        "prediction_drift",
        "text_length_drift",
        "image_share_drift",
        "low_confidence",
        "low_top1_hit_rate",
        "low_topk_hit_rate",
    }
    drift = next(f for f in report.flags if f.code == "prediction_drift")
    assert drift.value == pytest.approx(1.0925, abs=1e-3)
    assert report.figures["live_accuracy"]["top1_hit_rate"] == 0.0


def shown(codes: list[int], size: int) -> list[LogRow]:
    """Answered requests that showed a suggestion set of `size` codes (the ranking's prefix)."""
    return [
        LogRow(
            f"r{i}",
            "ok",
            top_prdtypecode=c,
            predicted=(c, *[x for x in CODES if x != c]),
            suggestion_size=size,
        )
        for i, c in enumerate(codes)
    ]


def test_set_coverage_counts_a_confirmed_category_inside_the_shown_set_and_leaves_unknowns_out():
    logs = shown([10, 10, 10, 10], size=2)
    logs.append(LogRow("long", "ok", top_prdtypecode=10, predicted=(10, 1560), suggestion_size=5))
    # r0 top-1, r1 second (in a 2-set), r2 third (outside), r3 unconfirmed; "long": not in the
    # logged ranking but the set was longer than it: unknown.
    confirmed = {"r0": 10, "r1": 1560, "r2": 2583, "long": 40}

    coverage = set_coverage(logs, confirmed, promised=0.95, z=2.0)

    assert (coverage["judged"], coverage["covered"], coverage["unknown"]) == (3, 2, 1)
    assert coverage["coverage"] == pytest.approx(2 / 3)
    assert coverage["floor"] == pytest.approx(0.95 - 2 * (0.95 * 0.05 / 3) ** 0.5)


def test_coverage_a_little_under_the_promise_is_sampling_error_and_far_under_it_is_flagged():
    thresholds = Thresholds(min_requests=1000, min_confirmed=20)
    logs = shown([CODES[i % 3] for i in range(100)], size=1)
    # 93 of 100 in the set: under 95%, but within two standard errors (floor 90.6%).
    near = {log.request_id: log.top_prdtypecode if i < 93 else 40 for i, log in enumerate(logs)}
    # 80 of 100: far under.
    far = {log.request_id: log.top_prdtypecode if i < 80 else 40 for i, log in enumerate(logs)}

    near_report = build_report(logs, near, reference(), thresholds)
    far_report = build_report(logs, far, reference(), thresholds)

    assert "low_set_coverage" not in {f.code for f in near_report.flags}
    assert near_report.figures["set_coverage"]["coverage"] == pytest.approx(0.93)
    flag = next(f for f in far_report.flags if f.code == "low_set_coverage")
    assert flag.value == pytest.approx(0.80) and flag.threshold == pytest.approx(0.95 - 2 * 0.0218, abs=1e-3)


def test_coverage_of_few_confirmations_is_reported_but_not_judged():
    logs = shown([10] * 10, size=1)

    report = build_report(
        logs, {log.request_id: 40 for log in logs}, reference(), Thresholds(min_confirmed=20)
    )

    assert report.figures["set_coverage"]["coverage"] == 0.0
    assert "low_set_coverage" not in {f.code for f in report.flags}
    assert "not judged" in report.figures["set_coverage"]["note"]


def test_too_little_traffic_is_reported_but_not_judged():
    logs = logs_like([10] * 10)

    report = build_report(logs, {}, reference(), Thresholds(min_requests=50, min_confirmed=20))

    assert report.flags == []
    assert report.figures["drift"]["judged"] is False
    assert report.figures["live_accuracy"]["judged"] is False


# -- against the database ----------------------------------------------------------------------


def as_utc(moment: datetime) -> datetime:
    """SQLite gives naive UTC datetimes back, Postgres aware ones."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def seed_products(session, *, n: int = 90) -> None:
    """Training products: three classes alike, short titles, every other one with an image."""
    for i in range(n):
        session.add(
            Product(
                product_id=f"train-{i}",
                designation=f"Produit numéro {i}",
                prdtypecode=CODES[i % 3],
                image_ref=f"products/aa/{i:064d}.jpg" if i % 2 == 0 else None,
                label_status="verified",
            )
        )


def seed_logs(session, codes: list[int], *, at: datetime, confirm: dict[int, int] | None = None) -> None:
    for i, code in enumerate(codes):
        request_id = str(uuid.uuid4())
        session.add(
            PredictionLog(
                request_id=request_id,
                created_at=at + timedelta(minutes=i),
                inputs={"text_chars": 17, "has_image": i % 2 == 0},
                model_kind="fusion",
                model_version="v1",
                predictions=[{"prdtypecode": code, "probability": 0.8}]
                + [{"prdtypecode": c, "probability": 0.1} for c in CODES if c != code],
                top_prdtypecode=code,
                top_probability=0.8,
                suggestion_size=2,
                latency_ms=12.0,
                outcome="ok",
                status_code=200,
            )
        )
        if confirm and i in confirm:
            session.add(
                Product(
                    product_id=f"confirmed-{request_id[:8]}",
                    designation=f"Produit confirmé {i}",
                    prdtypecode=confirm[i],
                    request_id=request_id,
                    source="seller",
                )
            )
    session.add(  # a failed request counts as traffic, not as an answer
        PredictionLog(request_id=str(uuid.uuid4()), created_at=at, outcome="invalid_input", status_code=422)
    )


@pytest.fixture
def monitor_settings(database_url, tmp_path) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        MODEL_STORE_URI=str(tmp_path / "model-store"),
        MONITOR_MIN_REQUESTS=50,
        MONITOR_MIN_CONFIRMED=20,
    )


def test_monitor_window_stores_a_report_from_the_logs_and_confirmed_products(
    session_factory, monitor_settings
):
    with session_factory() as session:
        seed_products(session)
        codes = [CODES[i % 3] for i in range(60)]
        # 30 confirmed: 24 as predicted, 6 as another class that was second in the ranking.
        confirm = {i: codes[i] if i < 24 else next(c for c in CODES if c != codes[i]) for i in range(30)}
        seed_logs(session, codes, at=START + timedelta(hours=1), confirm=confirm)
        seed_logs(session, [10] * 40, at=START - timedelta(hours=5))  # the day before: not in the window
        session.commit()

    summary = monitor_window(monitor_settings, START, END)

    with session_factory() as session:
        row = session.scalar(select(MonitoringReport))
    assert summary["report_id"] == row.id
    assert as_utc(row.window_start) == START and as_utc(row.window_end) == END
    assert row.model_version == "v1"
    figures = row.report
    assert figures["requests"] == 61 and figures["answered"] == 60
    assert figures["outcomes"] == {"invalid_input": 1, "ok": 60}
    assert figures["live_accuracy"]["confirmed"] == 30
    assert figures["live_accuracy"]["top1_hit_rate"] == pytest.approx(24 / 30)
    assert figures["live_accuracy"]["topk_hit_rate"] == pytest.approx(1.0)
    # The 6 confirmed as the second-ranked class were in the two-code suggestion set shown.
    assert figures["set_coverage"]["judged"] == 30 and figures["set_coverage"]["coverage"] == 1.0
    assert figures["drift"]["class_psi"] < 0.01  # confirmed products barely move the training mix
    assert figures["previous_window"]["requests"] == 40
    assert figures["previous_window"]["class_psi"] > 1  # the day before predicted only class 10
    assert row.flags == [] and row.flagged is False


def test_a_drifting_window_is_flagged_and_a_rerun_replaces_its_report(session_factory, monitor_settings):
    with session_factory() as session:
        seed_products(session)
        seed_logs(session, [10] * 55 + [1560] * 5, at=START + timedelta(hours=1))
        session.commit()

    first = monitor_window(monitor_settings, START, END)
    again = monitor_window(monitor_settings, START, END)

    assert first["flagged"] is True
    assert "prediction_drift" in first["flags"]
    with session_factory() as session:
        rows = list(session.scalars(select(MonitoringReport)))
    assert len(rows) == 1 and rows[0].id == again["report_id"]
    flag = next(f for f in rows[0].flags if f["code"] == "prediction_drift")
    assert flag["value"] > flag["threshold"] == monitor_settings.MONITOR_MAX_CLASS_PSI


# -- the admin endpoint ---------------------------------------------------------------------------


@pytest.fixture
def client(database_url, tmp_path) -> Iterator[TestClient]:
    from api.main import create_app

    settings = Settings(
        DATABASE_URL=database_url,
        SECRET_KEY="test-secret-key-that-is-long-enough-0123456789",
        FIRST_ADMIN_USERNAME=ADMIN[0],
        FIRST_ADMIN_PASSWORD=ADMIN[1],
        MODEL_STORE_URI=str(tmp_path / "model-store"),
        MODEL_CACHE_DIR=tmp_path / "model-cache",
        IMAGE_STORE_URI=str(tmp_path / "images"),
        MODEL_POLL_SECONDS=0,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_admins_read_the_reports_latest_first_and_sellers_are_refused(client, session_factory):
    admin = bearer(login(client, *ADMIN))
    assert client.get("/monitoring/reports/latest", headers=admin).status_code == 404
    with session_factory() as session:
        for day in range(3):
            report = Report({"answered": day}, [])
            start = START + timedelta(days=day)
            store_report(
                session=session, start=start, end=start + timedelta(days=1), model_version="v1", report=report
            )

    page = client.get("/monitoring/reports", params={"limit": 2}, headers=admin)
    latest = client.get("/monitoring/reports/latest", headers=admin)
    rest = client.get("/monitoring/reports", params={"offset": 2}, headers=admin)

    assert page.status_code == 200
    body = page.json()
    assert body["total"] == 3 and body["limit"] == 2
    assert [item["report"]["answered"] for item in body["items"]] == [2, 1]
    assert latest.status_code == 200 and latest.json()["report"]["answered"] == 2
    assert [item["report"]["answered"] for item in rest.json()["items"]] == [0]

    client.post("/register", json={"username": SELLER[0], "password": SELLER[1]}, headers=admin)
    seller = bearer(login(client, *SELLER))
    assert client.get("/monitoring/reports", headers=seller).status_code == 403
    assert client.get("/monitoring/reports/latest", headers=seller).status_code == 403
    assert client.get("/monitoring/reports").status_code == 401
