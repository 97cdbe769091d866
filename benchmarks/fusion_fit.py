"""How to fit the late-fusion weights: pseudo pairs, real pairs, or a mix, scored on real test pairs.

    python -m benchmarks.fusion_fit [--data ../shared/data/rakuten] [--seeds 0 1 2]
        [--feature-cache var/feature-cache]

For each split seed, trains the text and image models exactly as `python -m models.train`
does (same seeding, so the same models as `benchmarks.accuracy --seed S`), then fits the
`LateFusion` layer on the validation split in several ways and scores each on the test
products that have both inputs (accuracy and log-loss; text and image alone for reference):

- `pseudo`: the real validation pairs plus same-class pseudo pairs (what train.py did);
- `real`: the real validation pairs alone (about 28 products: 29 weights to fit);
- `real, no bias`: the same with the per-class bias held at 0 (2 weights);
- `mix`: pseudo pairs plus the real ones weighted up to half of the total weight.

Prints one table per seed and the figures pooled over the seeds (the test pairs are 40 or so
products a split: one product is 2.4 points). Exits 0 with a message when the data is absent.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "rakuten"
VARIANTS = ("pseudo", "real", "real, no bias", "mix")


def fit_variant(variant: str, p: Any, hp: Any, predictor: Any, seed: int) -> Any:
    """The fitted `LateFusion` layer of `variant` (see the module docstring)."""
    import keras

    from models.training import builders
    from models.training.prepare import pairs
    from models.training.train import fit_late_fusion

    keras.utils.set_random_seed(seed + 7)
    fusion = builders.build_fusion(predictor.text_model, predictor.image_model)
    layer = fusion.get_layer("late_fusion")
    real = p.rows("validation", p.both)
    if variant == "pseudo":
        t, i = pairs(p, "validation", per_text=hp.pseudo_pairs_per_text, seed=seed)
        weight = None
    elif variant == "mix":
        t, i = pairs(p, "validation", per_text=hp.pseudo_pairs_per_text, seed=seed)
        n_pseudo = len(t) - len(real)
        weight = np.ones(len(t), dtype=np.float32)
        weight[: len(real)] = max(n_pseudo, 1) / max(len(real), 1)  # real pairs come first
        weight *= len(t) / weight.sum()
    else:
        t, i, weight = real, real, None
        if variant == "real, no bias":
            layer.bias.trainable = False
    fit_late_fusion(fusion, predictor.text(t), predictor.image(i), p.y[t], hp, sample_weight=weight)
    return layer


def scores(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean negative log-likelihood of the true class)."""
    nll = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))
    return float(np.mean(probs.argmax(axis=1) == y)), float(nll.mean())


def run_seed(data_dir: Path, seed: int, feature_cache: Path | None) -> dict[str, Any]:
    """Train the two models on the split of `seed`; each variant's test-pair probabilities."""
    import keras

    from models.data import load_challenge_folder
    from models.training.fit import Predictor
    from models.training.hyperparameters import Hyperparameters
    from models.training.prepare import prepare_data
    from models.training.train import train_image_model, train_text_model

    hp = Hyperparameters().check()
    keras.utils.set_random_seed(seed)  # as train() does: the same models as the bundle's
    p = prepare_data([load_challenge_folder(data_dir)], seed=seed, image_size=hp.image_size)
    text_model, _ = train_text_model(p, hp)
    image_model, _, image_probs = train_image_model(p, hp, seed, feature_cache=feature_cache)
    predictor = Predictor(p, text_model, image_model)
    if image_probs is not None:
        predictor.preset_image(np.flatnonzero(p.has_image), image_probs[p.has_image])
    test = p.rows("test", p.both)
    text, image = predictor.text(test), predictor.image(test)
    out: dict[str, Any] = {"y": p.y[test], "text": text, "image": image, "weights": {}}
    for variant in VARIANTS:
        layer = fit_variant(variant, p, hp, predictor, seed)
        out[variant] = np.asarray(layer([text, image]))
        out["weights"][variant] = (float(layer.text_weight.numpy()), float(layer.image_weight.numpy()))
    out["real_validation_pairs"] = len(p.rows("validation", p.both))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--feature-cache", type=Path, default=Path("var/feature-cache"))
    args = parser.parse_args(argv)
    if not (args.data / "X_train_update.csv").is_file():
        print(f"skipped: the real data folder {args.data} is absent (it is never in the repository)")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stderr)
    runs = {seed: run_seed(args.data, seed, args.feature_cache) for seed in args.seeds}
    rows = ("text", "image", *VARIANTS)
    print("| fit | " + " | ".join(f"seed {s}: acc / NLL (a, b)" for s in runs) + " | pooled acc / NLL |")
    print("| --- | " + " | ".join("---" for _ in runs) + " | --- |")
    for row in rows:
        cells = []
        for run in runs.values():
            acc, nll = scores(run[row], run["y"])
            weights = run["weights"].get(row)
            cells.append(
                f"{acc:.3f} / {nll:.3f}" + (f" ({weights[0]:.2f}, {weights[1]:.2f})" if weights else "")
            )
        y = np.concatenate([run["y"] for run in runs.values()])
        acc, nll = scores(np.concatenate([run[row] for run in runs.values()]), y)
        print(f"| {row} | " + " | ".join(cells) + f" | {acc:.3f} / {nll:.3f} |")
    pairs = ", ".join(
        f"seed {s}: {len(r['y'])} test, {r['real_validation_pairs']} validation" for s, r in runs.items()
    )
    print(f"\nReal pairs: {pairs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
