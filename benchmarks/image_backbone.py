"""Frozen ImageNet EfficientNet-Lite features on the real photos: a linear probe's accuracy.

    python -m benchmarks.image_backbone [--data ../shared/data/rakuten] [--runs lite0@224 lite2@260]
        [--folds 5] [--batch 32] [--timing 256] [--cache-dir var/image-features]

For each run (variant @ input size), every product photo of the sample (about 5,800) is
decoded and resized by `models.preprocessing.load_image` (what training and serving feed the
image models) and goes through the frozen backbone of `models.training.efficientnet_lite`; the
1280 pooled features are cached under `var/image-features/`, one file per run keyed by each
image's SHA-256, so a rerun extracts nothing (the cache is derived from the data: it stays
out of the repository like `var/`). Then a 5-fold stratified cross-validation of a logistic
regression on standardised features, its L2 strength chosen inside each training fold
(`--C` fixes it): accuracy per fold and the mean. Also the probe trained on the project's
train split and scored on its test split (`models.training.splits`, seed 0: the split of
the image CNN's figure in docs/models.md); `--folds 0` gives that figure alone.

`--timing N` also times the feature extraction of N photos in Keras and in ONNX Runtime
(the model exported by `models.training.export.export_model`, as the serving bundles are),
in batches of `--batch` and one photo at a time, and checks that the two agree.

Exits 0 with a message when the real data folder (never part of the repository) is absent.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "rakuten"
DEFAULT_CACHE = PROJECT_ROOT / "var" / "image-features"
DEFAULT_RUNS = ("lite0@224",)
C_GRID = (0.001, 0.003, 0.01, 0.03)


def parse_run(text: str) -> tuple[str, int]:
    """`lite0@224` -> ("lite0", 224); `lite2` -> ("lite2", its native resolution)."""
    from models.training.efficientnet_lite import VARIANTS

    variant, _, size = text.partition("@")
    if variant not in VARIANTS:
        raise argparse.ArgumentTypeError(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
    return variant, int(size) if size else VARIANTS[variant].resolution


def photos(data_dir: Path) -> tuple[list[bytes], np.ndarray, list[str]]:
    """The raw bytes, the label and the product id of every product of the sample with a photo."""
    from models.data import load_challenge_folder

    dataset = load_challenge_folder(data_dir)
    rows = np.flatnonzero(dataset.has_image)
    images = [dataset.image_bytes(int(i)) or b"" for i in rows]
    return images, dataset.labels[rows], [dataset.product_ids[i] for i in rows]


def _decode(images: list[bytes], size: int) -> np.ndarray:
    from models.preprocessing import load_image

    return np.stack([load_image(data, size) for data in images])


def extract(model: Any, images: list[bytes], size: int, batch: int) -> tuple[np.ndarray, float]:
    """Pooled features of `images` and the extraction time per image in ms (decoding apart)."""
    out, seconds = [], 0.0
    for start in range(0, len(images), batch):
        pixels = _decode(images[start : start + batch], size).astype(np.float32)
        began = time.perf_counter()
        out.append(np.asarray(model.predict_on_batch(pixels)))
        seconds += time.perf_counter() - began
    return np.concatenate(out), 1000 * seconds / max(len(images), 1)


def cached_features(
    variant: str, size: int, images: list[bytes], cache_dir: Path, batch: int
) -> tuple[np.ndarray, float | None]:
    """Features for `images` in order, extracting only those the cache does not hold.

    Returns the features and the ms per image of the last extraction into the cache.
    """
    from models.training.efficientnet_lite import VARIANTS, load_efficientnet_lite

    digests = [hashlib.sha256(data).hexdigest() for data in images]
    # The weights' digest is part of the file name: other weights never reuse these features.
    file = cache_dir / f"{variant}-{size}px-{VARIANTS[variant].sha256[:12]}.npz"
    known: dict[str, np.ndarray] = {}
    ms = None
    if file.is_file():
        with np.load(file) as cache:
            known = dict(zip(cache["digests"].tolist(), cache["features"], strict=True))
            ms = float(cache["ms_per_image"]) if "ms_per_image" in cache.files else None
    todo = {d: data for d, data in zip(digests, images, strict=True) if d not in known}
    if todo:
        print(f"  extracting {len(todo)} images ({variant} at {size} px; {len(known)} cached)", flush=True)
        model = load_efficientnet_lite(variant)
        features, ms = extract(model, list(todo.values()), size, batch)
        known.update(zip(todo, features, strict=True))
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = file.with_suffix(".staging.npz")
        np.savez(
            staging, digests=np.array(list(known)), features=np.stack(list(known.values())), ms_per_image=ms
        )
        staging.replace(file)
    return np.stack([known[d] for d in digests]), ms


def probe_accuracy(
    features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, c: float | None, seed: int
) -> tuple[float, float]:
    """Test accuracy of a logistic regression on standardised features fitted on `train`, and its C.

    With `c` None the L2 strength is chosen among `C_GRID` by a 3-fold CV of `train` alone.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe: Any = make_pipeline(StandardScaler(), LogisticRegression(C=c or 1.0, max_iter=2000))
    if c is None:
        inner = StratifiedKFold(3, shuffle=True, random_state=seed)
        probe = GridSearchCV(probe, {"logisticregression__C": C_GRID}, cv=inner)
    probe.fit(features[train], labels[train])
    chosen = c if c is not None else probe.best_params_["logisticregression__C"]
    return float(probe.score(features[test], labels[test])), chosen


