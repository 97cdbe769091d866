"""Shared fixtures: a fresh, migrated database per test (SQLite, or Postgres via TEST_DATABASE_URL).

`make test` runs the suite in two processes (pytest-xdist, a test file per process at a time).
Each process gets a Postgres database of its own, made from TEST_DATABASE_URL's name and the
worker's id (`pytest_configure`), so that resetting it between tests never drops the other
process's tables; the quick catalogue and bundle are built once for both (`_built_once`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from db import migrate
from db.session import make_engine, make_session_factory

# Tests build TensorFlow models on 2 cores: keep its thread pools small and quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _admin_execute(url: str, *statements: str) -> None:
    """Run statements outside a transaction on the server's `postgres` database (CREATE DATABASE)."""
    engine = make_engine(make_url(url).set(database="postgres").render_as_string(hide_password=False))
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def _worker_database(url: str, worker: str) -> str:
    """TEST_DATABASE_URL with a database of this worker's own, created empty."""
    server = make_url(url)
    name = f"{server.database}_{worker}"
    _admin_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    return server.set(database=name).render_as_string(hide_password=False)


_WORKER_DATABASE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    # Set before any test reads it: the fixtures below, and tests/deploy's processes.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    url = os.environ.get("TEST_DATABASE_URL")
    if worker and url and url.startswith("postgresql"):
        os.environ["TEST_DATABASE_URL"] = _worker_database(url, worker)
        config.stash[_WORKER_DATABASE] = os.environ["TEST_DATABASE_URL"]


def pytest_unconfigure(config: pytest.Config) -> None:
    url = config.stash.get(_WORKER_DATABASE, None)
    if url:
        _admin_execute(url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Held by one test process at a time (pytest-xdist's workers): an `fcntl` lock on the file."""
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """`build(folder)` run once for the whole session, whichever worker asks first; the others wait.

    The folder is in the session's temporary root, which pytest-xdist's workers share (each
    worker's own base is a folder inside it).
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = root / name, root / f"{name}.done"
    with exclusive(root / f"{name}.lock"):
        if not done.exists():
            done.write_text(str(build(folder)), encoding="utf-8")
    return Path(done.read_text(encoding="utf-8"))


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

    return _built_once(
        tmp_path_factory,
        "quick-catalogue",
        lambda folder: generate_catalogue(folder / "catalogue", n_products=900, seed=0),
    )


@pytest.fixture(scope="session")
def quick_bundle(tmp_path_factory, quick_catalogue: Path) -> Path:
    """A model bundle trained with --quick on the synthetic catalogue, once for the whole session
    and both workers (the API, model, UI and pipeline tests share it)."""
    from models.data import load_challenge_folder
    from models.training.train import train

    return _built_once(
        tmp_path_factory,
        "quick-bundle",
        lambda folder: train([load_challenge_folder(quick_catalogue)], folder / "bundle", seed=0, quick=True),
    )
