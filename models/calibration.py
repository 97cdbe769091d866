"""Split conformal prediction: the suggestion set the server returns with each prediction.

A model's probabilities are turned into the smallest set of categories that contains the
true one with probability at least 1 - alpha (95% by default). The guarantee is
marginal and finite-sample: it holds on average over products exchangeable with the
calibration split, whatever the model, as long as the threshold is computed on products
the model never trained on (the calibration split, never the test split).

Two non-conformity scores are supported:

- ``lac`` (least ambiguous set-valued classifier, Sadinle et al. 2019): score = 1 - p(true).
  The set is every category with p >= 1 - threshold. It gives the smallest sets on
  average; this is the default.
- ``aps`` (adaptive prediction sets, Romano et al. 2020, non-randomised): score = the
  probability mass of the categories ranked at or above the true one. The set is the
  shortest prefix of the ranking whose mass reaches the threshold; sets grow with the
  model's uncertainty.

With ``delta`` (the project uses 0.1) the threshold is a slightly higher order statistic,
chosen so that this calibration split's sets cover at least 1 - alpha with probability
1 - delta (a training-conditional guarantee): with a few hundred calibration products the
plain marginal guarantee leaves a test coverage of 93-97%, half the time under 95%.

Class-conditional (Mondrian) calibration (Vovk et al. 2005, ch. 4; "label-conditional" in
crepes and MAPIE) computes one threshold per class, on that class's calibration products
alone: the 95% then holds for the products of each class, not only on average over the
catalogue (where a frequent, easy class can pay for a rare, hard one). A class with too few
calibration products for a finite quantile at this alpha (and delta) keeps the marginal
threshold instead, and the entry lists it (`fallback_classes`): for that class the
guarantee is the marginal one only. A category is suggested when its own score is within
its own class's threshold, so a Mondrian set is not always a prefix of the ranking.

The calibration entry stored in the bundle (`calibration.json`, one per model kind) is a
plain dict: ``{"method", "alpha", "delta", "threshold", "n", "mondrian", "class_thresholds",
"class_n", "fallback_classes"}``, the per-class lists in the model's output order. The
per-class thresholds are computed and kept in every entry, so the report can compare both
calibrations on the same split; ``"mondrian"`` says which one the sets use. Entries written
before (no ``mondrian`` key) are marginal. `suggestion_set` is the one function that reads
an entry, used by evaluation and serving alike.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

Method = Literal["lac", "aps"]
METHODS: tuple[str, ...] = ("lac", "aps")
DEFAULT_ALPHA = 0.05


class CalibrationError(ValueError):
    """A calibration entry or its inputs are unusable."""


def conformal_scores(probs: np.ndarray, true_idx: np.ndarray, method: Method = "lac") -> np.ndarray:
    """Non-conformity score of the true class for each row.

    Args:
        probs: (n, k) probabilities, rows summing to 1.
        true_idx: (n,) index of the true class in each row.
        method: "lac" or "aps".

    Returns:
        (n,) scores; larger means the true class looked less plausible to the model.
    """
    probs = np.asarray(probs, dtype=np.float64)
    true_idx = np.asarray(true_idx, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(true_idx):
        raise CalibrationError(
            f"expected (n, k) probabilities and n labels, got {probs.shape}, {true_idx.shape}"
        )
    p_true = probs[np.arange(len(probs)), true_idx]
    if method == "lac":
        return 1.0 - p_true
    if method == "aps":
        # Mass of every class at least as probable as the true one (ties count as above:
        # conservative, and what `suggestion_set` includes).
        return np.where(probs >= p_true[:, None], probs, 0.0).sum(axis=1)
    raise CalibrationError(f"unknown conformal method {method!r}; use one of {METHODS}")


def _binomial_upper_tail(n: int, p: float, k: int) -> float:
    """P(Binomial(n, p) >= k), summed in log space (no SciPy needed)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p + (n - j) * log_q
        for j in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def conformal_rank(n: int, alpha: float, delta: float | None = None) -> int | None:
    """Which order statistic of n calibration scores is the threshold (1-based), None if none fits.

    Without `delta`: ceil((n + 1)(1 - alpha)), the split-conformal rank whose coverage is at
    least 1 - alpha on average over calibration draws. With `delta`: the smallest rank k
    whose coverage, distributed Beta(k, n + 1 - k), is below 1 - alpha with probability at
    most `delta` (a training-conditional guarantee, Vovk 2012): this calibration split's
    sets then cover at least 1 - alpha with probability 1 - delta, not only on average.
    """
    if not 0.0 < alpha < 1.0:
        raise CalibrationError(f"alpha must be in (0, 1), got {alpha}")
    if delta is None:
        rank = math.ceil((n + 1) * (1.0 - alpha))
        return rank if 0 < rank <= n else None
    if not 0.0 < delta < 1.0:
        raise CalibrationError(f"delta must be in (0, 1), got {delta}")
    for rank in range(math.ceil((n + 1) * (1.0 - alpha)), n + 1):
        # P(coverage < 1 - alpha) = P(Beta(k, n + 1 - k) < 1 - alpha) = P(Binomial(n, 1 - alpha) >= k)
        if rank > 0 and _binomial_upper_tail(n, 1.0 - alpha, rank) <= delta:
            return rank
    return None


