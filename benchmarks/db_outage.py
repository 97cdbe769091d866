"""Fault scenario: the API under load while its Postgres is stopped, restarted, and down at SIGTERM.

Starts a private Postgres cluster on a free port (never the shared server), the real API
(`python -m api`) on it with a model store holding a bundle, and sends /predict load from a
few keep-alive clients while a prober times `/health`. Then:

1. stops the database for `--outage` seconds (default 10) and starts it again;
2. stops it once more and sends SIGTERM to the API while it is down;
3. starts the database and counts: every answered request must be in `prediction_logs`, a
   spill file or the dead-letter file.

    python -m benchmarks.db_outage [--bundle BUNDLE_DIR] [--outage 10]

Prints one JSON object (requests answered, rows stored, spilled, dead-lettered, lost,
the slowest /health answer). `tests/api/test_db_outage.py` runs it and asserts on it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.serve import free_port

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Piscine tubulaire ronde 3,66 x 0,76 m avec pompe de filtration"
ADMIN_PASSWORD = "Outage-admin-Passw0rd-7xq"
SELLER_PASSWORD = "Outage-seller-Passw0rd-4kz"


def postgres_bin() -> Path:
    """The newest installed server's binaries folder (Debian's layout)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return found[-1].parent


class PrivateCluster:
    """A throwaway Postgres cluster on its own port and socket folder, stopped and started at will."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data = root / "data"
        self.bin = postgres_bin()
        # initdb refuses to run as root: the cluster then belongs to the `postgres` user.
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/app"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "app")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    root = Path(tempfile.mkdtemp(prefix="rakuten-pg-", dir="/tmp"))
    cluster = PrivateCluster(root, free_port())
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Tally:
    """What the clients saw."""

    answered: dict[str, int] = field(default_factory=dict)  # request id -> status
    transport_errors: int = 0
    health_max_seconds: float = 0.0
    health_failures: int = 0  # before the SIGTERM
    shutting_down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _post_form(conn: http.client.HTTPConnection, path: str, fields: dict[str, str], token: str | None = None):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", path, urllib.parse.urlencode(fields), headers)
    response = conn.getresponse()
    return response, response.read()


def _token(port: int, username: str, password: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    response, body = _post_form(conn, "/login", {"username": username, "password": password})
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"login {username}: {response.status} {body[:200]!r}")
    return json.loads(body)["access_token"]


def _register(port: int, admin: str, username: str, password: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"username": username, "password": password})
    conn.request(
        "POST", "/register", body, {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 201:
        raise RuntimeError(f"register {username}: {response.status}")


def _load(port: int, token: str, tally: Tally, stop: threading.Event) -> None:
    conn: http.client.HTTPConnection | None = None
    while not stop.is_set():
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            response, _ = _post_form(conn, "/predict", {"designation": TITLE}, token)
            with tally.lock:
                tally.answered[response.getheader("X-Request-ID", "")] = response.status
            if response.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            with tally.lock:
                tally.transport_errors += 1
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)


def _probe_health(port: int, tally: Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/health")
            ok = conn.getresponse().status == 200
            conn.close()
        except (OSError, http.client.HTTPException):
            ok = False
        elapsed = time.perf_counter() - started
        with tally.lock:
            if not tally.shutting_down:
                tally.health_max_seconds = max(tally.health_max_seconds, elapsed)
                tally.health_failures += not ok
        time.sleep(0.1)


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with code {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.3)
    raise TimeoutError("the API did not become ready")


def stored_and_spilled(url: str, spill_dir: Path) -> tuple[set[str], set[str], set[str]]:
    """Request ids in the table, in spill files, in the dead-letter file."""
    from sqlalchemy import select

    from db.session import make_engine
    from db.tables import PredictionLog

    engine = make_engine(url)
    with engine.connect() as conn:
        stored = set(conn.scalars(select(PredictionLog.request_id)))
    engine.dispose()
    spilled: set[str] = set()
    for path in spill_dir.glob("spill-*.jsonl"):
        spilled |= {json.loads(line)["request_id"] for line in path.read_text().splitlines() if line.strip()}
    dead_path = spill_dir / "dead-letter.jsonl"
    dead = (
        {json.loads(line)["row"]["request_id"] for line in dead_path.read_text().splitlines()}
        if dead_path.exists()
        else set()
    )
    return stored, spilled, dead


def run(bundle: Path, *, outage: float = 10.0, clients: int = 4, work_dir: Path | None = None) -> dict:
    """Run the scenario with `bundle` in production; returns the figures."""
    from db import migrate
    from db.session import make_engine, make_session_factory
    from pipelines.registry_ops import promote_version
    from store.model_store import open_model_store

    work = Path(work_dir or tempfile.mkdtemp(prefix="rakuten-outage-"))
    store = work / "model-store"
    spill_dir = work / "prediction-logs"
    with private_cluster() as cluster:
        migrate.upgrade(cluster.url)
        model_store = open_model_store(str(store))
        engine = make_engine(cluster.url)
        promote_version(model_store, make_session_factory(engine), model_store.publish(bundle, exist_ok=True))
        engine.dispose()
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "APP_ENV": "development",
            "PORT": str(port),
            "DATABASE_URL": cluster.url,
            "SECRET_KEY": "outage-scenario-secret-key-9f3a7c1e5b2d8a6f4c0e",
            "FIRST_ADMIN_USERNAME": "admin",
            "FIRST_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MODEL_STORE_URI": str(store),
            "MODEL_CACHE_DIR": str(work / "model-cache"),
            "IMAGE_STORE_URI": str(work / "images"),
            "MODEL_POLL_SECONDS": "0",
            "LOG_SPILL_DIR": str(spill_dir),
            # A small queue, so that the outage fills it and the spill path is taken.
            "LOG_QUEUE_MAX": "50",
            "LOG_FLUSH_SECONDS": "0.2",
            "LOG_DRAIN_SECONDS": "3",
            "RATE_LIMIT_PREDICT": "100000/minute",
            "LOG_LEVEL": "WARNING",
        }
        api_log = (work / "api.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "api"], env=env, cwd=ROOT, stdout=api_log, stderr=api_log
        )
        tally, stop = Tally(), threading.Event()
        threads: list[threading.Thread] = []
        try:
            _wait_ready(port, proc)
            admin = _token(port, "admin", ADMIN_PASSWORD)
            _register(port, admin, "loadseller", SELLER_PASSWORD)
            seller = _token(port, "loadseller", SELLER_PASSWORD)
            threads = [
                threading.Thread(target=_load, args=(port, seller, tally, stop)) for _ in range(clients)
            ]
            threads.append(threading.Thread(target=_probe_health, args=(port, tally, stop)))
            for thread in threads:
                thread.start()
            time.sleep(3)
            cluster.stop()
            time.sleep(outage)
            cluster.start()
            time.sleep(4)
            cluster.stop()
            time.sleep(2)
            with tally.lock:
                tally.shutting_down = True
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(timeout=60)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=40)
            if proc.poll() is None:
                proc.kill()
            api_log.close()
        cluster.start()
        stored, spilled, dead = stored_and_spilled(cluster.url, spill_dir)
    answered = {rid for rid in tally.answered if rid}
    statuses: dict[str, int] = {}
    for status in tally.answered.values():
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "requests_answered": len(answered),
        "answered_by_status": statuses,
        "transport_errors": tally.transport_errors,
        "rows_stored": len(answered & stored),
        "rows_spilled": len(answered & spilled - stored),
        "rows_dead_lettered": len(answered & dead - stored - spilled),
        "rows_lost": len(answered - stored - spilled - dead),
        "health_max_seconds": round(tally.health_max_seconds, 3),
        "health_failures": tally.health_failures,
        # uvicorn ends a clean SIGTERM shutdown by re-raising the signal: -15 is a clean exit.
        "api_exit_code": exit_code,
        "api_tracebacks": (work / "api.log").read_text().count("Traceback"),
        "outage_seconds": outage,
        "work_dir": str(work),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, help="a model bundle (default: train a --quick one)")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the database is down")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    bundle = args.bundle
    if bundle is None:
        from catalog.synthetic import generate_catalogue
        from models.data import load_challenge_folder
        from models.training.train import train

        tmp = Path(tempfile.mkdtemp(prefix="rakuten-outage-bundle-"))
        catalogue = generate_catalogue(tmp / "catalogue", n_products=900, seed=0)
        bundle = train([load_challenge_folder(catalogue)], tmp / "bundle", seed=0, quick=True)
    print(json.dumps(run(bundle, outage=args.outage, clients=args.clients), indent=2))


if __name__ == "__main__":
    main()
