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

    python -m benchmarks.serve --workers-compare [--database-url URL] [--rate-limit-storage URI]

compares instead one `python -m api` with API_WORKERS=1 and with API_WORKERS=2 on the same
cores: throughput and latency at concurrency 8 for text, image and fusion, and the resident
memory of the whole process tree. Run it on an otherwise idle machine (it prints the load
average before and after); a Postgres URL and a redis:// storage make it the production setup.
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import shutil
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


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (an API's supervisor and its workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return rss_mb(pid) + sum(tree_rss_mb(kid) for kid in kids)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its live children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return own + sum(tree_cpu_seconds(kid) for kid in kids)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def scenario_senders(url: str, auth: dict[str, str]) -> dict[str, Callable[[httpx.Client], httpx.Response]]:
    """One sender per scenario: text only, image only (a 500x500 JPEG), both."""
    image = jpeg_500()
    scenarios = {
        "text": ({"designation": TITLE, "description": DESCRIPTION}, None),
        "image": ({}, image),
        "fusion": ({"designation": TITLE, "description": DESCRIPTION}, image),
    }

    def sender(data: dict, img: bytes | None) -> Callable[[httpx.Client], httpx.Response]:
        def send(client: httpx.Client) -> httpx.Response:
            files = {"image": ("p.jpg", img, "image/jpeg")} if img is not None else None
            return client.post(f"{url}/predict", data=data, files=files, headers=auth)

        return send

    return {name: sender(data, img) for name, (data, img) in scenarios.items()}


def workers_figures(env: dict[str, str], requests: int, workers_list: tuple[int, ...] = (1, 2)) -> dict:
    """Each scenario at concurrency 8 against one API run with each number of workers."""
    figures: dict[str, dict] = {"load_before": load_average()}
    for workers in workers_list:
        port = free_port()
        api = subprocess.Popen(
            [sys.executable, "-m", "api"],
            env={**env, "PORT": str(port), "API_WORKERS": str(workers)},
            cwd=ROOT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(f"{url}/ready", api)
            time.sleep(2 * workers)  # every worker up and warmed, not only the first to answer
            token = httpx.post(
                f"{url}/login", data={"username": "admin", "password": "bench-admin-password"}
            ).json()["access_token"]
            senders = scenario_senders(url, {"Authorization": f"Bearer {token}"})
            for name, send in senders.items():
                run_load(send, 40, 8)  # warm-up: each worker's sessions and caches
                cpu = tree_cpu_seconds(api.pid)
                figures[f"{name}/w{workers}/c8"] = result = run_load(send, requests, 8)
                # The server's own CPU per request (the load generator's excluded): sizing.
                result["server_cpu_ms"] = (tree_cpu_seconds(api.pid) - cpu) * 1000 / requests
            figures[f"rss_mb/w{workers}"] = tree_rss_mb(api.pid)
        finally:
            api.terminate()
            api.wait(timeout=60)
    figures["load_after"] = load_average()
    return figures


def print_workers_figures(figures: dict, workers_list: tuple[int, ...] = (1, 2)) -> None:
    print(f"load average before: {figures['load_before']}, after: {figures['load_after']}")
    print(f"{'scenario':<20}{'p50 ms':>9}{'p95 ms':>9}{'req/s':>9}{'errors':>8}{'CPU ms/req':>12}")
    for key, r in figures.items():
        if isinstance(r, dict):
            print(
                f"{key:<20}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}{r['throughput_rps']:>9.1f}"
                f"{r['errors']:>8d}{r['server_cpu_ms']:>12.1f}"
            )
    for name in ("text", "image", "fusion"):
        first, last = workers_list[0], workers_list[-1]
        ratio = (
            figures[f"{name}/w{last}/c8"]["throughput_rps"] / figures[f"{name}/w{first}/c8"]["throughput_rps"]
        )
        print(f"{name}: {last} workers = {ratio:.2f}x the throughput of {first} at concurrency 8")
    for workers in workers_list:
        print(f"resident memory with {workers} worker(s): {figures[f'rss_mb/w{workers}']:.0f} MB")


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
    parser.add_argument("--workers-compare", action="store_true", help="API_WORKERS=1 against 2, at c=8")
    parser.add_argument("--database-url", help="the API's database (default: a fresh SQLite file)")
    parser.add_argument("--rate-limit-storage", default="memory://", help="RATE_LIMIT_STORAGE_URI")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    # Its store and cache hold two copies of the bundle (500 MB for the real one): not kept.
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
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
        "DATABASE_URL": args.database_url or f"sqlite:///{workdir / 'bench.db'}",
        "RATE_LIMIT_STORAGE_URI": args.rate_limit_storage,
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
    if args.workers_compare:
        figures = workers_figures(env, args.requests)
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            print_workers_figures(figures)
        return
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
