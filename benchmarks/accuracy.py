"""Accuracy on the real Rakuten sample: train on its train split, print the test-split figures.

    python -m benchmarks.accuracy [--data ../shared/data/rakuten] [--seed 0] [--skip-lstm]
        [--fusion-concat] [--ablation] [--text-seeds 1 2] [--keep BUNDLE_DIR] [--refit]
        [--calibrations] [--sentence-encoder use3|none] [--sentence-max-tokens N] [--text-only]

Trains the shipped bundle exactly as `python -m models.train` does (splits by product id:
65% train, 10% validation, 10% calibration, 15% test), then the original design's LSTM
text model on the same split for reference; optionally the original design's concatenation
fusion head on the same trained models, the text model with n-grams only (`--ablation`), and
the text model alone on the splits of other seeds (`--text-seeds`: a 298-text test split
gives ±2.7%, the mean over splits is steadier). `--sentence-encoder` and
`--sentence-max-tokens` change the text model's sentence-embedding input (`none`: without);
`--text-only` trains the text model alone on `--seed` and `--text-seeds`, with and without the
sentence encoder, and prints their figures (no bundle). Prints one table, then the suggestion
sets' table of metrics.json (marginal and class-conditional calibration); `--calibrations` also
re-calibrates the bundle's models through the serving runtime with and without the
training-conditional `delta`, to compare the four on the same split. Exits 0 with a message
when the real data folder is absent (it is never part of the repository).

The bundle is trained with `refit` off unless `--refit` is given: every figure here is then
of models that never saw the test split. With `--refit` the table is still the selection
run's (metrics.json), but the kept bundle ships refitted models that trained on the test
split, so `--fusion-concat` and `--calibrations` refuse it.
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
SET_COLUMNS = ("coverage", "mean_size", "singleton_rate", "singleton_coverage", "min_class_coverage")


def _row(name: str, figures: dict[str, Any]) -> str:
    cells = []
    for key in COLUMNS:
        value = figures.get(key)
        cells.append("-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))
    return f"| {name} | " + " | ".join(cells) + " |"


def text_only(
    data_dir: Path, seed: int, *, feature_cache: Path | None = None, **overrides: Any
) -> dict[str, Any]:
    """One text model (the shipped recipe, with `overrides`) on the split of `seed`: test figures
    (and the seconds it took to train, sentence embeddings included)."""
    import keras

    from models.calibration import calibrate
    from models.data import load_challenge_folder
    from models.training.evaluate import evaluate_arrays
    from models.training.fit import Predictor
    from models.training.hyperparameters import LABELS, Hyperparameters
    from models.training.prepare import prepare_data
    from models.training.train import train_text_model

    hp = replace(Hyperparameters(), **overrides).check()
    keras.utils.set_random_seed(seed)
    p = prepare_data(
        [load_challenge_folder(data_dir)], seed=seed, image_size=hp.image_size, decode_images=False
    )
    started = time.perf_counter()
    model, history = train_text_model(p, hp, feature_cache=feature_cache)
    seconds = time.perf_counter() - started
    predictor = Predictor(p, model, None)
    cal, test = p.rows("calibration", p.has_text), p.rows("test", p.has_text)
    entry = calibrate(
        predictor.text(cal), p.y[cal], alpha=hp.alpha, method=hp.conformal_method, delta=hp.conformal_delta
    )
    figures, _ = evaluate_arrays(predictor.text(test), p.y[test], entry, LABELS)
    figures["epochs"] = len(history.get("loss", []))
    figures["train_seconds"] = seconds
    return figures


def compare_sentence_encoder(
    data_dir: Path, seeds: list[int], *, feature_cache: Path | None, **overrides: Any
) -> None:
    """The text model without and with the sentence encoder on each split: one table, and the means."""
    from models.training.hyperparameters import Hyperparameters

    encoder = overrides.pop("sentence_encoder", None) or "use3"
    variants = {
        "without": {**overrides, "sentence_encoder": ""},
        encoder: {**overrides, "sentence_encoder": encoder},
    }
    cap = overrides.get("sentence_max_tokens", Hyperparameters().sentence_max_tokens)
    print(f"\nText model alone, without and with {encoder} ({cap} tokens), test split of each seed:\n")
    print(
        "| sentence encoder | seed | n | accuracy | top5 | set_coverage | set_mean_size | epochs | train s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    means: dict[str, dict[str, float]] = {}
    for name, variant in variants.items():
        runs = [text_only(data_dir, seed, feature_cache=feature_cache, **variant) for seed in seeds]
        for seed, f in zip(seeds, runs, strict=True):
            print(
                f"| {name} | {seed} | {f['n']} | {f['accuracy']:.3f} | {f['top5']:.3f} | {f['set_coverage']:.3f} "
                f"| {f['set_mean_size']:.2f} | {f['epochs']} | {f['train_seconds']:.0f} |",
                flush=True,
            )
        keys = ("accuracy", "top5", "set_coverage", "set_mean_size")
        means[name] = {key: sum(f[key] for f in runs) / len(runs) for key in keys}
    for name, mean in means.items():
        print(f"  mean {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))


# What the shipped text model was before the pretrained word vectors, the title branch and the
# class weights: the ablation row of `--ablation`.
NGRAMS_ONLY = {"word_vectors": "", "title_tokens": 0, "text_balanced": False}


def concat_fusion(
    data_dir: Path, bundle: Path, seed: int, feature_cache: Path | None = None
) -> dict[str, Any]:
    """The original design's fusion (features concatenated under a new head) on the bundle's models."""
    from models.bundle import load_bundle
    from models.data import load_challenge_folder
    from models.training.fit import Predictor
    from models.training.hyperparameters import Hyperparameters
    from models.training.keras_parity import load_keras_models
    from models.training.prepare import prepare_data
    from models.training.train import (
        TrainedModels,
        calibrate_models,
        evaluate_models,
        sentence_embeddings,
        train_fusion_model,
    )

    loaded = load_bundle(bundle)
    keras_models = load_keras_models(bundle)
    trained = loaded.metadata["hyperparameters"]
    hp = replace(
        Hyperparameters(),
        fusion_arch="concat",
        image_size=loaded.image_size,
        sentence_encoder=trained.get("sentence_encoder", ""),
        sentence_max_tokens=trained.get("sentence_max_tokens", Hyperparameters().sentence_max_tokens),
    ).check()
    p = prepare_data([load_challenge_folder(data_dir)], seed=seed, image_size=loaded.image_size)
    sentence_embeddings(p, hp, feature_cache)  # what the text model reads besides the text, if anything
    predictor = Predictor(p, keras_models["text"], keras_models["image"])
    fusion, history = train_fusion_model(p, hp, predictor, seed)
    models = TrainedModels(
        predictor.text_model, predictor.image_model, fusion, {"fusion": history}, predictor
    )
    calibration = calibrate_models(p, hp, models, seed)
    return evaluate_models(p, models, calibration).metrics["fusion"]


def _set_row(name: str, report: dict[str, Any], fallback: str = "") -> str:
    cells = ["-" if report.get(k) is None else f"{report[k]:.3f}" for k in SET_COLUMNS]
    cells[-1] += f" ({report.get('min_class')})"
    by_size = ", ".join(f"{b['sizes']}: {b['coverage']:.2f} ({b['n']})" for b in report.get("by_size", []))
    return (
        f"| {name} | "
        + " | ".join(cells)
        + f" | {report.get('classes_under_target')} | {fallback} | {by_size} |"
    )


def print_sets(metrics: dict[str, Any], calibration: dict[str, Any]) -> None:
    """The suggestion sets of each model under both calibrations of the bundle (metrics.json)."""
    print("\nSuggestion sets on the test split (calibration split thresholds):\n")
    print(
        "| model, calibration | "
        + " | ".join(SET_COLUMNS)
        + " | classes < 95% | fallback classes | by size |"
    )
    print("| --- | " + " | ".join("---" for _ in SET_COLUMNS) + " | --- | --- | --- |")
    for kind in ("text", "image", "fusion"):
        sets, entry = metrics[kind].get("sets") or {}, calibration[kind]
        for name in ("marginal", "mondrian"):
            if name in sets:
                fallback = f"{len(entry.get('fallback_classes', []))}/27" if name == "mondrian" else ""
                print(_set_row(f"{kind}, {name}", sets[name], fallback))


def calibration_variants(data_dir: Path, bundle: Path, seed: int) -> dict[str, dict[str, Any]]:
    """Each model's sets under marginal / class-conditional calibration, with delta 0.1 and without.

    The bundle's models through the serving runtime, on the products `models.train` calibrates
    and scores them on (same split, same pseudo pairs for fusion).
    """
    import numpy as np

    from models.calibration import calibrate
    from models.data import load_challenge_folder
    from models.runtime import ModelRuntime
    from models.training.evaluate import set_report
    from models.training.hyperparameters import LABELS, Hyperparameters
    from models.training.prepare import pairs, prepare_data
    from models.training.splits import split_of

    hp = Hyperparameters()
    runtime = ModelRuntime.from_bundle(bundle)
    data = load_challenge_folder(data_dir)
    # Only the calibration and test products (a product's split depends on its id alone).
    wanted = np.flatnonzero(np.isin(split_of(data.product_ids, seed), ["calibration", "test"]))
    p = prepare_data([data.subset(list(wanted))], seed=seed, image_size=runtime.image_size)

    def probs(kind: str, t_rows: Any, i_rows: Any) -> Any:
        chunks = [np.zeros((0, len(LABELS)), dtype=np.float32)]
        for start in range(0, len(t_rows), 64):  # the backbone's activations of 64 photos at a time
            t, i = t_rows[start : start + 64], i_rows[start : start + 64]
            texts = None if kind == "image" else [str(x) for x in p.texts[t]]
            chunks.append(runtime.predict_batch(kind, texts, None if kind == "text" else list(p.images[i])))
        return np.concatenate(chunks)

    c_pairs = pairs(p, "calibration", per_text=hp.pseudo_pairs_per_text, seed=seed + 2)
    t_both = p.rows("test", p.both)
    rows = {
        "text": ((p.rows("calibration", p.has_text),) * 2, (p.rows("test", p.has_text),) * 2),
        "image": ((p.rows("calibration", p.has_image),) * 2, (p.rows("test", p.has_image),) * 2),
        "fusion": (c_pairs, (t_both, t_both)),
    }
    out: dict[str, dict[str, Any]] = {}
    for kind, (cal, test) in rows.items():
        cal_probs, test_probs = probs(kind, *cal), probs(kind, *test)
        for delta in (hp.conformal_delta, None):
            for mondrian in (False, True):
                entry = calibrate(cal_probs, p.y[cal[0]], alpha=hp.alpha, delta=delta, mondrian=mondrian)
                name = f"{kind}, {'mondrian' if mondrian else 'marginal'}, delta {delta}"
                out[name] = {**set_report(test_probs, p.y[test[0]], entry, LABELS), "entry": entry}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real challenge-layout folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-lstm", action="store_true", help="do not train the reference LSTM")
    parser.add_argument("--fusion-concat", action="store_true", help="also measure the concatenation fusion")
    parser.add_argument("--keep", type=Path, help="write the bundle here instead of a temporary folder")
    parser.add_argument(
        "--refit", action="store_true", help="also refit the shipped models on train + validation + test"
    )
    parser.add_argument(
        "--calibrations",
        action="store_true",
        help="also compare marginal / class-conditional sets with and without delta (serving runtime)",
    )
    parser.add_argument(
        "--image-arch", help="the image model (default: the shipped one, EfficientNet-Lite0 pretrained)"
    )
    parser.add_argument(
        "--feature-cache",
        type=Path,
        default=Path("var/feature-cache"),
        help="the pretrained backbone's features between runs (default var/feature-cache; none: off)",
    )
    parser.add_argument(
        "--ablation", action="store_true", help="also the text model with n-grams only (no word vectors)"
    )
    parser.add_argument(
        "--text-seeds",
        type=int,
        nargs="*",
        default=[],
        metavar="SEED",
        help="also train the text model alone on the splits of these seeds (the test split is small)",
    )
    parser.add_argument(
        "--sentence-encoder",
        help="the text model's sentence encoder: use3, or none (default: the shipped one)",
    )
    parser.add_argument("--sentence-max-tokens", type=int, help="tokens the sentence encoder reads per text")
    parser.add_argument(
        "--text-only",
        action="store_true",
        help="only the text model, without and with the sentence encoder, on --seed and --text-seeds",
    )
    args = parser.parse_args(argv)
    if not (args.data / "X_train_update.csv").is_file():
        print(f"skipped: the real data folder {args.data} is absent (it is never in the repository)")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    from models.data import load_challenge_folder
    from models.training.hyperparameters import Hyperparameters
    from models.training.train import quiet_exporters, train

    if args.refit and (args.fusion_concat or args.calibrations):
        parser.error("--fusion-concat and --calibrations score the bundle's models: not with --refit")
    quiet_exporters()
    cache = None if str(args.feature_cache) == "none" else args.feature_cache
    text_overrides: dict[str, Any] = {}
    if args.sentence_encoder is not None:
        text_overrides["sentence_encoder"] = "" if args.sentence_encoder == "none" else args.sentence_encoder
    if args.sentence_max_tokens is not None:
        text_overrides["sentence_max_tokens"] = args.sentence_max_tokens
    if args.text_only:
        compare_sentence_encoder(
            args.data, [args.seed, *args.text_seeds], feature_cache=cache, **text_overrides
        )
        return 0

    # The bundle (240 MB with the real data) goes with the run, unless --keep names its place.
    with tempfile.TemporaryDirectory(prefix="accuracy-bench-") as scratch:
        workdir = Path(scratch)
        bundle_dir = args.keep or workdir / "bundle"
        started = time.perf_counter()
        bundle = train(
            [load_challenge_folder(args.data)],
            bundle_dir,
            seed=args.seed,
            hyperparameters=replace(Hyperparameters(), refit=args.refit, **text_overrides),
            image_arch=args.image_arch,
            feature_cache=cache,
        )
        train_seconds = time.perf_counter() - started
        metrics = json.loads((bundle / "metrics.json").read_text(encoding="utf-8"))
        metadata = json.loads((bundle / "metadata.json").read_text(encoding="utf-8"))
        calibration = json.loads((bundle / "calibration.json").read_text(encoding="utf-8"))
        extra: dict[str, dict[str, Any]] = {}
        if args.ablation:
            extra["text (n-grams only)"] = text_only(
                args.data,
                args.seed,
                feature_cache=cache,
                **{**text_overrides, **NGRAMS_ONLY, "sentence_encoder": ""},
            )
        if not args.skip_lstm:
            extra["text (reference LSTM)"] = text_only(args.data, args.seed, text_arch="lstm")
        if args.fusion_concat:
            extra["fusion (concat, original design)"] = concat_fusion(args.data, bundle, args.seed, cache)

        print(
            f"\nReal data: {args.data} ({metadata['counts']['test']['products']} test products, seed {args.seed})"
        )
        print(
            f"Bundle {metadata['version']}: trained in {train_seconds:.0f} s (export and report included)\n"
        )
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
        print(
            f"Figures: {metrics['text'].get('scored_by')}; shipped models refitted: {metadata.get('refit')}"
        )
        print_sets(metrics, calibration)
        if args.calibrations:
            print("\nRe-calibrated through the serving runtime (same calibration and test products):\n")
            print(
                "| model, calibration | "
                + " | ".join(SET_COLUMNS)
                + " | classes < 95% | fallback | by size |"
            )
            print("| --- | " + " | ".join("---" for _ in SET_COLUMNS) + " | --- | --- | --- |")
            for name, report in calibration_variants(args.data, bundle, args.seed).items():
                entry = report["entry"]
                fallback = f"{len(entry['fallback_classes'])}/27" if entry["mondrian"] else ""
                print(_set_row(name, report, fallback))
        if args.text_seeds:
            print("\nText model alone on other splits (accuracy / top-5):")
            runs = [(args.seed, metrics["text"])]
            runs += [
                (seed, text_only(args.data, seed, feature_cache=cache, **text_overrides))
                for seed in args.text_seeds
            ]
            for seed, figures in runs:
                print(f"  seed {seed}: n {figures['n']}, {figures['accuracy']:.3f} / {figures['top5']:.3f}")
            mean = {key: sum(f[key] for _, f in runs) / len(runs) for key in ("accuracy", "top5")}
            print(f"  mean over {len(runs)} splits: {mean['accuracy']:.3f} / {mean['top5']:.3f}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
