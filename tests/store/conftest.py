"""Store fixtures: every store test runs against a local folder AND a real S3 HTTP endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store.blob import BlobStore, LocalBlobStore, open_blob_store
from store.model_store import ModelStore
from tests.store.s3server import AWS_VARIABLES_TO_CLEAR, create_bucket, running_moto_server, s3_environment


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server shared by the session (each test gets its own bucket)."""
    with running_moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_endpoint(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 at the moto server with fake credentials, for this test only."""
    for name in AWS_VARIABLES_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_environment(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    return moto_endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    return create_bucket(s3_endpoint)


@pytest.fixture(params=["local", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return open_blob_store(f"s3://{bucket}/registry")


@pytest.fixture
def model_store(blob_store: BlobStore) -> ModelStore:
    return ModelStore(blob_store)


@pytest.fixture
def bundles_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bundles"
    path.mkdir()
    return path
