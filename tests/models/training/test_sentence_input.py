"""A text model that reads the sentence encoder: trained, bundled with its encoder, served as trained.

The session's quick bundle is such a bundle: the quick preset reads USE v3 as the shipped one does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.bundle import BundleError, validate_bundle
from models.runtime import ModelRuntime, load_onnx_models
from models.sentence_encoder import ENCODER_FILE, SENTENCE_INPUT, SPEC_FILE, SentenceEncoder
from tests.models.serving_imports import heavy_modules_after
from tests.models.test_runtime import TEXTS, _images

pytestmark = pytest.mark.slow


def test_the_bundle_carries_the_encoder_and_says_what_the_text_model_reads(quick_bundle: Path) -> None:
    meta = json.loads((quick_bundle / "metadata.json").read_text())
    entry = meta["sentence_encoder"]
    assert entry["name"] == "use3" and entry["max_tokens"] == meta["hyperparameters"]["sentence_max_tokens"]
    assert (quick_bundle / entry["files"]["encoder"]).is_file()
    spec = json.loads((quick_bundle / "serving" / "serving.json").read_text())
    sentence = [item for item in spec["models"]["text"]["inputs"] if item["source"] == "sentence"]
    assert sentence == [
        {
            "name": SENTENCE_INPUT,
            "source": "sentence",
            "encoder": ENCODER_FILE,
            "tokenizer": "sentence_encoder.spm",
            "max_tokens": entry["max_tokens"],
        }
    ]
    # The late fusion has no graph of its own: it is computed from the text graph's answer
    # (which read the embedding) and the image graph's.
    assert "late_fusion" in spec["models"]["fusion"] and "inputs" not in spec["models"]["fusion"]
    assert spec["parity_max_abs_diff"]["text"] <= 1e-4
    assert spec["parity_max_abs_diff"]["fusion"] <= 1e-4


def test_the_runtime_answers_as_the_keras_models_fed_the_same_embedding(quick_bundle: Path) -> None:
    import tensorflow as tf

    from models.preprocessing import resize_image
    from models.training.export import late_fusion_of
    from models.training.keras_parity import load_keras_models

    runtime = ModelRuntime.from_bundle(quick_bundle)
    models = load_keras_models(quick_bundle)
    cap = json.loads((quick_bundle / "metadata.json").read_text())["sentence_encoder"]["max_tokens"]
    embeddings = SentenceEncoder.from_dir(quick_bundle / "serving", max_tokens=cap).encode(TEXTS)
    images = _images(len(TEXTS))
    resized = np.stack([resize_image(img, runtime.image_size) for img in images])
    feeds = {"text": tf.constant(TEXTS), SENTENCE_INPUT: tf.constant(embeddings)}
    expected_text = np.asarray(models["text"](feeds))
    # The fusion of the Keras text model's answer with the served (int8) image graph's.
    late = late_fusion_of(models["fusion"])
    for i, (text, image) in enumerate(zip(TEXTS, images, strict=True)):
        np.testing.assert_allclose(runtime.predict_text(text), expected_text[i], atol=1e-4)
        expected_fusion = late(expected_text[i], runtime.predict_image(resized[i]))
        np.testing.assert_allclose(runtime.predict_fusion(text, image), expected_fusion, atol=1e-4)
    np.testing.assert_allclose(runtime.predict_batch("text", TEXTS), expected_text, atol=1e-4)
    # The embedding matters: the same text with another embedding gets another answer.
    other = np.asarray(
        models["text"]({"text": tf.constant(TEXTS[:1]), SENTENCE_INPUT: tf.constant(embeddings[1:2])})
    )
    assert np.abs(other[0] - expected_text[0]).max() > 1e-4


def test_the_text_graph_reads_one_encoder_capped_as_in_training(quick_bundle: Path) -> None:
    models = load_onnx_models(quick_bundle)
    encoders = [source for _, kind_source, source in models["text"].inputs if kind_source == "sentence"]
    assert len(encoders) == 1
    assert "fusion" not in models  # computed from the text and image graphs' answers
    assert (
        encoders[0].max_tokens
        == json.loads((quick_bundle / "metadata.json").read_text())["hyperparameters"]["sentence_max_tokens"]
    )


def test_a_bundle_without_its_sentence_encoder_is_refused(quick_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(quick_bundle, copy)
    (copy / "serving" / ENCODER_FILE).unlink()
    with pytest.raises(BundleError, match="sentence encoder's encoder"):
        validate_bundle(copy, require_serving=False)  # the Keras engine needs it too
    with pytest.raises(BundleError):
        ModelRuntime.from_bundle(copy)


def test_serving_the_bundle_imports_no_tensorflow(quick_bundle: Path) -> None:
    code = (
        "from models.runtime import ModelRuntime\n"
        f"runtime = ModelRuntime.from_bundle({str(quick_bundle)!r})\n"
        "runtime.predict_text('bâche de piscine')"
    )
    assert heavy_modules_after(code) == "[]"


def _encoder_of(bundle: Path) -> SentenceEncoder:
    (encoder,) = [source for _, kind, source in load_onnx_models(bundle)["text"].inputs if kind == "sentence"]
    return encoder


def test_bundles_that_carry_the_same_encoder_share_one_loaded_copy(
    quick_bundle: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "retrained"
    shutil.copytree(quick_bundle, copy)
    first = _encoder_of(quick_bundle)
    assert _encoder_of(copy) is first  # what a retraining or the shadow version loads beside production

    # Another encoder (its spec records other bytes) gets a copy of its own, and is then the one kept.
    other = tmp_path / "other-encoder"
    shutil.copytree(quick_bundle, other)
    spec_file = other / "serving" / SPEC_FILE
    spec = json.loads(spec_file.read_text())
    spec["sha256"][ENCODER_FILE] = "0" * 64
    spec_file.write_text(json.dumps(spec))
    second = _encoder_of(other)
    assert second is not first
    np.testing.assert_allclose(second.encode(["bâche"]), first.encode(["bâche"]), atol=1e-6)
    assert _encoder_of(quick_bundle) is not first  # one entry: the first was let go

    # A folder whose spec records no digests is never shared.
    del spec["sha256"]
    spec_file.write_text(json.dumps(spec))
    assert _encoder_of(other) is not _encoder_of(other)


def test_a_process_export_of_the_encoder_is_removed_when_the_process_ends() -> None:
    import subprocess
    import sys

    code = "from models.training.sentence_features import encoder_folder\nprint(encoder_folder('use3', None))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.name.startswith("use3-") and folder.parent.name.startswith("sentence-")
    assert not folder.parent.exists()
