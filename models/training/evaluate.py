"""Evaluate a bundle on a labelled dataset: one JSON object, one entry per model kind.

    python -m models.training.evaluate --bundle BUNDLE_DIR --data DIR [--data DIR ...]

Each model is scored on the products that have the inputs it needs (text: products with
text; image: with an image; fusion: with both), through the same serving runtime the API
uses, so the figures are those of what is served. Every entry has the same keys:

    {n, accuracy, weighted_f1, macro_f1, top3, top5, set_coverage, set_mean_size,
     per_class_recall: {prdtypecode: recall}, per_class_top5_recall: {prdtypecode: share of the
     class's products with it among the five best answers}, per_class_support: {prdtypecode: products}}

A model with no product to score reports n = 0 and nulls (and an empty per_class_recall).

**The closed view** (`evaluate_bundle(..., closed={})`): the same figures with every answer
restricted to the categories the dataset holds (probabilities renormalised over them). On a
yardstick made of the catalogue as it was, a model that has learned a category the yardstick
does not hold pays for every product it sends there, while a model that never heard of that
category cannot; the closed view compares the two on what the yardstick can judge: how well
they tell its own categories apart. The promotion gate reads both (`pipelines.gate`).

`set_report` is the detail of the suggestion sets that a conformal toolkit reports (MAPIE,
crepes, TorchCP): coverage per class, singleton rate, coverage by set size; training writes
it into metrics.json for both calibrations, marginal and class-conditional.
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

from models.bundle import KINDS, BundleError
from models.calibration import set_metrics, suggestion_set
from models.data import Dataset, load_challenge_folder

logger = logging.getLogger(__name__)
# Set sizes grouped as a seller sees them: one answer, a short list, a page, a long list.
SIZE_BINS: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (4, 6), (7, 10), (11, 10_000))
SET_FIGURES = (
    "coverage",
    "mean_size",
    "singleton_rate",
    "singleton_coverage",
    "min_class_coverage",
    "min_class",
    "classes_under_target",
)
FIGURES = ("accuracy", "weighted_f1", "macro_f1", "top3", "top5", "set_coverage", "set_mean_size")


def f1_scores(y: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[float, float, np.ndarray]:
    """Weighted F1, macro F1 (both over the classes present in `y`) and per-class recall.

    Args:
        y: True class indices.
        pred: Predicted class indices.
        n_classes: Number of classes.

    Returns:
        (weighted F1, macro F1, recall per class with NaN where the class is absent from y).
    """
    f1s, supports, recalls = [], [], np.full(n_classes, np.nan)
    for c in range(n_classes):
        support = int(np.sum(y == c))
        if support == 0:
            continue
        tp = int(np.sum((pred == c) & (y == c)))
        predicted = int(np.sum(pred == c))
        recall = tp / support
        precision = tp / predicted if predicted else 0.0
        f1s.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
        supports.append(support)
        recalls[c] = recall
    return float(np.average(f1s, weights=supports)), float(np.mean(f1s)), recalls


def evaluate_arrays(
    probs: np.ndarray, y: np.ndarray, calibration_entry: dict[str, Any], labels: list[int]
) -> tuple[dict[str, Any], np.ndarray]:
    """The evaluate-schema figures and the confusion matrix for one model's predictions.

    Args:
        probs: (n, len(labels)) probabilities.
        y: (n,) true class indices (positions in `labels`).
        calibration_entry: The model's calibration entry (for the suggestion sets).
        labels: The prdtypecodes in output order.

    Returns:
        (figures, confusion matrix with true classes as rows).
    """
    n_classes = len(labels)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        empty = {"per_class_recall": {}, "per_class_top5_recall": {}, "per_class_support": {}}
        return {"n": 0, **dict.fromkeys(FIGURES), **empty}, confusion
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, axis=1, kind="stable")
    pred = order[:, 0]
    np.add.at(confusion, (y, pred), 1)
    weighted, macro, recalls = f1_scores(y, pred, n_classes)
    coverage, size = set_metrics(probs, y, calibration_entry)
    in_top5 = (order[:, :5] == y[:, None]).any(axis=1)
    present = [c for c in range(n_classes) if confusion[c].sum()]
    return {
        "n": len(y),
        "accuracy": float(np.mean(pred == y)),
        "weighted_f1": weighted,
        "macro_f1": macro,
        "top3": float(np.mean((order[:, :3] == y[:, None]).any(axis=1))),
        "top5": float(np.mean(in_top5)),
        "set_coverage": coverage,
        "set_mean_size": size,
        "per_class_recall": {str(labels[c]): float(r) for c, r in enumerate(recalls) if not np.isnan(r)},
        # Whether sellers of the class still find it in the short list they are shown.
        "per_class_top5_recall": {str(labels[c]): float(np.mean(in_top5[y == c])) for c in present},
        # How many products each recall is measured on: the gate does not judge a recall of 3.
        "per_class_support": {str(labels[c]): int(confusion[c].sum()) for c in present},
    }, confusion


def closed_probabilities(probs: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`probs` restricted to the classes where `keep` is true, renormalised (the closed view)."""
    restricted = np.where(keep[None, :], np.asarray(probs, dtype=np.float64), 0.0)
    mass = restricted.sum(axis=1, keepdims=True)
    # A model that put all its mass elsewhere knows nothing of these classes: uniform over them.
    uniform = keep / max(int(keep.sum()), 1)
    return np.where(mass > 0, restricted / np.where(mass > 0, mass, 1.0), uniform[None, :])


