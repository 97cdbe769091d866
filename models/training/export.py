"""Export a bundle's Keras models for serving without TensorFlow (ONNX Runtime + NumPy).

The `.keras` models take raw strings; ONNX cannot run string ops. Each model is therefore
split at its `TextVectorization` layers: the layers' fitted tables become
`models.text_vectorizer.NumpyTextVectorizer` files, and everything after them (the dense
text head, the CNN, the fusion head) becomes one ONNX graph whose inputs are the vectorised
text and the image. The split is generic: the vectorisers' calls are swapped for the graph's
inputs while the model is traced, so nested sub-models (the fusion model) work unchanged.

The late fusion (`fusion_arch="late"`) is not exported as a graph: its three learned weights
go into the spec and the runtime computes it from the text and image graphs' outputs
(`models.fusion`), checked here against the Keras fusion model like every graph.

A text model that reads a sentence encoder's embedding (`sentence_embedding`, computed outside
the graph) gets an ONNX input of source "sentence" naming the encoder's files (copied into
`serving/` by training) and its token cap; the parity check computes that input with the
encoder, from the sample texts, as the serving runtime will.

`export_serving(bundle_dir)` writes `serving/` next to the `.keras` files and checks parity
against the Keras models on sample inputs; a bundle whose export disagrees is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import KINDS, SERVING_DIR, SERVING_SPEC
from models.fusion import LateFusion
from models.preprocessing import resize_image
from models.runtime import bundle_sentence_encoder
from models.sentence_encoder import ENCODER_FILE, SENTENCE_INPUT, TOKENIZER_FILE, SentenceEncoder
from models.text_vectorizer import NumpyTextVectorizer

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
OPSET = 17
# 2: the late fusion is a spec entry computed by the runtime (`models.fusion`), not a graph.
SPEC_FORMAT = 2


class ExportError(RuntimeError):
    """The export failed or does not reproduce the Keras model."""


def _vectorizers(model: Any) -> list[Any]:
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.TextVectorization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(_vectorizers(layer))
    return found


def _segment_of(vectorizer: Any) -> str | None:
    """What part of the raw text reaches `vectorizer`: None (all of it) or "title" (`TitleOf`)."""
    import keras

    from models.training.builders import TitleOf

    producer = vectorizer._inbound_nodes[0].input_tensors[0]._keras_history.operation
    if isinstance(producer, TitleOf):
        return "title"
    if isinstance(producer, keras.layers.InputLayer):
        return None
    raise ExportError(f"{vectorizer.name} reads the output of {producer.name}, which has no NumPy replica")


def _save_vectorizer(replica: NumpyTextVectorizer, out_dir: Path) -> str:
    """Write `replica` under a name made from its content and return the name.

    The fusion model's vectorisers are the text model's: they land on the same files, so the
    bundle holds each vocabulary once and the serving runtime loads it once.
    """
    staging = out_dir / "vectorizer.staging.json"
    replica.save(staging)
    staged = [staging, staging.with_suffix(".idf.npy")]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in staged if f.is_file())).hexdigest()[:16]
    file = out_dir / f"vectorizer-{digest}.json"
    for source, target in zip(staged, (file, file.with_suffix(".idf.npy")), strict=True):
        if source.is_file():
            source.replace(target)
    return file.name


def _keras_inputs(
    model: Any, texts: list[str] | None, images: np.ndarray | None, sentence: np.ndarray | None = None
) -> dict[str, Any]:
    import tensorflow as tf

    feeds: dict[str, Any] = {}
    for tensor in model.inputs:
        name = tensor.name
        if name == "text":
            shape = (len(texts), 1) if len(tensor.shape) == 2 else (len(texts),)
            feeds[name] = tf.constant(np.array(texts, dtype=object).reshape(shape))
        elif name == "image":
            feeds[name] = tf.constant(images)
        elif name == SENTENCE_INPUT:
            feeds[name] = tf.constant(sentence)
    return feeds


def export_model(
    model: Any, out_dir: Path, kind: str, *, sentence_max_tokens: int | None = None
) -> dict[str, Any]:
    """Write `{kind}.onnx` and its vectorisers under `out_dir`; returns the input spec.

    `sentence_max_tokens` is the cap recorded for a `sentence_embedding` input (the bundle's).
    """
    import tensorflow as tf
    import tf2onnx

    vectorizers = _vectorizers(model)
    names = {t.name for t in model.inputs}
    text_input = next((t for t in model.inputs if t.name == "text"), None)
    inputs: list[dict[str, Any]] = []
    specs = []
    for i, layer in enumerate(vectorizers):
        replica = NumpyTextVectorizer.from_keras_layer(layer, segment=_segment_of(layer))
        file = _save_vectorizer(replica, out_dir)
        name = f"text_vector_{i}"
        dtype = tf.int64 if replica.output_mode == "int" else tf.float32
        specs.append(tf.TensorSpec([None, replica.size], dtype, name=name))
        inputs.append({"name": name, "source": "text", "vectorizer": file})
    sentence = next((t for t in model.inputs if t.name == SENTENCE_INPUT), None)
    if sentence is not None:
        specs.append(tf.TensorSpec([None, sentence.shape[-1]], tf.float32, name=SENTENCE_INPUT))
        inputs.append(
            {
                "name": SENTENCE_INPUT,
                "source": "sentence",
                "encoder": ENCODER_FILE,
                "tokenizer": TOKENIZER_FILE,
                "max_tokens": sentence_max_tokens,
            }
        )
    if "image" in names:
        specs.append(tf.TensorSpec([None, None, None, 3], tf.uint8, name="image"))
        inputs.append({"name": "image", "source": "image"})
    originals = [layer.call for layer in vectorizers]

    def head(*args: Any) -> Any:
        vectors = args[: len(vectorizers)]
        for layer, vector in zip(vectorizers, vectors, strict=True):
            layer.call = lambda _inputs, v=vector: v
        try:
            batch = tf.shape(args[0])[0]
            feeds: dict[str, Any] = {}
            if text_input is not None:
                shape = tf.stack([batch, 1]) if len(text_input.shape) == 2 else tf.stack([batch])
                feeds["text"] = tf.fill(shape, "")
            if sentence is not None:
                feeds[SENTENCE_INPUT] = args[len(vectorizers)]
            if "image" in names:
                feeds["image"] = args[-1]
            return model(feeds if len(feeds) > 1 else next(iter(feeds.values())), training=False)
        finally:
            for layer, call in zip(vectorizers, originals, strict=True):
                layer.call = call

    function = tf.function(head, input_signature=specs)
    tf2onnx.convert.from_function(
        function, input_signature=specs, opset=OPSET, output_path=str(out_dir / f"{kind}.onnx")
    )
    return {"file": f"{kind}.onnx", "inputs": inputs}


def late_fusion_of(model: Any) -> LateFusion | None:
    """The weights of a late-fusion model (`builders.build_fusion`) for the serving spec, else None.

    Such a model is the text and image models under one `LateFusion` layer: the runtime
    computes it from their exported graphs (`models.fusion`), so it gets no graph of its own,
    which would hold a second copy of both networks. Any other fusion (`concat`) is exported.
    """
    from models.training.builders import LateFusion as LateFusionLayer

    layers = [layer for layer in model.layers if isinstance(layer, LateFusionLayer)]
    if len(layers) != 1 or model.layers[-1] is not layers[0]:
        return None
    layer = layers[0]
    return LateFusion(
        text_weight=float(np.asarray(layer.text_weight.numpy())),
        image_weight=float(np.asarray(layer.image_weight.numpy())),
        bias=np.asarray(layer.bias.numpy(), dtype=np.float32),
    )


def export_serving(
    bundle_dir: Path,
    *,
    sample_texts: list[str] | None = None,
    sample_images: np.ndarray | None = None,
    image_graph: Path | None = None,
) -> Path:
    """Export the three models of a bundle to `serving/` and check them against Keras.

    Args:
        bundle_dir: a bundle with `text.keras`, `image.keras`, `fusion.keras`, `metadata.json`.
        sample_texts: cleaned texts to check parity on (a few defaults when None).
        sample_images: uint8 images (N x S x S x 3, S = the bundle's image size) for the check.
        image_graph: the int8 image graph training scored and calibrated
            (`models.training.quantize`): it serves in place of the float export, once that
            export is checked against Keras (the int8 graph cannot equal Keras: how far it is
            from the float graph on the samples goes into the spec).

    Returns:
        The `serving/` directory.
    """
    import keras

    bundle_dir = Path(bundle_dir)
    metadata = json.loads((bundle_dir / "metadata.json").read_text(encoding="utf-8"))
    size = int(metadata["image_size"])
    out_dir = bundle_dir / SERVING_DIR
    out_dir.mkdir(exist_ok=True)
    texts = sample_texts or [
        "Bâche de piscine hors sol 4x8 m",
        "Roman policier, édition de poche",
        "Console de jeux + 2 manettes",
        "",
    ]
    if sample_images is None:
        rng = np.random.default_rng(0)
        sample_images = rng.integers(0, 256, (len(texts), size, size, 3), dtype=np.uint8)
    sample_images = np.stack([resize_image(img, size) for img in sample_images])
    n = min(len(texts), len(sample_images))
    texts, sample_images = texts[:n], sample_images[:n]

    spec: dict[str, Any] = {"format": SPEC_FORMAT, "opset": OPSET, "image_size": size, "models": {}}
    worst: dict[str, float] = {}
    # The exported graphs' answers on the samples (KINDS puts text and image before fusion).
    served: dict[str, np.ndarray] = {}
    # The Keras side gets the embedding from the encoder training copied into the bundle; the
    # ONNX side computes it again from the entry it is given, as the runtime does.
    encoder = bundle_sentence_encoder(bundle_dir, metadata)
    max_tokens = None if encoder is None else encoder.max_tokens
    sentence = None if encoder is None else encoder.encode(texts)
    for kind in KINDS:
        model = keras.models.load_model(bundle_dir / f"{kind}.keras", compile=False)
        fusion = late_fusion_of(model) if kind == "fusion" else None
        try:
            entry = (
                fusion.to_entry()
                if fusion is not None
                else export_model(model, out_dir, kind, sentence_max_tokens=max_tokens)
            )
        except Exception as exc:
            raise ExportError(f"exporting {kind}.keras to ONNX failed: {exc}") from exc
        feeds = _keras_inputs(model, texts, sample_images, sentence)
        expected = np.asarray(model(feeds if len(feeds) > 1 else next(iter(feeds.values())), training=False))
        if fusion is not None:  # what the runtime computes: the fusion of the two exported graphs
            got = fusion(served["text"], served["image"])
        else:
            got = served[kind] = _run_onnx(out_dir, entry, texts, sample_images)
        worst[kind] = float(np.abs(got - expected).max())
        if not worst[kind] <= PARITY_TOLERANCE:
            raise ExportError(f"{kind}: ONNX export differs from Keras by {worst[kind]:.2e}")
        spec["models"][kind] = entry
    spec["parity_max_abs_diff"] = worst
    if image_graph is not None:
        spec["models"]["image"]["int8"] = _install_int8(
            Path(image_graph), out_dir, served["image"], sample_images
        )
    (out_dir / SERVING_SPEC).write_text(json.dumps(spec, indent=2), encoding="utf-8")
    logger.info("exported the serving models (max |ONNX - Keras| per model: %s)", worst)
    return out_dir


def _install_int8(graph: Path, out_dir: Path, float_probs: np.ndarray, images: np.ndarray) -> dict[str, Any]:
    """Put the int8 image graph in place of the float export; how the two compare on `images`."""
    from models.training.quantize import run_image_graph

    try:
        probs = run_image_graph(graph, images)
    except Exception as exc:
        raise ExportError(f"the int8 image graph does not run: {exc}") from exc
    if probs.shape != float_probs.shape or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ExportError(
            f"the int8 image graph answers {probs.shape}, not probabilities like {float_probs.shape}"
        )
    shutil.copyfile(graph, out_dir / "image.onnx")
    return {
        "quantization": "static QDQ, the backbone in int8 but its first convolutions (models.training.quantize)",
        "samples": len(images),
        "max_abs_diff_vs_float": float(np.abs(probs - float_probs).max()) if len(images) else None,
        "top1_agreement_vs_float": float(np.mean(probs.argmax(1) == float_probs.argmax(1)))
        if len(images)
        else None,
    }


def _run_onnx(out_dir: Path, entry: dict[str, Any], texts: list[str], images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(out_dir / entry["file"]), providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {}
    for spec in entry["inputs"]:
        if spec["source"] == "text":
            feeds[spec["name"]] = NumpyTextVectorizer.load(out_dir / spec["vectorizer"]).transform(texts)
        elif spec["source"] == "sentence":
            folder = (out_dir / spec["encoder"]).parent
            feeds[spec["name"]] = SentenceEncoder.from_dir(folder, max_tokens=spec["max_tokens"]).encode(
                texts
            )
        else:
            feeds[spec["name"]] = images
    return session.run(None, feeds)[0]
