"""`make run`'s first model (`pipelines.bootstrap`): from BOOTSTRAP_DATA when it is set, marked
with where it came from; nothing done when the store already serves a model."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from api.model_info import version_training_data
from config import Settings
from db.tables import Product
from pipelines.bootstrap import bootstrap
from store.model_store import open_model_store

pytestmark = pytest.mark.slow


def settings_for(database_url: str, tmp_path: Path, **extra) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        SECRET_KEY="test-secret-key-that-is-long-enough-0123456789",
        MODEL_STORE_URI=str(tmp_path / "model-store"),
        MODEL_CACHE_DIR=tmp_path / "model-cache",
        IMAGE_STORE_URI=str(tmp_path / "images"),
        LOG_SPILL_DIR=tmp_path / "spill",
        **extra,
    )


def test_a_folder_that_is_not_in_the_challenge_layout_is_refused_before_anything(tmp_path):
    settings = settings_for(f"sqlite:///{tmp_path / 'x.db'}", tmp_path, BOOTSTRAP_DATA=tmp_path)
    with pytest.raises(SystemExit, match="not a challenge-layout folder"):
        bootstrap(settings)
    assert not (tmp_path / "model-store").exists()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # one training is enough
def test_bootstrap_data_imports_the_folder_trains_and_marks_the_model(
    database_url, session_factory, tmp_path, quick_catalogue
):
    # Two epochs: what is tested is the import, the marking and the promotion, not the model.
    settings = settings_for(database_url, tmp_path, BOOTSTRAP_DATA=quick_catalogue, TRAIN_EPOCHS=2)
    version = bootstrap(settings)

    store = open_model_store(settings.MODEL_STORE_URI)
    assert version and store.production() == version
    with session_factory() as session:
        imported = session.scalar(select(func.count()).select_from(Product))
        sources = set(session.scalars(select(Product.source).distinct()))
    rows = sum(1 for _ in (quick_catalogue / "X_train_update.csv").open(encoding="utf-8")) - 1
    assert imported == rows and sources == {"challenge"}
    marked = version_training_data(store, version)
    assert marked["kind"] == "folder" and marked["demo"] is False
    assert marked["detail"] == str(quick_catalogue.resolve())

    assert bootstrap(settings) is None  # a second `make run` keeps what is served
    assert store.production() == version
