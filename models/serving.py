"""The serving fast path: a bundle's exported models under ONNX Runtime, no TensorFlow.

`ModelRuntime.from_bundle(path)` loads `serving/` (written by `models.export` when the bundle
is trained), warms each session up with one call on dummy input, and predicts one request at
a time in well under a millisecond per model on this hardware. Text goes through the same
`combine_text` as training (the caller does it) and the vectorisers read from the trained
layers; images through the shared `resize_image`. Sessions are thread-safe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.calibration import suggestion_set as conformal_set
from models.export import SERVING_DIR, SERVING_SPEC
from models.preprocessing import resize_image
from models.text_vectorizer import NumpyTextVectorizer


class BundleLoadError(RuntimeError):
    """The bundle is incomplete, inconsistent, or its models do not run."""


@dataclass
class _Model:
    session: Any
    inputs: list[tuple[str, str, NumpyTextVectorizer | None]]  # (onnx name, source, vectorizer)


class ModelRuntime:
    """Predict with a bundle's text, image and fusion models."""

    def __init__(
        self, path: Path, metadata: dict, calibration: dict, models: dict[str, _Model], image_size: int
    ):
        self.path = path
        self.metadata = metadata
        self.version: str = metadata["version"]
        self.labels: list[int] = [int(c) for c in metadata["labels"]]
        self.calibration = calibration
        self.image_size = image_size
        self._models = models

    @classmethod
    def from_bundle(cls, path: str | Path, *, threads: int = 1, check: bool = True) -> ModelRuntime:
        """Load the serving models of the bundle at `path` and, when `check`, warm them up and
        check their answers (`models.runtime` does both itself, once, and passes False)."""
        import onnxruntime as ort

        path = Path(path)
        try:
            metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
            calibration = json.loads((path / "calibration.json").read_text(encoding="utf-8"))
            spec = json.loads((path / SERVING_DIR / SERVING_SPEC).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleLoadError(f"{path}: not a complete bundle with serving exports: {exc}") from exc
        options = ort.SessionOptions()
        # One request per call: parallelism comes from concurrent requests, not inside one.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        models: dict[str, _Model] = {}
        # The fusion model names the text model's vectoriser files (`models.export` writes each
        # vocabulary once): each file is loaded once.
        vectorizers: dict[Path, NumpyTextVectorizer] = {}

        def vectorizer(file: Path) -> NumpyTextVectorizer:
            if file not in vectorizers:
                vectorizers[file] = NumpyTextVectorizer.load(file)
            return vectorizers[file]

        try:
            for kind, entry in spec["models"].items():
                session = ort.InferenceSession(
                    str(path / SERVING_DIR / entry["file"]),
                    sess_options=options,
                    providers=["CPUExecutionProvider"],
                )
                inputs = [
                    (
                        item["name"],
                        item["source"],
                        vectorizer(path / SERVING_DIR / item["vectorizer"])
                        if item["source"] == "text"
                        else None,
                    )
                    for item in entry["inputs"]
                ]
                models[kind] = _Model(session, inputs)
        except Exception as exc:  # corrupt ONNX files, missing vectorisers
            raise BundleLoadError(f"{path}: cannot load the serving models: {exc}") from exc
        missing = {"text", "image", "fusion"} - set(models)
        if missing:
            raise BundleLoadError(f"{path}: serving models missing: {sorted(missing)}")
        runtime = cls(
            path, metadata, calibration, models, int(spec.get("image_size", metadata.get("image_size", 96)))
        )
        if check:
            runtime.self_check()  # also the warm-up call of every session
        return runtime

    def _run(self, kind: str, text: str | None, image: np.ndarray | None) -> np.ndarray:
        model = self._models[kind]
        feeds: dict[str, np.ndarray] = {}
        for name, source, vectorizer in model.inputs:
            if source == "text":
                feeds[name] = vectorizer.transform([text or ""])
            else:
                feeds[name] = resize_image(image, self.image_size)[None]
        return model.session.run(None, feeds)[0][0]

    def predict_batch(
        self, kind: str, texts: list[str] | None, images: list[np.ndarray] | None
    ) -> np.ndarray:
        """Probabilities (n x labels) for n products in one call of the `kind` model.

        `texts` are cleaned texts, `images` RGB uint8 images of any size; the model's inputs
        say which of the two it reads (both lists have n items when both are read).
        """
        model = self._models[kind]
        feeds: dict[str, np.ndarray] = {}
        for name, source, vectorizer in model.inputs:
            if source == "text":
                feeds[name] = vectorizer.transform([t or "" for t in texts or []])
            else:
                feeds[name] = np.stack([resize_image(image, self.image_size) for image in images or []])
        return model.session.run(None, feeds)[0]

    def predict_text(self, text: str) -> np.ndarray:
        """Probabilities over `labels` for a cleaned text (`combine_text` output)."""
        return self._run("text", text, None)

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """Probabilities over `labels` for an RGB uint8 image of any size."""
        return self._run("image", None, image)

    def predict_fusion(self, text: str, image: np.ndarray) -> np.ndarray:
        """Probabilities over `labels` for a product with both text and image."""
        return self._run("fusion", text, image)

    def suggestion_set(self, kind: str, probs: np.ndarray) -> np.ndarray:
        """Label indices of the calibrated 95% suggestion set, most likely first."""
        return conformal_set(probs, self.calibration[kind])

    def self_check(self) -> None:
        """Predict on dummy inputs; raise BundleLoadError unless every answer is a distribution."""
        image = np.full((self.image_size + 7, self.image_size - 5, 3), 127, dtype=np.uint8)
        answers = {
            "text": self.predict_text("bâche piscine hors sol"),
            "image": self.predict_image(image),
            "fusion": self.predict_fusion("bâche piscine hors sol", image),
        }
        for kind, probs in answers.items():
            if probs.shape != (len(self.labels),) or not np.all(np.isfinite(probs)):
                raise BundleLoadError(f"{kind} model answered shape {probs.shape} or non-finite values")
            if abs(float(probs.sum()) - 1.0) > 1e-3 or probs.min() < 0:
                raise BundleLoadError(f"{kind} model does not output probabilities (sum {probs.sum():.4f})")
            if kind not in self.calibration:
                raise BundleLoadError(f"calibration.json has no entry for the {kind} model")
            if len(self.suggestion_set(kind, probs)) == 0:
                raise BundleLoadError(f"empty suggestion set for the {kind} model")
