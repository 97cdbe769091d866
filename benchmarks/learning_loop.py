"""The learning loop, closed and proven: drift is noticed, repaired from sellers' confirmations,
and a worse model never ships.

    python -m benchmarks.learning_loop [--data DIR] [--quick] [--out FILE] [--database-url URL]

One run, with nothing faked: the real API (`python -m api`, its own process) over HTTP, the real
DAGs (`airflow dags test` in `.venv-airflow`), one database and folder stores under a fresh work
folder.

0. **Week 0.** The catalogue (the synthetic one, or the challenge-layout folder `--data`) is
   split: a few categories are held back entirely, and of the others part is the catalogue "as
   it was" and the rest is left for the sellers. The catalogue as it was is imported into the
   products table and the retraining DAG trains and promotes the week-0 model on it.
1. **Before.** Honest sellers list products like the old ones through `/predict` and confirm
   most of them (`POST /products` with the request id), a few with honest mistakes (the
   model's wrong first guess, or another category).
2. **Drift.** Half of what they list now belongs to the held-back categories. After every
   batch the monitor's own computation (`pipelines.monitor.build_report` on
   `db.monitoring`'s queries) is run on the drift window; when it flags, the monitoring DAG
   runs on that window, flags it and its `trigger_retrain` task queues a retraining.
3. **Shadow, then repair.** The queued retraining (its conf) runs with `GATE_SHADOW=first`:
   its candidate is published and shadowed (the API runs it off the request path on a share of
   live requests and logs its answer beside production's) instead of being promoted. More
   traffic; the same retraining runs again (same interval: snapshot and candidate reused), the
   gate now sees the held-out split, the live holdout and both live hit rates of the shadow
   window, and promotes. The API reloads while a background seller keeps predicting.
4. **After.** More traffic from the shifted catalogue: the live hit rate and the live
   suggestion-set coverage recover.
5. **A flood of wrong labels.** One seller confirms many products of three categories as a
   fourth. A retraining with the label-quality check turned off (what would happen without
   it) trains a worse candidate on the flood: the gate refuses it and production stays. Then
   the real validate task, check on, quarantines the flood with its reason.

The report (one JSON object on the last line of output, and in `--out`) holds every figure
the issue asks for; the chart of the live hit rate is written next to it (`--chart`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import logging
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_VENV = ROOT / ".venv-airflow"
ADMIN = ("admin", "loop-admin-password-1")
SELLER_PASSWORD = "seller-loop-password-1"
X_FILE, Y_FILE, IMAGE_DIR = "X_train_update.csv", "Y_train_CVw08PX.csv", "image_train"

logger = logging.getLogger("learning_loop")
# "Clearly above": the after-window hit rate must beat the drift one by this much.
MIN_RECOVERY = 0.10
WORLDS: list[Any] = []


@dataclass(frozen=True)
class Plan:
    """The sizes of one run."""

    synthetic_products: int = 5000
    held_back: int = 4  # categories absent from week 0
    flood_categories: int = 3  # categories the flooder mislabels (as one more)
    # Of their products left after week 0, the flooder's: in training, his wrong labels then
    # outnumber the honest ones of those categories, a model that learns them is clearly worse.
    flood_pool_share: float = 0.9
    week0_share: float = 0.45  # of the other categories' products: the catalogue as it was
    before: int = 150
    drift_batch: int = 25
    drift_max: int = 800
    drift_extra: int = 300  # drift traffic after the flag, while the retraining is queued
    shadow_requests: int = 150
    after: int = 250
    flood: int = 400
    confirm_share: float = 0.8
    mistake_share: float = 0.05
    sellers: int = 5
    drift_share: float = 0.5  # of the drift traffic: held-back categories


QUICK = Plan()
FULL = Plan(
    synthetic_products=8000, drift_max=1500, drift_extra=600, after=500, flood=400, shadow_requests=300
)


# -- the catalogue -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    productid: str
    designation: str
    description: str
    code: int
    image: Path | None


def read_listings(folder: Path) -> list[Listing]:
    from models.data import image_filename, read_challenge_rows

    listings = []
    for row in read_challenge_rows(folder):
        try:
            code = int(row["prdtypecode"])
        except (TypeError, ValueError):
            continue
        image = folder / IMAGE_DIR / image_filename(row["imageid"], row["productid"])
        listings.append(
            Listing(
                row["productid"],
                row.get("designation") or "",
                row.get("description") or "",
                code,
                image if image.is_file() else None,
            )
        )
    return listings


def _share(key: str) -> float:
    return int.from_bytes(hashlib.sha256(f"loop:{key}".encode()).digest()[:8], "big") / 2**64


@dataclass
class Split:
    week0: list[Listing]
    old: list[Listing]  # like the week-0 products, kept for the sellers
    new: list[Listing]  # the held-back categories
    flood: list[Listing]  # products the flooder mislabels
    held_back: list[int]
    flood_codes: list[int]
    flood_label: int


def split_catalogue(listings: list[Listing], plan: Plan, rng: random.Random) -> Split:
    """Held-back categories (mid-sized ones), flood categories (large ones), week 0 and the rest."""
    counts: dict[int, int] = {}
    for item in listings:
        counts[item.code] = counts.get(item.code, 0) + 1
    by_size = sorted(counts, key=lambda c: (-counts[c], c))
    flood_codes = by_size[: plan.flood_categories]
    flood_label = by_size[plan.flood_categories]
    middle = by_size[plan.flood_categories + 1 :]
    middle = middle[len(middle) // 4 :]  # not the smallest: each must be seen often enough
    held_back = sorted(rng.sample(middle, plan.held_back))
    split = Split([], [], [], [], held_back, flood_codes, flood_label)
    for item in listings:
        if item.code in held_back:
            split.new.append(item)
        elif _share(item.productid) < plan.week0_share:
            split.week0.append(item)
        elif item.code in flood_codes and _share(f"flood:{item.productid}") < plan.flood_pool_share:
            split.flood.append(item)
        else:
            split.old.append(item)
    for pool in (split.old, split.new, split.flood):
        rng.shuffle(pool)
    return split


def write_folder(listings: list[Listing], source: Path, out: Path) -> Path:
    """A challenge-layout folder of `listings` whose images link to the source folder's."""
    out.mkdir(parents=True, exist_ok=True)
    (out / IMAGE_DIR).mkdir(exist_ok=True)
    with (
        (out / X_FILE).open("w", newline="", encoding="utf-8") as x,
        (out / Y_FILE).open("w", newline="", encoding="utf-8") as y,
    ):
        xw, yw = csv.writer(x), csv.writer(y)
        xw.writerow(["", "designation", "description", "productid", "imageid"])
        yw.writerow(["", "prdtypecode"])
        for index, item in enumerate(listings):
            imageid = ""
            if item.image is not None:
                imageid = item.image.name.split("_")[1]
                link = out / IMAGE_DIR / item.image.name
                if not link.exists():
                    link.symlink_to(item.image.resolve())
            else:
                imageid = f"9{index:09d}"  # no file under this name: the product has no image
            xw.writerow([index, item.designation, item.description, item.productid, imageid])
            yw.writerow([index, item.code])
    return out


