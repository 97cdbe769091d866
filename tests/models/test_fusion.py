"""The late fusion the runtime computes from the two models' outputs (`models.fusion`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.fusion import LATE_FUSION, FusionSpecError, LateFusion, is_late_fusion

N = 5


def _fusion() -> LateFusion:
    return LateFusion(2.4, 0.75, np.linspace(-1, 1, N, dtype=np.float32))


def _probs(rows: int, seed: int) -> np.ndarray:
    raw = np.random.default_rng(seed).random((rows, N)).astype(np.float32) ** 4
    return raw / raw.sum(axis=1, keepdims=True)


def test_the_fusion_is_the_softmax_of_the_weighted_log_probabilities_plus_the_bias() -> None:
    fusion, text, image = _fusion(), _probs(3, 0), _probs(3, 1)
    logits = 2.4 * np.log(text.astype(np.float64) + 1e-7) + 0.75 * np.log(image + 1e-7) + fusion.bias
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    got = fusion(text, image)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(fusion(text[1], image[1]), got[1], atol=1e-7)  # one product, or n


def test_a_zero_probability_stays_finite() -> None:
    text = np.eye(N, dtype=np.float32)[[0]]
    got = LateFusion(50.0, 50.0, np.zeros(N, np.float32))(text, text)
    assert np.isfinite(got).all() and got[0, 0] == pytest.approx(1.0)


def test_the_spec_entry_reads_back_the_same_fusion_through_json() -> None:
    fusion = _fusion()
    entry = json.loads(json.dumps(fusion.to_entry()))
    assert is_late_fusion(entry) and not is_late_fusion({"file": "fusion.onnx", "inputs": []})
    back = LateFusion.from_entry(entry, N)
    text, image = _probs(4, 2), _probs(4, 3)
    np.testing.assert_array_equal(back(text, image), fusion(text, image))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bias": [0.0] * (N - 1)}, r"bias must be 5 finite numbers \(one per label\), got 4 values"),
        ({"bias": [0.0] * (N - 1) + [float("nan")]}, "bias must be 5 finite numbers"),
        ({"text_weight": float("inf")}, "text_weight must be a finite number"),
        ({"image_weight": "0.75"}, "image_weight must be a finite number"),
        ({"image_weight": None}, "image_weight must be a finite number"),
        ({"epsilon": 0.5}, r"epsilon must be in \(0, 0.01\)"),
    ],
)
def test_a_malformed_entry_is_refused_naming_the_field(change: dict, message: str) -> None:
    entry = _fusion().to_entry()
    entry[LATE_FUSION].update(change)
    with pytest.raises(FusionSpecError, match=message):
        LateFusion.from_entry(entry, N)


def test_an_entry_without_weights_is_refused() -> None:
    with pytest.raises(FusionSpecError, match="no 'late_fusion' object"):
        LateFusion.from_entry({"late_fusion": [1, 2]}, N)
