"""The one promotion path (`pipelines.registry_ops`): a version that cannot be served is refused
before the pointer moves, whether an admin, the CLI or the retraining pipeline asks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from db.model_versions import get_model_version
from pipelines import retrain
from pipelines.registry_ops import (
    promote_version,
    publish_bundle,
    rollback_production,
    verify_servable,
)
from store.model_store import (
    ChecksumMismatchError,
    ModelStore,
    ModelStoreError,
    UnservableVersionError,
    open_model_store,
)
from tests.store.bundles import BROKEN_VERSIONS, make_servable_bundle, publish_broken

V1, V2 = "v20261127-113005-ab12cd", "v20261204-090000-cd34ef"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return open_model_store(tmp_path / "model-store")


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    path = tmp_path / "bundles"
    path.mkdir()
    return path


@pytest.fixture
def in_production(store: ModelStore, bundles: Path, session_factory: sessionmaker[Session]) -> str:
    """V1, servable, published and promoted through the one path."""
    publish_bundle(store, session_factory, make_servable_bundle(bundles, V1))
    promote_version(store, session_factory, V1)
    return V1


def status_of(session_factory: sessionmaker[Session], version: str) -> str | None:
    with session_factory() as session:
        row = get_model_version(session=session, version=version)
        return row.status if row else None


def test_a_servable_version_is_verified_promoted_and_recorded(store, session_factory, in_production):
    assert verify_servable(store, in_production).version == in_production
    assert store.production() == in_production
    assert status_of(session_factory, in_production) == "production"


@pytest.mark.parametrize("how", BROKEN_VERSIONS)
def test_a_version_that_cannot_be_served_is_refused_and_production_stays(
    how, store, bundles, session_factory, in_production
):
    publish_broken(store, bundles, V2, how)

    with pytest.raises(
        (ChecksumMismatchError, UnservableVersionError), match=re.escape(BROKEN_VERSIONS[how])
    ):
        promote_version(store, session_factory, V2)

    assert [p.version for p in store.history()] == [V1]
    assert status_of(session_factory, V1) == "production"
    assert status_of(session_factory, V2) != "production"


def test_a_refusal_names_the_version_and_never_a_scratch_directory(store, bundles, session_factory):
    publish_broken(store, bundles, V2, "corrupt onnx")

    with pytest.raises(UnservableVersionError) as refused:
        verify_servable(store, V2)

    assert str(refused.value).startswith(f"version {V2} cannot be served: <bundle>/{V2}: ")
    assert "verify-" not in str(refused.value)


def test_a_rollback_to_a_version_broken_since_its_promotion_is_refused(
    store, bundles, session_factory, in_production
):
    publish_bundle(store, session_factory, make_servable_bundle(bundles, V2))
    promote_version(store, session_factory, V2)
    store.blobs.put(f"versions/{V1}/serving/text.onnx", b"rotted")

    with pytest.raises(ChecksumMismatchError, match=re.escape("serving/text.onnx")):
        rollback_production(store, session_factory)

    assert [p.version for p in store.history()] == [V2, V1]
    assert status_of(session_factory, V2) == "production"


def test_the_pipelines_promotion_step_fails_and_records_why_when_the_candidate_cannot_be_served(
    tmp_path, bundles, database_url, session_factory, store, in_production
):
    settings = Settings(
        DATABASE_URL=database_url,
        MODEL_STORE_URI=str(tmp_path / "model-store"),
        DATA_STORE_URI=str(tmp_path / "datasets"),
    )
    candidate = make_servable_bundle(bundles, V2)
    (candidate / "serving" / "image.onnx").write_bytes(b"not a model")
    # The training step's publication: in the store, unpromoted.
    store.publish(candidate)
    gate = {"promote": True, "reason": "better", "production_version": V1}

    with pytest.raises(ModelStoreError, match=f"version {V2} cannot be served"):
        retrain.publish_step(settings, {"version": V2, "location": store.location(V2)}, gate)

    assert store.production() == V1
    with session_factory() as session:
        row = get_model_version(session=session, version=V2)
    assert row.status == "rejected"
    assert row.gate["reason"].startswith("refused at promotion: ")