# -- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class World:
    """The work folder, the environment every process shares, and the API process."""

    dir: Path
    env: dict[str, str]
    url: str
    api: subprocess.Popen | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    def airflow(
        self, *args: str, extra: dict[str, str] | None = None, name: str, timeout: float = 1800
    ) -> str:
        """Run an `airflow` command of the Airflow virtualenv; its log, or an error with its tail."""
        log = self.dir / f"{name}.log"
        started = time.perf_counter()
        with log.open("w") as handle:
            proc = subprocess.Popen(
                [str(AIRFLOW_VENV / "bin" / "airflow"), *args],
                env={**self.env, **(extra or {})},
                cwd=self.dir,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
            # A failed task waits for its retry (minutes): fail the scenario at once instead.
            retrying = False
            while proc.poll() is None:
                time.sleep(1)
                retrying = "new_state=up_for_retry" in log.read_text(errors="replace")
                if retrying or time.perf_counter() - started > timeout:
                    proc.kill()
                    proc.wait()
                    break
        text = log.read_text(errors="replace")
        seconds = time.perf_counter() - started
        self.steps.append({"step": name, "seconds": round(seconds, 1), "exit": proc.returncode})
        logger.info("%s: %.0f s (exit %s, log %s)", name, seconds, proc.returncode, log)
        if proc.returncode != 0 or retrying:
            raise RuntimeError(
                f"airflow {' '.join(args[:3])} failed (exit {proc.returncode}):\n{text[-4000:]}"
            )
        return text

    def dag_test(
        self, dag_id: str, conf: dict[str, Any], *, name: str, extra: dict[str, str] | None = None
    ) -> str:
        text = self.airflow("dags", "test", dag_id, "--conf", json.dumps(conf), extra=extra, name=name)
        if (
            f"DagRun Finished: dag_id={dag_id}," not in text
            or "state=success" not in text.split("DagRun Finished")[-1][:400]
        ):
            raise RuntimeError(
                f"{dag_id} did not succeed (log {self.dir / (name + '.log')}):\n{text[-4000:]}"
            )
        return text

    def start_api(self) -> None:
        log = (self.dir / "api.log").open("a")
        self.api = subprocess.Popen(
            [sys.executable, "-m", "api"], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited:\n{(self.dir / 'api.log').read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready", timeout=3).status_code == 200:
                    return
            time.sleep(1)
        raise RuntimeError("the API did not become ready in 300 s")

    def stop_api(self) -> None:
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()
            try:
                self.api.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.api.kill()


def make_world(work: Path, database_url: str | None) -> World:
    port = free_port()
    database_url = database_url or f"sqlite:///{work / 'app.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW_", "AIRFLOW__"))},
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "APP_ENV": "development",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "API_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": database_url,
        "MODEL_STORE_URI": str(work / "model-store"),
        "IMAGE_STORE_URI": str(work / "images"),
        "DATA_STORE_URI": str(work / "datasets"),
        "MODEL_CACHE_DIR": str(work / "model-cache"),
        "LOG_SPILL_DIR": str(work / "prediction-logs"),
        "MODEL_POLL_SECONDS": "2",
        "LOG_FLUSH_SECONDS": "0.2",
        "FIRST_ADMIN_USERNAME": ADMIN[0],
        "FIRST_ADMIN_PASSWORD": ADMIN[1],
        "RATE_LIMIT_PREDICT": "1000000/minute",
        "RATE_LIMIT_PRODUCTS": "1000000/minute",
        "LOG_LEVEL": "WARNING",
        "TRAIN_MODE": "inprocess",
        "TRAIN_QUICK": "true",
        "MIN_TRAINING_ROWS": "100",
        # Quick models and about fifteen held-out products per class: one product is 7% of a
        # class's short-list recall, and a quick model's retraining moves a small class by a few
        # of them. The per-class rule keeps catching a collapse; the kind and live rules do the rest.
        "GATE_MAX_RECALL_DROP": "0.25",
        "EVAL_FRACTION": "0.25",
        "MONITOR_TRIGGER_RETRAIN": "true",
        "SHADOW_SHARE": "1.0",
        # Airflow: its own home and SQLite metadata in the work folder, the repository's DAGs.
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{work / 'airflow' / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
    (work / "airflow").mkdir(parents=True, exist_ok=True)
    return World(dir=work, env=env, url=f"http://127.0.0.1:{port}")


# -- sellers -------------------------------------------------------------------------------------


@dataclass
class Event:
    """One confirmed prediction, for the chart: when, which phase, was the top-1 the label."""

    at: float
    phase: str
    hit: bool
    in_set: bool
    version: str


@dataclass
class Traffic:
    """What the scenario sent and got back."""

    client: httpx.Client
    send_images: bool = True
    events: list[Event] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.perf_counter)

    def failed(self, what: str) -> None:
        with self.lock:
            self.failures.append(what[:300])

    def _photo(self, item: Listing) -> dict[str, Any] | None:
        if not self.send_images or item.image is None:
            return None
        return {"image": ("p.jpg", item.image.read_bytes(), "image/jpeg")}

    def _post(
        self, path: str, token: str, data: dict[str, str], files: Any, *, ok: tuple[int, ...]
    ) -> httpx.Response | None:
        """One seller's request, counted; a transport error or an unexpected status is a failure."""
        with self.lock:
            self.requests += 1
        try:
            response = self.client.post(
                path, headers={"Authorization": f"Bearer {token}"}, data=data, files=files
            )
        except httpx.HTTPError as exc:
            self.failed(f"{path}: {type(exc).__name__}: {exc}")
            return None
        if response.status_code not in ok:
            self.failed(f"{path} {response.status_code}: {response.text}")
            return None
        return response

    def predict(self, token: str, item: Listing) -> dict[str, Any] | None:
        data = {"designation": item.designation, "description": item.description, "top_k": "27"}
        files = self._photo(item)
        if not (item.designation or item.description) and files is None:
            return None
        response = self._post("/predict", token, data, files, ok=(200,))
        return None if response is None else response.json()

    def confirm(self, token: str, item: Listing, answer: dict[str, Any], label: int) -> bool:
        # The listing as the seller saved it: its text, its photo and the category chosen.
        data = {
            "designation": item.designation,
            "description": item.description,
            "prdtypecode": str(label),
            "request_id": answer["request_id"],
        }
        return self._post("/products", token, data, self._photo(item), ok=(200, 201)) is not None


