"""The served ONNX exports answer as the trained Keras models do (the int8 image graph: nearly)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.bundle import BundleError
from models.preprocessing import resize_image
from models.runtime import ModelRuntime, bundle_sentence_encoder
from models.sentence_encoder import ENCODER_FILE, SENTENCE_INPUT, SPEC_FILE, TOKENIZER_FILE
from models.training.export import late_fusion_of
from models.training.keras_parity import keras_runtime as keras_runtime_of
from models.training.keras_parity import load_keras_models
from tests.models.test_runtime import TEXTS, _broken, _images

pytestmark = pytest.mark.slow
SENTENCE_ENCODER_FILES = {ENCODER_FILE, TOKENIZER_FILE, SPEC_FILE}
# How far the int8 image graph's probabilities may be from the float Keras model's.
INT8_ATOL = 0.25


@pytest.fixture(scope="module")
def runtime(quick_bundle: Path) -> ModelRuntime:
    return ModelRuntime.from_bundle(quick_bundle)


def test_runtime_predictions_equal_the_keras_models(runtime: ModelRuntime, quick_bundle: Path) -> None:
    import tensorflow as tf

    models = load_keras_models(quick_bundle)
    images = _images(len(TEXTS))
    resized = np.stack([resize_image(img, runtime.image_size) for img in images])
    # The quick text model also reads the sentence encoder's embedding, as the shipped one does.
    encoder = bundle_sentence_encoder(quick_bundle, json.loads((quick_bundle / "metadata.json").read_text()))
    embeddings = encoder.encode(TEXTS)
    text_inputs = {"text": tf.constant(TEXTS), SENTENCE_INPUT: tf.constant(embeddings)}
    expected = {
        "text": np.asarray(models["text"](text_inputs)),
        "image": np.asarray(models["image"](resized)),
        "fusion": np.asarray(models["fusion"]({**text_inputs, "image": tf.constant(resized)})),
    }
    # The image graph that serves is the int8 one (models/training/quantize.py): near the float
    # Keras model, not equal to it. The late fusion is computed from the served graphs' answers.
    fusion = late_fusion_of(models["fusion"])
    for i, (text, image) in enumerate(zip(TEXTS, images, strict=True)):
        np.testing.assert_allclose(runtime.predict_text(text), expected["text"][i], atol=1e-4)
        served_image = runtime.predict_image(image)
        np.testing.assert_allclose(served_image, expected["image"][i], atol=INT8_ATOL)
        np.testing.assert_allclose(
            runtime.predict_fusion(text, image), fusion(runtime.predict_text(text), served_image), atol=1e-5
        )
        np.testing.assert_allclose(runtime.predict_fusion(text, image), expected["fusion"][i], atol=INT8_ATOL)
    # One product or a batch: the same answers.
    served = np.stack(
        [runtime.predict_fusion(text, image) for text, image in zip(TEXTS, images, strict=True)]
    )
    np.testing.assert_allclose(runtime.predict_batch("fusion", TEXTS, images), served, atol=1e-5)
    spec = json.loads((quick_bundle / "serving" / "serving.json").read_text())
    # The float export was checked against Keras before the int8 graph took its place.
    assert spec["parity_max_abs_diff"]["image"] <= 1e-4 and spec["parity_max_abs_diff"]["fusion"] <= 1e-4
    assert spec["models"]["image"]["int8"]["samples"] > 0


def test_a_bundle_without_serving_exports_is_served_by_the_keras_engine_with_the_same_answers(
    runtime: ModelRuntime, quick_bundle: Path, tmp_path: Path
) -> None:
    bundle = _broken(quick_bundle, tmp_path)
    # The exports go; the sentence encoder's files stay (the Keras text model reads its embedding).
    for file in (bundle / "serving").iterdir():
        if file.name not in SENTENCE_ENCODER_FILES:
            file.unlink()
    metadata = json.loads((bundle / "metadata.json").read_text())
    with pytest.raises(BundleError, match="serving"):
        ModelRuntime.from_bundle(bundle)  # a shipped bundle must have its exports
    (bundle / "metadata.json").write_text(json.dumps({**metadata, "serving_exports": False}))
    keras_runtime = keras_runtime_of(bundle)
    assert keras_runtime.engine == "keras" and runtime.engine == "onnx"
    # Keras runs the float image model, ONNX Runtime the int8 graph: near, not equal.
    for text, image in zip(TEXTS[:3], _images(3, seed=2), strict=True):
        np.testing.assert_allclose(keras_runtime.predict_text(text), runtime.predict_text(text), atol=1e-4)
        np.testing.assert_allclose(
            keras_runtime.predict_image(image), runtime.predict_image(image), atol=INT8_ATOL
        )
        np.testing.assert_allclose(
            keras_runtime.predict_fusion(text, image), runtime.predict_fusion(text, image), atol=INT8_ATOL
        )
