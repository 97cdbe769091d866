"""Split conformal prediction: the threshold maths and the suggestion sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.calibration import (
    CalibrationError,
    calibrate,
    conformal_quantile,
    conformal_rank,
    conformal_scores,
    set_metrics,
    suggestion_set,
)

N_CLASSES = 27


def _exchangeable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a calibrated-ish model, labels drawn from them (an exchangeable sample)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(N_CLASSES, 0.3), size=n)
    labels = np.array([rng.choice(N_CLASSES, p=row) for row in probs])
    return probs, labels


def test_quantile_is_the_finite_sample_corrected_order_statistic() -> None:
    scores = np.arange(1, 11) / 10  # 0.1 .. 1.0, n = 10
    # ceil((10 + 1) * 0.8) = 9: the 9th smallest score.
    assert conformal_quantile(scores, alpha=0.2) == pytest.approx(0.9)
    assert conformal_quantile(scores[::-1], alpha=0.2) == pytest.approx(0.9)


def test_quantile_is_infinite_when_there_are_too_few_scores_for_the_level() -> None:
    # ceil(20 * 0.95) = 19 > 19 scores is false, but ceil(11 * 0.95) = 11 > 10 is true.
    assert math.isinf(conformal_quantile(np.linspace(0, 1, 10), alpha=0.05))
    assert not math.isinf(conformal_quantile(np.linspace(0, 1, 19), alpha=0.05))
    assert math.isinf(conformal_quantile(np.array([]), alpha=0.05))


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_sets_cover_the_true_class_at_least_95_percent_of_the_time_on_exchangeable_data(method: str) -> None:
    cal_probs, cal_labels = _exchangeable(1000, seed=0)
    entry = calibrate(cal_probs, cal_labels, alpha=0.05, method=method)
    test_probs, test_labels = _exchangeable(4000, seed=1)
    coverage, mean_size = set_metrics(test_probs, test_labels, entry)
    # Guaranteed >= 0.95 in expectation; 4,000 test draws have a standard error of ~0.0035.
    assert coverage >= 0.94
    assert 1.0 < mean_size < N_CLASSES  # informative: neither a single guess nor everything


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_a_looser_alpha_gives_smaller_sets(method: str) -> None:
    probs, labels = _exchangeable(1000, seed=2)
    strict = calibrate(probs, labels, alpha=0.05, method=method)
    loose = calibrate(probs, labels, alpha=0.3, method=method)
    assert set_metrics(probs, labels, loose)[1] < set_metrics(probs, labels, strict)[1]


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_a_suggestion_set_is_sorted_by_probability_and_never_empty(method: str) -> None:
    probs = np.array([0.05, 0.6, 0.1, 0.25])
    tiny = {"method": method, "alpha": 0.05, "threshold": 1e-9}
    assert suggestion_set(probs, tiny).tolist() == [1]
    wide = {"method": method, "alpha": 0.05, "threshold": 0.999}
    members = suggestion_set(probs, wide)
    assert members.tolist() == sorted(members.tolist(), key=lambda i: -probs[i])
    assert members[0] == 1


def test_lac_keeps_every_class_above_one_minus_the_threshold() -> None:
    probs = np.array([0.05, 0.6, 0.1, 0.25])
    entry = {"method": "lac", "alpha": 0.05, "threshold": 0.8}  # keep p >= 0.2
    assert suggestion_set(probs, entry).tolist() == [1, 3]


def test_aps_keeps_the_shortest_prefix_whose_mass_reaches_the_threshold() -> None:
    probs = np.array([0.05, 0.6, 0.1, 0.25])
    assert suggestion_set(probs, {"method": "aps", "threshold": 0.8}).tolist() == [1, 3]
    assert suggestion_set(probs, {"method": "aps", "threshold": 0.9}).tolist() == [1, 3, 2]


def test_an_uncalibrated_entry_suggests_every_class() -> None:
    entry = calibrate(np.full((5, 4), 0.25), np.arange(5) % 4, alpha=0.05)
    assert entry["threshold"] is None and entry["n"] == 5
    assert len(suggestion_set(np.array([0.1, 0.2, 0.3, 0.4]), entry)) == 4


def test_the_scores_rank_the_true_class_as_the_model_did() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    assert conformal_scores(probs, np.array([0, 2]), "lac").tolist() == pytest.approx([0.3, 0.9])
    assert conformal_scores(probs, np.array([0, 2]), "aps").tolist() == pytest.approx([0.7, 1.0])


def test_entries_of_the_first_bundles_are_still_read() -> None:
    legacy = {"method": "lac", "alpha": 0.05, "n": 100, "qhat": 0.8}
    assert suggestion_set(np.array([0.05, 0.6, 0.1, 0.25]), legacy).tolist() == [1, 3]


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(CalibrationError):
        suggestion_set(np.array([0.5, 0.5]), {"method": "magic", "threshold": 0.5})
    with pytest.raises(CalibrationError):
        calibrate(np.full((3, 2), 0.5), np.zeros(3, dtype=int), method="magic")  # type: ignore[arg-type]


def test_set_metrics_of_nothing_are_none() -> None:
    assert set_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int), {"method": "lac", "threshold": 0.5}) == (
        None,
        None,
    )


def test_a_training_conditional_threshold_is_a_higher_order_statistic() -> None:
    marginal = conformal_rank(200, alpha=0.05)
    conditional = conformal_rank(200, alpha=0.05, delta=0.1)
    assert marginal == 191  # ceil(201 * 0.95)
    assert conditional is not None and marginal < conditional <= 200
    assert conformal_rank(30, alpha=0.05, delta=0.1) is None  # too few scores for that confidence


def test_with_delta_few_calibration_draws_cover_less_than_95_percent() -> None:
    # Uniform scores: a threshold t covers exactly t of new scores.
    rng = np.random.default_rng(0)
    marginal, conditional = [], []
    for _ in range(400):
        scores = rng.random(200)
        marginal.append(conformal_quantile(scores, alpha=0.05))
        conditional.append(conformal_quantile(scores, alpha=0.05, delta=0.1))
    assert np.mean(marginal) >= 0.945  # >= 0.95 on average ...
    assert np.mean(np.array(marginal) < 0.95) > 0.3  # ... but often under it for one split
    assert np.mean(np.array(conditional) < 0.95) <= 0.13  # at most delta (plus Monte Carlo noise)