def honest_label(
    item: Listing, answer: dict[str, Any], rng: random.Random, plan: Plan, codes: list[int]
) -> int:
    """The right category, or now and then an honest mistake: the model's wrong first guess, or another one."""
    if rng.random() >= plan.mistake_share:
        return item.code
    top = answer["predictions"][0]["prdtypecode"]
    if top != item.code:
        return top
    return rng.choice([c for c in codes if c != item.code])


def list_products(
    traffic: Traffic,
    sellers: list[str],
    items: list[Listing],
    *,
    phase: str,
    plan: Plan,
    rng: random.Random,
    codes: list[int],
    label: int | None = None,
    workers: int = 3,
) -> int:
    """Sellers list `items` through /predict and confirm a share of them; returns how many were sent."""
    jobs = [
        (sellers[i % len(sellers)], item, rng.random(), random.Random(rng.random()))
        for i, item in enumerate(items)
    ]

    def one(job: tuple[str, Listing, float, random.Random]) -> None:
        token, item, draw, own = job
        answer = traffic.predict(token, item)
        if answer is None:
            return
        if label is None and draw >= plan.confirm_share:
            return
        confirmed = label if label is not None else honest_label(item, answer, own, plan, codes)
        if traffic.confirm(token, item, answer, confirmed):
            ranked = [p["prdtypecode"] for p in answer["predictions"]]
            shown = [p["prdtypecode"] for p in answer["suggestions"]]
            with traffic.lock:
                traffic.events.append(
                    Event(
                        time.perf_counter() - traffic.started,
                        phase,
                        ranked[0] == item.code,
                        item.code in shown,
                        answer["model_version"],
                    )
                )

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, jobs))
    return len(items)


