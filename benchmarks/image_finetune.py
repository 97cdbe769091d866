"""EfficientNet-Lite0 on the real photos: frozen features against fine-tuning its last layers.

    python -m benchmarks.image_finetune [--data ../shared/data/rakuten] [--seeds 0 1 2]
        [--size 280] [--runs frozen flip classweights tta head block] [--epochs 12]
        [--cache-dir var/image-features]

The ablation behind the shipped image model's recipe (docs/models.md, *Frozen or fine-tuned*).
Every photo of the sample is decoded and resized by `models.preprocessing.load_image`, as
training and serving do, and also mirrored left to right. One pass of the ImageNet backbone
(`models.training.efficientnet_lite`) over both gives, per image, the activations at three
depths, cached under `--cache-dir` (derived from the data: it stays out of the repository):

- the 1280 pooled features (what the shipped head reads);
- the output of the last MBConv block's projection (9 x 9 x 320 at 280 px), the input of the
  1x1 head convolution;
- the output of block 14 (9 x 9 x 192), the input of the last MBConv block.

Then, on the project's split of each seed (`models.training.splits`: trained on train,
early-stopped on validation, scored on test, as `benchmarks.accuracy` does), each run trains:

- `frozen`: the shipped recipe, `builders.build_image_head` on the pooled features (dropout,
  AdamW 2e-3, label smoothing 0.1, early stopping);
- `flip`: the same head trained on the features of the photos and of their mirrors (the
  serving graph is unchanged: it reads the photo only);
- `classweights`: `frozen` with balanced class weights, as the text model has;
- `tta`: `flip`'s head scored on the mean of a photo's and its mirror's probabilities (what
  test-time flip would give, at twice the backbone's serving cost);
- `head`: fine-tuning: the 1x1 head convolution (320 -> 1280, 410k weights) trained with the
  head, from the frozen head's weights, on mirrored and plain activations, at a small learning
  rate (batch norms kept in inference mode, their ImageNet statistics);
- `head-plain`: `head` on the photos' activations alone (no mirrors);
- `block`: `head` with the last MBConv block trained too (1.3M weights in all).

Prints a table of test accuracy per seed and the mean, and the training seconds of each run.
Exits 0 with a message when the real data folder (never part of the repository) is absent.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.image_backbone import DEFAULT_CACHE, DEFAULT_DATA, photos

RUNS = ("frozen", "flip", "classweights", "tta", "head", "head-plain", "block")
# The layers where each depth's activations are read, in `build_efficientnet_lite`'s names.
DEPTHS = {"block": "block14_add", "head": "block15_project_bn", "pooled": "pool"}


def activations(images: list[bytes], size: int, cache_dir: Path, batch: int) -> dict[str, np.ndarray]:
    """The three depths' activations of every photo and of its mirror, cached in one file.

    Returns arrays keyed `{depth}` (the photos) and `{depth}_flip` (their mirrors), in the
    order of `images`.
    """
    import hashlib

    from models.preprocessing import load_image
    from models.training.efficientnet_lite import VARIANTS

    digest = hashlib.sha256(b"".join(hashlib.sha256(data).digest() for data in images)).hexdigest()
    file = cache_dir / f"finetune-lite0-{size}px-{VARIANTS['lite0'].sha256[:12]}-{digest[:16]}.npz"
    if file.is_file():
        with np.load(file) as cached:
            return {name: cached[name] for name in cached.files}
    import keras

    from models.training.efficientnet_lite import load_efficientnet_lite

    backbone = load_efficientnet_lite("lite0", input_shape=(size, size, 3))
    taps = keras.Model(backbone.input, [backbone.get_layer(name).output for name in DEPTHS.values()])
    out: dict[str, list[np.ndarray]] = {f"{d}{s}": [] for d in DEPTHS for s in ("", "_flip")}
    began = time.perf_counter()
    for start in range(0, len(images), batch):
        pixels = np.stack([load_image(data, size) for data in images[start : start + batch]])
        for suffix, view in (("", pixels), ("_flip", pixels[:, :, ::-1])):
            values = taps.predict_on_batch(view.astype(np.float32))
            for depth, value in zip(DEPTHS, values, strict=True):
                out[f"{depth}{suffix}"].append(
                    np.asarray(value, dtype=np.float16 if depth != "pooled" else np.float32)
                )
        if start // batch % 20 == 0:
            done = start + len(pixels)
            print(
                f"  activations: {done}/{len(images)} photos ({time.perf_counter() - began:.0f} s)",
                flush=True,
            )
    arrays = {name: np.concatenate(values) for name, values in out.items()}
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = file.with_suffix(".staging.npz")
    np.savez(staging, **arrays)
    staging.replace(file)
    return arrays


def train_head(
    features: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray], seed: int, *, balanced: bool
) -> Any:
    """The shipped image head, fitted as `models.training.train.train_image_pretrained` does."""
    import keras

    from models.training import builders
    from models.training.fit import fit
    from models.training.hyperparameters import LABELS, Hyperparameters

    hp = Hyperparameters()
    keras.utils.set_random_seed(seed + 1000)
    head = builders.build_image_head(len(LABELS), features=features.shape[1], dropout=hp.image_dropout)
    fit(
        head,
        features,
        y,
        val,
        name="image head",
        epochs=hp.image_epochs,
        patience=hp.image_patience,
        learning_rate=hp.image_learning_rate,
        weight_decay=hp.image_weight_decay,
        hp=hp,
        balanced=balanced,
    )
    return head


def fine_tune(
    depth: str,
    x: np.ndarray,
    y: np.ndarray,
    val: tuple[np.ndarray, np.ndarray],
    head: Any,
    epochs: int,
    seed: int,
) -> Any:
    """The layers after `depth` and a copy of `head`, trained together at a small learning rate."""
    import keras

    from models.training.efficientnet_lite import finetune_split, load_efficientnet_lite
    from models.training.fit import fit
    from models.training.hyperparameters import Hyperparameters

    hp = Hyperparameters()
    keras.utils.set_random_seed(seed + 2000)
    tuned_head = keras.models.clone_model(head)
    tuned_head.set_weights(head.get_weights())
    _, top = finetune_split(load_efficientnet_lite("lite0"), depth)
    model = keras.Model(top.input, tuned_head(top.output), name=f"top_{depth}")
    fit(
        model,
        x,
        y,
        val,
        name=f"fine-tune {depth}",
        epochs=epochs,
        patience=hp.image_finetune_patience,
        learning_rate=hp.image_finetune_learning_rate,
        weight_decay=hp.image_weight_decay,
        hp=hp,
    )
    return model


def evaluate_seed(
    arrays: dict[str, np.ndarray],
    labels: np.ndarray,
    split: np.ndarray,
    runs: list[str],
    epochs: int,
    seed: int,
) -> dict[str, tuple[float, float]]:
    """Test accuracy and training seconds of each run on one seed's split."""
    from models.training.fit import predict_probs

    train, val, test = (np.flatnonzero(split == s) for s in ("train", "validation", "test"))
    yt, yv, ys = labels[train], labels[val], labels[test]
    pooled, mirrored = arrays["pooled"], arrays["pooled_flip"]
    results: dict[str, tuple[float, float]] = {}

    def score(probs: np.ndarray) -> float:
        return float(np.mean(probs.argmax(axis=1) == ys))

    began = time.perf_counter()
    frozen = train_head(pooled[train], yt, (pooled[val], yv), seed, balanced=False)
    results["frozen"] = (score(predict_probs(frozen, pooled[test], len(test))), time.perf_counter() - began)
    if "classweights" in runs:
        began = time.perf_counter()
        weighted = train_head(pooled[train], yt, (pooled[val], yv), seed, balanced=True)
        results["classweights"] = (
            score(predict_probs(weighted, pooled[test], len(test))),
            time.perf_counter() - began,
        )
    if {"flip", "tta"} & set(runs):
        began = time.perf_counter()
        both = np.concatenate([pooled[train], mirrored[train]])
        flipped = train_head(both, np.concatenate([yt, yt]), (pooled[val], yv), seed, balanced=False)
        seconds = time.perf_counter() - began
        plain = predict_probs(flipped, pooled[test], len(test))
        results["flip"] = (score(plain), seconds)
        results["tta"] = (score((plain + predict_probs(flipped, mirrored[test], len(test))) / 2), seconds)
    for run in ("head", "head-plain", "block"):
        if run not in runs:
            continue
        depth, views = run.split("-")[0], ("",) if run.endswith("-plain") else ("", "_flip")
        began = time.perf_counter()
        x = np.concatenate([arrays[f"{depth}{view}"][train] for view in views]).astype(np.float32)
        y = np.concatenate([yt] * len(views))
        val_x = arrays[depth][val].astype(np.float32)
        model = fine_tune(depth, x, y, (val_x, yv), frozen, epochs, seed)
        probs = predict_probs(model, arrays[depth][test].astype(np.float32), len(test))
        results[run] = (score(probs), time.perf_counter() - began)
    return {run: results[run] for run in runs if run in results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real challenge-layout folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=280, help="the backbone's input side (the shipped 280)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--epochs", type=int, default=12, help="at most this many fine-tuning epochs")
    parser.add_argument("--batch", type=int, default=32, help="photos per backbone call")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not (args.data / "image_train").is_dir():
        print(f"skipped: the real data folder {args.data} is absent (it is never in the repository)")
        return 0

    from models.training.hyperparameters import LABELS
    from models.training.splits import split_of

    images, codes, product_ids = photos(args.data)
    labels = np.array([LABELS.index(int(code)) for code in codes])
    print(
        f"{len(images)} photos at {args.size} px; runs {' '.join(args.runs)}; seeds {args.seeds}", flush=True
    )
    arrays = activations(images, args.size, args.cache_dir, args.batch)
    table: dict[str, list[tuple[float, float]]] = {run: [] for run in args.runs}
    for seed in args.seeds:
        results = evaluate_seed(arrays, labels, split_of(product_ids, seed), args.runs, args.epochs, seed)
        print(
            f"seed {seed}: " + ", ".join(f"{run} {acc:.3f} ({s:.0f} s)" for run, (acc, s) in results.items()),
            flush=True,
        )
        for run, value in results.items():
            table[run].append(value)
    print("\n| run | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | train s (mean) |")
    print("| --- |" + " --- |" * (len(args.seeds) + 2))
    for run, values in table.items():
        accs = [a for a, _ in values]
        print(
            f"| {run} | "
            + " | ".join(f"{a:.3f}" for a in accs)
            + f" | **{np.mean(accs):.3f}** | {np.mean([s for _, s in values]):.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
