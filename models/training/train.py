"""Train the text, image and fusion models and write a versioned bundle.

    python -m models.train --data DIR [--data DIR ...] --out BUNDLE_DIR [--epochs N] [--seed N]
        [--quick] [--text-arch tfidf|lstm] [--fusion-arch late|concat] [--image-size PX]
        [--sentence-encoder use3|none] [--no-refit] [--mondrian] [--no-image-int8]

`train()` composes public stages, each returning what the next one reads (the benchmarks
compose them too): `prepare_data` (decode and split), `train_text_model`,
`train_image_model`, `serve_int8_image` (the image backbone quantised; its answers replace the
float model's on held-out rows), `train_fusion_model`, `calibrate_models`, `evaluate_models`,
`refit_models`, `bundle_metadata` and `write_bundle`. Splits are by product id
(`models.training.splits`): train / validation (early stopping, fusion weights) /
calibration (conformal suggestion sets) / test (the figures in metrics.json).

The models trained that way are the *selection run*: they choose the epochs and the fusion
weights, and they are what metrics.json scores, on a test split they never saw. With
`refit` (the shipped hyperparameters; not `--quick`), the text and image models are then
trained again on train + validation + test with those settings, and those are the models the
bundle ships, calibrated on the calibration split that no model trained on. The bundle is
written to a sibling temporary folder and renamed into place last, so a bundle directory is
never half-written.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from db.categories import CATEGORIES
from models.bundle import (
    BUNDLE_VERSION_FORMAT,
    CALIBRATION_FILE,
    KINDS,
    METADATA_FILE,
    METRICS_FILE,
    MODEL_FILES,
    SERVING_DIR,
    make_version,
    write_json,
)
from models.data import Dataset, load_challenge_folder
from models.training.fit import (
    Predictor,
    Views,
    accuracy,
    epoch_logger,
    fit,
    one_hot,
    pair_feed,
    predict_probs,
    text_feed,
)
from models.training.hyperparameters import (
    FUSION_ARCHS,
    IMAGE_ARCHS,
    IMAGE_FINETUNE,
    LABELS,
    SENTENCE_ENCODERS,
    TEXT_ARCHS,
    Hyperparameters,
    resolve_hyperparameters,
)
from models.training.prepare import PreparedData, pairs, prepare_data
from models.training.splits import SPLITS
from models.training.word_vectors import WordVectorsUnavailable

logger = logging.getLogger(__name__)
History = dict[str, list[float]]


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


# --------------------------------------------------------------------------- the models


def train_text_model(
    p: PreparedData, hp: Hyperparameters, *, feature_cache: Path | None = None
) -> tuple[Any, History]:
    """Build and fit the text model on the train split, early-stopped on validation.

    With `hp.sentence_encoder`, the tfidf model also reads the encoder's embedding of each
    text, computed first (and kept in `p.sentence`) through the feature cache.
    """
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
        sentence = sentence_embeddings(p, hp, feature_cache)
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
            sentence_embedding=0 if sentence is None else sentence.vectors.shape[1],
        )
    history = fit(
        model,
        text_feed(model, p, rows),
        p.y[rows],
        (text_feed(model, p, val), p.y[val]),
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


def sentence_embeddings(p: PreparedData, hp: Hyperparameters, feature_cache: Path | None) -> Any:
    """`p.sentence`, the embeddings of `hp.sentence_encoder` (computed once); None without one."""
    if not hp.sentence_encoder:
        return None
    if p.sentence is None or (p.sentence.encoder, p.sentence.max_tokens) != (
        hp.sentence_encoder,
        hp.sentence_max_tokens,
    ):
        from models.training.sentence_features import embed_texts

        p.sentence = embed_texts(
            [str(t) if has else "" for t, has in zip(p.texts, p.has_text, strict=True)],
            encoder=hp.sentence_encoder,
            max_tokens=hp.sentence_max_tokens,
            cache_dir=feature_cache,
        )
    return p.sentence


def train_image_model(
    p: PreparedData, hp: Hyperparameters, seed: int = 0, *, feature_cache: Path | None = None
) -> tuple[Any, History, np.ndarray | None]:
    """The image model of `hp.image_arch`: (model, history, probabilities of every product row
    with an image when they were computed on the way, else None)."""
    if hp.image_arch == "cnn":
        model, history = train_image_cnn(p, hp, seed)
        return model, history, None
    return train_image_pretrained(p, hp, seed, feature_cache=feature_cache)


def train_image_pretrained(
    p: PreparedData, hp: Hyperparameters, seed: int, *, feature_cache: Path | None
) -> tuple[Any, History, np.ndarray]:
    """EfficientNet-Lite with its ImageNet weights, a head fitted on its features, and its last
    layers fine-tuned when `hp.image_finetune` says so.

    The backbone's features of every image are computed once (`models.training.features`,
    cached by content when `feature_cache` is set); the head trains on those of the train
    split, early-stopped on validation, in seconds. With fine-tuning, what is cached is the
    activations where the trained layers start (`efficientnet_lite.finetune_split`), of each
    photo and, with `image_finetune_flip`, of its mirror; the pooled features come from them
    through the layers still frozen, the head is fitted on those as above, then the trained
    layers and the head learn together at a small learning rate (the history's `finetune_*`
    figures). The model saved and exported is the backbone and the head in one graph, from the
    image's pixels.
    """
    import keras

    from models.training import builders
    from models.training.efficientnet_lite import FEATURES, finetune_split, load_efficientnet_lite

    rows, val = p.rows("train", p.has_image), p.rows("validation", p.has_image)
    if not len(rows):
        raise ValueError("no training product has an image: cannot train the image model")
    backbone = load_efficientnet_lite(hp.image_arch, input_shape=(hp.image_size, hp.image_size, 3))
    with_image = np.flatnonzero(p.has_image)
    logger.info(
        "image model: EfficientNet-%s at %d px, %s; %d training images, %d validation",
        hp.image_arch,
        hp.image_size,
        f"fine-tuned from its {hp.image_finetune}" if hp.image_finetune else "frozen",
        len(rows),
        len(val),
    )
    key = f"efficientnet-{hp.image_arch}-{hp.image_size}px"
    trunk, top = finetune_split(backbone, hp.image_finetune) if hp.image_finetune else (backbone, None)
    depth = f"-{hp.image_finetune}" if hp.image_finetune else ""

    def backbone_features(images: np.ndarray, view: str) -> np.ndarray:
        return cached_image_features(trunk, images, f"{key}{depth}-v1", feature_cache, view)

    activations = np.zeros((len(p.y), *trunk.output.shape[1:]), dtype=np.float32)
    activations[with_image] = backbone_features(p.images[with_image], "photos")
    features = activations if top is None else _predict(top, activations)
    keras.utils.set_random_seed(seed + 1000)
    head = builders.build_image_head(len(LABELS), features=FEATURES, dropout=hp.image_dropout)
    history = fit(
        head,
        features[rows],
        p.y[rows],
        (features[val], p.y[val]),
        name="image head",
        epochs=hp.image_epochs,
        patience=hp.image_patience,
        learning_rate=hp.image_learning_rate,
        weight_decay=hp.image_weight_decay,
        hp=hp,
    )
    scorer = head
    if top is not None:
        views = [activations[rows]]
        if hp.image_finetune_flip:
            views.append(backbone_features(p.images[rows][:, :, ::-1], "mirrored photos"))
        scorer = keras.Model(top.input, head(top.output), name="image_finetune")
        keras.utils.set_random_seed(seed + 2000)
        tuned = fit(
            scorer,
            Views(tuple(views), seed=seed + 2000),
            p.y[rows],
            (activations[val], p.y[val]),
            name=f"image fine-tuning ({hp.image_finetune})",
            epochs=hp.image_finetune_epochs,
            patience=hp.image_finetune_patience,
            learning_rate=hp.image_finetune_learning_rate,
            weight_decay=hp.image_weight_decay,
            hp=hp,
        )
        history |= {f"finetune_{k}": v for k, v in tuned.items()}
        features = activations
    probs = np.zeros((len(p.y), len(LABELS)), dtype=np.float32)
    probs[with_image] = predict_probs(scorer, features[with_image], len(with_image))
    return builders.build_image_pretrained(backbone, head, size=hp.image_size), history, probs


def cached_image_features(
    extract: Any, images: np.ndarray, key: str, feature_cache: Path | None, view: str
) -> np.ndarray:
    """`extract` (a Keras model from float pixels) on `images`, through the feature cache."""
    from models.training.features import cached_features

    return cached_features(
        lambda batch: extract.predict(batch.astype(np.float32), batch_size=len(batch), verbose=0),
        images,
        key=key,
        cache_dir=feature_cache,
        progress=f"image backbone features ({view})",
    )


def _predict(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Inference-mode outputs of `model` on `x` (the frozen layers of a fine-tuning split)."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


def build_image_cnn(hp: Hyperparameters, members: int | None = None) -> Any:
    """The untrained image CNN that `hp` describes (`members`: `hp.image_members` by default)."""
    from models.training import builders

    return builders.build_image_cnn(
        len(LABELS),
        size=hp.image_size,
        filters=hp.image_filters,
        top_filters=hp.image_top_filters,
        histogram_bins=hp.histogram_bins,
        dropout=hp.image_dropout,
        flip_average=hp.flip_average,
        members=hp.image_members if members is None else members,
    )


def train_image_cnn(p: PreparedData, hp: Hyperparameters, seed: int = 0) -> tuple[Any, History]:
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
    model = build_image_cnn(hp)
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
        member_history = fit(
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


def fit_late_fusion(
    fusion: Any,
    text_probs: np.ndarray,
    image_probs: np.ndarray,
    y: np.ndarray,
    hp: Hyperparameters,
    *,
    sample_weight: np.ndarray | None = None,
) -> History:
    """Fit the `LateFusion` layer of `fusion` on held-out probabilities of the two models
    (`sample_weight`: one weight per pair, e.g. to weigh real pairs against pseudo pairs)."""
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
        one_hot(y),
        sample_weight=sample_weight,
        epochs=hp.fusion_epochs,
        batch_size=64,
        verbose=0,
        shuffle=True,
        callbacks=[epoch_logger("fusion", hp.fusion_epochs)],
    )
    return {k: [float(v) for v in values] for k, values in result.history.items()}


def train_fusion_model(
    p: PreparedData, hp: Hyperparameters, predictor: Predictor, seed: int
) -> tuple[Any, History]:
    """Late fusion fitted on validation pairs, or the original design's concatenation head."""
    from models.training import builders

    if hp.fusion_arch == "concat":
        model = builders.build_fusion_concat(predictor.text_model, predictor.image_model, len(LABELS))
        t_rows, i_rows = pairs(p, "train", per_text=hp.pseudo_pairs_per_text, seed=seed)
        v_t, v_i = pairs(p, "validation", per_text=hp.pseudo_pairs_per_text, seed=seed + 1)
        logger.info(
            "fusion (concat): %d training pairs (real + pseudo), %d validation", len(t_rows), len(v_t)
        )
        history = fit(
            model,
            pair_feed(model, p, t_rows, i_rows),
            p.y[t_rows],
            (pair_feed(model, p, v_t, v_i), p.y[v_t]),
            name="fusion",
            epochs=hp.fusion_epochs,
            patience=hp.text_patience,
            learning_rate=1e-3,
            weight_decay=1e-4,
            hp=hp,
        )
        return model, history
    model = builders.build_fusion(predictor.text_model, predictor.image_model)
    t_rows, i_rows = pairs(p, "validation", per_text=hp.pseudo_pairs_per_text, seed=seed)
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