@contextlib.contextmanager
def background_seller(url: str, token: str, items: list[Listing]) -> Iterator[dict[str, Any]]:
    """A seller predicting in a loop (while a retraining runs and the API reloads): statuses and versions."""
    seen: dict[str, Any] = {"statuses": [], "versions": [], "errors": []}
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            i = 0
            while not stop.is_set():
                item = items[i % len(items)]
                i += 1
                try:
                    response = http.post(
                        "/predict",
                        headers={"Authorization": f"Bearer {token}"},
                        data={"designation": item.designation or "Produit", "description": item.description},
                    )
                except httpx.HTTPError as exc:
                    seen["errors"].append(f"{type(exc).__name__}: {exc}")
                    continue
                seen["statuses"].append(response.status_code)
                if response.status_code == 200:
                    seen["versions"].append(response.json()["model_version"])
                else:
                    seen["errors"].append(response.text[:300])
                time.sleep(0.1)

    thread = threading.Thread(target=run, name="background-seller", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=120)


# -- the API as an admin sees it ------------------------------------------------------------------


def login(client: httpx.Client, username: str, password: str) -> str:
    response = client.post("/login", data={"username": username, "password": password})
    response.raise_for_status()
    return response.json()["access_token"]


def register_sellers(client: httpx.Client, admin: str, names: list[str]) -> list[str]:
    tokens = []
    for name in names:
        response = client.post(
            "/register",
            headers={"Authorization": f"Bearer {admin}"},
            json={"username": name, "password": SELLER_PASSWORD, "role": "seller"},
        )
        response.raise_for_status()
        tokens.append(login(client, name, SELLER_PASSWORD))
    return tokens


def live_hit_rate(client: httpx.Client, admin: str, since: datetime, until: datetime) -> dict[str, Any]:
    """GET /stats over a window: the API's live hit rates (the monitor's query)."""
    response = client.get(
        "/stats",
        headers={"Authorization": f"Bearer {admin}"},
        params={"since": since.isoformat(), "until": until.isoformat()},
    )
    response.raise_for_status()
    rows = {row["model_kind"]: row for row in response.json()["hit_rate"]}
    return rows.get("all") or {"confirmed": 0, "top1_rate": None, "suggestion_rate": None}


def production(client: httpx.Client, admin: str) -> str | None:
    response = client.get("/models", headers={"Authorization": f"Bearer {admin}"})
    response.raise_for_status()
    return response.json()["production"]


def wait_for_served(
    client: httpx.Client, version: str, token: str, item: Listing, seconds: float = 60
) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = client.post(
            "/predict",
            headers={"Authorization": f"Bearer {token}"},
            data={"designation": item.designation or "x"},
        )
        if response.status_code == 200 and response.json()["model_version"] == version:
            return True
        time.sleep(0.5)
    return False


def monitor_now(env: dict[str, str], start: datetime, end: datetime) -> dict[str, Any]:
    """The monitor's own computation on [start, end) (nothing stored): figures and flag codes."""
    from config import Settings
    from db import monitoring
    from db.session import make_engine, make_session_factory
    from pipelines.monitor import Thresholds, build_report, products_reference

    settings = Settings(**{k: v for k, v in env.items() if k in Settings.model_fields})
    engine = make_engine(settings.DATABASE_URL)
    try:
        with make_session_factory(engine)() as session:
            logs = monitoring.window_logs(session=session, since=start, until=end)
            confirmed = {
                c.request_id: c.confirmed
                for c in monitoring.confirmed_predictions(session=session, since=start, until=end)
            }
            report = build_report(
                logs, confirmed, products_reference(session=session), Thresholds.from_settings(settings)
            )
    finally:
        engine.dispose()
    return {"flags": [f.code for f in report.flags], "figures": report.figures}