def _top1_outcomes(probs: np.ndarray, y: np.ndarray, rows: list[int], dataset: Dataset) -> dict[str, bool]:
    right = np.argmax(probs, axis=1) == y if rows else np.zeros(0, dtype=bool)
    return {dataset.product_ids[i]: bool(ok) for i, ok in zip(rows, right, strict=True)}


def set_report(
    probs: np.ndarray, y: np.ndarray, calibration_entry: dict[str, Any], labels: list[int]
) -> dict[str, Any]:
    """What the suggestion sets of one calibration do on labelled products, beyond the average.

    Marginal 95% can hide a class whose sets miss a third of its products, or sets that are
    either one category or twenty; these figures show both.

    Args:
        probs: (n, len(labels)) probabilities.
        y: (n,) true class indices.
        calibration_entry: The entry the sets are built with.
        labels: The prdtypecodes in output order.

    Returns:
        ``{n, coverage, mean_size, singleton_rate, singleton_coverage, min_class_coverage,
        min_class, classes_under_target, per_class_coverage, per_class_mean_size, by_size}``;
        `by_size` is a list of ``{sizes, n, coverage}`` over `SIZE_BINS` (the bins with no
        set left out), a class is "under target" when its coverage is below 1 - alpha.
    """
    y = np.asarray(y, dtype=np.int64)
    sets = [suggestion_set(row, calibration_entry) for row in np.asarray(probs)]
    sizes = np.array([len(s) for s in sets], dtype=np.int64)
    hit = np.array([truth in s for truth, s in zip(y, sets, strict=True)], dtype=bool)
    if not len(y):
        empty = {"per_class_coverage": {}, "per_class_mean_size": {}, "by_size": []}
        return {"n": 0, **dict.fromkeys(SET_FIGURES), **empty}
    present = [int(c) for c in np.unique(y)]
    per_class = {c: float(hit[y == c].mean()) for c in present}
    worst = min(present, key=lambda c: (per_class[c], c))
    target = 1.0 - float(calibration_entry.get("alpha", 0.05))
    singletons = sizes == 1
    by_size = [
        {
            "sizes": f"{low}" if low == high else f"{low}-{min(high, len(labels))}",
            "n": int(m.sum()),
            "coverage": float(hit[m].mean()),
        }
        for low, high in SIZE_BINS
        if (m := (sizes >= low) & (sizes <= high)).any()
    ]
    return {
        "n": len(y),
        "coverage": float(hit.mean()),
        "mean_size": float(sizes.mean()),
        "singleton_rate": float(singletons.mean()),
        "singleton_coverage": float(hit[singletons].mean()) if singletons.any() else None,
        "min_class_coverage": per_class[worst],
        "min_class": str(labels[worst]),
        "classes_under_target": sum(1 for c in present if per_class[c] < target),
        "per_class_coverage": {str(labels[c]): per_class[c] for c in present},
        "per_class_mean_size": {str(labels[c]): float(sizes[y == c].mean()) for c in present},
        "by_size": by_size,
    }