def fusion_probabilities(
    models: TrainedModels, p: PreparedData, t_rows: np.ndarray, i_rows: np.ndarray
) -> np.ndarray:
    """The fusion model's probabilities on (text of row t, image of row i) pairs.

    A late fusion is computed as the runtime computes it, from the single models' answers
    (`models.fusion`): with an int8 image graph those are the served graph's, not the Keras
    float backbone's. The concatenation head runs as the Keras model it is.
    """
    from models.training.export import late_fusion_of

    late = late_fusion_of(models.fusion)
    if late is not None:
        return late(models.predictor.text(t_rows), models.predictor.image(i_rows))
    return predict_probs(models.fusion, pair_feed(models.fusion, p, t_rows, i_rows), len(t_rows))


def int8_image_graph(
    p: PreparedData, model: Any, work_dir: Path, rows: np.ndarray
) -> tuple[Path, np.ndarray]:
    """`model` exported and its backbone quantised to int8 (`models.training.quantize`), with
    ranges from training photos of `p`; (the graph, its probabilities on `rows`)."""
    from models.training import quantize
    from models.training.export import export_model

    work_dir.mkdir(parents=True, exist_ok=True)
    export_model(model, work_dir, "image")
    calibration = quantize.calibration_rows(p.rows("train", p.has_image))
    graph = quantize.quantize_image_graph(
        work_dir / "image.onnx", work_dir / "image.int8.onnx", p.images[calibration]
    )
    (work_dir / "image.onnx").unlink()
    return graph, quantize.run_image_graph(graph, p.images, rows)


