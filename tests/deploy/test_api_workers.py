"""`python -m api` with API_WORKERS=2: limits, throttles and revocations hold across the workers.

Every request goes on a fresh connection, so the kernel hands each to whichever worker accepts
first. The control (`memory://` counters) shows that requests do reach both workers: then the
rate limit lets through more than it says; with Redis it holds exactly.
"""

from __future__ import annotations

import httpx
import pytest

from tests.deploy.processes import (
    Api,
    api_env,
    database_url,
    free_port,
    login,
    redis_url,
    running,
    servable_store,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TITLE = {"designation": "Piscine tubulaire ronde 3,66 x 0,76 m"}


def predict(url: str, token: str) -> int:
    return httpx.post(
        f"{url}/predict", data=TITLE, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).status_code


@pytest.fixture
def two_workers(tmp_path):
    """An API with two worker processes and the given settings, running."""

    def start(**extra: str) -> Api:
        env = api_env(
            tmp_path,
            database=database_url(tmp_path),
            model_store=servable_store(tmp_path / "store"),
            API_WORKERS="2",
            **extra,
        )
        return Api("workers", free_port(), env, tmp_path / "api.log")

    return start


def test_the_predict_limit_holds_across_two_workers_sharing_redis(two_workers):
    api = two_workers(RATE_LIMIT_STORAGE_URI=redis_url(), RATE_LIMIT_PREDICT="10/minute")
    with running(api):
        token = login(api.url)
        codes = [predict(api.url, token) for _ in range(30)]
    assert codes.count(200) == 10, codes
    assert codes.count(429) == 20, codes


def test_per_process_counters_let_two_workers_exceed_the_limit(two_workers):
    # The control of the test above: requests do reach both workers.
    api = two_workers(RATE_LIMIT_STORAGE_URI="memory://", RATE_LIMIT_PREDICT="10/minute")
    with running(api):
        token = login(api.url)
        codes = [predict(api.url, token) for _ in range(30)]
    assert codes.count(200) > 10, codes


def test_the_login_throttle_and_a_logout_hold_across_two_workers(two_workers):
    api = two_workers(RATE_LIMIT_STORAGE_URI=redis_url(), LOGIN_MAX_FAILURES="3")
    with running(api):
        wrong = [
            httpx.post(
                f"{api.url}/login", data={"username": "nobody", "password": "not-it-at-all"}
            ).status_code
            for _ in range(6)
        ]
        token = login(api.url)
        before = [predict(api.url, token) for _ in range(6)]
        assert (
            httpx.post(f"{api.url}/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 204
        )
        after = [predict(api.url, token) for _ in range(10)]
    assert wrong == [401, 401, 401, 429, 429, 429]
    assert before == [200] * 6
    assert after == [401] * 10
