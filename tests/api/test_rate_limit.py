"""The rate limiter: per key, a moving window, shared across processes through Redis."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from api.rate_limit import RateLimiter
from tests.deploy.helpers import missing

# Redis runs beside Postgres on the CI machine (.ci/run starts it); the tests use a database
# number of their own.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def test_a_key_is_refused_past_its_limit_with_the_seconds_to_wait():
    limiter = RateLimiter("memory://", {"predict": "3/minute"})
    assert [limiter.hit("predict", "7") for _ in range(3)] == [None, None, None]
    wait = limiter.hit("predict", "7")
    assert wait is not None and 1 <= wait <= 60
    assert limiter.hit("predict", "8") is None  # another user's budget


def test_several_limits_in_one_setting_all_hold():
    limiter = RateLimiter("memory://", {"products": "2/second;3/minute"})
    assert limiter.hit("products", "1") is None
    assert limiter.hit("products", "1") is None
    assert limiter.hit("products", "1") is not None


def test_an_unreachable_storage_lets_requests_through():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    limiter = RateLimiter(f"redis://127.0.0.1:{port}/0", {"predict": "1/minute"})
    assert limiter.hit("predict", "1") is None
    assert limiter.hit("predict", "1") is None


@pytest.fixture
def redis_url() -> str:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception:
        missing(f"a Redis server at {REDIS_URL}")
    return REDIS_URL


def test_workers_sharing_redis_share_one_budget(redis_url):
    user = f"user-{uuid.uuid4().hex}"  # counters of earlier runs never interfere
    workers = [RateLimiter(redis_url, {"predict": "4/minute"}) for _ in range(2)]
    answers = [workers[i % 2].hit("predict", user) for i in range(6)]
    assert answers[:4] == [None] * 4
    assert all(wait is not None for wait in answers[4:])
