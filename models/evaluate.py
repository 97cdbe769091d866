"""Evaluate a bundle on a labelled dataset: one JSON object, one entry per model kind.

    python -m models.evaluate --bundle BUNDLE_DIR --data DIR

Each model is scored on the products that have the inputs it needs (text: products with
text; image: with an image; fusion: with both), through the same serving runtime the API uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from models.calibration import set_metrics
from models.data import Dataset, load_challenge_folder

logger = logging.getLogger(__name__)
KINDS = ("text", "image", "fusion")


def _f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[float, float, np.ndarray]:
    """Weighted F1, macro F1 (over classes present in y) and per-class recall."""
    f1s, supports, recalls = [], [], np.full(n_classes, np.nan)
    for c in range(n_classes):
        tp = np.sum((pred == c) & (y == c))
        support = np.sum(y == c)
        predicted = np.sum(pred == c)
        if support == 0:
            continue
        recall = tp / support
        precision = tp / predicted if predicted else 0.0
        f1s.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
        supports.append(support)
        recalls[c] = recall
    if not supports:
        return float("nan"), float("nan"), recalls
    return float(np.average(f1s, weights=supports)), float(np.mean(f1s)), recalls


def evaluate_arrays(
    probs: np.ndarray, y: np.ndarray, calibration: dict[str, Any], labels: list[int]
) -> tuple[dict[str, Any], np.ndarray]:
    """The evaluate-schema figures and the confusion matrix for one model's predictions."""
    n_classes = len(labels)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    if len(y) == 0:
        empty = dict.fromkeys(
            ("accuracy", "weighted_f1", "macro_f1", "top3", "top5", "set_coverage", "set_mean_size")
        )
        return {"n": 0, **empty, "per_class_recall": {}}, confusion
    order = np.argsort(-probs, axis=1)
    pred = order[:, 0]
    np.add.at(confusion, (y, pred), 1)
    weighted, macro, recalls = _f1(y, pred, n_classes)
    coverage, size = set_metrics(probs, y, calibration)
    return {
        "n": len(y),
        "accuracy": float(np.mean(pred == y)),
        "weighted_f1": weighted,
        "macro_f1": macro,
        "top3": float(np.mean([t in row[:3] for t, row in zip(y, order, strict=True)])),
        "top5": float(np.mean([t in row[:5] for t, row in zip(y, order, strict=True)])),
        "set_coverage": coverage,
        "set_mean_size": size,
        "per_class_recall": {str(labels[c]): float(r) for c, r in enumerate(recalls) if not np.isnan(r)},
    }, confusion


def evaluate_bundle(bundle_dir: Path, dataset: Dataset) -> dict[str, Any]:
    """Score the bundle's three models on `dataset`.

    Args:
        bundle_dir: a complete bundle (with its serving exports).
        dataset: labelled products.

    Returns:
        {"text"|"image"|"fusion": {n, accuracy, weighted_f1, macro_f1, top3, top5,
        set_coverage, set_mean_size, per_class_recall}}.
    """
    from models.preprocessing import ImageDecodeError, decode_image
    from models.serving import ModelRuntime

    runtime = ModelRuntime.from_bundle(bundle_dir)
    labels = runtime.labels
    known = np.isin(dataset.labels, labels)
    texts = dataset.texts
    images: dict[int, np.ndarray] = {}
    for i in np.flatnonzero(dataset.has_image & known):
        data = dataset.image_bytes(int(i))
        if data is None:
            continue
        try:
            images[int(i)] = decode_image(data)
        except ImageDecodeError:
            logger.warning("skipping the undecodable image of product %s", dataset.product_ids[i])
    has_text = np.array([bool(t) for t in texts], dtype=bool)
    has_image = np.zeros(len(dataset), dtype=bool)
    has_image[list(images)] = True
    masks = {"text": has_text & known, "image": has_image & known, "fusion": has_text & has_image & known}
    result: dict[str, Any] = {}
    for kind in KINDS:
        rows = [int(i) for i in np.flatnonzero(masks[kind])]
        probs = np.zeros((len(rows), len(labels)), dtype=np.float32)
        for r, i in enumerate(rows):
            if kind == "text":
                probs[r] = runtime.predict_text(texts[i])
            elif kind == "image":
                probs[r] = runtime.predict_image(images[i])
            else:
                probs[r] = runtime.predict_fusion(texts[i], images[i])
        y = np.searchsorted(labels, dataset.labels[rows]) if rows else np.zeros(0, dtype=np.int64)
        result[kind], _ = evaluate_arrays(probs, y, runtime.calibration[kind], labels)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a model bundle on a challenge-layout folder.")
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        dataset = load_challenge_folder(args.data)
        result = evaluate_bundle(args.bundle, dataset)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    print(json.dumps(result, indent=2))  # noqa: T201 - the CLI's output is the JSON object
    return 0


if __name__ == "__main__":
    sys.exit(main())
