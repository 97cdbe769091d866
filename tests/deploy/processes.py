"""Helpers of the multi-process tests: API processes on a shared database, store and Redis.

Each API is `python -m api` in its own session (so a SIGTERM reaches its workers too), on a
free port, with a model store holding a servable bundle (tests/store/bundles.py: constant ONNX
models, loaded in milliseconds) unless the caller publishes another.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.deploy.helpers import ROOT, missing

ADMIN = ("admin", "workers-admin-password-1")
# Redis runs on 127.0.0.1:6379 (.ci/run starts it); these tests use their own database number
# (the API's unit tests use 13).
REDIS_URL = os.environ.get("TEST_PROCESS_REDIS_URL", "redis://127.0.0.1:6379/14")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_url() -> str:
    """REDIS_URL, emptied of earlier runs' keys; a failure in CI, a skip elsewhere, when down."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.flushdb()
    except Exception:
        missing(f"a Redis server at {REDIS_URL}")
    return REDIS_URL


def database_url(tmp_path: Path) -> str:
    """Postgres (TEST_DATABASE_URL, reset) when configured, else a SQLite file; migrated."""
    from db import migrate
    from tests.conftest import _reset_postgres

    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        _reset_postgres(url)
    else:
        url = f"sqlite:///{tmp_path / 'api.db'}"
    migrate.upgrade(url)
    return url


def servable_store(tmp_path: Path, version: str = "20260101T000000Z-a") -> str:
    """A folder model store whose production version is a servable bundle."""
    from store.model_store import open_model_store
    from tests.store.bundles import make_servable_bundle

    uri = str(tmp_path / "model-store")
    store = open_model_store(uri)
    store.promote(store.publish(make_servable_bundle(tmp_path / "bundles", version)), verify=None)
    return uri


def api_env(tmp_path: Path, *, database: str, model_store: str, **extra: str) -> dict[str, str]:
    """The environment of an API process: shared database and stores, its own cache and logs."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "API_", "RATE_LIMIT", "LOGIN_", "MODEL_"))
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "APP_ENV": "development",
            "DATABASE_URL": database,
            "MODEL_STORE_URI": model_store,
            "IMAGE_STORE_URI": str(tmp_path / "images"),
            "SECRET_KEY": "process-tests-secret-key-0123456789-abcdefghij",
            "FIRST_ADMIN_USERNAME": ADMIN[0],
            "FIRST_ADMIN_PASSWORD": ADMIN[1],
            "MODEL_POLL_SECONDS": "0",
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT_PREDICT": "100000/minute",
            "RATE_LIMIT_PRODUCTS": "100000/minute",
        }
    )
    env.update(extra)
    return env


@dataclass
class Api:
    name: str
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Api:
        env = {
            **self.env,
            "PORT": str(self.port),
            "MODEL_CACHE_DIR": str(self.log.parent / f"{self.name}-cache"),
            "LOG_SPILL_DIR": str(self.log.parent / f"{self.name}-spill"),
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout} s:\n{self.tail()}")

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM, as compose and Kubernetes send it; SIGKILL past `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def running(*apis: Api) -> Iterator[tuple[Api, ...]]:
    """Start every API, wait until each is ready; stop them all at the end."""
    try:
        for api in apis:
            api.start()
        for api in apis:
            api.wait_ready()
        yield apis
    finally:
        for api in apis:
            api.stop()


def login(url: str, username: str = ADMIN[0], password: str = ADMIN[1]) -> str:
    response = httpx.post(f"{url}/login", data={"username": username, "password": password}, timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]
