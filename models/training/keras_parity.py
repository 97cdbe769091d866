"""The trained Keras models of a bundle, and a `ModelRuntime` over them (TensorFlow).

The API serves the ONNX exports (`models.runtime`); this module answers with the `.keras`
models themselves, so that tests and benchmarks can check that the two agree, and so that a
bundle written without exports (`train(..., export=False)`) can still be evaluated in a
training process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import KINDS, MODEL_FILES, BundleError, load_bundle
from models.runtime import ModelRuntime, bundle_sentence_encoder
from models.sentence_encoder import EMBEDDING_DIM, SENTENCE_INPUT


def load_keras_models(bundle_dir: str | Path) -> dict[str, Any]:
    """The three Keras models of a valid bundle, by kind.

    Raises:
        BundleError: When the bundle is incomplete or a model does not load.
    """
    import keras

    from models.training import builders  # noqa: F401 - registers the custom layers before loading

    root = Path(bundle_dir)
    load_bundle(root, require_serving=False)
    models: dict[str, Any] = {}
    for kind in KINDS:
        try:
            models[kind] = keras.models.load_model(root / MODEL_FILES[kind])
        except Exception as exc:  # corrupt archives raise anything from zipfile to h5py
            raise BundleError(f"{root / MODEL_FILES[kind]} does not load: {exc}") from exc
    return models


def keras_runtime(bundle_dir: str | Path) -> ModelRuntime:
    """A self-checked `ModelRuntime` (engine "keras") over the bundle's `.keras` models.

    The models run behind concrete `tf.function`s with fixed input signatures, traced once here:
    2-5 ms per call, but about 750 MB resident (TensorFlow), so never in the API worker. A text
    model that reads a sentence embedding gets it from the bundle's encoder, as in serving.
    """
    import tensorflow as tf

    root = Path(bundle_dir)
    bundle = load_bundle(root, require_serving=False)
    models = load_keras_models(root)
    encoder = bundle_sentence_encoder(root, bundle.metadata)
    size = int(bundle.metadata["image_size"])
    text_spec = tf.TensorSpec([None], tf.string)
    image_spec = tf.TensorSpec([None, size, size, 3], tf.uint8)
    # Without an encoder the embedding is an empty (1, 0) array that no model reads.
    sentence_spec = tf.TensorSpec([None, 0 if encoder is None else EMBEDDING_DIM], tf.float32)

    def text_inputs(t: Any, s: Any) -> dict[str, Any]:
        return {"text": t} if encoder is None else {"text": t, SENTENCE_INPUT: s}

    def text_model(t: Any, s: Any) -> Any:
        inputs = text_inputs(t, s)
        return models["text"](inputs if len(inputs) > 1 else t, training=False)

    functions = {
        "text": tf.function(text_model).get_concrete_function(text_spec, sentence_spec),
        "image": tf.function(lambda i: models["image"](i, training=False)).get_concrete_function(image_spec),
        "fusion": tf.function(
            lambda t, s, i: models["fusion"]({**text_inputs(t, s), "image": i}, training=False)
        ).get_concrete_function(text_spec, sentence_spec, image_spec),
    }

    def predict(kind: str, text: str, image: np.ndarray | None) -> np.ndarray:
        args: list[Any] = []
        if kind in ("text", "fusion"):
            args.append(tf.constant([text]))
            embedding = np.zeros((1, 0), np.float32) if encoder is None else encoder.encode([text])
            args.append(tf.constant(embedding))
        if kind in ("image", "fusion"):
            args.append(tf.constant(image[None]))
        return functions[kind](*args).numpy()[0]

    runtime = ModelRuntime(root, bundle.metadata, bundle.calibration, predict, engine="keras")
    runtime.self_check()
    return runtime
