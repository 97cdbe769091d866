"""`python -m pipelines.registry` in a subprocess, over a folder store and a real S3 endpoint,
recording in a migrated database; and the model versions data access it relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from db.model_versions import (
    ModelVersionNotFoundError,
    get_production_version,
    list_model_versions,
    record_promotion,
    record_published,
    record_rejection,
)
from db.session import make_engine, make_session_factory
from db.tables import ModelVersion
from store.model_store import open_model_store
from tests.store.bundles import BROKEN_VERSIONS, make_servable_bundle, publish_broken
from tests.store.s3server import AWS_VARIABLES_TO_CLEAR, create_bucket, running_moto_server, s3_environment

REPO = Path(__file__).resolve().parents[2]
V1, V2, V3 = "v20261127-113005-ab12cd", "v20261204-090000-cd34ef", "v20261211-090000-ef56ab"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with running_moto_server() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Environment variables selecting the model store (a folder, or a fresh bucket on moto)."""
    if request.param == "local":
        return {"MODEL_STORE_URI": str(tmp_path / "model-store")}
    endpoint = request.getfixturevalue("moto_endpoint")
    return {"MODEL_STORE_URI": f"s3://{create_bucket(endpoint)}/registry", **s3_environment(endpoint)}


@pytest.fixture
def registry(database_url: str, store_env: dict[str, str], tmp_path: Path):
    """Run the CLI with the test's database and store; returns (exit code, stdout, stderr)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in AWS_VARIABLES_TO_CLEAR
    }
    env |= {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO), **store_env}
    workdir = tmp_path / "cwd"  # away from any .env in the repository
    workdir.mkdir()

    def run(*args: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.registry", *args],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode, done.stdout, done.stderr

    return run


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    """Three bundles the serving runtime loads (promotion verifies that it does)."""
    path = tmp_path / "bundles"
    path.mkdir()
    for version, day, f1 in ((V1, "2026-11-27", 0.80), (V2, "2026-12-04", 0.83), (V3, "2026-12-11", 0.85)):
        make_servable_bundle(path, version, created_at=f"{day}T09:00:00+00:00", weighted_f1=f1)
    return path


def db_statuses(database_url: str) -> dict[str, str]:
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        rows = {row.version: row.status for row in session.scalars(select(ModelVersion))}
    engine.dispose()
    return rows


def test_publish_promote_and_rollback_are_done_in_the_store_and_recorded(registry, bundles, database_url):
    for version in (V1, V2):
        code, out, err = registry("publish", str(bundles / version))
        assert code == 0, err
        assert f"published {version}" in out
    assert db_statuses(database_url) == {V1: "candidate", V2: "candidate"}

    assert registry("promote", V1)[0] == 0
    code, out, err = registry("promote", V2)
    assert code == 0, err
    assert f"promoted {V2}" in out
    assert db_statuses(database_url) == {V1: "retired", V2: "production"}

    code, out, err = registry("--json", "list")
    listing = json.loads(out)
    assert listing["production"] == V2
    assert [(v["version"], v["production"]) for v in listing["versions"]] == [(V1, False), (V2, True)]
    assert listing["versions"][1]["metrics"]["fusion"]["weighted_f1"] == pytest.approx(0.83)

    code, out, err = registry("rollback")
    assert code == 0, err
    assert f"rolled back production from {V2} to {V1}" in out
    assert db_statuses(database_url) == {V1: "production", V2: "retired"}

    code, out, err = registry("rollback")
    assert code == 5
    assert "nothing to roll back" in err


def test_the_published_row_keeps_location_and_full_metrics(registry, bundles, database_url, store_env):
    assert registry("publish", str(bundles / V1))[0] == 0

    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        (row,) = list_model_versions(session=session)
    engine.dispose()
    uri = store_env["MODEL_STORE_URI"]
    expected_root = uri if uri.startswith("s3://") else str(Path(uri).resolve())
    assert row.location == f"{expected_root}/versions/{V1}"
    assert row.metrics["fusion"]["per_class_recall"]["2583"] == pytest.approx(0.80)
    assert row.created_at.isoformat().startswith("2026-11-27T09:00:00")


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_list_and_show_print_readable_summaries(registry, bundles):
    assert "no versions published" in registry("list")[1]
    registry("publish", str(bundles / V1))
    registry("promote", V1)

    code, listing, _ = registry("list")
    assert code == 0
    assert f"* {V1}" in listing
    assert "fusion 0.800" in listing
    assert f"production: {V1}" in listing

    code, shown, _ = registry("show", V1)
    assert code == 0
    assert "(production)" in shown
    assert "text.keras" in shown
    assert "serving/fusion.onnx" in shown

    code, out, _ = registry("show", V1, "--json")
    assert json.loads(out)["files"][0]["sha256"]


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_errors_exit_non_zero_with_a_clear_message(registry, bundles, tmp_path, database_url):
    registry("publish", str(bundles / V1))

    code, _, err = registry("show", "v-unknown")
    assert (code, err.strip()) == (3, "error: no version v-unknown in " + str(tmp_path / "model-store"))

    code, _, err = registry("promote", "v-unknown")
    assert code == 3
    assert "no version v-unknown" in err

    code, _, err = registry("publish", str(bundles / V1))
    assert code == 5
    assert "already published" in err

    code, _, err = registry("publish", str(tmp_path / "missing"))
    assert code == 5
    assert "not a directory" in err

    code, out, _ = registry("--json", "rollback")
    assert code == 5
    assert json.loads(out)["error"] == "NothingToRollBackError"

    code, _, _ = registry("frobnicate")
    assert code == 2
    assert db_statuses(database_url) == {V1: "candidate"}


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_tampered_files_are_reported_and_never_promoted(registry, bundles, tmp_path, database_url):
    registry("publish", str(bundles / V1))
    (tmp_path / "model-store" / "versions" / V1 / "text.keras").write_bytes(b"not the published weights")

    code, _, err = registry("verify", V1)
    assert code == 4
    assert "text.keras" in err

    code, _, err = registry("promote", V1)
    assert code == 4
    assert "text.keras" in err
    assert db_statuses(database_url) == {V1: "candidate"}
    assert "nothing promoted yet" in registry("history")[1]


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_promoting_a_version_published_without_the_cli_records_it_first(
    registry, bundles, tmp_path, database_url
):
    open_model_store(tmp_path / "model-store").publish(bundles / V3)  # e.g. by the retraining DAG

    code, _, err = registry("promote", V3)

    assert code == 0, err
    assert db_statuses(database_url) == {V3: "production"}


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_a_store_change_whose_database_record_fails_says_so(registry, bundles, database_url):
    from db import migrate

    migrate.downgrade(database_url, "base")

    code, _, err = registry("publish", str(bundles / V1))

    assert code == 1
    assert "publish done in the store" in err
    assert registry("--json", "list")[0] == 0


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
@pytest.mark.parametrize("how", BROKEN_VERSIONS)
def test_a_version_that_cannot_be_served_is_never_promoted(registry, bundles, tmp_path, database_url, how):
    assert registry("publish", str(bundles / V1))[0] == 0
    assert registry("promote", V1)[0] == 0
    publish_broken(open_model_store(tmp_path / "model-store"), tmp_path, V2, how)
    expected_code = 4 if how in ("tampered", "missing file") else 7

    code, _, err = registry("promote", V2)

    assert code == expected_code, err
    assert err.startswith("error: ") and BROKEN_VERSIONS[how] in err
    assert registry("verify", V2)[0] == expected_code
    assert open_model_store(tmp_path / "model-store").production() == V1
    assert db_statuses(database_url)[V1] == "production"
    assert db_statuses(database_url).get(V2) != "production"


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_a_rollback_to_a_version_that_no_longer_loads_is_refused(registry, bundles, tmp_path, database_url):
    for version in (V1, V2):
        registry("publish", str(bundles / version))
        assert registry("promote", version)[0] == 0
    (tmp_path / "model-store" / "versions" / V1 / "serving" / "text.onnx").write_bytes(b"rotted")

    code, _, err = registry("rollback")

    assert code == 4
    assert "serving/text.onnx" in err
    assert [line.split()[1] for line in registry("history")[1].splitlines()] == [V2, V1]
    assert db_statuses(database_url) == {V1: "retired", V2: "production"}


# -- the data access behind it -------------------------------------------------------------


def test_record_published_is_idempotent_and_never_changes_the_status(session):
    record_published(session=session, version=V1, location="s3://b/versions/v1", metrics={"a": 1})
    record_promotion(session=session, version=V1)

    again = record_published(session=session, version=V1, location="s3://b2/versions/v1", metrics={"a": 2})

    assert (again.status, again.location, again.metrics) == ("production", "s3://b2/versions/v1", {"a": 2})
    assert len(list_model_versions(session=session)) == 1


def test_record_promotion_retires_the_previous_production_version(session):
    for version in (V1, V2):
        record_published(session=session, version=version, location=f"/store/{version}", metrics={})
    record_promotion(session=session, version=V1)

    promoted = record_promotion(session=session, version=V2, gate={"promote": True, "reason": "better"})

    assert promoted.promoted_at is not None
    assert promoted.gate == {"promote": True, "reason": "better"}
    assert get_production_version(session=session).version == V2
    assert {v.version: v.status for v in list_model_versions(session=session)} == {
        V1: "retired",
        V2: "production",
    }


def test_record_rejection_keeps_the_gate_figures_but_refuses_the_production_version(session):
    for version in (V1, V2):
        record_published(session=session, version=version, location=f"/store/{version}", metrics={})
    record_promotion(session=session, version=V1)

    rejected = record_rejection(session=session, version=V2, gate={"promote": False, "reason": "worse"})

    assert (rejected.status, rejected.gate["reason"]) == ("rejected", "worse")
    with pytest.raises(ValueError, match="in production"):
        record_rejection(session=session, version=V1, gate={"promote": False})
    assert get_production_version(session=session).version == V1


def test_unrecorded_versions_cannot_be_promoted_or_rejected(session):
    with pytest.raises(ModelVersionNotFoundError):
        record_promotion(session=session, version=V1)
    with pytest.raises(ModelVersionNotFoundError):
        record_rejection(session=session, version=V1, gate={})
