"""The serving fast path: `ModelRuntime.from_bundle(path)`, what the API predicts with.

The bundle is validated first (`models.bundle.validate_bundle`: a `BundleError` says what is
missing), then one of two engines runs the models:

- ``onnx`` (the default whenever the bundle has its `serving/` exports, which `models.train`
  writes for every shipped architecture): the engine of `models.serving`, ONNX Runtime plus
  NumPy text vectorisers read from the trained layers. No TensorFlow in the process: about
  170 MB resident, a few milliseconds per call.
- ``keras``: the `.keras` models behind `tf.function`s with fixed input signatures (traced
  once, at load), for bundles trained with `export=False`. 2-5 ms per call too, but about
  750 MB resident (TensorFlow): not for the API worker.

Inputs are what training saw: text through `models.preprocessing.combine_text` (the caller
does it), images resized with `models.preprocessing.resize_image` to the bundle's image size
before the call. Every model is warmed up and checked on dummy input before `from_bundle`
returns. Safe to call from many threads at once: ONNX Runtime sessions and concrete
TensorFlow functions are thread-safe, and the vectorisers are pure functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.bundle import KINDS, SERVING_SPEC_PATH, BundleError, load_bundle
from models.calibration import suggestion_set as conformal_set
from models.preprocessing import resize_image

logger = logging.getLogger(__name__)

Engine = Literal["auto", "onnx", "keras"]
_SELF_CHECK_TEXT = "bâche piscine hors sol"


class ModelRuntime:
    """Predict with a bundle's text, image and fusion models (probabilities over `labels`).

    Attributes:
        path: The bundle directory.
        metadata: The bundle's metadata.json.
        version: The bundle's version id.
        labels: The prdtypecodes in output order.
        calibration: The conformal entries per model kind (calibration.json).
        image_size: The side images are resized to before the image models.
        engine: "onnx" or "keras".
    """

    def __init__(
        self,
        path: Path,
        metadata: dict[str, Any],
        calibration: dict[str, Any],
        predict: Callable[[str, str | None, np.ndarray | None], np.ndarray],
        engine: str,
    ) -> None:
        self.path = path
        self.metadata = metadata
        self.version: str = str(metadata["version"])
        self.labels: list[int] = [int(c) for c in metadata["labels"]]
        self.calibration = calibration
        self.image_size = int(metadata["image_size"])
        self.engine = engine
        self._predict = predict

    @classmethod
    def from_bundle(cls, path: str | Path, *, engine: Engine = "auto", threads: int = 1) -> ModelRuntime:
        """Validate, load and warm up the bundle at `path`.

        Args:
            path: A complete bundle directory.
            engine: "onnx", "keras", or "auto" (ONNX when the bundle has serving exports).
            threads: ONNX Runtime intra-op threads per call (1: parallelism comes from
                concurrent requests, not from inside one).

        Returns:
            A warmed-up, self-checked runtime.

        Raises:
            BundleError: The bundle is incomplete, inconsistent, or its models do not run.
        """
        path = Path(path)
        bundle = load_bundle(path)
        if engine == "auto":
            engine = "onnx" if (path / SERVING_SPEC_PATH).is_file() else "keras"
        if engine == "onnx":
            predict = _onnx_engine(path, threads)
        elif engine == "keras":
            predict = _keras_engine(path, bundle.image_size)
        else:
            raise ValueError(f"unknown engine {engine!r}; use 'auto', 'onnx' or 'keras'")
        runtime = cls(path, bundle.metadata, bundle.calibration, predict, engine)
        runtime.self_check()  # also the warm-up call of every model
        logger.info("loaded bundle %s (%s engine) from %s", runtime.version, engine, path)
        return runtime

    def predict_text(self, text: str) -> np.ndarray:
        """Probabilities over `labels` for a text already through `combine_text`."""
        return self._predict("text", text, None)

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """Probabilities over `labels` for an RGB uint8 image (H x W x 3) of any size."""
        return self._predict("image", None, resize_image(image, self.image_size))

    def predict_fusion(self, text: str, image: np.ndarray) -> np.ndarray:
        """Probabilities over `labels` for a product with both a text and an image."""
        return self._predict("fusion", text, resize_image(image, self.image_size))

    def predict_batch(
        self, kind: str, texts: list[str] | None = None, images: list[np.ndarray] | None = None
    ) -> np.ndarray:
        """Probabilities (n x labels) for n products through one model, in one call.

        Args:
            kind: "text", "image" or "fusion".
            texts: n texts already through `combine_text` (text and fusion models).
            images: n RGB uint8 images of any size (image and fusion models).

        Returns:
            float32 probabilities, one row per product, in input order.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}; use one of {KINDS}")
        n = len(texts if texts is not None else images or [])
        if n == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        resized = None if images is None else [resize_image(image, self.image_size) for image in images]
        batch = getattr(self._predict, "batch", None)
        if batch is not None:  # the ONNX engine runs the whole batch in one session call
            return np.asarray(batch(kind, texts, resized))
        rows = [
            self._predict(kind, None if texts is None else texts[i], None if resized is None else resized[i])
            for i in range(n)
        ]
        return np.stack(rows)

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
        return conformal_set(probs, self.calibration[kind])

    def self_check(self) -> None:
        """Predict on dummy inputs; raise BundleError unless each answer is a probability vector."""
        image = np.full((self.image_size + 7, max(self.image_size - 5, 1), 3), 127, dtype=np.uint8)
        try:
            answers = {
                "text": self.predict_text(_SELF_CHECK_TEXT),
                "image": self.predict_image(image),
                "fusion": self.predict_fusion(_SELF_CHECK_TEXT, image),
            }
        except Exception as exc:  # a model that does not run, whatever the engine says
            raise BundleError(f"{self.path}: the models do not run: {exc}") from exc
        for kind, probs in answers.items():
            if probs.shape != (len(self.labels),) or not np.all(np.isfinite(probs)):
                raise BundleError(
                    f"{self.path}: the {kind} model answered shape {probs.shape} or non-finite values"
                )
            if abs(float(probs.sum()) - 1.0) > 1e-3 or float(probs.min()) < 0.0:
                raise BundleError(f"{self.path}: the {kind} model does not output probabilities")
            if len(self.suggestion_set(kind, probs)) == 0:
                raise BundleError(f"{self.path}: empty suggestion set for the {kind} model")


