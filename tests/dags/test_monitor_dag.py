"""The monitoring DAG with `dag.test()`: a report for the run's window, and a retraining triggered on flags."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

pytest.importorskip("airflow.sdk", reason="needs the Airflow virtualenv: make test-airflow")

from tests.dags.conftest import DAGS_FOLDER

pytestmark = pytest.mark.airflow

LOGICAL_DATE = datetime(2025, 6, 10, 12, tzinfo=UTC)  # data interval 2025-06-09 02:00 -> 06-10 02:00
WINDOW_START = datetime(2025, 6, 9, 2, tzinfo=UTC)


@pytest.fixture
def drifting_window(session_factory, database_url, tmp_path, monkeypatch):
    """Products of three classes alike; a day of logs predicting almost only one of them."""
    from db.tables import PredictionLog, Product

    with session_factory() as session:
        for i in range(90):
            session.add(
                Product(product_id=f"p{i}", designation=f"Produit {i}", prdtypecode=(10, 1560, 2583)[i % 3])
            )
        for i in range(60):
            code = 10 if i < 55 else 1560
            session.add(
                PredictionLog(
                    request_id=str(uuid.uuid4()),
                    created_at=WINDOW_START + timedelta(minutes=10 * i),
                    inputs={"text_chars": 10, "has_image": False},
                    model_kind="text",
                    model_version="v1",
                    predictions=[{"prdtypecode": code, "probability": 0.9}],
                    top_prdtypecode=code,
                    top_probability=0.9,
                    outcome="ok",
                    status_code=200,
                )
            )
        session.commit()
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MODEL_STORE_URI", str(tmp_path / "registry"))
    monkeypatch.setenv("MONITOR_MIN_REQUESTS", "50")


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def run_monitor_dag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=DAGS_FOLDER).dags["rakuten_monitor"].test(logical_date=LOGICAL_DATE)


def states(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_the_report_covers_the_data_interval_and_the_trigger_waits_for_the_switch(
    airflow_db, drifting_window, session_factory
):
    from db.tables import MonitoringReport

    run = run_monitor_dag()

    assert str(run.state) == "success", states(run)
    assert states(run) == {"report": "success", "retrain_needed": "success", "trigger_retrain": "skipped"}
    with session_factory() as session:
        report = session.scalar(select(MonitoringReport))
    assert as_utc(report.window_start) == WINDOW_START
    assert as_utc(report.window_end) == WINDOW_START + timedelta(days=1)
    assert report.report["answered"] == 60
    assert report.flagged is True
    assert "prediction_drift" in {flag["code"] for flag in report.flags}


def test_a_flagged_report_triggers_a_retraining_when_switched_on(airflow_db, drifting_window, monkeypatch):
    from airflow.models.dagrun import DagRun

    monkeypatch.setenv("MONITOR_TRIGGER_RETRAIN", "true")

    run = run_monitor_dag()

    assert states(run)["trigger_retrain"] == "success", states(run)
    triggered = DagRun.find(dag_id="rakuten_retrain")
    assert triggered, "no rakuten_retrain run was created"
    assert triggered[-1].conf["reason"] == "monitoring flags"
    assert datetime.fromisoformat(triggered[-1].conf["interval_end"]) > LOGICAL_DATE