def conformal_quantile(scores: np.ndarray, alpha: float, delta: float | None = None) -> float:
    """The threshold score: the `conformal_rank`-th smallest of `scores`.

    Returns infinity when n is too small for the requested level (the set is then every
    category, which is the only honest answer).
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    rank = conformal_rank(len(scores), alpha, delta)
    return math.inf if rank is None else float(scores[rank - 1])


def calibrate(
    probs: np.ndarray,
    true_idx: np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    method: Method = "lac",
    delta: float | None = None,
    mondrian: bool = False,
) -> dict[str, Any]:
    """The calibration entry of one model from its predictions on the calibration split.

    Args:
        probs: (n, k) probabilities on calibration products.
        true_idx: (n,) true class indices.
        alpha: Allowed miss rate; the sets contain the true class with probability >= 1 - alpha.
        method: "lac" (smallest sets) or "aps" (adaptive sets).
        delta: None for the usual guarantee (coverage >= 1 - alpha on average over
            calibration draws); a value such as 0.1 for coverage >= 1 - alpha with
            probability 1 - delta for this very calibration split (slightly larger sets).
        mondrian: Whether the sets use the class-conditional thresholds (computed either way).

    Returns:
        ``{"method", "alpha", "delta", "threshold", "n", "mondrian", "class_thresholds",
        "class_n", "fallback_classes"}``; a threshold is None (JSON null) when there are too
        few scores for it, meaning "suggest every category" (marginal) or "use the marginal
        threshold" (a class's, listed in `fallback_classes`).
    """
    probs = np.asarray(probs, dtype=np.float64)
    true_idx = np.asarray(true_idx, dtype=np.int64)
    scores = conformal_scores(probs, true_idx, method)
    threshold = _finite_or_none(conformal_quantile(scores, alpha, delta))
    own = [
        _finite_or_none(conformal_quantile(scores[true_idx == c], alpha, delta))
        for c in range(probs.shape[1])
    ]
    fallback = [c for c, t in enumerate(own) if t is None]
    return {
        "method": method,
        "alpha": float(alpha),
        "delta": delta,
        "threshold": threshold,
        "n": len(true_idx),
        "mondrian": bool(mondrian),
        # A class without a finite quantile of its own takes the marginal threshold.
        "class_thresholds": [threshold if t is None else t for t in own],
        "class_n": np.bincount(true_idx, minlength=probs.shape[1]).tolist(),
        "fallback_classes": fallback,
    }


def with_calibration(entry: dict[str, Any], mondrian: bool) -> dict[str, Any]:
    """`entry` with its sets made marginal (False) or class-conditional (True).

    Raises:
        CalibrationError: Class-conditional asked of an entry without class thresholds.
    """
    if mondrian and "class_thresholds" not in entry:
        raise CalibrationError("this calibration entry has no class-conditional thresholds")
    return {**entry, "mondrian": bool(mondrian)}


def _finite_or_none(threshold: float) -> float | None:
    return None if math.isinf(threshold) else threshold


def suggestion_set(probs: np.ndarray, calibration_entry: dict[str, Any]) -> np.ndarray:
    """Indices of the categories to suggest for one prediction, most probable first.

    Args:
        probs: (k,) probabilities of one prediction.
        calibration_entry: One model's entry of `calibration.json`.

    Returns:
        int64 array of class indices sorted by decreasing probability; never empty (the
        most probable class is always included).
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    order = np.argsort(-probs, kind="stable")
    method = calibration_entry.get("method")
    # "qhat": the key of the first bundles (LAC only), still readable.
    threshold = calibration_entry.get("threshold", calibration_entry.get("qhat"))
    if method not in METHODS:
        raise CalibrationError(f"unknown conformal method {method!r}; use one of {METHODS}")
    if calibration_entry.get("mondrian"):
        return _class_conditional_set(probs, order, method, calibration_entry["class_thresholds"])
    if threshold is None:
        return order.astype(np.int64)
    threshold = float(threshold)
    if method == "lac":
        size = int(np.count_nonzero(probs >= 1.0 - threshold - 1e-12))
    else:
        # Shortest prefix whose mass reaches the threshold (the class that crosses it included).
        cumulative = np.cumsum(probs[order])
        size = int(np.searchsorted(cumulative, threshold - 1e-12, side="left")) + 1
    return order[: min(max(size, 1), len(order))].astype(np.int64)


def _class_conditional_set(
    probs: np.ndarray, order: np.ndarray, method: str, class_thresholds: list[float | None]
) -> np.ndarray:
    """Every category whose score, were it the true one, is within its class's threshold.

    The scores are those of `conformal_scores` (APS: the mass of the categories at least as
    probable, ties included), so a class's threshold covers its calibration products exactly
    as computed; the most probable category is always kept, so a set is never empty.
    """
    ranked = probs[order]
    if method == "lac":
        scores = 1.0 - ranked
    else:
        # Position of the last category tied with each one: its mass includes the ties.
        last_tie = np.searchsorted(-ranked, -ranked, side="right") - 1
        scores = np.cumsum(ranked)[last_tie]
    if len(class_thresholds) != len(probs):
        raise CalibrationError(f"{len(class_thresholds)} class thresholds for {len(probs)} probabilities")
    limits = np.array([math.inf if t is None else float(t) for t in class_thresholds])[order]
    keep = scores <= limits + 1e-12
    keep[0] = True
    return order[keep].astype(np.int64)


def set_metrics(
    probs: np.ndarray, true_idx: np.ndarray, calibration_entry: dict[str, Any]
) -> tuple[float | None, float | None]:
    """Empirical coverage and mean size of the suggestion sets on labelled predictions.

    Args:
        probs: (n, k) probabilities.
        true_idx: (n,) true class indices.
        calibration_entry: The entry the sets are built with.

    Returns:
        (coverage, mean set size), both None when n is 0.
    """
    true_idx = np.asarray(true_idx, dtype=np.int64)
    if len(true_idx) == 0:
        return None, None
    hits, sizes = 0, 0
    for row, truth in zip(np.asarray(probs), true_idx, strict=True):
        members = suggestion_set(row, calibration_entry)
        hits += int(truth in members)
        sizes += len(members)
    return hits / len(true_idx), sizes / len(true_idx)