def load_serving_runtime(path: str | Path) -> ModelRuntime:
    """The runtime the API serves `path` with: ONNX engine, validated, warmed up and self-checked.

    The API loads every version with this, and promotion verifies every version with it, so a
    version that passes promotion is one the API can load.

    Args:
        path: A complete bundle directory.

    Returns:
        The checked runtime.

    Raises:
        BundleError: The bundle is incomplete, has no serving exports, or its models do not run.
    """
    # ONNX only: a bundle without serving exports would pull TensorFlow into the API worker.
    return ModelRuntime.from_bundle(path, engine="onnx")  # self-checks before returning


def _onnx_engine(path: Path, threads: int) -> Callable[[str, str | None, np.ndarray | None], np.ndarray]:
    """The ONNX Runtime engine of `models.serving` (images already resized by the caller)."""
    from models import serving

    try:
        # No check there: `ModelRuntime.from_bundle` runs its own self-check (and warm-up) once.
        engine = serving.ModelRuntime.from_bundle(path, threads=threads, check=False)
    except serving.BundleLoadError as exc:
        raise BundleError(str(exc)) from exc
    except Exception as exc:  # corrupt exports surface as ONNX Runtime errors
        raise BundleError(f"{path}: cannot load the serving models: {exc}") from exc

    def predict(kind: str, text: str | None, image: np.ndarray | None) -> np.ndarray:
        # Images arrive resized to the bundle's size: resizing them again is the identity.
        if kind == "text":
            return engine.predict_text(text or "")
        if kind == "image":
            return engine.predict_image(image)
        return engine.predict_fusion(text or "", image)

    # `ModelRuntime.predict_batch` uses this when present: one session call for n products.
    predict.batch = engine.predict_batch  # type: ignore[attr-defined]
    return predict


def _keras_engine(path: Path, image_size: int) -> Callable[[str, str | None, np.ndarray | None], np.ndarray]:
    """The `.keras` models behind concrete `tf.function`s, traced once here."""
    import tensorflow as tf

    models = load_bundle(path, load_models=True, require_serving=False).models
    text_spec = tf.TensorSpec([None], tf.string)
    image_spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8)
    functions = {
        "text": tf.function(lambda t: models["text"](t, training=False)).get_concrete_function(text_spec),
        "image": tf.function(lambda i: models["image"](i, training=False)).get_concrete_function(image_spec),
        "fusion": tf.function(
            lambda t, i: models["fusion"]({"text": t, "image": i}, training=False)
        ).get_concrete_function(text_spec, image_spec),
    }

    def predict(kind: str, text: str | None, image: np.ndarray | None) -> np.ndarray:
        args: list[Any] = []
        if kind in ("text", "fusion"):
            args.append(tf.constant([text or ""]))
        if kind in ("image", "fusion"):
            args.append(tf.constant(image[None]))
        return functions[kind](*args).numpy()[0]

    return predict
