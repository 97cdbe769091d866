"""Evaluation: the figures of one model, and the JSON a bundle's evaluation prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.data import Dataset
from models.training.evaluate import (
    FIGURES,
    KINDS,
    SET_FIGURES,
    closed_probabilities,
    evaluate_arrays,
    evaluate_bundle,
    set_report,
)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
LABELS = [10, 40, 50]
EVERYTHING = {"method": "lac", "alpha": 0.05, "threshold": None}
KEYS = {"n", *FIGURES, "per_class_recall", "per_class_top5_recall", "per_class_support"}


def test_perfect_predictions_score_one_everywhere() -> None:
    y = np.array([0, 1, 2, 2])
    figures, confusion = evaluate_arrays(np.eye(3)[y], y, EVERYTHING, LABELS)
    assert set(figures) == KEYS
    assert figures["n"] == 4
    for key in ("accuracy", "weighted_f1", "macro_f1", "top3", "top5", "set_coverage"):
        assert figures[key] == 1.0
    assert figures["set_mean_size"] == 3.0  # an uncalibrated entry suggests every class
    assert figures["per_class_recall"] == {"10": 1.0, "40": 1.0, "50": 1.0}
    assert confusion.trace() == 4


def test_the_figures_count_what_they_say() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    y = np.array([0, 1, 2, 2])
    figures, confusion = evaluate_arrays(probs, y, {"method": "lac", "threshold": 0.65}, LABELS)
    assert figures["accuracy"] == 0.5
    assert figures["per_class_recall"] == {"10": 1.0, "40": 0.0, "50": 0.5}
    assert sum(figures["per_class_support"].values()) == figures["n"]
    # F1: class 10 precision 1/3 recall 1 -> 0.5; class 40 -> 0; class 50 precision 1 recall 1/2 -> 2/3.
    assert figures["macro_f1"] == pytest.approx(np.mean([0.5, 0.0, 2 / 3]))
    # Sets keep p >= 0.35: {0}, {0}, {2}, {0, 1}: the true class is in 2 of 4.
    assert figures["set_coverage"] == 0.5
    assert figures["set_mean_size"] == 1.25
    assert confusion[2, 0] == 1


def test_the_short_list_recall_counts_the_class_among_the_five_best_answers() -> None:
    labels = [10, 40, 50, 60, 1140, 1160]
    ranked_last = np.array([0.30, 0.25, 0.20, 0.15, 0.09, 0.01])  # class 1160 sixth
    probs = np.array([ranked_last, ranked_last, ranked_last[::-1]])  # then 1160 first
    y = np.array([5, 1, 5])
    figures, _ = evaluate_arrays(probs, y, EVERYTHING, labels)
    assert figures["per_class_recall"] == {"40": 0.0, "1160": 0.5}
    assert figures["per_class_top5_recall"] == {"40": 1.0, "1160": 0.5}
    assert figures["per_class_support"] == {"40": 1, "1160": 2}


def test_a_model_with_nothing_to_score_reports_zero_and_nulls() -> None:
    figures, _ = evaluate_arrays(np.zeros((0, 3)), np.zeros(0, dtype=int), EVERYTHING, LABELS)
    per_class = {"per_class_recall": {}, "per_class_top5_recall": {}, "per_class_support": {}}
    assert figures == {"n": 0, **dict.fromkeys(FIGURES), **per_class}


def test_the_set_report_counts_coverage_by_class_and_by_set_size() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    y = np.array([0, 1, 2, 2])
    # Sets keep p >= 0.35: {0}, {0}, {2}, {0, 1}: hits, miss, hit, miss.
    report = set_report(probs, y, {"method": "lac", "alpha": 0.05, "threshold": 0.65}, LABELS)
    assert report["coverage"] == 0.5 and report["mean_size"] == 1.25
    assert report["singleton_rate"] == 0.75 and report["singleton_coverage"] == pytest.approx(2 / 3)
    assert report["per_class_coverage"] == {"10": 1.0, "40": 0.0, "50": 0.5}
    assert report["per_class_mean_size"] == {"10": 1.0, "40": 1.0, "50": 1.5}
    assert (report["min_class"], report["min_class_coverage"]) == ("40", 0.0)
    assert report["classes_under_target"] == 2
    assert report["by_size"] == [
        {"sizes": "1", "n": 3, "coverage": pytest.approx(2 / 3)},
        {"sizes": "2-3", "n": 1, "coverage": 0.0},
    ]
    empty = set_report(np.zeros((0, 3)), np.zeros(0, dtype=int), EVERYTHING, LABELS)
    assert empty["n"] == 0 and all(empty[key] is None for key in SET_FIGURES)


@pytest.mark.slow
def test_a_bundle_is_scored_on_the_products_that_have_each_model_inputs(
    quick_bundle: Path, eval_dataset: Dataset
) -> None:
    result = evaluate_bundle(quick_bundle, eval_dataset)
    assert set(result) == set(KINDS)
    assert result["text"]["n"] == int(eval_dataset.has_text.sum())
    assert result["image"]["n"] == int(eval_dataset.has_image.sum())
    assert result["fusion"]["n"] == int((eval_dataset.has_text & eval_dataset.has_image).sum())
    for kind in KINDS:
        assert set(result[kind]) == KEYS
        assert 0.3 < result[kind]["accuracy"] <= 1.0
        assert result[kind]["accuracy"] <= result[kind]["top3"] <= result[kind]["top5"]
        assert all(0.0 <= r <= 1.0 for r in result[kind]["per_class_recall"].values())


def test_the_closed_view_renormalises_over_the_kept_classes() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0]])
    keep = np.array([False, True, True])
    closed = closed_probabilities(probs, keep)
    np.testing.assert_allclose(closed, [[0.0, 0.6, 0.4], [0.0, 0.5, 0.5]])


@pytest.mark.slow
def test_the_closed_view_judges_only_the_categories_the_dataset_holds(
    quick_bundle: Path, eval_dataset: Dataset
) -> None:
    held = sorted(set(eval_dataset.labels.tolist()))[:4]
    subset = eval_dataset.subset(np.flatnonzero(np.isin(eval_dataset.labels, held)))
    outcomes: dict[str, dict[str, bool]] = {}
    closed: dict = {}
    result = evaluate_bundle(quick_bundle, subset, outcomes=outcomes, closed=closed)

    assert closed["classes"] == held
    for kind in KINDS:
        view = closed["metrics"][kind]
        assert view["n"] == result[kind]["n"]
        # Taking away wrong categories can only turn wrong answers right, never the reverse.
        assert view["accuracy"] >= result[kind]["accuracy"]
        assert all(closed["outcomes"][kind][p] for p, ok in outcomes[kind].items() if ok)


@pytest.mark.slow
def test_text_only_data_gives_zero_image_and_fusion_products_without_crashing(
    quick_bundle: Path, eval_dataset: Dataset
) -> None:
    text_only = eval_dataset.subset(np.flatnonzero(eval_dataset.has_text)[:30])
    text_only.image_paths = [None] * len(text_only)
    result = evaluate_bundle(quick_bundle, text_only)
    assert result["text"]["n"] == 30
    assert result["image"] == {
        "n": 0,
        **dict.fromkeys(FIGURES),
        "per_class_recall": {},
        "per_class_top5_recall": {},
        "per_class_support": {},
    }
    assert result["fusion"]["n"] == 0


@pytest.mark.slow
def test_the_cli_prints_one_json_object_with_every_kind(quick_bundle: Path, eval_catalogue: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "models.training.evaluate",
            "--bundle",
            str(quick_bundle),
            "--data",
            str(eval_catalogue),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    assert set(figures) == set(KINDS)
    for kind in KINDS:
        assert set(figures[kind]) == KEYS
        assert figures[kind]["n"] > 0


def test_the_cli_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path, eval_catalogue: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "models.training.evaluate",
            "--bundle",
            str(tmp_path),
            "--data",
            str(eval_catalogue),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "not a complete bundle" in result.stderr
    assert result.stdout == ""


def test_paired_counts_are_the_products_only_one_model_gets_right() -> None:
    from models.training.evaluate import paired_counts

    candidate = {"text": {"a": True, "b": True, "c": False, "d": False}, "image": {}}
    production = {"text": {"a": True, "b": False, "c": True, "d": True, "e": True}}

    assert paired_counts(candidate, production) == {
        "text": {"n": 4, "candidate_only": 1, "production_only": 2}
    }
