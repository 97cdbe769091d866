"""Peak memory of the API under concurrent bad logins, and the cost of one password hash.

Starts the real API (`python -m api`, fresh SQLite database, no model) and sends N concurrent
logins with wrong passwords, each for another username from another client address (sent as
X-Forwarded-For, trusted with FORWARDED_ALLOW_IPS=*, so that throttling does not cut the number
of hashes computed: this measures the hashing bound alone). Prints the resident memory before,
the peak (VmHWM) after, the answers' status codes and the wall time.

    python -m benchmarks.login_memory [--concurrency 40] [--root CHECKOUT]

--root runs another checkout of the project (for example the code before a change).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.serve import ROOT, free_port, rss_mb, wait_until_up


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hash_timings(repeat: int = 20) -> dict[str, float]:
    """Median milliseconds of one hash and one verification with the configured parameters."""
    from api.security import password_hasher
    from config import Settings

    hasher = password_hasher(Settings())
    stored = hasher.hash("benchmark-password-0")
    hashes, verifies = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        hasher.hash("benchmark-password-0")
        hashes.append(time.perf_counter() - started)
        started = time.perf_counter()
        hasher.verify("wrong-password", stored)
        verifies.append(time.perf_counter() - started)
    return {
        "hash_ms": sorted(hashes)[repeat // 2] * 1000,
        "verify_ms": sorted(verifies)[repeat // 2] * 1000,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--no-timings", action="store_true", help="skip the in-process hash timings")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(args.root),
            "APP_ENV": "development",
            "LOG_LEVEL": "WARNING",
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{tmp}/bench.db",
            "SECRET_KEY": "benchmark-secret-key-0123456789-abcdefghij",
            "FIRST_ADMIN_USERNAME": "admin",
            "FIRST_ADMIN_PASSWORD": "bench-admin-password-9",
            "MODEL_STORE_URI": f"{tmp}/model-store",
            "MODEL_CACHE_DIR": f"{tmp}/model-cache",
            "IMAGE_STORE_URI": f"{tmp}/images",
            "MODEL_POLL_SECONDS": "0",
            "FORWARDED_ALLOW_IPS": "*",
        }
        subprocess.run([sys.executable, "-m", "db.migrate", "upgrade"], env=env, check=True, cwd=args.root)
        api = subprocess.Popen([sys.executable, "-m", "api"], env=env, cwd=args.root)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{url}/health", api)
            before = rss_mb(api.pid)
            statuses: collections.Counter[int] = collections.Counter()
            lock = threading.Lock()
            barrier = threading.Barrier(args.concurrency)

            def attempt(i: int) -> None:
                barrier.wait()
                response = httpx.post(
                    f"{url}/login",
                    data={"username": f"user{i}", "password": f"wrong-password-{i}"},
                    headers={"X-Forwarded-For": f"10.1.{i // 250}.{i % 250 + 1}"},
                    timeout=120,
                )
                with lock:
                    statuses[response.status_code] += 1

            started = time.perf_counter()
            threads = [threading.Thread(target=attempt, args=(i,)) for i in range(args.concurrency)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            print(f"root: {args.root}")
            print(f"{args.concurrency} concurrent bad logins in {elapsed:.2f} s: {dict(statuses)}")
            print(f"RSS before: {before:.0f} MB; peak RSS (VmHWM): {peak_rss_mb(api.pid):.0f} MB")
        finally:
            api.terminate()
            api.wait(timeout=30)
    if not args.no_timings:
        print("hash timings (this checkout's settings):", hash_timings())


if __name__ == "__main__":
    main()