def cross_validate(
    features: np.ndarray, labels: np.ndarray, folds: int, seed: int, c: float | None
) -> tuple[list[float], list[float]]:
    """`probe_accuracy` on each of `folds` stratified folds: the accuracies and the C of each."""
    from sklearn.model_selection import StratifiedKFold

    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels)
    results = [probe_accuracy(features, labels, train, test, c, seed) for train, test in splits]
    return [r[0] for r in results], [r[1] for r in results]


def timing(variant: str, size: int, images: list[bytes], batch: int) -> dict[str, float]:
    """ms per image in Keras and ONNX Runtime, batched and one at a time; max |ONNX - Keras|."""
    import onnxruntime as ort

    from models.training.efficientnet_lite import load_efficientnet_lite
    from models.training.export import export_model

    pixels = _decode(images, size)
    model = load_efficientnet_lite(variant)
    with tempfile.TemporaryDirectory() as tmp:
        entry = export_model(model, Path(tmp), "image")
        onnx_file = Path(tmp) / entry["file"]
        onnx_mb = onnx_file.stat().st_size / 1e6
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])

    def per_image(run: Any, step: int) -> float:
        run(pixels[:step])  # warm-up: tracing, allocations
        began = time.perf_counter()
        for start in range(0, len(pixels), step):
            run(pixels[start : start + step])
        return 1000 * (time.perf_counter() - began) / len(pixels)

    def keras_run(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(x.astype(np.float32)))

    def onnx_run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"image": x})[0]

    check = pixels[: min(batch, len(pixels))]
    return {
        "keras_batched_ms": per_image(keras_run, batch),
        "keras_single_ms": per_image(keras_run, 1),
        "onnx_batched_ms": per_image(onnx_run, batch),
        "onnx_single_ms": per_image(onnx_run, 1),
        "onnx_max_abs_diff": float(np.abs(onnx_run(check) - keras_run(check)).max()),
        "onnx_mb": onnx_mb,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real challenge-layout folder")
    parser.add_argument(
        "--runs",
        nargs="+",
        type=parse_run,
        default=[parse_run(r) for r in DEFAULT_RUNS],
        help="VARIANT[@SIZE] ...",
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--C", type=float, default=None, dest="c", help="the probe's inverse L2 strength (default: nested CV)"
    )
    parser.add_argument(
        "--timing", type=int, default=0, metavar="N", help="also time Keras and ONNX on N photos"
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    if not (args.data / "image_train").is_dir():
        print(f"skipped: the real data folder {args.data} is absent (it is never in the repository)")
        return 0

    from models.training.splits import split_of

    images, labels, product_ids = photos(args.data)
    split = split_of(product_ids, args.seed)
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    print(
        f"{len(images)} photos, {len(np.unique(labels))} classes; {args.folds}-fold stratified CV, and the "
        f"project's split of seed {args.seed} (train {len(train)}, test {len(test)}, as the CNN's figure)",
        flush=True,
    )
    rows = []
    for variant, size in args.runs:
        features, ms = cached_features(variant, size, images, args.cache_dir, args.batch)
        cv, folds, cs = "-", "-", "-"
        if args.folds:
            scores, chosen = cross_validate(features, labels, args.folds, args.seed, args.c)
            cv = f"{np.mean(scores):.3f} ± {np.std(scores):.3f}"
            folds = " ".join(f"{s:.3f}" for s in scores)
            cs = " ".join(f"{c:g}" for c in chosen)
        on_split, split_c = probe_accuracy(features, labels, train, test, args.c, args.seed)
        extraction = "-" if ms is None else f"{ms:.1f}"
        rows.append(
            f"| {variant} | {size} | {cv} | {folds} | {cs} | {on_split:.3f} (C {split_c:g}) | {extraction} |"
        )
        print(rows[-1], flush=True)
        if args.timing:
            t = timing(variant, size, images[: args.timing], args.batch)
            print(
                f"  timing on {args.timing} photos: Keras {t['keras_batched_ms']:.1f} ms/image in batches of "
                f"{args.batch}, {t['keras_single_ms']:.1f} ms one at a time; ONNX Runtime "
                f"{t['onnx_batched_ms']:.1f} / {t['onnx_single_ms']:.1f} ms; max |ONNX - Keras| "
                f"{t['onnx_max_abs_diff']:.1e}; ONNX file {t['onnx_mb']:.1f} MB",
                flush=True,
            )
    print(
        "\n| variant | px | CV accuracy (mean ± sd) | per fold | C per fold | test split | Keras ms/image (batched) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
