"""First start on an empty model store: synthetic catalogue -> products -> quick model -> production.

`make run` calls `python -m pipelines.bootstrap` before serving; it does nothing when the
store already has a production version. Each step says what it does and how long it took.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
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


def bootstrap(settings: Settings, *, n_products: int = 1500, seed: int = 0) -> str | None:
    """Publish and promote a first model if the store has none; returns the new version."""
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

    started = step(1, f"generating a synthetic catalogue of {n_products} products (seed {seed})")
    catalogue = VAR_DIR / f"synthetic-catalogue-{n_products}-{seed}"
    if not (catalogue / "X_train_update.csv").is_file():
        generate_catalogue(catalogue, n_products=n_products, seed=seed)
    logger.info("      done in %.1f s: %s", time.perf_counter() - started, catalogue)

    started = step(2, "importing it into the products table and the image store")
    with session_factory() as session:
        existing = session.scalar(select(func.count()).select_from(Product)) or 0
    if existing == 0:
        report = import_folder(
            catalogue, session_factory=session_factory, image_store=image_store, source="synthetic"
        )
        logger.info("      %s", report.summary())
    else:
        logger.info("      the products table already has %d products: kept as they are", existing)
    logger.info("      done in %.1f s", time.perf_counter() - started)

    started = step(3, "training a --quick bundle on the product database")
    dataset = load_products(session_factory, image_store)
    # Leave out the retraining pipeline's fixed evaluation split, so that the first weekly
    # run compares its candidate with this model on products neither has trained on.
    dataset = dataset.subset(
        [i for i, pid in enumerate(dataset.product_ids) if not is_evaluation(pid, settings.EVAL_FRACTION)]
    )
    with tempfile.TemporaryDirectory(prefix="bundle-", dir=VAR_DIR) as tmp:
        bundle = train([dataset], Path(tmp) / "bundle", seed=seed, quick=True)
        logger.info("      done in %.1f s: %s", time.perf_counter() - started, bundle)

        started = step(4, f"publishing it to the model store {store.uri}")
        version = publish_bundle(store, session_factory, bundle)
        logger.info("      published %s in %.1f s", version, time.perf_counter() - started)

    step(5, f"promoting {version} to production")
    promote_version(store, session_factory, version, gate={"reason": "bootstrap: the store was empty"})
    engine.dispose()
    return version


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500, help="synthetic products to generate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.LOG_LEVEL, format="%(asctime)s %(name)s: %(message)s")
    bootstrap(settings, n_products=args.n, seed=args.seed)


if __name__ == "__main__":
    main()
