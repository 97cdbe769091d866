"""Two API processes behind Debian's nginx, as deploy/compose.replicas.yml runs them.

nginx runs as this test's own process (a private prefix, configuration and port), with the
proxy directives of deploy/nginx/api-proxy.conf. Under a steady load of predictions through
it, each API process is restarted in turn (SIGTERM, as compose and Kubernetes stop a
container; then started again): no request may fail. Then a new version is promoted in the
shared model store, and the test measures how long until both processes serve it (each polls
the production pointer every MODEL_POLL_SECONDS).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.deploy.helpers import ROOT, in_ci, missing
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

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(600)]

PROXY_CONF = ROOT / "deploy" / "nginx" / "api-proxy.conf"
POLL_SECONDS = 2.0
FAIL_TIMEOUT_SECONDS = 2
TITLE = {"designation": "Piscine tubulaire ronde 3,66 x 0,76 m"}


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
    if found is None:
        missing("nginx (apt-get install nginx; .ci/run installs it)")
    return str(found)


def nginx_config(prefix: Path, port: int, backends: list[int]) -> str:
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout={FAIL_TIMEOUT_SECONDS}s;" for p in backends
    )
    temp = "\n".join(
        f"    {name}_temp_path {prefix / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    log_format upstreams '$upstream_addr $status';
    access_log {prefix / "access.log"} upstreams;
{temp}
    map $http_x_request_id $request_id_out {{
        default $http_x_request_id;
        ""      $request_id;
    }}
    upstream api_replicas {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 16m;
        location / {{
            set $api_upstream http://api_replicas;
            include {PROXY_CONF};
        }}
    }}
}}
"""


@dataclass
class Load:
    """Predictions through the balancer from `threads` clients until stopped."""

    url: str
    token: str
    threads: int = 6
    codes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    versions: Counter = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(timeout=30, headers=headers) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(f"{self.url}/predict", data=TITLE)
                    body = response.json() if response.status_code == 200 else {}
                    outcome, detail = response.status_code, response.text[:200]
                except httpx.HTTPError as exc:
                    outcome, detail, body = "error", repr(exc), {}
                with self._lock:
                    self.codes[outcome] += 1
                    if outcome != 200:
                        self.failures.append(f"{outcome}: {detail}")
                    if body:
                        self.versions[body.get("model_version")] += 1

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.codes.values())


def served_version(api: Api) -> str | None:
    try:
        return httpx.get(f"{api.url}/ready", timeout=2).json()["model"]["version"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None


@pytest.fixture
def nginx(tmp_path: Path):
    """Start nginx in front of the given backend ports; yields the balancer's URL."""
    binary = nginx_binary()
    procs: list[subprocess.Popen] = []

    def start(backends: list[int]) -> str:
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix, port, backends))
        check = subprocess.run(
            [binary, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        procs.append(subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]))
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{url}/health", timeout=1)
                return url
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError((prefix / "error.log").read_text())

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=20)


def test_nginx_is_available_in_ci():
    # The balancer test must never be skipped quietly where it is supposed to run.
    if in_ci():
        assert shutil.which("nginx") or Path("/usr/sbin/nginx").is_file()


def test_a_rolling_restart_under_load_fails_no_request_and_a_promotion_reaches_both(tmp_path, nginx):
    from store.model_store import open_model_store
    from tests.store.bundles import make_servable_bundle

    store_uri = servable_store(tmp_path / "store", "20260101T000000Z-one")
    env = api_env(
        tmp_path,
        database=database_url(tmp_path),
        model_store=store_uri,
        RATE_LIMIT_STORAGE_URI=redis_url(),
        MODEL_POLL_SECONDS=str(POLL_SECONDS),
    )
    apis = [Api(name, free_port(), env, tmp_path / f"{name}.log") for name in ("api-a", "api-b")]
    with running(*apis):
        url = nginx([api.port for api in apis])
        token = login(url)
        with Load(url, token) as load:
            time.sleep(2)
            for api in apis:  # one at a time, as a rolling update does
                before = load.total
                # uvicorn re-raises the SIGTERM once drained: -15 is a clean stop, not a kill.
                assert api.stop() in (0, -signal.SIGTERM), api.tail()
                time.sleep(1)  # the other process alone carries the load meanwhile
                api.start().wait_ready()
                # nginx put the process aside for fail_timeout after its refused connection:
                # the next one is stopped only once this one is back in rotation (what
                # minReadySeconds / a readiness wait does in an orchestrator).
                time.sleep(FAIL_TIMEOUT_SECONDS + 1)
                assert load.total > before
            # Both processes take traffic again: requests spread over both after the restarts.
            time.sleep(2)

            store = open_model_store(store_uri)
            new = store.publish(make_servable_bundle(tmp_path / "bundles", "20260102T000000Z-two"))
            promoted = time.monotonic()
            store.promote(new, verify=None)
            switched: dict[str, float] = {}
            while len(switched) < len(apis) and time.monotonic() - promoted < 60:
                for api in apis:
                    if api.name not in switched and served_version(api) == new:
                        switched[api.name] = time.monotonic() - promoted
                time.sleep(0.05)
            time.sleep(1)
        logs = "\n".join(api.tail(15) for api in apis)

    print(f"requests through nginx: {dict(load.codes)}; versions served: {dict(load.versions)}")
    print(f"promotion reached each process after: {switched} s (MODEL_POLL_SECONDS={POLL_SECONDS})")
    assert load.total > 100, load.codes
    assert load.failures == [], (load.failures[:10], logs)
    assert set(switched) == {"api-a", "api-b"}, switched
    # Each process reads the pointer every POLL_SECONDS, then loads and checks the version.
    assert max(switched.values()) < POLL_SECONDS + 10, switched
    assert load.versions[new] > 0
    # Both processes took traffic (nginx tried a stopped one first, then the other: "a, b").
    served = Counter(line.split()[-2].split(",")[-1] for line in (tmp_path / "nginx" / "access.log").open())
    assert all(served[f"127.0.0.1:{api.port}"] > 100 for api in apis), served
