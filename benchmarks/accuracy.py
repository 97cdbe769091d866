"""Accuracy on the real Rakuten sample: train on its train split, print the test-split figures.

    python -m benchmarks.accuracy [--data ../shared/data/rakuten] [--seed 0] [--skip-lstm]
        [--fusion-concat] [--keep BUNDLE_DIR]

Trains the shipped bundle exactly as `python -m models.train` does (splits by product id:
65% train, 10% validation, 10% calibration, 15% test), then the original design's LSTM
text model on the same split for reference, and optionally the original design's
concatenation fusion head on the same trained models. Prints one table. Exits 0 with a
message when the real data folder is absent (it is never part of the repository).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "rakuten"
COLUMNS = ("n", "accuracy", "weighted_f1", "macro_f1", "top5", "set_coverage", "set_mean_size")


def _row(name: str, figures: dict[str, Any]) -> str:
    cells = []
    for key in COLUMNS:
        value = figures.get(key)
        cells.append("-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))
    return f"| {name} | " + " | ".join(cells) + " |"


def reference_lstm(data_dir: Path, seed: int) -> dict[str, Any]:
    """The original design's LSTM text model on the same split: its test-split figures."""
    from models.calibration import calibrate
    from models.data import load_challenge_folder
    from models.evaluate import evaluate_arrays
    from models.train import LABELS, Hyperparameters, Predictor, prepare_data, train_text_model

    hp = replace(Hyperparameters(), text_arch="lstm")
    p = prepare_data(
        [load_challenge_folder(data_dir)], seed=seed, image_size=hp.image_size, decode_images=False
    )
    model, history = train_text_model(p, hp)
    predictor = Predictor(p, model, None)
    cal, test = p.rows("calibration", p.has_text), p.rows("test", p.has_text)
    entry = calibrate(
        predictor.text(cal), p.y[cal], alpha=hp.alpha, method=hp.conformal_method, delta=hp.conformal_delta
    )
    figures, _ = evaluate_arrays(predictor.text(test), p.y[test], entry, LABELS)
    figures["epochs"] = len(history.get("loss", []))
    return figures


def concat_fusion(data_dir: Path, bundle: Path, seed: int) -> dict[str, Any]:
    """The original design's fusion (features concatenated under a new head) on the bundle's models."""
    from models.bundle import load_bundle
    from models.calibration import calibrate
    from models.data import load_challenge_folder
    from models.evaluate import evaluate_arrays
    from models.train import (
        LABELS,
        Hyperparameters,
        Predictor,
        _pairs,
        fusion_probabilities,
        prepare_data,
        train_fusion_model,
    )

    loaded = load_bundle(bundle, load_models=True)
    hp = replace(Hyperparameters(), fusion_arch="concat")
    p = prepare_data([load_challenge_folder(data_dir)], seed=seed, image_size=loaded.image_size)
    predictor = Predictor(p, loaded.models["text"], loaded.models["image"])
    fusion, _ = train_fusion_model(p, hp, predictor, seed)
    cal = _pairs(p, "calibration", hp, seed + 2)
    entry = calibrate(
        fusion_probabilities(fusion, p, *cal), p.y[cal[0]], alpha=hp.alpha, delta=hp.conformal_delta
    )
    test = p.rows("test", p.both)
    figures, _ = evaluate_arrays(fusion_probabilities(fusion, p, test, test), p.y[test], entry, LABELS)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real challenge-layout folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-lstm", action="store_true", help="do not train the reference LSTM")
    parser.add_argument("--fusion-concat", action="store_true", help="also measure the concatenation fusion")
    parser.add_argument("--keep", type=Path, help="write the bundle here instead of a temporary folder")
    args = parser.parse_args(argv)
    if not (args.data / "X_train_update.csv").is_file():
        print(f"skipped: the real data folder {args.data} is absent (it is never in the repository)")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    from models.data import load_challenge_folder
    from models.train import quiet_exporters, train

    quiet_exporters()
    workdir = Path(tempfile.mkdtemp(prefix="accuracy-bench-"))
    bundle_dir = args.keep or workdir / "bundle"
    started = time.perf_counter()
    bundle = train([load_challenge_folder(args.data)], bundle_dir, seed=args.seed)
    train_seconds = time.perf_counter() - started
    metrics = json.loads((bundle / "metrics.json").read_text(encoding="utf-8"))
    metadata = json.loads((bundle / "metadata.json").read_text(encoding="utf-8"))
    extra: dict[str, dict[str, Any]] = {}
    if not args.skip_lstm:
        extra["text (reference LSTM)"] = reference_lstm(args.data, args.seed)
    if args.fusion_concat:
        extra["fusion (concat, original design)"] = concat_fusion(args.data, bundle, args.seed)

    print(
        f"\nReal data: {args.data} ({metadata['counts']['test']['products']} test products, seed {args.seed})"
    )
    print(f"Bundle {metadata['version']}: trained in {train_seconds:.0f} s (export and report included)\n")
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("| --- | " + " | ".join("---" for _ in COLUMNS) + " |")
    for kind in ("text", "image", "fusion"):
        print(_row(kind, metrics[kind]))
    for name, figures in extra.items():
        print(_row(name, figures))
    pairs = metadata["test_pairs"]
    accuracies = ", ".join(
        f"{kind} {'-' if pairs[f'{kind}_accuracy'] is None else format(pairs[f'{kind}_accuracy'], '.3f')}"
        for kind in ("text", "image", "fusion")
    )
    print(f"\nOn the {pairs['n']} test products with both inputs, accuracy: {accuracies}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
