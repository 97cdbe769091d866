"""Late fusion computed from the text and image models' outputs, without a graph of its own.

The shipped fusion (`fusion_arch="late"`, the Keras `LateFusion` layer of
`models.training.builders`) is three learned numbers on top of two frozen models:
softmax(a * log(p_text + eps) + b * log(p_image + eps) + bias). Exported as an ONNX graph it
would carry a second copy of the text model (its 200,000 x 300 word-vector table) and of the
image backbone, and a fusion request would run both networks inside it. Instead the serving
spec (`serving/serving.json`, entry `models.fusion.late_fusion`) records a, b and the bias,
and the runtime combines the answers of the text and image graphs it already holds.
`models.training.export` checks at export time that this equals the Keras fusion model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# The key of a serving-spec model entry computed here rather than run as an ONNX graph.
LATE_FUSION = "late_fusion"
# What the Keras layer adds before the log, so that a probability of 0 stays finite.
EPSILON = 1e-7


class FusionSpecError(ValueError):
    """A late-fusion entry of a serving spec is malformed (the message says what is wrong)."""


@dataclass(frozen=True)
class LateFusion:
    """The learned weights of a late fusion: trust in each model and a per-class bias.

    Attributes:
        text_weight: a, the weight of log p_text.
        image_weight: b, the weight of log p_image.
        bias: One float32 per label (it removes the class prior that a product of two
            posteriors counts twice).
        epsilon: Added to each probability before the log.
    """

    text_weight: float
    image_weight: float
    bias: np.ndarray
    epsilon: float = EPSILON

    def __call__(self, text_probs: np.ndarray, image_probs: np.ndarray) -> np.ndarray:
        """Fused probabilities, in float32 as the Keras layer computes them.

        Args:
            text_probs: The text model's probabilities (labels, or n x labels).
            image_probs: The image model's, same shape.

        Returns:
            float32 probabilities of the same shape.
        """
        eps = np.float32(self.epsilon)
        logits = np.float32(self.text_weight) * np.log(np.asarray(text_probs, dtype=np.float32) + eps)
        logits += np.float32(self.image_weight) * np.log(np.asarray(image_probs, dtype=np.float32) + eps)
        logits += self.bias
        logits -= logits.max(axis=-1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)

    def to_entry(self) -> dict[str, Any]:
        """The serving-spec entry (`{"late_fusion": {...}}`) that `from_entry` reads back."""
        return {
            LATE_FUSION: {
                "text_weight": float(self.text_weight),
                "image_weight": float(self.image_weight),
                "bias": [float(v) for v in self.bias],
                "epsilon": float(self.epsilon),
            }
        }

    @classmethod
    def from_entry(cls, entry: Any, n_labels: int) -> LateFusion:
        """Read and check a serving-spec entry written by `to_entry`.

        Args:
            entry: The spec's `models.fusion` object.
            n_labels: The bundle's number of labels (the bias has one value each).

        Returns:
            The fusion, its weights as float32.

        Raises:
            FusionSpecError: Naming the first field that is missing, not a finite number, or
                of the wrong length.
        """
        params = entry.get(LATE_FUSION) if isinstance(entry, dict) else None
        if not isinstance(params, dict):
            raise FusionSpecError(f"the fusion entry has no {LATE_FUSION!r} object")
        for name in ("text_weight", "image_weight", "epsilon"):
            if not _finite_number(params.get(name)):
                raise FusionSpecError(
                    f"{LATE_FUSION}.{name} must be a finite number, got {params.get(name)!r}"
                )
        if not 0 < params["epsilon"] < 1e-2:
            raise FusionSpecError(f"{LATE_FUSION}.epsilon must be in (0, 0.01), got {params['epsilon']!r}")
        bias = params.get("bias")
        if not isinstance(bias, list) or len(bias) != n_labels or not all(_finite_number(v) for v in bias):
            shown = f"{len(bias)} values" if isinstance(bias, list) else repr(bias)
            raise FusionSpecError(
                f"{LATE_FUSION}.bias must be {n_labels} finite numbers (one per label), got {shown}"
            )
        return cls(
            text_weight=float(np.float32(params["text_weight"])),
            image_weight=float(np.float32(params["image_weight"])),
            bias=np.asarray(bias, dtype=np.float32),
            epsilon=float(params["epsilon"]),
        )


def is_late_fusion(entry: Any) -> bool:
    """Whether a serving-spec model entry is a late fusion (computed) rather than an ONNX graph."""
    return isinstance(entry, dict) and LATE_FUSION in entry


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
