"""First start on an empty model store: catalogue -> products -> quick model -> production.

`make run` calls `python -m pipelines.bootstrap` before serving; it does nothing when the
store already has a production version. The catalogue is the challenge-layout folder named by
BOOTSTRAP_DATA (`--data DIR`) when set, else a generated synthetic one; the bundle records
which (`training_data` in its metadata), so that a model trained on synthetic data is shown
as a demo everywhere. Each step says what it does and how long it took; library chatter
(TensorFlow, tf2onnx, epoch lines) is kept out of the output unless `--verbose`.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

from sqlalchemy import func, select

from config import VAR_DIR, Settings, get_settings
from db.session import make_engine, make_session_factory
from db.tables import Product
from pipelines.registry_ops import promote_version, publish_bundle
from pipelines.snapshot import is_evaluation
from store.blob import open_blob_store
from store.model_store import open_model_store

logger = logging.getLogger("bootstrap")


def bootstrap(
    settings: Settings, *, n_products: int = 1500, seed: int = 0, data: Path | None = None
) -> str | None:
    """Publish and promote a first model if the store has none; returns the new version.

    `data` (default BOOTSTRAP_DATA) is a challenge-layout folder to import instead of the
    synthetic catalogue.
    """
    data = data or settings.BOOTSTRAP_DATA
    if data is not None and not (Path(data) / "X_train_update.csv").is_file():
        raise SystemExit(f"BOOTSTRAP_DATA={data}: not a challenge-layout folder (no X_train_update.csv)")
    store = open_model_store(settings.MODEL_STORE_URI)
    current = store.production()
    if current is not None:
        logger.info("model store %s already serves %s: nothing to bootstrap", store.uri, current)
        return None
    from catalog.importer import import_folder
    from catalog.products import load_products
    from catalog.synthetic import generate_catalogue
    from models.training.train import train

    engine = make_engine(settings.DATABASE_URL)
    session_factory = make_session_factory(engine)
    image_store = open_blob_store(settings.IMAGE_STORE_URI)
    total_steps = 5

    def step(n: int, text: str) -> float:
        logger.info("[%d/%d] %s", n, total_steps, text)
        return time.perf_counter()

    if data is not None:
        catalogue = Path(data).resolve()
        started = step(1, f"using the challenge-layout folder {catalogue} (BOOTSTRAP_DATA)")
        training_data = {"kind": "folder", "detail": str(catalogue)}
        source = "challenge"
    else:
        started = step(1, f"generating a synthetic catalogue of {n_products} products (seed {seed})")
        catalogue = VAR_DIR / f"synthetic-catalogue-{n_products}-{seed}"
        if not (catalogue / "X_train_update.csv").is_file():
            generate_catalogue(catalogue, n_products=n_products, seed=seed)
        training_data = {
            "kind": "synthetic",
            "detail": f"catalog.synthetic, {n_products} products, seed {seed}",
        }
        source = "synthetic"
    logger.info("      done in %.1f s: %s", time.perf_counter() - started, catalogue)

    started = step(2, "importing it into the products table and the image store")
    with session_factory() as session:
        existing = session.scalar(select(func.count()).select_from(Product)) or 0
    if existing == 0:
        report = import_folder(
            catalogue, session_factory=session_factory, image_store=image_store, source=source
        )
        logger.info("      %s", report.summary())
    else:
        logger.info("      the products table already has %d products: kept as they are", existing)
    logger.info("      done in %.1f s", time.perf_counter() - started)

    started = step(3, "training a --quick bundle on the product database (about 2 minutes)")
    dataset = load_products(session_factory, image_store)
    # Leave out the retraining pipeline's fixed evaluation split, so that the first weekly
    # run compares its candidate with this model on products neither has trained on.
    dataset = dataset.subset(
        [i for i, pid in enumerate(dataset.product_ids) if not is_evaluation(pid, settings.EVAL_FRACTION)]
    )
    with tempfile.TemporaryDirectory(prefix="bundle-", dir=VAR_DIR) as tmp:
        bundle = train([dataset], Path(tmp) / "bundle", seed=seed, quick=True, epochs=settings.TRAIN_EPOCHS)
        mark_training_data(bundle, training_data)
        logger.info("      done in %.1f s: %s", time.perf_counter() - started, bundle)

        started = step(4, f"publishing it to the model store {store.uri}")
        version = publish_bundle(store, session_factory, bundle)
        logger.info("      published %s in %.1f s", version, time.perf_counter() - started)

    step(5, f"promoting {version} to production")
    promote_version(store, session_factory, version, gate={"reason": "bootstrap: the store was empty"})
    engine.dispose()
    return version


def mark_training_data(bundle: Path, training_data: dict[str, str]) -> None:
    """Record in the bundle's metadata what it was trained on (before it is published)."""
    path = bundle / "metadata.json"
    metadata = json.loads(path.read_text(encoding="utf-8"))
    metadata["training_data"] = training_data
    path.write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# Known to be harmless on this path, and noisy: TensorFlow's retracing and serialisation
# warnings, tf2onnx's optimiser report, Keras epoch lines (models.train logs them at INFO).
QUIET_LOGGERS = ("tensorflow", "tf2onnx", "absl", "h5py", "models", "store", "pipelines.registry_ops")


def quiet_logging(level: str) -> None:
    """Progress lines only: the bootstrap's own at INFO, everything else at WARNING and up,
    the known-harmless library loggers at ERROR."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="(tensorflow|keras|tf2onnx|google)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500, help="synthetic products to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="challenge-layout folder (default: BOOTSTRAP_DATA)")
    parser.add_argument("--verbose", action="store_true", help="every library's log lines too")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.verbose:
        logging.basicConfig(level=settings.LOG_LEVEL, format="%(asctime)s %(name)s: %(message)s")
    else:
        quiet_logging(settings.LOG_LEVEL)
    bootstrap(settings, n_products=args.n, seed=args.seed, data=args.data)


if __name__ == "__main__":
    main()
