"""The retraining DAG end to end with `dag.test()`: SQLite product database, moto S3 stores, in-process training.

The first run trains on a synthetic catalogue and, the model store being empty, publishes and
promotes its candidate. Then the labels of the training split are shuffled in the products
table (the held-out products keep theirs), as a bad batch of seller labels would: the second
run trains a genuinely worse model, which the gate refuses; it is published and recorded as
rejected with the gate's figures while production stays where it was.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

pytest.importorskip("airflow.sdk", reason="needs the Airflow virtualenv: make test-airflow")

from tests.dags.conftest import DAGS_FOLDER

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
logger = logging.getLogger(__name__)

N_PRODUCTS = 600
FIRST_RUN = datetime(2025, 6, 10, 12, tzinfo=UTC)  # data interval 2025-06-02 03:00 -> 06-09 03:00
SECOND_RUN = FIRST_RUN + timedelta(weeks=1)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """A migrated product database holding a synthetic catalogue, stores on a moto S3 server."""
    from catalog.importer import import_folder
    from catalog.synthetic import generate_catalogue
    from config import Settings
    from db import migrate
    from db.session import make_engine, make_session_factory
    from store.blob import open_blob_store
    from tests.store.s3server import (
        AWS_VARIABLES_TO_CLEAR,
        closed_port_url,
        create_bucket,
        running_moto_server,
        s3_environment,
    )

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    tmp = tmp_path_factory.mktemp("pipeline")
    database_url = f"sqlite:///{tmp / 'app.db'}"
    migrate.upgrade(database_url)
    with running_moto_server() as endpoint, pytest.MonkeyPatch.context() as env:
        for name in AWS_VARIABLES_TO_CLEAR:
            env.delenv(name, raising=False)
        for name, value in s3_environment(endpoint).items():
            env.setenv(name, value)
        bucket = create_bucket(endpoint)
        project = {
            "DATABASE_URL": database_url,
            "IMAGE_STORE_URI": f"s3://{bucket}/images",
            "MODEL_STORE_URI": f"s3://{bucket}/registry",
            "DATA_STORE_URI": f"s3://{bucket}/datasets",
            "TRAIN_MODE": "inprocess",
            "TRAIN_QUICK": "true",
            "TRAIN_EPOCHS": "3",  # a real model, not a good one: the gate's comparison is tested
            "MIN_TRAINING_ROWS": "300",
            "EVAL_FRACTION": "0.25",
            # Nobody listens there: the reload step must warn and succeed.
            "API_URL": closed_port_url(),
            "API_TIMEOUT_SECONDS": "2",
            "MODEL_CACHE_DIR": str(tmp / "model-cache"),
        }
        for name, value in project.items():
            env.setenv(name, value)
        catalogue = generate_catalogue(tmp / "catalogue", n_products=N_PRODUCTS, seed=11)
        engine = make_engine(database_url)
        session_factory = make_session_factory(engine)
        import_folder(
            catalogue,
            session_factory=session_factory,
            image_store=open_blob_store(project["IMAGE_STORE_URI"]),
            source="synthetic",
            progress=False,
        )
        try:
            yield SimpleNamespace(settings=Settings(), session_factory=session_factory)
        finally:
            engine.dispose()


def run_dag(logical_date: datetime):  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=DAGS_FOLDER).dags["rakuten_retrain"]
    for task in dag.tasks:  # a failure must fail the test now, not wait for a retry 10 minutes later
        task.retries = 0
    started = time.perf_counter()
    run = dag.test(logical_date=logical_date)
    return run, time.perf_counter() - started


def task_states(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def xcom(run, task_id: str):  # type: ignore[no-untyped-def]
    ti = next(ti for ti in run.get_task_instances() if ti.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id)


def model_rows(session_factory) -> dict[str, object]:
    from db.tables import ModelVersion

    with session_factory() as session:
        return {row.version: row for row in session.scalars(select(ModelVersion))}


@pytest.fixture(scope="module")
def first_run(pipeline, airflow_db):  # type: ignore[no-untyped-def]
    run, seconds = run_dag(FIRST_RUN)
    logger.warning("first retraining run: %.1f s, tasks %s", seconds, task_states(run))
    return run


def test_the_first_run_publishes_and_promotes_its_candidate(pipeline, first_run):
    from store.blob import open_blob_store
    from store.model_store import open_model_store

    assert str(first_run.state) == "success", task_states(first_run)
    published = xcom(first_run, "publish")
    version = published["version"]
    store = open_model_store(pipeline.settings.MODEL_STORE_URI)
    assert published["promoted"] is True
    assert store.production() == version
    assert store.production_pointer().current.action == "promote"

    row = model_rows(pipeline.session_factory)[version]
    assert row.status == "production" and row.promoted_at is not None
    assert row.location == store.location(version)
    assert row.gate["promote"] is True
    assert row.gate["production_version"] is None
    assert row.gate["candidate_score"] > 0.2  # a real model: far above chance (1/27)

    snapshot = xcom(first_run, "snapshot")
    assert snapshot["uri"].endswith("/snapshots/20250602T030000Z_20250609T030000Z")
    assert snapshot["rows"] >= pipeline.settings.MIN_TRAINING_ROWS
    data = open_blob_store(pipeline.settings.DATA_STORE_URI)
    run_files = set(data.list("runs/20250602T030000Z_20250609T030000Z/"))
    assert {"evaluation.json", "gate.json", "candidate.json"} <= {key.split("/", 2)[2] for key in run_files}
    reload = xcom(first_run, "reload_api")
    assert reload["reloaded"] is False and "unreachable" in reload["detail"]
    logger.warning("promote run gate: %s", {k: row.gate[k] for k in ("reason", "candidate_score")})


def test_a_worse_candidate_is_published_but_refused_and_production_stays(pipeline, first_run):
    from db.tables import Product
    from pipelines.snapshot import is_evaluation
    from store.model_store import open_model_store

    production = xcom(first_run, "publish")["version"]
    store = open_model_store(pipeline.settings.MODEL_STORE_URI)
    history_before = store.history()
    rng = random.Random(0)
    with pipeline.session_factory() as session:
        train_rows = [
            p
            for p in session.scalars(select(Product).where(Product.label_status != "quarantined"))
            if not is_evaluation(p.product_id, pipeline.settings.EVAL_FRACTION)
        ]
        labels = [p.prdtypecode for p in train_rows]
        rng.shuffle(labels)
        for product, label in zip(train_rows, labels, strict=True):
            product.prdtypecode = label
        session.commit()

    run, seconds = run_dag(SECOND_RUN)
    logger.warning("second retraining run: %.1f s, tasks %s", seconds, task_states(run))

    assert str(run.state) == "success", task_states(run)
    published = xcom(run, "publish")
    candidate = published["version"]
    assert candidate != production
    assert published["promoted"] is False
    assert store.production() == production
    assert [p.version for p in store.history()] == [p.version for p in history_before]
    assert store.exists(candidate)  # published (immutable, inspectable), just not promoted

    rows = model_rows(pipeline.session_factory)
    assert rows[production].status == "production"
    gate = rows[candidate].gate
    assert rows[candidate].status == "rejected"
    assert gate["promote"] is False
    assert gate["production_version"] == production
    assert gate["candidate_score"] < gate["production_score"] - 0.1
    assert gate["improvement"] < 0 and gate["reason"]
    assert {k["kind"] for k in gate["kinds"]} and all(k["n"] > 0 for k in gate["kinds"])
    # The losses are judged against sampling noise: paired counts of the held-out products.
    assert all(k["p_worse"] is not None for k in gate["kinds"])
    assert min(k["p_worse"] for k in gate["kinds"]) < 0.05
    assert xcom(run, "reload_api") == {"reloaded": False, "detail": "nothing promoted"}
    logger.warning(
        "refuse run gate: %s",
        {k: gate[k] for k in ("reason", "candidate_score", "production_score", "improvement", "kinds")},
    )


def test_too_few_usable_products_fail_the_run_at_validation_without_retrying(
    pipeline, first_run, monkeypatch
):
    from store.model_store import open_model_store

    monkeypatch.setenv("MIN_TRAINING_ROWS", "100000")
    production = open_model_store(pipeline.settings.MODEL_STORE_URI).production()

    run, seconds = run_dag(SECOND_RUN + timedelta(weeks=1))

    states = task_states(run)
    assert str(run.state) == "failed"
    assert states["validate"] == "failed"
    assert {states[t] for t in ("snapshot", "train", "publish")} == {"upstream_failed"}
    ti = next(ti for ti in run.get_task_instances() if ti.task_id == "validate")
    assert ti.try_number == 1  # AirflowFailException: no retry can add products
    assert seconds < 120
    assert open_model_store(pipeline.settings.MODEL_STORE_URI).production() == production
