"""The steps of the weekly retraining DAG (`airflow/dags/retrain.py` only wires them).

validate -> snapshot -> train -> evaluate -> gate -> publish (promote or reject) -> reload API

Every step takes settings and small values (URIs, versions, figures) and returns a small
JSON-ready dict, which is what Airflow passes between tasks (XCom); data goes through the
stores. Each step is idempotent for a given data interval, so a retried task or a rerun of the
same interval redoes nothing that is already done:

    {DATA_STORE_URI}/snapshots/{interval}/...               the training set (pipelines.snapshot)
    {MODEL_STORE_URI}/versions/{version}/...                the candidate, published once, unpromoted
    {DATA_STORE_URI}/runs/{interval}/candidate.json         its version (written after the publication)
    {DATA_STORE_URI}/runs/{interval}/evaluation.json        both models on the same held-out set
    {DATA_STORE_URI}/runs/{interval}/gate.json              the gate's decision and figures

The training step publishes the candidate to the model store, unpromoted (versions are
immutable, so a refused one costs nothing but space), and every later step names it by its
version: evaluation downloads it from the store, checked against its MANIFEST.json, and the
publish step only moves the production pointer (`pipelines.registry_ops.promote_version`) or
records it as `rejected` with the gate's figures. The model versions table then explains every
week, and an admin can still promote a refused candidate by hand.

`python -m pipelines.retrain train --snapshot URI --model-store URI --out RUN_URI` is the
training container's command when TRAIN_MODE=docker, and `python -m pipelines.retrain train-step
--snapshot-json JSON` the training pod's when TRAIN_MODE=kubernetes (the same code as in-process
training).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from config import Settings
from pipelines.snapshot import take_snapshot
from store.blob import BlobNotFoundError, BlobStore, open_blob_store

logger = logging.getLogger(__name__)

RUNS_PREFIX = "runs"
CANDIDATE_RECORD = "candidate.json"
# boto3's own variables, handed to the training container so it reaches the same S3 as the
# pipeline. They configure the AWS SDK, not the project, so they are not Settings fields.
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


class TrainingFailedError(RuntimeError):
    """Training did not produce a bundle (the container exited non-zero, or train() raised)."""


def _session_factory(settings: Settings):  # type: ignore[no-untyped-def]
    from db.session import make_engine, make_session_factory

    engine = make_engine(settings.DATABASE_URL)
    return engine, make_session_factory(engine)


def run_uri(settings: Settings, snapshot: dict[str, Any]) -> str:
    """The folder of one data interval's run artefacts (named like its snapshot)."""
    return f"{settings.DATA_STORE_URI.rstrip('/')}/{RUNS_PREFIX}/{snapshot['key'].rsplit('/', 1)[-1]}"


def _run_folder(uri: str) -> tuple[BlobStore, str]:
    """The store and URI of the run folder that holds the run file `uri`."""
    parent = uri.rstrip("/").rpartition("/")[0]
    return open_blob_store(parent), parent


# -- the candidate: published once, unpromoted, then named by its version ----------------------


def candidate_record(run: str) -> dict[str, Any] | None:
    """The candidate this run already published ({"version", "location"}), or None."""
    try:
        return json.loads(open_blob_store(run).get(CANDIDATE_RECORD))
    except BlobNotFoundError:
        return None


def publish_candidate(bundle_dir: Path, model_store_uri: str, run: str) -> dict[str, Any]:
    """Publish a trained bundle to the model store, unpromoted, then record it in the run folder.

    The model store's manifest (MANIFEST.json, written last) is the bundle's only integrity
    record; the run's candidate.json, written after it, only names the version, so a retried
    step finds the candidate without training again.
    """
    from store.model_store import open_model_store

    model_store = open_model_store(model_store_uri)
    version = model_store.publish(bundle_dir, exist_ok=True)
    record = {"version": version, "location": model_store.location(version)}
    open_blob_store(run).put(CANDIDATE_RECORD, json.dumps(record, indent=2).encode("utf-8"))
    logger.info("published candidate %s to %s (not promoted)", version, record["location"])
    return record


