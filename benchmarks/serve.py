"""Serving benchmark: the service (auth + logging on) against the naive `model.predict` baseline.

Starts, in one run, the real API (`python -m api`, fresh SQLite database, a model store holding
the bundle) and the naive baseline (`benchmarks/naive_app.py`: the same `.keras` files,
`model.predict` per request), then sends text-only, image-only (a 500x500 JPEG) and fusion
requests at concurrency 1 and 8, and prints p50/p95/p99 latency, throughput and the service's
resident memory.

    python -m benchmarks.serve [--bundle BUNDLE_DIR] [--requests 200] [--batch-only]

Then bulk listings: the same text listings sent one `/predict` at a time at concurrency 1
against `POST /predict/batch` calls of `--batch-size` items (also at concurrency 1), as
items per second; `--batch-only` runs just that part (no naive baseline).

Without --bundle, a --quick bundle is trained on a synthetic catalogue first.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Piscine tubulaire ronde 3,66 x 0,76 m avec pompe de filtration"
DESCRIPTION = "<p>Kit complet : b&acirc;che, &eacute;chelle et filtre &agrave; cartouche.</p>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg_500() -> bytes:
    rng = np.random.default_rng(0)
    pixels = (rng.random((500, 500, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_load(send: Callable[[httpx.Client], httpx.Response], n: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        nonlocal errors
        with httpx.Client(timeout=60) as client:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                started = time.perf_counter()
                try:
                    ok = send(client).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    errors += not ok

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": q[94] * 1000,
        "p99_ms": q[98] * 1000,
        "throughput_rps": len(latencies) / wall,
        "errors": errors,
    }


def batch_figures(api_url: str, auth: dict[str, str], items: int, batch_size: int) -> dict[str, float]:
    """Items per second: one /predict per listing vs /predict/batch, both at concurrency 1."""
    listings = [{"designation": f"{TITLE} lot {i}", "description": DESCRIPTION} for i in range(items)]
    with httpx.Client(timeout=120, headers=auth) as client:
        for listing in listings[:10]:  # warm-up
            client.post(f"{api_url}/predict", json=listing)
        client.post(f"{api_url}/predict/batch", json={"items": listings[:batch_size]})
        started = time.perf_counter()
        for listing in listings:
            assert client.post(f"{api_url}/predict", json=listing).status_code == 200
        single = items / (time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(0, items, batch_size):
            response = client.post(f"{api_url}/predict/batch", json={"items": listings[i : i + batch_size]})
            assert response.status_code == 200 and response.json()["failed"] == 0
        batched = items / (time.perf_counter() - started)
    return {"single_items_per_s": single, "batch_items_per_s": batched, "ratio": batched / single}


def make_bundle(workdir: Path) -> Path:
    from catalog.synthetic import generate_catalogue
    from models.data import load_challenge_folder
    from models.training.train import train

    catalogue = generate_catalogue(workdir / "catalogue", n_products=1500, seed=0)
    return train([load_challenge_folder(catalogue)], workdir / "bundle", seed=0, quick=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--requests", type=int, default=200, help="requests per scenario")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--batch-only", action="store_true", help="only single vs batch throughput")
    parser.add_argument("--batch-size", type=int, default=50, help="items per /predict/batch call")
    parser.add_argument("--batch-items", type=int, default=1000, help="listings in the batch comparison")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    bundle = args.bundle or make_bundle(workdir)
    from store.model_store import open_model_store

    store = open_model_store(workdir / "store")
    # The benchmark's own scratch store: its API process loads the bundle and fails loudly if it cannot.
    store.promote(store.publish(bundle), verify=None)

    api_port, naive_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "MODEL_STORE_URI": str(workdir / "store"),
        "MODEL_CACHE_DIR": str(workdir / "cache"),
        "IMAGE_STORE_URI": str(workdir / "images"),
        "MODEL_POLL_SECONDS": "0",
        "PORT": str(api_port),
        "LOG_LEVEL": "WARNING",
        "FIRST_ADMIN_PASSWORD": "bench-admin-password",
        "SECRET_KEY": "benchmark-secret-key-0123456789-abcdefghij",
        "LOG_SPILL_DIR": str(workdir / "prediction-logs"),
        # One benchmark user sends thousands of predictions: the per-user limit would answer 429.
        "RATE_LIMIT_PREDICT": "1000000/minute",
    }
    subprocess.run([sys.executable, "-m", "db.migrate", "upgrade"], env=env, check=True, cwd=ROOT)
    api = subprocess.Popen([sys.executable, "-m", "api"], env=env, cwd=ROOT)
    naive = (
        None
        if args.batch_only
        else subprocess.Popen(
            [sys.executable, "-m", "benchmarks.naive_app", str(bundle), str(naive_port)], env=env, cwd=ROOT
        )
    )
    results: dict[str, dict] = {}
    try:
        api_url, naive_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{naive_port}"
        wait_until_up(f"{api_url}/ready", api)
        token = httpx.post(
            f"{api_url}/login", data={"username": "admin", "password": "bench-admin-password"}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        batch = batch_figures(api_url, auth, args.batch_items, args.batch_size)
        if naive is None:
            print(
                f"text listings at concurrency 1: {batch['single_items_per_s']:.0f} items/s one /predict each, "
                f"{batch['batch_items_per_s']:.0f} items/s in /predict/batch calls of {args.batch_size} "
                f"= {batch['ratio']:.1f}x"
            )
            return
        wait_until_up(f"{naive_url}/docs", naive)
        image = jpeg_500()
        scenarios = {
            "text": ({"designation": TITLE, "description": DESCRIPTION}, None),
            "image": ({}, image),
            "fusion": ({"designation": TITLE, "description": DESCRIPTION}, image),
        }
        for name, (data, img) in scenarios.items():
            for target, url, headers in (("service", api_url, auth), ("naive", naive_url, {})):

                def send(
                    client: httpx.Client,
                    url: str = url,
                    headers: dict = headers,
                    data: dict = data,
                    img: bytes | None = img,
                ) -> httpx.Response:
                    files = {"image": ("p.jpg", img, "image/jpeg")} if img is not None else None
                    return client.post(f"{url}/predict", data=data, files=files, headers=headers)

                with httpx.Client() as warm:
                    for _ in range(5):
                        send(warm)
                for concurrency in (1, 8):
                    n = args.requests if target == "service" else max(40, args.requests // 4)
                    results[f"{name}/{target}/c{concurrency}"] = run_load(send, n, concurrency)
        memory = rss_mb(api.pid)
    finally:
        for proc in (api, naive):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)

    if args.json:
        print(json.dumps({"results": results, "batch": batch, "service_rss_mb": memory}, indent=2))
        return
    print(f"{'scenario':<24}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>9}{'errors':>8}")
    for key, r in results.items():
        print(
            f"{key:<24}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['throughput_rps']:>9.1f}{r['errors']:>8d}"
        )
    for name in scenarios:
        ratio = (
            results[f"{name}/service/c8"]["throughput_rps"] / results[f"{name}/naive/c8"]["throughput_rps"]
        )
        print(f"{name}: service throughput at concurrency 8 = {ratio:.1f}x the naive baseline")
    print(f"service resident memory after the run: {memory:.0f} MB")
    print(
        f"text listings at concurrency 1: {batch['single_items_per_s']:.0f} items/s one /predict each, "
        f"{batch['batch_items_per_s']:.0f} items/s in /predict/batch calls of {args.batch_size} "
        f"= {batch['ratio']:.1f}x"
    )


if __name__ == "__main__":
    main()
