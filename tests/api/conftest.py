"""API fixtures: an app on a fresh database, and tokens for an admin and a seller."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from config import Settings

ADMIN = ("admin", "admin-password-1")
SELLER = ("seller1", "seller-password-1")


def make_settings(database_url: str, tmp_path) -> Settings:
    """Settings of a test app: its own database, stores and log files under `tmp_path`."""
    return Settings(
        DATABASE_URL=database_url,
        SECRET_KEY="test-secret-key-that-is-long-enough-0123456789",
        FIRST_ADMIN_USERNAME=ADMIN[0],
        FIRST_ADMIN_PASSWORD=ADMIN[1],
        MODEL_STORE_URI=str(tmp_path / "model-store"),
        MODEL_CACHE_DIR=tmp_path / "model-cache",
        IMAGE_STORE_URI=str(tmp_path / "images"),
        MODEL_POLL_SECONDS=0,
        # Load-style tests send hundreds of predictions as one user; the limits have their own tests.
        RATE_LIMIT_PREDICT="100000/minute",
        RATE_LIMIT_PRODUCTS="100000/minute",
        LOG_SPILL_DIR=tmp_path / "prediction-logs",
    )


@pytest.fixture
def settings(database_url: str, tmp_path) -> Settings:
    return make_settings(database_url, tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


def login(client: TestClient, username: str, password: str) -> str:
    response = client.post("/login", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin_token(client: TestClient) -> str:
    return login(client, *ADMIN)


@pytest.fixture
def seller_token(client: TestClient, admin_token: str) -> str:
    response = client.post(
        "/register",
        json={"username": SELLER[0], "password": SELLER[1], "role": "seller"},
        headers=bearer(admin_token),
    )
    assert response.status_code == 201, response.text
    return login(client, *SELLER)


@pytest.fixture
def seller_token_factory():
    """Register seller1 through a given client and return its token."""

    def make(client: TestClient) -> str:
        admin = login(client, *ADMIN)
        client.post("/register", json={"username": SELLER[0], "password": SELLER[1]}, headers=bearer(admin))
        return login(client, *SELLER)

    return make