def serve_int8_image(
    p: PreparedData, model: Any, predictor: Predictor, work_dir: Path
) -> tuple[Path | None, dict[str, Any]]:
    """Quantise the selection run's image model; if it keeps its accuracy on the validation
    photos, its answers replace the float ones on every held-out row (validation: the fusion
    weights, calibration: the sets, test: metrics.json), as served.

    Returns:
        (the int8 graph, or None when it stays float; the comparison, for metadata.json).
    """
    from models.training import quantize

    held_out = np.flatnonzero(p.has_image & (p.split != "train"))
    graph, probs = int8_image_graph(p, model, work_dir, held_out)
    val = np.isin(held_out, p.rows("validation", p.has_image))
    check = quantize.compare(
        predictor.image(held_out[val]),
        probs[val],
        p.y[held_out[val]],
        len(quantize.calibration_rows(p.rows("train", p.has_image))),
    )
    logger.info("int8 image graph on %d validation photos: %s", check.photos, check.to_dict())
    if not check.ships:
        logger.warning("the int8 image graph loses accuracy: the image model is served in float")
        return None, check.to_dict()
    predictor.preset_image(held_out, probs)
    return graph, check.to_dict()


@dataclass
class TrainedModels:
    """The three fitted Keras models, their training curves, and cached single-model predictions."""

    text: Any
    image: Any
    fusion: Any
    histories: dict[str, History]
    predictor: Predictor
    # The sentence embeddings the text model reads (their encoder goes into the bundle), or None.
    sentence: Any = None
    # The int8 image graph that serves in place of the float export (its answers are the
    # predictor's on held-out rows), or None; and how it compared with the float one.
    image_graph: Path | None = None
    int8: dict[str, Any] | None = None

    def by_kind(self) -> dict[str, Any]:
        return {"text": self.text, "image": self.image, "fusion": self.fusion}