def evaluate_bundle(
    bundle_dir: Path,
    dataset: Dataset,
    *,
    outcomes: dict[str, dict[str, bool]] | None = None,
    closed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score the bundle's three models on `dataset` through the serving runtime.

    Args:
        bundle_dir: A complete bundle.
        dataset: Labelled products (products whose label the bundle does not know are skipped).
        outcomes: When given, filled with `{kind: {product_id: top-1 right}}`: what a paired
            comparison of two models on the same products needs (`paired_counts`).
        closed: When given, filled with the closed view (module docstring): `{"classes": the
            prdtypecodes the dataset holds, "metrics": {kind: figures}, "outcomes": {kind:
            {product_id: top-1 right}}}`, from the same predictions.

    Returns:
        {"text" | "image" | "fusion": {n, accuracy, weighted_f1, macro_f1, top3, top5,
        set_coverage, set_mean_size, per_class_recall}}.

    Raises:
        BundleError: When the bundle is incomplete or its models do not run.
    """
    from models.preprocessing import ImageDecodeError, decode_image
    from models.runtime import ModelRuntime

    runtime = ModelRuntime.from_bundle(bundle_dir)
    labels = runtime.labels
    known = np.isin(dataset.labels, labels)
    if not known.all():
        logger.warning("skipping %d products whose label the bundle does not know", int((~known).sum()))
    texts = dataset.texts
    has_text = np.array([bool(t) for t in texts], dtype=bool) & known
    candidates = np.flatnonzero(dataset.has_image & known)
    images: dict[int, np.ndarray] = {}
    for i in candidates:
        data = dataset.image_bytes(int(i))
        if data is None:
            continue
        try:
            images[int(i)] = decode_image(data)
        except ImageDecodeError:
            logger.warning("skipping the undecodable image of product %s", dataset.product_ids[i])
    has_image = np.zeros(len(dataset), dtype=bool)
    has_image[list(images)] = True
    masks = {"text": has_text, "image": has_image, "fusion": has_text & has_image}
    held = np.isin(labels, dataset.labels[known])
    if closed is not None:
        closed.update(classes=[labels[c] for c in np.flatnonzero(held)], metrics={}, outcomes={})
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
        if outcomes is not None:
            outcomes[kind] = _top1_outcomes(probs, y, rows, dataset)
        if closed is not None:
            restricted = closed_probabilities(probs, held)
            closed["metrics"][kind], _ = evaluate_arrays(restricted, y, runtime.calibration[kind], labels)
            closed["outcomes"][kind] = _top1_outcomes(restricted, y, rows, dataset)
    return result


def paired_counts(
    candidate: dict[str, dict[str, bool]], production: dict[str, dict[str, bool]]
) -> dict[str, dict[str, int]]:
    """Per kind, on the products both models scored: how many only one of them gets right.

    The discordant pairs are all a paired test (McNemar's) needs to tell a real loss from noise.
    """
    counts = {}
    for kind in sorted(set(candidate) & set(production)):
        common = candidate[kind].keys() & production[kind].keys()
        counts[kind] = {
            "n": len(common),
            "candidate_only": sum(1 for p in common if candidate[kind][p] and not production[kind][p]),
            "production_only": sum(1 for p in common if production[kind][p] and not candidate[kind][p]),
        }
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a model bundle on challenge-layout folders.")
    parser.add_argument("--bundle", required=True, type=Path, help="a bundle directory")
    parser.add_argument("--data", required=True, type=Path, action="append", help="a challenge-layout folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        dataset = Dataset.concat([load_challenge_folder(folder) for folder in args.data])
        result = evaluate_bundle(args.bundle, dataset)
    except (FileNotFoundError, BundleError) as exc:
        logger.error("%s", exc)
        return 2
    print(json.dumps(result, indent=2))  # noqa: T201 - the CLI's output is the JSON object
    return 0


if __name__ == "__main__":
    sys.exit(main())