def gate_record(work: Path, candidate: str) -> dict[str, Any] | None:
    """The gate.json of the run that evaluated `candidate` (the newest one)."""
    found = None
    for path in sorted((work / "datasets" / "runs").glob("*/gate.json"), key=lambda p: p.stat().st_mtime):
        record = json.loads(path.read_text())
        if record.get("candidate_version") == candidate:
            found = record
    return found


def candidate_of(work: Path, interval_end: datetime) -> str | None:
    for path in (work / "datasets" / "runs").glob("*/candidate.json"):
        if path.parent.name.endswith(interval_end.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")):
            return json.loads(path.read_text())["version"]
    return None


def triggered_conf(world: World) -> dict[str, Any]:
    """The rakuten_retrain run the monitoring DAG's trigger_retrain task queued, with its conf.

    Read from Airflow's metadata database (SQLite in the work folder): `dags list-runs` does not
    show a run's conf. With no scheduler here, the scenario then runs that conf with `dags test`.
    """
    import sqlite3

    with contextlib.closing(sqlite3.connect(world.dir / "airflow" / "airflow.db")) as db:
        rows = db.execute(
            "SELECT run_id, state, conf, triggered_by FROM dag_run WHERE dag_id = 'rakuten_retrain' "
            "AND triggered_by = 'OPERATOR' ORDER BY id DESC"
        ).fetchall()
    if not rows:
        raise RuntimeError("the monitoring DAG's trigger_retrain queued no rakuten_retrain run")
    run_id, state, conf, triggered_by = rows[0]
    return {"run_id": run_id, "state": state, "triggered_by": triggered_by, "conf": json.loads(conf or "{}")}


def _json_tail(text: str) -> list[dict[str, Any]]:
    start = text.find("[")
    return json.loads(text[start : text.rfind("]") + 1]) if start >= 0 else []


# -- the chart -----------------------------------------------------------------------------------


def draw_chart(events: list[Event], marks: list[tuple[float, str]], path: Path, title: str) -> None:
    """The live top-1 hit rate (a rolling mean over confirmed predictions) across the scenario.

    The x axis counts the honest sellers' confirmations (the flood's are left out); `marks` are
    (confirmations so far, label).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = [e for e in sorted(events, key=lambda e: e.at) if e.phase != "flood"]
    window = 50
    xs, top1, in_set = [], [], []
    for i in range(len(events)):
        chunk = events[max(0, i - window + 1) : i + 1]
        xs.append(i + 1)
        top1.append(sum(e.hit for e in chunk) / len(chunk))
        in_set.append(sum(e.in_set for e in chunk) / len(chunk))
    fig, ax = plt.subplots(figsize=(9, 4.6), dpi=110)
    ax.plot(xs, top1, label=f"top-1 hit rate (last {window} confirmations)", color="#1f77b4")
    ax.plot(xs, in_set, label="confirmed category in the suggestion set", color="#2ca02c", alpha=0.8)
    ax.axhline(0.95, color="#2ca02c", linestyle=":", linewidth=1)
    for at, text in marks:
        ax.axvline(at, color="#999999", linestyle="--", linewidth=1)
        ax.text(at, 0.02, f" {text}", rotation=90, va="bottom", fontsize=8, color="#444444")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confirmed predictions (honest sellers)")
    ax.set_ylabel("share of confirmed predictions")
    ax.set_title(title, fontsize=10)
    # Below the axes: inside, it would hide a mark's label wherever the marks fall.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# -- the scenario --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    rng = random.Random(args.seed)
    wall = time.perf_counter()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="learning-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    world = make_world(work, args.database_url)
    WORLDS.append(world)
    os.environ.update({k: v for k, v in world.env.items() if not k.startswith("AIRFLOW")})
    report: dict[str, Any] = {
        "data": "synthetic" if args.data is None else "challenge folder",
        "quick": args.quick,
        "modality": args.modality,
    }
    marks: list[tuple[float, str]] = []

    # -- week 0 --------------------------------------------------------------------------------
    if args.data is None:
        from catalog.synthetic import generate_catalogue

        source = generate_catalogue(work / "catalogue", n_products=plan.synthetic_products, seed=args.seed)
    else:
        source = Path(args.data)
    listings = read_listings(source)
    if args.modality == "text":
        # The listings with text only; week 0 keeps their photos (training needs some), the
        # sellers send the text alone.
        listings = [i for i in listings if (i.designation or i.description).strip()]
    split = split_catalogue(listings, plan, rng)
    codes = sorted({item.code for item in listings})
    report["catalogue"] = {
        "products": len(listings),
        "week0": len(split.week0),
        "held_back_categories": split.held_back,
        "held_back_products": len(split.new),
        "flood_categories": split.flood_codes,
        "flood_label": split.flood_label,
    }
    # A small catalogue (the real sample's listings with text) cannot feed the whole plan without
    # listing a product twice, which would put products the repair trained on in its own test:
    # the traffic after the flag is scaled down instead.
    needed = plan.drift_share * (4 * plan.drift_batch + plan.drift_extra + plan.shadow_requests + plan.after)
    scale = min(1.0, 0.95 * len(split.new) / needed)
    if scale < 1.0:
        plan = replace(
            plan,
            drift_extra=int(plan.drift_extra * scale),
            shadow_requests=max(80, int(plan.shadow_requests * scale)),
            after=int(plan.after * scale),
        )
    report["traffic_scale"] = round(scale, 3)
    week0 = write_folder(split.week0, source, work / "week0")

    from catalog.importer import import_folder
    from db import migrate
    from db.session import make_engine, make_session_factory
    from store.blob import open_blob_store

    migrate.upgrade(world.env["DATABASE_URL"])
    engine = make_engine(world.env["DATABASE_URL"])
    imported = import_folder(
        week0,
        session_factory=make_session_factory(engine),
        image_store=open_blob_store(world.env["IMAGE_STORE_URI"]),
        progress=False,
    )
    engine.dispose()
    report["catalogue"]["imported"] = imported.inserted
    world.airflow("db", "migrate", name="airflow-db-migrate")
    t0 = datetime.now(UTC)
    world.dag_test("rakuten_retrain", {"interval_end": t0.isoformat()}, name="retrain-week0")
    week0_version = candidate_of(work, t0)
    world.start_api()
    client = httpx.Client(base_url=world.url, timeout=120)
    admin = login(client, *ADMIN)
    assert production(client, admin) == week0_version, "the week-0 run promoted nothing"
    report["week0_version"] = week0_version
    sellers = register_sellers(client, admin, [f"seller{i}" for i in range(plan.sellers)])
    flooder, background = register_sellers(client, admin, ["flooder", "background"])
    traffic = Traffic(client, send_images=args.modality == "all")
    traffic.started = time.perf_counter()

    def honest() -> int:
        return sum(1 for e in traffic.events if e.phase != "flood")

    old = iter(split.old * 3)  # cycled if the sample is small
    new = iter(split.new * 3)

    def take(n: int, drift: bool) -> list[Listing]:
        return [next(new) if drift and rng.random() < plan.drift_share else next(old) for _ in range(n)]

    # -- 1. before -----------------------------------------------------------------------------
    start = datetime.now(UTC)
    list_products(traffic, sellers, take(plan.before, False), phase="before", plan=plan, rng=rng, codes=codes)
    report["hit_rate_before"] = live_hit_rate(client, admin, start, datetime.now(UTC))["top1_rate"]
    time.sleep(0.5)
    # What the monitor says of the old catalogue's traffic: the flags that are not the shift's.
    report["flags_before"] = monitor_now(world.env, start, datetime.now(UTC))["flags"]

    # -- 2. drift until the monitor flags ------------------------------------------------------
    drift_start = datetime.now(UTC)
    marks.append((honest(), "the catalogue shifts"))
    sent, flagged = 0, None
    while sent < plan.drift_max:
        sent += list_products(
            traffic, sellers, take(plan.drift_batch, True), phase="drift", plan=plan, rng=rng, codes=codes
        )
        time.sleep(0.5)  # the log writer's flush
        check = monitor_now(world.env, drift_start, datetime.now(UTC))
        if check["flags"]:
            flagged = check
            break
    if flagged is None:
        raise RuntimeError(f"nothing flagged after {sent} drift requests")
    report["requests_until_flagged"] = sent
    report["flags"] = flagged["flags"]
    marks.append((honest(), f"flagged after {sent}"))
    window_end = datetime.now(UTC) + timedelta(seconds=1)
    text = world.dag_test(
        "rakuten_monitor",
        {"window_start": drift_start.isoformat(), "window_end": window_end.isoformat()},
        name="monitor-drift",
    )
    latest = client.get("/monitoring/reports/latest", headers={"Authorization": f"Bearer {admin}"}).json()
    report["monitor_dag"] = {
        "flagged": latest["flagged"],
        "flags": [f["code"] for f in latest["flags"]],
        "set_coverage": latest["report"].get("set_coverage", {}).get("coverage"),
        "trigger_retrain_ran": "end task task_id=trigger_retrain" in text,
    }
    queued = triggered_conf(world)
    report["retrain_triggered"] = queued
    # Sellers keep listing while the retraining is queued (what it will learn from).
    list_products(
        traffic, sellers, take(plan.drift_extra, True), phase="drift", plan=plan, rng=rng, codes=codes
    )
    report["hit_rate_during_drift"] = live_hit_rate(client, admin, drift_start, datetime.now(UTC))[
        "top1_rate"
    ]

    # -- 3. shadow, then promotion ---------------------------------------------------------------
    conf = queued["conf"] or {"interval_end": datetime.now(UTC).isoformat()}
    interval_end = datetime.fromisoformat(conf["interval_end"])
    world.dag_test("rakuten_retrain", conf, name="retrain-shadow", extra={"GATE_SHADOW": "first"})
    candidate = candidate_of(work, interval_end)
    shadow_gate = gate_record(work, candidate)
    report["shadow"] = {"version": candidate, "first_gate": _gate_summary(shadow_gate)}
    marks.append((honest(), "candidate shadowed"))
    list_products(
        traffic, sellers, take(plan.shadow_requests, True), phase="shadow", plan=plan, rng=rng, codes=codes
    )
    time.sleep(1.0)
    shadow_rates = client.get(
        f"/models/{candidate}/shadow", headers={"Authorization": f"Bearer {admin}"}
    ).json()
    report["shadow"]["live"] = shadow_rates.get("live")
    with background_seller(world.url, background, split.old[:50] + split.new[:50]) as seen:
        world.dag_test(
            "rakuten_retrain",
            conf,
            name="retrain-promote",
            extra={"GATE_SHADOW": "first"},
        )
        promoted = production(client, admin)
        served = wait_for_served(client, promoted, background, split.new[0])
        time.sleep(2)
    gate = gate_record(work, candidate)
    report["promoted_version"] = promoted if promoted != week0_version else None
    report["gate"] = _gate_summary(gate)
    report["reload"] = {
        "served_after_promotion": served,
        "background_requests": len(seen["statuses"]),
        "background_failures": len(seen["errors"]),
        "versions_seen": list(dict.fromkeys(seen["versions"])),
    }
    for error in seen["errors"]:
        traffic.failed(f"background: {error}")
    traffic.requests += len(seen["statuses"])
    marks.append((honest(), "repair promoted"))
    if report["promoted_version"] is None:
        raise RuntimeError(
            f"the repair was not promoted: the shadow run's gate: {report['shadow']['first_gate']}; "
            f"the promotion run's: {report['gate']}"
        )

    # -- 4. after ------------------------------------------------------------------------------
    after_start = datetime.now(UTC)
    list_products(traffic, sellers, take(plan.after, True), phase="after", plan=plan, rng=rng, codes=codes)
    time.sleep(1.0)
    after = live_hit_rate(client, admin, after_start, datetime.now(UTC))
    report["hit_rate_after"] = after["top1_rate"]
    after_check = monitor_now(world.env, after_start, datetime.now(UTC))
    report["set_coverage_after"] = after_check["figures"]["set_coverage"]["coverage"]
    report["flags_after"] = after_check["flags"]

    # -- 5. a flood of wrong labels ----------------------------------------------------------------
    flood_items = split.flood[: plan.flood]  # never twice the same: a duplicate is caught otherwise
    list_products(
        traffic,
        [flooder],
        flood_items,
        phase="flood",
        plan=plan,
        rng=rng,
        codes=codes,
        label=split.flood_label,
    )
    flood_end = datetime.now(UTC) + timedelta(seconds=2)
    world.dag_test(
        "rakuten_retrain",
        {"interval_end": flood_end.isoformat()},
        name="retrain-flood",
        extra={"LABEL_QUALITY_CHECK": "false"},
    )
    worse = candidate_of(work, flood_end)
    worse_gate = gate_record(work, worse)
    after_flood = production(client, admin)
    report["worse_candidate"] = {"version": worse, "gate": _gate_summary(worse_gate)}
    report["worse_candidate_promoted"] = after_flood == worse or bool(worse_gate and worse_gate["promote"])
    report["production_unchanged"] = after_flood == promoted
    validate = world.airflow("tasks", "test", "rakuten_retrain", "validate", name="validate-label-quality")
    report["label_quality"] = _quarantine_summary(world.env, flooder_name="flooder")
    report["label_quality"]["validate_task_ran"] = "label_quality" in validate or "suspect_seller" in validate

    report["failed_requests"] = len(traffic.failures)
    report["failures"] = traffic.failures[:5]
    report["requests"] = traffic.requests
    report["steps"] = world.steps
    report["wall_seconds"] = round(time.perf_counter() - wall, 1)
    title = (
        f"Learning loop ({report['data']}): hit rate {report['hit_rate_before']:.2f} before, "
        f"{report['hit_rate_during_drift']:.2f} in drift, {report['hit_rate_after']:.2f} after"
    )
    if args.chart:
        draw_chart(traffic.events, marks, Path(args.chart), title)
        report["chart"] = str(args.chart)
    client.close()
    world.stop_api()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        report["workdir"] = str(work)
    return report


def _kind_figures(kinds: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Each compared kind's loss and McNemar p-values, as a gate record holds them."""
    return [
        {k: kind[k] for k in ("kind", "n", "delta", "p_worse", "p_adjusted") if k in kind}
        for kind in kinds or []
    ]


def _gate_summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    keep = (
        "promote",
        "reason",
        "evidence",
        "candidate_score",
        "production_score",
        "shadow",
        "candidate_version",
    )
    summary = {k: record.get(k) for k in keep if k in record}
    summary["kinds"] = _kind_figures(record.get("kinds"))
    live = record.get("live") or {}
    summary["live_holdout"] = {
        k: live.get(k) for k in ("rows", "judged", "candidate_score", "production_score")
    }
    if live.get("kinds"):  # judged per kind too, against noise with the holdout's paired counts
        summary["live_holdout"]["kinds"] = _kind_figures(live["kinds"])
    closed = record.get("closed")
    if closed:  # the fixed split's own categories, judged when the live holdout was better
        summary["closed_view"] = {
            "classes": len(closed.get("classes") or []),
            "passed": closed.get("passed"),
            "kinds": _kind_figures(closed.get("kinds")),
        }
    return summary


def _quarantine_summary(env: dict[str, str], *, flooder_name: str) -> dict[str, Any]:
    from sqlalchemy import func, select

    from db.session import make_engine, make_session_factory
    from db.tables import Product, User

    engine = make_engine(env["DATABASE_URL"])
    try:
        with make_session_factory(engine)() as session:
            flooder = session.scalar(select(User.id).where(User.username == flooder_name))
            rows = session.execute(
                select(Product.label_status, func.count())
                .where(Product.created_by == flooder)
                .group_by(Product.label_status)
            ).all()
            reason = session.scalar(
                select(Product.quarantine_reason).where(
                    Product.created_by == flooder, Product.quarantine_reason.like("suspect_seller%")
                )
            )
            honest = session.scalar(
                select(func.count()).where(
                    Product.created_by != flooder, Product.quarantine_reason.like("suspect_seller%")
                )
            )
    finally:
        engine.dispose()
    return {"flood_products": dict(rows), "reason": reason, "honest_products_quarantined": honest or 0}


def problems(report: dict[str, Any]) -> list[str]:
    """Why a run does not prove the loop (CI fails on any): empty when it does."""
    found = []
    if report.get("worse_candidate_promoted") is not False:
        found.append("the worse candidate was promoted")
    if report.get("failed_requests") != 0:
        found.append(f"{report.get('failed_requests')} failed requests: {report.get('failures')}")
    if not report.get("flags"):
        found.append("nothing was flagged")
    before, after = report.get("hit_rate_during_drift"), report.get("hit_rate_after")
    if before is None or after is None or after < before + MIN_RECOVERY:
        found.append(
            f"hit rate after {after} is not clearly above the {before} during drift (+{MIN_RECOVERY})"
        )
    if not report.get("promoted_version"):
        found.append("no repaired version was promoted")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.learning_loop", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data", help="a challenge-layout folder (default: the synthetic catalogue)")
    parser.add_argument("--quick", action="store_true", help="the small plan (CI)")
    parser.add_argument("--out", help="write the JSON report here too")
    parser.add_argument("--chart", help="write the PNG chart of the live hit rate here")
    parser.add_argument("--database-url", help="the service's database (default: SQLite in the work folder)")
    parser.add_argument("--workdir", help="work folder (default: a fresh temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--modality",
        choices=("all", "text"),
        default="all",
        help="text: only listings with text, sent without their photo (the real sample's images are mostly alone)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 unless the run proves the loop (CI)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "catalog.importer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not (AIRFLOW_VENV / "bin" / "airflow").is_file():
        parser.error(f"{AIRFLOW_VENV} is missing: make airflow-venv")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="learning-loop-"))
    args.workdir = str(work)
    try:
        report = run(args)
    finally:
        for world in WORLDS:  # the API process this run started, whatever happened
            world.stop_api()
    line = json.dumps(report, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    found = problems(report)
    for problem in found:
        logger.error("the loop is not proven: %s", problem)
    sys.stdout.write(line + "\n")
    return 1 if args.check and found else 0


if __name__ == "__main__":
    sys.exit(main())