def train_models(
    p: PreparedData,
    hp: Hyperparameters,
    seed: int,
    *,
    feature_cache: Path | None = None,
    int8_dir: Path | None = None,
) -> TrainedModels:
    """Fit the text model, then the image model, then the fusion model on their outputs.

    With `int8_dir` (where the graphs are written) and `hp.image_int8`, a pretrained image
    model is quantised before the fusion is fitted (`serve_int8_image`).
    """
    from models.training.builders import takes_sentence_embedding

    text_model, text_history = train_text_model(p, hp, feature_cache=feature_cache)
    image_model, image_history, image_probs = train_image_model(p, hp, seed, feature_cache=feature_cache)
    predictor = Predictor(p, text_model, image_model)
    if image_probs is not None:  # the head's answers on the cached features: the same model
        predictor.preset_image(np.flatnonzero(p.has_image), image_probs[p.has_image])
    image_graph, int8 = None, None
    if int8_dir is not None and hp.image_int8 and image_probs is not None:
        image_graph, int8 = serve_int8_image(p, image_model, predictor, int8_dir / "selection")
    fusion, fusion_history = train_fusion_model(p, hp, predictor, seed)
    histories = {"text": text_history, "image": image_history, "fusion": fusion_history}
    sentence = p.sentence if takes_sentence_embedding(text_model) else None
    return TrainedModels(
        text_model, image_model, fusion, histories, predictor, sentence, image_graph=image_graph, int8=int8
    )


def calibrate_models(
    p: PreparedData, hp: Hyperparameters, models: TrainedModels, seed: int
) -> dict[str, Any]:
    """The conformal thresholds of each model kind, from the calibration split (calibration.json)."""
    from models.calibration import calibrate

    calibration: dict[str, Any] = {
        "alpha": hp.alpha,
        "method": hp.conformal_method,
        "delta": hp.conformal_delta,
        "mondrian": hp.conformal_mondrian,
    }
    c_text, c_image = p.rows("calibration", p.has_text), p.rows("calibration", p.has_image)
    c_pairs = pairs(p, "calibration", per_text=hp.pseudo_pairs_per_text, seed=seed + 2)
    held_out = {
        "text": (models.predictor.text(c_text), p.y[c_text]),
        "image": (models.predictor.image(c_image), p.y[c_image]),
        "fusion": (fusion_probabilities(models, p, *c_pairs), p.y[c_pairs[0]]),
    }
    for kind, (probs, y) in held_out.items():
        calibration[kind] = calibrate(
            probs,
            y,
            alpha=hp.alpha,
            method=hp.conformal_method,
            delta=hp.conformal_delta,
            mondrian=hp.conformal_mondrian,
        )
    calibration["fusion"]["real_pairs"] = len(p.rows("calibration", p.both))
    return calibration


