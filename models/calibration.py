"""Split conformal prediction: suggestion sets that hold the true category with probability 1 - alpha.

On a calibration split the model never trained on, the score of each product is
1 - p(true class) (the "LAC" score, which gives the smallest sets on average). The threshold is
the finite-sample corrected quantile ceil((n + 1)(1 - alpha)) / n of those scores; at serving
time the set is every class whose probability is at least 1 - threshold, most likely first
(never empty: the top class is always in it). Marginal coverage >= 1 - alpha holds for new
products exchangeable with the calibration split.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DEFAULT_ALPHA = 0.05


def calibrate(probs: np.ndarray, labels: np.ndarray, *, alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """The calibration entry for one model.

    Args:
        probs: calibration-split probabilities, shape (n, classes).
        labels: the true class index of each row.
        alpha: the allowed miss rate (0.05 gives 95% sets).

    Returns:
        A JSON-ready dict with the score threshold (`qhat`), `alpha`, `n` and the method.
    """
    n = len(labels)
    if n == 0:
        # Nothing to calibrate on: every class is suggested (coverage holds trivially).
        return {"method": "lac", "alpha": alpha, "n": 0, "qhat": 1.0}
    scores = 1.0 - probs[np.arange(n), labels]
    level = math.ceil((n + 1) * (1 - alpha)) / n
    qhat = 1.0 if level > 1 else float(np.quantile(scores, level, method="higher"))
    return {"method": "lac", "alpha": alpha, "n": int(n), "qhat": qhat}


def suggestion_set(probs: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
    """Class indices of the calibrated set for one prediction, most likely first.

    Args:
        probs: the model's probabilities for one product, shape (classes,).
        entry: this model's calibration entry (from `calibrate`).

    Returns:
        Indices into `probs`, sorted by decreasing probability; at least one.
    """
    order = np.argsort(-probs, kind="stable")
    keep = probs[order] >= 1.0 - float(entry["qhat"]) - 1e-12
    keep[0] = True
    return order[keep]


def set_metrics(probs: np.ndarray, labels: np.ndarray, entry: dict[str, Any]) -> tuple[float, float]:
    """Empirical coverage and mean size of the calibrated sets over a labelled split."""
    if len(labels) == 0:
        return float("nan"), float("nan")
    sets = [suggestion_set(p, entry) for p in probs]
    coverage = float(np.mean([y in s for y, s in zip(labels, sets, strict=True)]))
    return coverage, float(np.mean([len(s) for s in sets]))
