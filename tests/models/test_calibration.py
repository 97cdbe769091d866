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
    with_calibration,
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


# ------------------------------------------------------------- class-conditional (Mondrian)


def _with_a_hard_class(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Exchangeable draws where the model underrates class 0 on its own products."""
    probs, labels = _exchangeable(n, seed)
    hard = labels == 0
    probs[hard, 0] *= 0.1
    probs[hard] /= probs[hard].sum(axis=1, keepdims=True)
    return probs, labels


def test_a_class_conditional_entry_keeps_the_marginal_threshold_and_one_per_class() -> None:
    probs, labels = _exchangeable(2000, seed=3)
    entry = calibrate(probs, labels, alpha=0.05, mondrian=True)
    marginal = calibrate(probs, labels, alpha=0.05)
    assert entry["mondrian"] and not marginal["mondrian"]
    assert entry["threshold"] == marginal["threshold"]
    assert entry["class_n"] == np.bincount(labels, minlength=N_CLASSES).tolist()
    scores = conformal_scores(probs, labels)
    for c in range(N_CLASSES):
        assert entry["class_thresholds"][c] == conformal_quantile(scores[labels == c], alpha=0.05)
    assert entry["fallback_classes"] == []


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_class_conditional_sets_cover_every_class_where_marginal_sets_miss_the_hard_one(method: str) -> None:
    cal_probs, cal_labels = _with_a_hard_class(3000, seed=4)
    test_probs, test_labels = _with_a_hard_class(6000, seed=5)
    entry = calibrate(cal_probs, cal_labels, alpha=0.05, method=method, mondrian=True)
    hard = test_labels == 0
    marginal_hard, _ = set_metrics(test_probs[hard], test_labels[hard], with_calibration(entry, False))
    mondrian_hard, _ = set_metrics(test_probs[hard], test_labels[hard], entry)
    assert marginal_hard < 0.9  # the easy classes pay for it on average, not for it
    assert mondrian_hard >= 0.92  # ~220 test products of the class: a standard error of 0.015
    assert set_metrics(test_probs, test_labels, entry)[0] >= 0.94


def test_a_class_with_too_few_calibration_products_falls_back_to_the_marginal_threshold() -> None:
    probs, labels = _exchangeable(1000, seed=6)
    keep = (labels != 3) | (np.cumsum(labels == 3) <= 5)  # five products of class 3
    entry = calibrate(probs[keep], labels[keep], alpha=0.05, mondrian=True)
    assert entry["class_n"][3] == 5
    assert entry["fallback_classes"] == [3]
    assert entry["class_thresholds"][3] == entry["threshold"]
    # With delta the conditional rank needs about 45 products a class: most fall back.
    strict = calibrate(probs[keep], labels[keep], alpha=0.05, delta=0.1, mondrian=True)
    assert set(strict["fallback_classes"]) == {c for c, n in enumerate(strict["class_n"]) if n < 45}


def test_an_entry_with_class_thresholds_uses_them_only_when_it_says_mondrian() -> None:
    probs = np.array([0.05, 0.6, 0.1, 0.25])
    entry = {"method": "lac", "alpha": 0.05, "threshold": 0.8, "class_thresholds": [0.99, 0.5, 0.5, 0.5]}
    assert suggestion_set(probs, entry).tolist() == [1, 3]  # marginal: keep p >= 0.2
    # Class 0 is kept for its own threshold (p >= 0.01) although it ranks last; 3 is dropped.
    assert suggestion_set(probs, {**entry, "mondrian": True}).tolist() == [1, 0]
    with pytest.raises(CalibrationError):
        with_calibration({"method": "lac", "threshold": 0.8}, True)


def test_class_conditional_aps_keeps_a_category_whose_mass_is_within_its_class_threshold() -> None:
    probs = np.array([0.05, 0.6, 0.1, 0.25])  # APS scores: 1.0, 0.6, 0.95, 0.85
    entry = {"method": "aps", "mondrian": True, "class_thresholds": [0.99, 0.7, 0.9, None]}
    assert suggestion_set(probs, entry).tolist() == [1, 3]


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_class_conditional_sets_are_those_of_crepes_mondrian_conformal_classifier(method: str) -> None:
    """crepes (Boström, PyPI) as the reference: label-conditional p-values, class by class.

    crepes keeps a label when its (unsmoothed) p-value is >= alpha, the textbook rank when it
    is > alpha; the two differ only where alpha (n + 1) is an integer, which these class
    sizes avoid (checked).
    """
    crepes = pytest.importorskip("crepes")
    probs, labels = _exchangeable(1500, seed=7)
    alpha = 0.05
    class_n = np.bincount(labels, minlength=N_CLASSES)
    assert class_n.min() >= 20 and not np.any(np.isclose((class_n + 1) * alpha % 1, 0))
    entry = calibrate(probs, labels, alpha=alpha, method=method, mondrian=True)
    reference = crepes.ConformalClassifier().fit(conformal_scores(probs, labels, method), bins=labels)

    test_probs, _ = _exchangeable(300, seed=8)
    test_scores = np.stack(
        [conformal_scores(test_probs, np.full(len(test_probs), c), method) for c in range(N_CLASSES)], axis=1
    )
    expected = np.stack(
        [
            reference.predict_set(
                test_scores, bins=np.full(len(test_probs), c), confidence=1 - alpha, smoothing=False
            )[:, c]
            for c in range(N_CLASSES)
        ],
        axis=1,
    ).astype(bool)
    for row, want in zip(test_probs, expected, strict=True):
        ours = np.zeros(N_CLASSES, dtype=bool)
        ours[suggestion_set(row, entry)] = True
        want = want.copy()
        want[np.argmax(row)] = True  # never empty: the best guess is always suggested
        assert ours.tolist() == want.tolist()