@dataclass
class Evaluation:
    """The test-split figures (metrics.json), confusion matrices, and the three models on pairs."""

    metrics: dict[str, Any]
    confusions: dict[str, np.ndarray]
    on_pairs: dict[str, Any]


def evaluate_models(p: PreparedData, models: TrainedModels, calibration: dict[str, Any]) -> Evaluation:
    """Score each model on the test products that have its inputs."""
    from models.training.evaluate import evaluate_arrays

    t_text, t_image, t_both = p.rows("test", p.has_text), p.rows("test", p.has_image), p.rows("test", p.both)
    test_probs = {
        "text": models.predictor.text(t_text),
        "image": models.predictor.image(t_image),
        "fusion": fusion_probabilities(models, p, t_both, t_both),
    }
    test_y = {"text": p.y[t_text], "image": p.y[t_image], "fusion": p.y[t_both]}
    metrics: dict[str, Any] = {}
    confusions: dict[str, np.ndarray] = {}
    for kind in KINDS:
        metrics[kind], confusions[kind] = evaluate_arrays(
            test_probs[kind], test_y[kind], calibration[kind], LABELS
        )
        metrics[kind]["sets"] = set_reports(test_probs[kind], test_y[kind], calibration[kind])
        logger.info(
            "%s test: %s",
            kind,
            {k: v for k, v in metrics[kind].items() if not k.startswith("per_class") and k != "sets"},
        )
    # The fusion model must beat each single model on the products that have both inputs.
    on_pairs = {
        "n": len(t_both),
        "text_accuracy": accuracy(models.predictor.text(t_both), p.y[t_both]),
        "image_accuracy": accuracy(models.predictor.image(t_both), p.y[t_both]),
        "fusion_accuracy": metrics["fusion"]["accuracy"],
    }
    logger.info("test products with both inputs: %s", on_pairs)
    return Evaluation(metrics, confusions, on_pairs)


def set_reports(probs: np.ndarray, y: np.ndarray, entry: dict[str, Any]) -> dict[str, Any]:
    """Both calibrations' set figures on the same predictions, and which one the bundle serves."""
    from models.calibration import with_calibration
    from models.training.evaluate import set_report

    reports: dict[str, Any] = {"served": "mondrian" if entry.get("mondrian") else "marginal"}
    for name, mondrian in (("marginal", False), ("mondrian", True)):
        reports[name] = set_report(probs, y, with_calibration(entry, mondrian), LABELS)
    return reports


# ---------------------------------------------------------------------------- the refit

# What the shipped models learn from when `refit` is on: everything but the calibration split.
REFIT_SPLITS = ("train", "validation", "test")
SCORED_BY_SELECTION = (
    "selection run: models trained on the train split only (early-stopped on validation), "
    "scored on the test split"
)


def refit_data(p: PreparedData) -> PreparedData:
    """`p` with validation and test folded into train, and no validation left.

    With no validation rows `fit` runs its epochs without early stopping; the calibration
    split keeps its name, so `calibrate_models` reads the same products as before.
    """
    return replace(p, split=np.where(np.isin(p.split, REFIT_SPLITS), "train", p.split))


def selected_epochs(history: History, prefix: str = "") -> int:
    """The epoch early stopping kept: the first best validation accuracy (as Keras keeps it).

    `prefix` reads a second phase of the same model (`finetune_`: the image fine-tuning).
    """
    val = history.get(f"{prefix}val_accuracy") or []
    return int(np.argmax(val)) + 1 if val else max(len(history.get(f"{prefix}loss", [])), 1)


