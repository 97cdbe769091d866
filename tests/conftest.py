"""Shared fixtures: a fresh, migrated database per test (SQLite, or Postgres via TEST_DATABASE_URL)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from db import migrate
from db.session import make_engine, make_session_factory

# Tests build TensorFlow models on 2 cores: keep its thread pools small and quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _reset_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _backends() -> list[str]:
    # SQLite always; Postgres too when TEST_DATABASE_URL names one (as .ci/run does).
    return ["sqlite", "postgres"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"]


@pytest.fixture(params=_backends())
def database_url(request, tmp_path) -> str:
    """URL of an empty database migrated to head, on each configured backend."""
    if request.param == "postgres":
        url = os.environ["TEST_DATABASE_URL"]
        _reset_postgres(url)
    else:
        url = f"sqlite:///{tmp_path / 'test.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as s:
        yield s


@pytest.fixture(scope="session")
def quick_catalogue(tmp_path_factory) -> Path:
    """A small synthetic catalogue in the challenge layout (seed 0, generated once per session)."""
    from catalog.synthetic import generate_catalogue

    return generate_catalogue(tmp_path_factory.mktemp("train") / "catalogue", n_products=900, seed=0)


@pytest.fixture(scope="session")
def quick_bundle(tmp_path_factory, quick_catalogue: Path) -> Path:
    """A model bundle trained with --quick on the synthetic catalogue, once for the whole session
    (the API, model, UI and pipeline tests share it)."""
    from models.data import load_challenge_folder
    from models.training.train import train

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    return train([load_challenge_folder(quick_catalogue)], out, seed=0, quick=True)
