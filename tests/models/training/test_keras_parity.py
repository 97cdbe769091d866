"""The served ONNX exports answer as the trained Keras models do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.bundle import BundleError
from models.preprocessing import resize_image
from models.runtime import ModelRuntime
from models.training.keras_parity import keras_runtime as keras_runtime_of
from models.training.keras_parity import load_keras_models
from tests.models.test_runtime import TEXTS, _broken, _images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runtime(quick_bundle: Path) -> ModelRuntime:
    return ModelRuntime.from_bundle(quick_bundle)


def test_runtime_predictions_equal_the_keras_models(runtime: ModelRuntime, quick_bundle: Path) -> None:
    import tensorflow as tf

    models = load_keras_models(quick_bundle)
    images = _images(len(TEXTS))
    resized = np.stack([resize_image(img, runtime.image_size) for img in images])
    texts = tf.constant(TEXTS)
    expected = {
        "text": np.asarray(models["text"](texts)),
        "image": np.asarray(models["image"](resized)),
        "fusion": np.asarray(models["fusion"]({"text": texts, "image": tf.constant(resized)})),
    }
    for i, (text, image) in enumerate(zip(TEXTS, images, strict=True)):
        np.testing.assert_allclose(runtime.predict_text(text), expected["text"][i], atol=1e-4)
        np.testing.assert_allclose(runtime.predict_image(image), expected["image"][i], atol=1e-4)
        np.testing.assert_allclose(runtime.predict_fusion(text, image), expected["fusion"][i], atol=1e-4)
    # The late fusion is computed from the two graphs' outputs, one product or a batch.
    np.testing.assert_allclose(runtime.predict_batch("fusion", TEXTS, images), expected["fusion"], atol=1e-4)
    parity = json.loads((quick_bundle / "serving" / "serving.json").read_text())["parity_max_abs_diff"]
    assert parity["fusion"] <= 1e-4


def test_a_bundle_without_serving_exports_is_served_by_the_keras_engine_with_the_same_answers(
    runtime: ModelRuntime, quick_bundle: Path, tmp_path: Path
) -> None:
    bundle = _broken(quick_bundle, tmp_path)
    shutil.rmtree(bundle / "serving")
    metadata = json.loads((bundle / "metadata.json").read_text())
    with pytest.raises(BundleError, match="serving"):
        ModelRuntime.from_bundle(bundle)  # a shipped bundle must have its exports
    (bundle / "metadata.json").write_text(json.dumps({**metadata, "serving_exports": False}))
    keras_runtime = keras_runtime_of(bundle)
    assert keras_runtime.engine == "keras" and runtime.engine == "onnx"
    for text, image in zip(TEXTS[:3], _images(3, seed=2), strict=True):
        np.testing.assert_allclose(keras_runtime.predict_text(text), runtime.predict_text(text), atol=1e-4)
        np.testing.assert_allclose(
            keras_runtime.predict_image(image), runtime.predict_image(image), atol=1e-4
        )
        np.testing.assert_allclose(
            keras_runtime.predict_fusion(text, image), runtime.predict_fusion(text, image), atol=1e-4
        )