def refit_models(
    p: PreparedData,
    hp: Hyperparameters,
    selection: TrainedModels,
    seed: int,
    *,
    feature_cache: Path | None = None,
    int8_dir: Path | None = None,
) -> tuple[TrainedModels, dict[str, Any]]:
    """The text and image models trained again on train + validation + test, as selected.

    Each runs for the epochs the selection run's early stopping kept, unscaled: an epoch
    over 90% of the labels instead of 65% already takes 1.4 times the steps, and what
    overfits a product is how many times it is seen. The late-fusion layer keeps the weights
    fitted on the selection run's held-out validation pairs (there is no held-out split left
    to fit them on but calibration, which must stay unseen); the concatenation head is
    retrained on the new models for its selected epochs.

    Returns:
        (the models to ship, what metadata.json says of the refit).
    """
    from models.training import builders

    epochs = {kind: selected_epochs(selection.histories[kind]) for kind in ("text", "image")}
    refit_hp = replace(hp, text_epochs=epochs["text"], image_epochs=epochs["image"])
    if "finetune_loss" in selection.histories["image"]:
        epochs["image_finetune"] = selected_epochs(selection.histories["image"], "finetune_")
        refit_hp = replace(refit_hp, image_finetune_epochs=epochs["image_finetune"])
    q = refit_data(p)
    logger.info("refit on %s: %s epochs", "+".join(REFIT_SPLITS), epochs)
    text_model, text_history = train_text_model(q, refit_hp, feature_cache=feature_cache)
    image_model, image_history, image_probs = train_image_model(
        q, refit_hp, seed, feature_cache=feature_cache
    )
    predictor = Predictor(q, text_model, image_model)
    if image_probs is not None:
        predictor.preset_image(np.flatnonzero(q.has_image), image_probs[q.has_image])
    image_graph = None
    if selection.image_graph is not None and int8_dir is not None:  # as selected: int8 serves
        calibration = q.rows("calibration", q.has_image)
        image_graph, probs = int8_image_graph(q, image_model, int8_dir / "refit", calibration)
        predictor.preset_image(calibration, probs)
    if hp.fusion_arch == "late":
        fusion, fusion_history = builders.build_fusion(text_model, image_model), {}
        fusion.get_layer("late_fusion").set_weights(selection.fusion.get_layer("late_fusion").get_weights())
        fusion_note = "the selection run's late-fusion weights (fitted on validation pairs)"
    else:
        epochs["fusion"] = selected_epochs(selection.histories["fusion"])
        fusion, fusion_history = train_fusion_model(
            q, replace(refit_hp, fusion_epochs=epochs["fusion"]), predictor, seed
        )
        fusion_note = "the concatenation head retrained on the refitted models"
    histories = {"text": text_history, "image": image_history, "fusion": fusion_history}
    trained_on = np.isin(p.split, REFIT_SPLITS)
    info = {
        "splits": list(REFIT_SPLITS),
        "products": int(trained_on.sum()),
        "text": int((trained_on & p.has_text).sum()),
        "image": int((trained_on & p.has_image).sum()),
        "epochs": epochs,
        "fusion": fusion_note,
        "calibrated_on": "calibration",
    }
    # The same sentence embeddings (every product's, computed once): the same encoder ships.
    refitted = TrainedModels(
        text_model,
        image_model,
        fusion,
        histories,
        predictor,
        selection.sentence,
        image_graph=image_graph,
        int8=selection.int8,
    )
    return refitted, info


def bundle_metadata(
    p: PreparedData,
    hp: Hyperparameters,
    models: TrainedModels,
    evaluation: Evaluation,
    *,
    seed: int,
    quick: bool,
    export: bool,
) -> dict[str, Any]:
    """metadata.json: version, labels, inputs, data fingerprint, hyperparameters, counts, sizes."""
    from models.training import builders
    from models.training.sentence_features import bundle_entry

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
    return {
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
            "image": {
                "file": MODEL_FILES["image"],
                "inputs": ["image"],
                "arch": hp.image_arch,
                **({"finetuned": hp.image_finetune} if hp.image_arch != "cnn" else {}),
            },
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
        "test_pairs": evaluation.on_pairs,
        "parameters": {kind: builders.n_parameters(model) for kind, model in models.by_kind().items()},
        "epochs_run": {
            name: len(models.histories[kind][f"{phase}loss"])
            for name, kind, phase in (
                ("text", "text", ""),
                ("image", "image", ""),
                ("image_finetune", "image", "finetune_"),
            )
            if f"{phase}loss" in models.histories[kind]
        },
        "serving_exports": export,
        **({"sentence_encoder": bundle_entry(models.sentence)} if models.sentence is not None else {}),
    }


# ----------------------------------------------------------------------------- training


