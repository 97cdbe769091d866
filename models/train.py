"""Train the text, image and fusion models and write a versioned bundle.

    python -m models.train --data DIR [--data DIR ...] --out BUNDLE_DIR [--epochs N] [--seed N] [--quick]

Splits are by product id with a fixed seed: train / validation (early stopping, fusion
weights) / calibration (conformal suggestion sets) / test (the figures in metrics.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from db.categories import CATEGORIES
from models.data import Dataset, load_challenge_folder

logger = logging.getLogger(__name__)

LABELS = sorted(CATEGORIES)
SPLITS = {"train": 0.70, "validation": 0.10, "calibration": 0.10, "test": 0.10}


@dataclass
class Hyperparameters:
    image_size: int = 64
    text_epochs: int = 40
    image_epochs: int = 30
    fusion_epochs: int = 60
    batch_size: int = 32
    text_dropout: float = 0.5
    text_hidden: int = 0
    word_tokens: int = 40_000
    char_tokens: int = 40_000
    image_filters: tuple[int, ...] = (32, 64, 128, 192)
    learning_rate: float = 2e-3
    label_smoothing: float = 0.1
    patience: int = 6
    alpha: float = 0.05
    text_arch: str = "tfidf"

    @classmethod
    def quick(cls) -> Hyperparameters:
        return cls(
            image_size=48,
            text_epochs=12,
            image_epochs=20,
            fusion_epochs=30,
            word_tokens=8_000,
            char_tokens=8_000,
            image_filters=(16, 32, 64),
            learning_rate=4e-3,
            patience=5,
        )


def split_of(product_ids: list[str], seed: int) -> np.ndarray:
    """The split of each product: a hash of (seed, product id), stable across runs and sources."""
    cuts = np.cumsum(list(SPLITS.values()))
    names = np.array(list(SPLITS))
    out = []
    for pid in product_ids:
        h = int.from_bytes(hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8], "big") / 2**64
        out.append(names[int(np.searchsorted(cuts, h, side="right"))])
    return np.array(out)


def code_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class _EpochLog:
    """A Keras callback that logs one line per epoch (progress on long runs)."""

    def __new__(cls, name: str, total: int):  # type: ignore[no-untyped-def]
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                logs = logs or {}
                figures = " ".join(f"{k}={v:.3f}" for k, v in logs.items() if isinstance(v, float))
                logger.info("%s epoch %d/%d %s", name, epoch + 1, total, figures)

        return Callback()


def _fit(
    model: Any,
    x: Any,
    y: np.ndarray,
    val: tuple[Any, np.ndarray] | None,
    *,
    name: str,
    epochs: int,
    hp: Hyperparameters,
) -> dict[str, list[float]]:
    import keras

    model.compile(
        optimizer=keras.optimizers.AdamW(hp.learning_rate, weight_decay=1e-4),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=hp.label_smoothing),
        metrics=["accuracy"],
    )
    callbacks = [_EpochLog(name, epochs)]
    validation = None
    if val is not None and len(val[1]):
        validation = (val[0], keras.utils.to_categorical(val[1], len(LABELS)))
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=hp.patience, restore_best_weights=True, mode="max"
            )
        )
    history = model.fit(
        x,
        keras.utils.to_categorical(y, len(LABELS)),
        validation_data=validation,
        epochs=epochs,
        batch_size=hp.batch_size,
        verbose=0,
        callbacks=callbacks,
        shuffle=True,
    )
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def _strings(values: np.ndarray) -> Any:
    import tensorflow as tf

    return tf.constant([str(v) for v in values], dtype=tf.string)


def _predict(model: Any, x: Any, batch_size: int = 256) -> np.ndarray:
    first = next(iter(x.values())) if isinstance(x, dict) else x
    n = int(first.shape[0])
    if n == 0:
        return np.zeros((0, len(LABELS)), dtype=np.float32)
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def train(
    datasets: list[Dataset],
    out_dir: Path,
    *,
    epochs: int | None = None,
    seed: int = 0,
    quick: bool = False,
    text_arch: str = "tfidf",
) -> Path:
    """Train all three models on `datasets` and write a complete bundle to `out_dir`.

    Args:
        datasets: one or more datasets (concatenated).
        out_dir: the bundle directory to create (must not exist or be empty).
        epochs: override every model's maximum epochs.
        seed: seed of the splits and of Keras.
        quick: small models and few epochs (demos and tests: under 2 minutes).
        text_arch: "tfidf" (shipped) or "lstm" (the original design's reference).

    Returns:
        The bundle directory.
    """
    import keras

    from models import builders
    from models.calibration import calibrate
    from models.evaluate import evaluate_arrays
    from models.export import export_serving
    from models.report import write_report

    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    hp = Hyperparameters.quick() if quick else Hyperparameters()
    hp.text_arch = text_arch
    if epochs is not None:
        hp.text_epochs = hp.image_epochs = epochs
    data = Dataset.concat(datasets)
    known = np.isin(data.labels, LABELS)
    if not known.all():
        logger.warning("dropping %d products whose prdtypecode is not one of the 27", int((~known).sum()))
        data = data.subset(np.flatnonzero(known))
    y = np.searchsorted(LABELS, data.labels)
    split = split_of(data.product_ids, seed)
    texts = np.array(data.texts, dtype=object)
    has_text, has_image = data.has_text, data.has_image
    logger.info(
        "%d products (%d with text, %d with an image, %d with both); split %s",
        len(data),
        has_text.sum(),
        has_image.sum(),
        (has_text & has_image).sum(),
        {name: int((split == name).sum()) for name in SPLITS},
    )

    def idx(name: str, mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero((split == name) & mask)

    # -- text ---------------------------------------------------------------------------------
    t_train, t_val = idx("train", has_text), idx("validation", has_text)
    logger.info("text model (%s): %d training texts", text_arch, len(t_train))
    build_text = builders.build_text_lstm if text_arch == "lstm" else builders.build_text_tfidf
    text_kwargs = (
        {}
        if text_arch == "lstm"
        else {
            "word_tokens": hp.word_tokens,
            "char_tokens": hp.char_tokens,
            "dropout": hp.text_dropout,
            "hidden": hp.text_hidden,
        }
    )
    text_model = build_text(list(texts[t_train]), len(LABELS), **text_kwargs)
    text_history = _fit(
        text_model,
        _strings(texts[t_train]),
        y[t_train],
        (_strings(texts[t_val]), y[t_val]),
        name="text",
        epochs=hp.text_epochs,
        hp=hp,
    )

    # -- image --------------------------------------------------------------------------------
    image_rows = np.flatnonzero(has_image)
    logger.info("decoding %d images at %dx%d", len(image_rows), hp.image_size, hp.image_size)
    pixels, decoded = data.load_images(image_rows, hp.image_size)
    images = np.zeros((len(data), hp.image_size, hp.image_size, 3), dtype=np.uint8)
    images[image_rows[decoded]] = pixels[decoded]
    has_image = has_image.copy()
    has_image[image_rows[~decoded]] = False
    i_train, i_val = idx("train", has_image), idx("validation", has_image)
    logger.info("image model: %d training images", len(i_train))
    image_model = builders.build_image_cnn(len(LABELS), size=hp.image_size, filters=hp.image_filters)
    image_history = _fit(
        image_model,
        images[i_train],
        y[i_train],
        (images[i_val], y[i_val]),
        name="image",
        epochs=hp.image_epochs,
        hp=hp,
    )

    # -- fusion: its weights are learned on held-out pairs ------------------------------------
    both = has_text & has_image
    f_fit = idx("validation", both)
    if len(f_fit) < 30:  # too few held-out pairs (the real sample has 273 in all): add training pairs
        f_fit = np.concatenate([f_fit, idx("train", both)])
    fusion = builders.build_fusion(text_model, image_model)
    fusion_history: dict[str, list[float]] = {}
    if len(f_fit):
        # Fit the fusion layer alone on the frozen models' inference-mode probabilities.
        pt = _predict(text_model, _strings(texts[f_fit]))
        pi = _predict(image_model, images[f_fit])
        a, b = keras.Input((len(LABELS),)), keras.Input((len(LABELS),))
        layer = fusion.get_layer("late_fusion")
        head = keras.Model([a, b], layer([a, b]))
        head.compile(keras.optimizers.Adam(0.05), keras.losses.CategoricalCrossentropy())
        result = head.fit(
            [pt, pi],
            keras.utils.to_categorical(y[f_fit], len(LABELS)),
            epochs=hp.fusion_epochs,
            batch_size=64,
            verbose=0,
        )
        fusion_history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
    logger.info(
        "fusion weights: text %.2f, image %.2f (fitted on %d pairs)",
        float(fusion.get_layer("late_fusion").text_weight.numpy()),
        float(fusion.get_layer("late_fusion").image_weight.numpy()),
        len(f_fit),
    )

    # -- probabilities on calibration and test ------------------------------------------------
    def probs(kind: str, rows: np.ndarray) -> np.ndarray:
        if kind == "text":
            return _predict(text_model, _strings(texts[rows]))
        if kind == "image":
            return _predict(image_model, images[rows])
        return _predict(fusion, {"text": _strings(texts[rows]), "image": images[rows]})

    masks = {"text": has_text, "image": has_image, "fusion": both}
    calibration: dict[str, Any] = {"alpha": hp.alpha, "method": "lac"}
    metrics: dict[str, Any] = {}
    confusions: dict[str, np.ndarray] = {}
    for kind, mask in masks.items():
        c_rows, test_rows = idx("calibration", mask), idx("test", mask)
        calibration[kind] = calibrate(probs(kind, c_rows), y[c_rows], alpha=hp.alpha)
        p_test = probs(kind, test_rows)
        metrics[kind], confusions[kind] = evaluate_arrays(p_test, y[test_rows], calibration[kind], LABELS)
        logger.info("%s test: %s", kind, {k: v for k, v in metrics[kind].items() if k != "per_class_recall"})

    # -- the bundle ---------------------------------------------------------------------------
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    fingerprint = data.fingerprint()
    created = datetime.now(UTC)
    version = f"v{created:%Y%m%d-%H%M%S}-{fingerprint[:6]}"
    text_model.save(out_dir / "text.keras")
    image_model.save(out_dir / "image.keras")
    fusion.save(out_dir / "fusion.keras")
    class_counts = {
        str(LABELS[k]): int(v)
        for k, v in zip(*np.unique(y[split == "train"], return_counts=True), strict=True)
    }
    metadata = {
        "version": version,
        "created_at": created.isoformat(),
        "labels": LABELS,
        "categories": {str(code): name for code, name in CATEGORIES.items()},
        "inputs": {
            "text": {"dtype": "string", "shape": [], "preprocessing": "models.preprocessing.combine_text"},
            "image": {
                "dtype": "uint8",
                "shape": [None, None, 3],
                "preprocessing": "models.preprocessing.resize_image",
            },
        },
        "image_size": hp.image_size,
        "data_fingerprint": fingerprint,
        "data_sources": data.source,
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(hp).items()},
        "quick": quick,
        "seed": seed,
        "code_revision": code_revision(),
        "counts": {name: int((split == name).sum()) for name in SPLITS},
        "train_class_distribution": class_counts,
        "training_seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "metadata.json").write_text(
        json.dumps(metadata, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    (out_dir / "calibration.json").write_text(json.dumps(calibration, indent=2), encoding="utf-8")
    write_report(
        out_dir,
        metadata,
        metrics,
        confusions,
        {"text": text_history, "image": image_history, "fusion": fusion_history},
    )
    sample = idx("test", both)[:16]
    export_serving(
        out_dir,
        sample_texts=[str(t) for t in texts[sample]] or None,
        sample_images=images[sample] if len(sample) else None,
    )
    logger.info("bundle %s written to %s in %.0f s", version, out_dir, time.perf_counter() - started)
    return out_dir


def quiet_exporters() -> None:
    """tf2onnx and absl log every optimisation pass at INFO; keep our own progress readable."""
    for name in ("tf2onnx", "absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the text, image and fusion models into a bundle.")
    parser.add_argument("--data", action="append", required=True, type=Path, help="a challenge-layout folder")
    parser.add_argument("--out", required=True, type=Path, help="the bundle directory to write")
    parser.add_argument("--epochs", type=int, help="maximum epochs per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small models, few epochs (under 2 minutes)")
    parser.add_argument("--text-arch", choices=["tfidf", "lstm"], default="tfidf")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    quiet_exporters()
    try:
        datasets = [load_challenge_folder(folder) for folder in args.data]
    except FileNotFoundError as exc:
        logger.error("%s", exc)
        return 2
    bundle = train(
        datasets, args.out, epochs=args.epochs, seed=args.seed, quick=args.quick, text_arch=args.text_arch
    )
    print(bundle)  # noqa: T201 - the CLI's output is the bundle path
    return 0


if __name__ == "__main__":
    sys.exit(main())