def train_to_store(
    snapshot_uri: str,
    model_store_uri: str,
    run: str,
    *,
    epochs: int | None = None,
    quick: bool = False,
    seed: int = 0,
    feature_cache: Path | None = None,
) -> dict[str, Any]:
    """Train on the snapshot's train split and publish the candidate: the training step."""
    from models.training.train import train
    from pipelines.snapshot import load_snapshot

    dataset = load_snapshot(snapshot_uri, split="train")
    logger.info(
        "training on %d products of %s (quick=%s, epochs=%s)", len(dataset), snapshot_uri, quick, epochs
    )
    with tempfile.TemporaryDirectory(prefix="candidate-") as tmp:
        bundle = train(
            [dataset],
            Path(tmp) / "bundle",
            epochs=epochs,
            seed=seed,
            quick=quick,
            feature_cache=feature_cache,
        )
        return publish_candidate(Path(bundle), model_store_uri, run)


# -- the steps ----------------------------------------------------------------------------------


def validate_step(settings: Settings) -> dict[str, Any]:
    """Quarantine bad products and the confirmations of suspect sellers (LABEL_QUALITY_CHECK);
    InsufficientDataError below MIN_TRAINING_ROWS usable ones."""
    from pipelines.label_quality import LabelQualityLimits, hold_back_suspect_labels
    from pipelines.validate import validate_products

    engine, session_factory = _session_factory(settings)
    try:
        labels = None
        if settings.LABEL_QUALITY_CHECK:
            # First: a flood of wrong labels must not count among the usable rows.
            labels = hold_back_suspect_labels(session_factory, LabelQualityLimits.from_settings(settings))
        report = validate_products(
            session_factory,
            open_blob_store(settings.IMAGE_STORE_URI),
            min_rows=settings.MIN_TRAINING_ROWS,
            check_images=settings.VALIDATE_IMAGES,
            max_pixels=settings.MAX_IMAGE_PIXELS,
        )
    finally:
        engine.dispose()
    return {**report.as_dict(), "label_quality": labels}