def train(
    datasets: list[Dataset],
    out_dir: Path,
    *,
    hyperparameters: Hyperparameters | None = None,
    quick: bool = False,
    seed: int = 0,
    epochs: int | None = None,
    text_arch: str | None = None,
    fusion_arch: str | None = None,
    image_size: int | None = None,
    image_arch: str | None = None,
    feature_cache: Path | None = None,
    export: bool = True,
) -> Path:
    """Train all three models on `datasets` and write a complete bundle to `out_dir`.

    Args:
        datasets: One or more datasets (concatenated; a product id keeps one split).
        out_dir: The bundle directory to create (must not exist, or be empty).
        hyperparameters: Everything that shapes the models (default: the shipped ones, or
            `Hyperparameters.quick()` when `quick`).
        quick: Small models and few epochs (demos and tests: about a minute), when
            `hyperparameters` is not given; also recorded in metadata.json.
        seed: Seed of the splits and of Keras (`keras.utils.set_random_seed`).
        epochs: Shorthand: the maximum epochs of the text and image models.
        text_arch: Shorthand: "tfidf" (shipped) or "lstm" (the original design's reference).
        fusion_arch: Shorthand: "late" (shipped: learned weights on the two log-probabilities)
            or "concat" (the original design: features concatenated under a new head).
        image_size: Shorthand: side of the images the image model sees.
        image_arch: Shorthand: "cnn" (trained from scratch: the quick bundle's) or "lite0",
            "lite1", "lite2" (EfficientNet-Lite with ImageNet weights, frozen: the shipped one).
        feature_cache: Where a pretrained backbone's features are kept between trainings
            (`models.training.features`); None computes them every time.
        export: Also write the ONNX serving exports (`serving/`), checked against Keras (the
            LSTM reference too: its integer-sequence vectoriser has a NumPy replica).

    The shorthands apply on top of `hyperparameters` when given; left at None they change
    nothing (`resolve_hyperparameters`).

    Returns:
        The bundle directory.
    """
    import keras

    started = time.perf_counter()
    hp = resolve_hyperparameters(
        hyperparameters,
        quick=quick,
        epochs=epochs,
        text_arch=text_arch,
        fusion_arch=fusion_arch,
        image_size=image_size,
        image_arch=image_arch,
    )
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty directory")
    keras.utils.set_random_seed(seed)
    p = prepare_data(datasets, seed=seed, image_size=hp.image_size)
    with tempfile.TemporaryDirectory(prefix="features-") as scratch:
        # A refitting run without a cache of its own still computes each backbone feature once,
        # in `scratch`; the sentence encoder is exported there too, so the bundle, which copies
        # it, is written before `scratch` goes.
        cache = feature_cache or (Path(scratch) if hp.refit else None)
        # The int8 image graphs are written to `scratch` (the bundle copies the shipped one);
        # without exports nothing serves them, so the figures stay the float models'.
        int8_dir = Path(scratch) / "int8" if export else None
        models = train_models(p, hp, seed, feature_cache=cache, int8_dir=int8_dir)
        calibration = calibrate_models(p, hp, models, seed)
        evaluation = evaluate_models(p, models, calibration)
        shipped, refit = models, None
        if hp.refit:
            shipped, refit = refit_models(p, hp, models, seed, feature_cache=cache, int8_dir=int8_dir)
            calibration = calibrate_models(p, hp, shipped, seed)
        for figures in evaluation.metrics.values():
            figures["scored_by"] = SCORED_BY_SELECTION
        metadata = bundle_metadata(p, hp, shipped, evaluation, seed=seed, quick=quick, export=export)
        metadata["refit"] = refit
        metadata["image_int8"] = models.int8
        sample_rows = p.rows("test", p.both)[:8]
        if not len(sample_rows):
            sample_rows = p.rows("test", p.has_text | p.has_image)[:8]
        write_bundle(
            out_dir,
            metadata=metadata,
            calibration=calibration,
            models=shipped,
            histories=models.histories,
            evaluation=evaluation,
            sample_texts=[str(t) for t in p.texts[sample_rows]],
            sample_images=p.images[sample_rows],
            started=started,
            export=export,
        )
    return out_dir


