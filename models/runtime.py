"""The serving fast path: `ModelRuntime.from_bundle(path)`, what the API predicts with.

The bundle is validated first (`models.bundle.validate_bundle`: a `BundleError` says what is
missing), then its ONNX exports are loaded by the engine in `models.serving` (ONNX Runtime
plus NumPy text vectorisers read from the trained layers: no TensorFlow in the serving
process, a few hundred microseconds to a couple of milliseconds per call, well under the
API's memory budget). Every model is warmed up and checked on dummy input before
`from_bundle` returns.

Inputs are what training saw: text through `models.preprocessing.combine_text` (the caller
does it), images resized with `models.preprocessing.resize_image` to the bundle's image
size before the call. The runtime is safe to call from many threads at once: ONNX Runtime
sessions are thread-safe and the vectorisers are pure functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models import serving
from models.bundle import KINDS, BundleError, validate_bundle


class ModelRuntime(serving.ModelRuntime):
    """Predict with a bundle's text, image and fusion models (probabilities over `labels`).

    Attributes:
        version: The bundle's version id.
        labels: The prdtypecodes in output order.
        calibration: The conformal entries per model kind.
        image_size: The side images are resized to before the image models.
    """

    @classmethod
    def from_bundle(cls, path: str | Path, *, threads: int = 1) -> ModelRuntime:
        """Validate, load and warm up the bundle at `path`.

        Args:
            path: A complete bundle directory (with its `serving/` exports).
            threads: ONNX Runtime intra-op threads per call (1: parallelism comes from
                concurrent requests).

        Returns:
            A ready runtime.

        Raises:
            BundleError: The bundle is incomplete, inconsistent, or its models do not run.
        """
        path = Path(path)
        metadata = validate_bundle(path)
        try:
            runtime = super().from_bundle(path, threads=threads)
        except serving.BundleLoadError as exc:
            raise BundleError(str(exc)) from exc
        if runtime.labels != [int(c) for c in metadata["labels"]]:
            raise BundleError(f"{path}: the serving exports and metadata.json disagree on the labels")
        return runtime  # type: ignore[return-value]  # built by cls(...), so a ModelRuntime

    def suggestion_set(self, kind: str, probs: np.ndarray) -> np.ndarray:
        """Label indices of the calibrated suggestion set (95% by default), most probable first.

        Args:
            kind: "text", "image" or "fusion": the model that produced `probs`.
            probs: Its probabilities over `labels`.

        Returns:
            int64 indices into `labels`, never empty.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}; use one of {KINDS}")
        return super().suggestion_set(kind, probs)

    def self_check(self) -> None:
        """Predict on dummy inputs; raise BundleError unless each answer is a probability vector."""
        try:
            super().self_check()
        except serving.BundleLoadError as exc:
            raise BundleError(f"{self.path}: {exc}") from exc