def snapshot_step(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Freeze the usable products of the interval's run in the data store; its summary."""
    engine, session_factory = _session_factory(settings)
    try:
        manifest = take_snapshot(
            session_factory,
            open_blob_store(settings.DATA_STORE_URI),
            image_store_uri=open_blob_store(settings.IMAGE_STORE_URI).uri,
            start=start,
            end=end,
            eval_fraction=settings.EVAL_FRACTION,
        )
    finally:
        engine.dispose()
    keep = ("uri", "key", "rows", "splits", "with_image", "created_at")
    return {k: manifest[k] for k in keep}


def train_step(settings: Settings, snapshot: dict[str, Any], *, docker_client: Any = None) -> dict[str, Any]:
    """Train a candidate on the snapshot (in process or in the training image) and publish it,
    unpromoted; its version and location in the model store."""
    run = run_uri(settings, snapshot)
    record = candidate_record(run)
    if record is not None:
        logger.info("candidate %s already trained for this interval: reused", record["version"])
    elif settings.TRAIN_MODE == "docker":
        train_in_container(settings, snapshot["uri"], run, client=docker_client)
        record = candidate_record(run)
        if record is None:
            raise TrainingFailedError(f"the training container exited 0 but published no candidate for {run}")
    else:
        record = train_to_store(
            snapshot["uri"],
            settings.MODEL_STORE_URI,
            run,
            epochs=settings.TRAIN_EPOCHS,
            quick=settings.TRAIN_QUICK,
            feature_cache=settings.FEATURE_CACHE_DIR,
        )
    return record


def trained_candidate(settings: Settings, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The candidate the training step (in whichever place it ran) published for this snapshot."""
    run = run_uri(settings, snapshot)
    record = candidate_record(run)
    if record is None:
        raise TrainingFailedError(f"the training step finished but published no candidate for {run}")
    return record


def container_command(settings: Settings, snapshot_uri: str, run: str) -> list[str]:
    """Arguments after `python` in the training image (its entrypoint replaced by `python`)."""
    command = ["-m", "pipelines.retrain", "train", "--snapshot", snapshot_uri]
    command += ["--model-store", settings.MODEL_STORE_URI, "--out", run]
    if settings.TRAIN_QUICK:
        command.append("--quick")
    if settings.TRAIN_EPOCHS is not None:
        command += ["--epochs", str(settings.TRAIN_EPOCHS)]
    return command


def container_environment() -> dict[str, str]:
    """What the training container needs to reach the stores (see AWS_VARIABLES)."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.update({name: os.environ[name] for name in AWS_VARIABLES if os.environ.get(name)})
    return env


CONTAINER_FEATURE_CACHE = "/app/var/feature-cache"


def train_in_container(settings: Settings, snapshot_uri: str, run: str, *, client: Any = None) -> None:
    """Run the training image (TRAIN_IMAGE) through the Docker API, streaming its log."""
    if client is None:
        import docker

        client = docker.from_env()
    command = container_command(settings, snapshot_uri, run)
    environment, volumes = container_environment(), {}
    if settings.TRAIN_FEATURE_CACHE_VOLUME:
        volumes[settings.TRAIN_FEATURE_CACHE_VOLUME] = {"bind": CONTAINER_FEATURE_CACHE, "mode": "rw"}
        environment["FEATURE_CACHE_DIR"] = CONTAINER_FEATURE_CACHE
    logger.info("starting %s: python %s", settings.TRAIN_IMAGE, " ".join(command))
    container = client.containers.run(
        settings.TRAIN_IMAGE,
        command=command,
        entrypoint=["python"],
        environment=environment,
        volumes=volumes,
        network=settings.TRAIN_DOCKER_NETWORK,
        detach=True,
    )
    try:
        for line in container.logs(stream=True, follow=True):
            logger.info("[train] %s", line.decode("utf-8", "replace").rstrip())
        status = container.wait().get("StatusCode")
    finally:
        container.remove(force=True)
    if status != 0:
        raise TrainingFailedError(
            f"the training container {settings.TRAIN_IMAGE} exited with status {status}"
        )


def evaluate_step(settings: Settings, snapshot: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the candidate and the production model on the snapshot's held-out split."""
    from models.training.evaluate import evaluate_bundle, paired_counts
    from pipelines.snapshot import load_snapshot
    from store.model_store import open_model_store

    dataset = load_snapshot(snapshot["uri"], split="eval")
    if len(dataset) == 0:
        raise TrainingFailedError(f"the evaluation split of {snapshot['uri']} is empty")
    model_store = open_model_store(settings.MODEL_STORE_URI)
    production_version = model_store.production()
    live_set = live_holdout(settings, snapshot)
    live: dict[str, Any] = {
        "rows": len(live_set),
        "since": live_set.source,
        "candidate": None,
        "production": None,
    }
    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        # Downloaded as the API would download it: every file checked against MANIFEST.json.
        bundle = model_store.download(candidate["version"], Path(tmp) / "candidate")
        candidate_outcomes: dict[str, dict[str, bool]] = {}
        production_outcomes: dict[str, dict[str, bool]] = {}
        # The same answers restricted to the categories the fixed split holds (the closed view).
        candidate_closed: dict[str, Any] = {}
        production_closed: dict[str, Any] = {"metrics": None, "outcomes": {}}
        candidate_metrics = evaluate_bundle(
            bundle, dataset, outcomes=candidate_outcomes, closed=candidate_closed
        )
        # The live holdout's losses are judged against sampling noise too: it is small at first.
        live_candidate_outcomes: dict[str, dict[str, bool]] = {}
        live_production_outcomes: dict[str, dict[str, bool]] = {}
        if len(live_set):
            live["candidate"] = evaluate_bundle(bundle, live_set, outcomes=live_candidate_outcomes)
        production_metrics = None
        if production_version is not None:
            production_dir = model_store.download(production_version, Path(tmp) / "production")
            production_metrics = evaluate_bundle(
                production_dir, dataset, outcomes=production_outcomes, closed=production_closed
            )
            if len(live_set):
                live["production"] = evaluate_bundle(
                    production_dir, live_set, outcomes=live_production_outcomes
                )
    live["paired"] = paired_counts(live_candidate_outcomes, live_production_outcomes)
    evaluation = {
        "snapshot_uri": snapshot["uri"],
        "eval_rows": len(dataset),
        "candidate": {"version": candidate["version"], "metrics": candidate_metrics},
        "production": (
            {"version": production_version, "metrics": production_metrics} if production_version else None
        ),
        "live_holdout": live,
        # Per kind, how many held-out products only one of the two models gets right.
        "paired": paired_counts(candidate_outcomes, production_outcomes),
        "closed": {
            "classes": candidate_closed["classes"],
            "candidate": candidate_closed["metrics"],
            "production": production_closed["metrics"],
            "paired": paired_counts(candidate_closed["outcomes"], production_closed["outcomes"]),
        },
    }
    run = run_uri(settings, snapshot)
    open_blob_store(run).put(
        "evaluation.json", json.dumps(evaluation, indent=2, default=float).encode("utf-8")
    )
    uri = f"{run}/evaluation.json"
    summary = {
        side: {
            kind: round(float(m.get("weighted_f1") or 0.0), 4)
            for kind, m in metrics.items()
            if isinstance(m, dict)
        }
        for side, metrics in (("candidate", candidate_metrics), ("production", production_metrics or {}))
    }
    logger.info("weighted F1 on %d held-out products: %s", len(dataset), summary)
    return {
        "evaluation_uri": uri,
        "eval_rows": len(dataset),
        "live_rows": len(live_set),
        "candidate_version": candidate["version"],
        "production_version": production_version,
        "weighted_f1": summary,
    }


def live_holdout(settings: Settings, snapshot: dict[str, Any]) -> Any:
    """Products sellers confirmed in the last GATE_LIVE_DAYS that the candidate did not train on
    (not in the snapshot's train split), as a Dataset."""
    from catalog.products import load_confirmed
    from pipelines.snapshot import load_snapshot

    trained = load_snapshot(snapshot["uri"], split="train").product_ids
    since = datetime.now(UTC) - timedelta(days=settings.GATE_LIVE_DAYS)
    engine, session_factory = _session_factory(settings)
    try:
        return load_confirmed(
            session_factory, open_blob_store(settings.IMAGE_STORE_URI), since=since, exclude=trained
        )
    finally:
        engine.dispose()


def shadow_figures(settings: Settings, version: str) -> dict[str, Any] | None:
    """Both live top-1 hit rates since `version` was shadowed, or None if it is not the shadow."""
    from db import monitoring
    from store.model_store import open_model_store

    pointer = open_model_store(settings.MODEL_STORE_URI).shadow()
    if not pointer or pointer["version"] != version:
        return None
    since = datetime.fromisoformat(pointer["since"])
    engine, session_factory = _session_factory(settings)
    try:
        with session_factory() as session:
            rows = monitoring.shadow_confirmed(
                session=session, version=version, since=since, until=datetime.now(UTC)
            )
    finally:
        engine.dispose()
    return {**monitoring.shadow_hit_rates(rows), "since": pointer["since"]}


def gate_step(settings: Settings, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The promotion gate's decision on the evaluation, with every figure it compared."""
    from pipelines.gate import decide

    store, _ = _run_folder(evaluation["evaluation_uri"])
    full = json.loads(store.get("evaluation.json"))
    production = full["production"]
    decision = decide(
        full["candidate"]["metrics"],
        production["metrics"] if production else None,
        min_improvement=settings.GATE_MIN_IMPROVEMENT,
        max_recall_drop=settings.GATE_MAX_RECALL_DROP,
        min_class_support=settings.GATE_MIN_CLASS_SUPPORT,
        paired=full.get("paired"),
        live=full.get("live_holdout"),
        min_live_rows=settings.GATE_MIN_LIVE_ROWS,
        max_live_drop=settings.GATE_MAX_LIVE_DROP,
        shadow=shadow_figures(settings, evaluation["candidate_version"]),
        closed=full.get("closed"),
        max_new_class_cost=settings.GATE_MAX_NEW_CLASS_COST,
    )
    record = {
        **decision.as_dict(),
        "candidate_version": evaluation["candidate_version"],
        "production_version": evaluation["production_version"],
        "eval_rows": evaluation["eval_rows"],
        "evaluation_uri": evaluation["evaluation_uri"],
        "snapshot_uri": full["snapshot_uri"],
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    store.put("gate.json", json.dumps(record, indent=2).encode("utf-8"))
    logger.info("gate: %s (%s)", "PROMOTE" if decision.promote else "REFUSE", decision.reason)
    return record


def publish_step(settings: Settings, candidate: dict[str, Any], gate: dict[str, Any]) -> dict[str, Any]:
    """Decide the published candidate's fate: promote it if the gate said so, else record it as
    rejected (it stays in the model store either way).

    Raises:
        ChecksumMismatchError, UnservableVersionError: the gate accepted the candidate but
            promotion's verification refused it (recorded as rejected; production unchanged).
    """
    from pipelines.registry_ops import promote_version, record_published, reject_version
    from store.model_store import ChecksumMismatchError, UnservableVersionError, open_model_store

    model_store = open_model_store(settings.MODEL_STORE_URI)
    version = candidate["version"]
    engine, session_factory = _session_factory(settings)
    try:
        record_published(model_store, session_factory, version)
        production = model_store.production()
        promote = bool(gate["promote"])
        if version == production:
            logger.info("%s is already the production version (a rerun): nothing to decide", version)
            return {
                "version": version,
                "promoted": False,
                "production": production,
                "reason": "already production",
            }
        if promote and production != gate["production_version"]:
            # Someone promoted or rolled back while this run evaluated: its comparison is stale.
            promote = False
            gate = {
                **gate,
                "promote": False,
                "reason": f"production changed from {gate['production_version']} "
                f"to {production} during the run; the comparison no longer holds",
            }
        shadow = model_store.shadow()
        shadowed = bool(shadow and shadow["version"] == version)
        if promote and settings.GATE_SHADOW == "first" and not shadowed:
            # Live traffic first: the API shadows the candidate; the next run of this interval
            # (snapshot and candidate reused) sees both live hit rates and decides.
            model_store.set_shadow(version)
            logger.info("%s passed the gate: shadowed, not promoted yet (GATE_SHADOW=first)", version)
            return {
                "version": version,
                "promoted": False,
                "shadowed": True,
                "production": production,
                "reason": f"shadowed before promotion: {gate['reason']}",
            }
        if shadowed:
            model_store.set_shadow(None)  # decided: promoted or rejected, it is shadowed no more
        if promote:
            try:
                promote_version(model_store, session_factory, version, gate=gate)
            except (ChecksumMismatchError, UnservableVersionError) as exc:
                # The pointer did not move. Say why in the versions table, then fail the step:
                # a candidate that passed the gate but cannot be served needs a human.
                refused = {**gate, "promote": False, "reason": f"refused at promotion: {exc}"}
                reject_version(model_store, session_factory, version, gate=refused)
                raise
            logger.info("promoted %s (was %s)", version, production)
        else:
            reject_version(model_store, session_factory, version, gate=gate)
            logger.warning("%s published but NOT promoted: %s", version, gate["reason"])
    finally:
        engine.dispose()
    return {
        "version": version,
        "promoted": promote,
        "production": model_store.production(),
        "reason": gate["reason"],
    }


def request_reload(settings: Settings, *, client: Any = None) -> dict[str, Any]:
    """Ask the API to load the production version now; a warning, never a failure, if it cannot.

    The API also polls the production pointer (MODEL_POLL_SECONDS), so a missed call only
    delays the switch; with several replicas this call reaches one and the others poll.
    """
    import httpx

    username = settings.API_ADMIN_USERNAME or settings.FIRST_ADMIN_USERNAME
    password = settings.API_ADMIN_PASSWORD or settings.FIRST_ADMIN_PASSWORD
    base = settings.API_URL.rstrip("/")
    own_client = client is None
    client = client or httpx.Client(timeout=settings.API_TIMEOUT_SECONDS)
    try:
        login = client.post(f"{base}/login", data={"username": username, "password": password})
        if login.status_code != 200:
            detail = f"login as {username} at {base} answered {login.status_code}: {login.text[:200]}"
            logger.warning(
                "could not ask the API to reload (%s); it will pick the model up by polling", detail
            )
            return {"reloaded": False, "detail": detail}
        token = login.json()["access_token"]
        response = client.post(f"{base}/models/reload", headers={"Authorization": f"Bearer {token}"})
        if response.status_code != 200:
            detail = f"POST /models/reload answered {response.status_code}: {response.text[:200]}"
            logger.warning("the API refused the reload (%s); it will retry by polling", detail)
            return {"reloaded": False, "detail": detail}
        body = response.json()
        logger.info("the API now serves %s (changed: %s)", body.get("version"), body.get("changed"))
        return {"reloaded": True, "version": body.get("version"), "changed": body.get("changed")}
    except httpx.HTTPError as exc:
        detail = f"{base} is unreachable: {type(exc).__name__}: {exc}"
        logger.warning("could not ask the API to reload (%s); it will pick the model up by polling", detail)
        return {"reloaded": False, "detail": detail}
    finally:
        if own_client:
            client.close()


def reload_step(settings: Settings, published: dict[str, Any]) -> dict[str, Any]:
    """Ask the API to reload when this run promoted a model."""
    if not published["promoted"]:
        logger.info("nothing promoted: the API keeps serving %s", published["production"])
        return {"reloaded": False, "detail": "nothing promoted"}
    return request_reload(settings)


def run_pipeline(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Every step in order, as the DAG runs them (for `python -m pipelines.retrain` without Airflow)."""
    validation = validate_step(settings)
    snapshot = snapshot_step(settings, start, end)
    candidate = train_step(settings, snapshot)
    evaluation = evaluate_step(settings, snapshot, candidate)
    gate = gate_step(settings, evaluation)
    published = publish_step(settings, candidate, gate)
    reload = reload_step(settings, published)
    return {
        "validation": validation,
        "snapshot": snapshot,
        "gate": gate,
        "published": published,
        "reload": reload,
    }


def last_week(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The data interval of a run started now: the week up to the last Monday 03:00 UTC (the DAG's)."""
    now = now or datetime.now(UTC)
    end = now.replace(hour=3, minute=0, second=0, microsecond=0) - timedelta(days=now.weekday())
    if end > now:
        end -= timedelta(weeks=1)
    return end - timedelta(weeks=1), end


# -- command line: the whole pipeline without Airflow, or the training container's step ---------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The retraining pipeline outside Airflow.")
    sub = parser.add_subparsers(dest="command")
    run_cmd = sub.add_parser("run", help="every step for one data interval (the default command)")
    run_cmd.add_argument(
        "--end", type=datetime.fromisoformat, help="interval end (ISO 8601; default: last Monday 03:00 UTC)"
    )
    train_cmd = sub.add_parser(
        "train", help="train on a snapshot and publish the candidate, unpromoted (the training container)"
    )
    train_cmd.add_argument("--snapshot", required=True, help="snapshot URI (pipelines.snapshot)")
    train_cmd.add_argument(
        "--model-store", required=True, help="the model store to publish to (MODEL_STORE_URI)"
    )
    train_cmd.add_argument("--out", required=True, help="the run folder that records the candidate's version")
    train_cmd.add_argument("--epochs", type=int, default=None)
    train_cmd.add_argument("--quick", action="store_true")
    train_cmd.add_argument("--seed", type=int, default=0)
    train_cmd.add_argument(
        "--feature-cache",
        type=Path,
        default=os.environ.get("FEATURE_CACHE_DIR") or None,
        help="keep the pretrained backbone's features here (default: $FEATURE_CACHE_DIR; a volume in a container)",
    )
    pod_cmd = sub.add_parser(
        "train-step",
        help="the DAG's train step for a snapshot (TRAIN_MODE=kubernetes: the training pod's command)",
    )
    pod_cmd.add_argument("--snapshot-json", required=True, help="the snapshot task's result (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.command == "train":
        record = train_to_store(
            args.snapshot,
            args.model_store,
            args.out,
            epochs=args.epochs,
            quick=args.quick,
            seed=args.seed,
            feature_cache=args.feature_cache,
        )
        sys.stdout.write(json.dumps(record) + "\n")
        return 0
    from config import get_settings

    if args.command == "train-step":
        # The pod is the training container: it trains here, whatever TRAIN_MODE says, and
        # reuses a candidate already published for this interval (a retried task).
        settings = get_settings().model_copy(update={"TRAIN_MODE": "inprocess"})
        record = train_step(settings, json.loads(args.snapshot_json))
        sys.stdout.write(json.dumps(record) + "\n")
        return 0
    end = getattr(args, "end", None)
    start, end = (end - timedelta(weeks=1), end) if end else last_week()
    result = run_pipeline(get_settings(), start, end)
    sys.stdout.write(json.dumps(result["published"], default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