def write_bundle(
    out_dir: Path,
    *,
    metadata: dict[str, Any],
    calibration: dict[str, Any],
    models: TrainedModels,
    evaluation: Evaluation,
    sample_texts: list[str],
    sample_images: np.ndarray,
    started: float,
    export: bool,
    histories: dict[str, History] | None = None,
) -> None:
    """Write every file into a temporary sibling, then rename it to `out_dir` (written last).

    The sample texts and images (test products) are what the ONNX exports are checked on;
    the report's curves are `histories` (the selection run's, with validation) when given.
    """
    from models.training.report import write_report

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        for kind, model in models.by_kind().items():
            model.save(partial / MODEL_FILES[kind])
        metadata["training_seconds"] = round(time.perf_counter() - started, 1)
        write_json(partial / METADATA_FILE, metadata)
        write_json(partial / METRICS_FILE, evaluation.metrics)
        write_json(partial / CALIBRATION_FILE, calibration)
        write_report(
            partial, metadata, evaluation.metrics, evaluation.confusions, histories or models.histories
        )
        if models.sentence is not None:  # the text model's second input is computed from these
            from models.training.sentence_features import copy_encoder

            copy_encoder(models.sentence, partial / SERVING_DIR)
        if export:
            from models.training.export import export_serving

            export_serving(
                partial,
                sample_texts=sample_texts or None,
                sample_images=sample_images if len(sample_images) else None,
                image_graph=models.image_graph,
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
    parser.add_argument(
        "--image-arch",
        choices=IMAGE_ARCHS,
        help="cnn (from scratch; --quick's) or lite0/lite1/lite2 (EfficientNet-Lite, ImageNet weights; default lite0)",
    )
    parser.add_argument(
        "--image-size", type=int, help="side of the images the image model sees (224 pretrained, 64 cnn)"
    )
    parser.add_argument(
        "--feature-cache",
        type=Path,
        default=os.environ.get("FEATURE_CACHE_DIR") or None,
        help="keep the pretrained backbone's features here between runs (default: $FEATURE_CACHE_DIR)",
    )
    parser.add_argument(
        "--image-finetune",
        choices=[name or "none" for name in IMAGE_FINETUNE],
        help="fine-tune the pretrained backbone's head convolution (head, the default), its last block "
        "too (block), or keep it frozen (none)",
    )
    parser.add_argument(
        "--image-members", type=int, help="CNNs in the image ensemble (default 2, 1 with --quick)"
    )
    parser.add_argument(
        "--no-word-vectors", action="store_true", help="text model without the pretrained word vectors"
    )
    parser.add_argument(
        "--sentence-encoder",
        choices=[name or "none" for name in SENTENCE_ENCODERS],
        help="the text model's sentence-embedding input (default: the hyperparameters'; none: without)",
    )
    parser.add_argument(
        "--no-refit",
        action="store_true",
        help="ship the selection run's models (trained on the train split only) instead of refitting",
    )
    parser.add_argument(
        "--mondrian", action="store_true", help="class-conditional suggestion sets (one threshold per class)"
    )
    parser.add_argument(
        "--no-image-int8",
        action="store_true",
        help="serve the pretrained image backbone in float instead of int8 (models/training/quantize.py)",
    )
    args = parser.parse_args(argv)
    hp = Hyperparameters.quick() if args.quick else Hyperparameters()
    if args.image_members is not None:
        if args.image_members < 1:
            parser.error("--image-members must be at least 1")
        hp.image_members = args.image_members
    if args.no_word_vectors:
        hp.word_vectors = ""
    if args.sentence_encoder is not None:
        hp.sentence_encoder = "" if args.sentence_encoder == "none" else args.sentence_encoder
    if args.image_finetune is not None:
        hp.image_finetune = "" if args.image_finetune == "none" else args.image_finetune
    if args.no_refit:
        hp.refit = False
    if args.mondrian:
        hp.conformal_mondrian = True
    if args.no_image_int8:
        hp.image_int8 = False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    quiet_exporters()
    try:
        datasets = [load_challenge_folder(folder) for folder in args.data]
        bundle = train(
            datasets,
            args.out,
            seed=args.seed,
            quick=args.quick,
            hyperparameters=resolve_hyperparameters(
                hp,
                epochs=args.epochs,
                text_arch=args.text_arch,
                fusion_arch=args.fusion_arch,
                image_size=args.image_size,
                image_arch=args.image_arch,
            ),
            feature_cache=args.feature_cache,
        )
    except (FileNotFoundError, FileExistsError, ValueError, WordVectorsUnavailable) as exc:
        logger.error("%s", exc)
        return 2
    print(bundle)  # noqa: T201 - the CLI's output is the bundle path
    return 0


if __name__ == "__main__":
    sys.exit(main())
