"""The serving runtime: `ModelRuntime.from_bundle(path)`, what the API predicts with.

The bundle is validated first (`models.bundle.validate_bundle`: a `BundleError` says what is
missing), then its `serving/` exports (written by `models.training.export` for every shipped
architecture) run under ONNX Runtime, with the text vectorised by NumPy replicas of the trained
layers. No TensorFlow in the process: about 170 MB resident, a few milliseconds per call.
The shipped late fusion has no graph of its own: it is computed from the text and image
graphs' answers with the weights the spec records (`models.fusion`), so the process holds
one copy of each network and a fusion request runs each once.

Inputs are what training saw: text through `models.preprocessing.combine_text` (the caller
does it); images of any size, resized here, once, with `models.preprocessing.resize_image` to
the bundle's image size. A text model that reads a sentence encoder's embedding (an ONNX input
of source "sentence") gets it computed here from the same text, by the encoder inside the
bundle (`models.sentence_encoder.SentenceEncoder`, capped as in training). Every model is
warmed up and checked on dummy input before `from_bundle` returns. Safe to call from many
threads at once: ONNX Runtime sessions are thread-safe and the vectorisers are pure functions.

`models.training.keras_parity` builds the same class over the `.keras` models (TensorFlow), to
check that the exports answer as the trained models do.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import KINDS, SERVING_DIR, SERVING_SPEC_PATH, BundleError, load_bundle
from models.calibration import suggestion_set as conformal_set
from models.fusion import FusionSpecError, LateFusion, is_late_fusion
from models.preprocessing import resize_image
from models.sentence_encoder import ENCODER_FILE, TOKENIZER_FILE, SentenceEncoder
from models.text_vectorizer import NumpyTextVectorizer

logger = logging.getLogger(__name__)

# (kind, cleaned text, image already resized to the bundle's size) -> probabilities over labels.
Predict = Callable[[str, str, np.ndarray | None], np.ndarray]
_SELF_CHECK_TEXT = "bâche piscine hors sol"

# Products per ONNX Runtime call in a batch (`ModelRuntime.predict_batch`): a call's activation
# buffers grow with its rows and ONNX Runtime's arena keeps its largest for the process's life.
# One call of 50 texts (their dense n-gram vectors are 520 kB a row) left a worker 184 MB larger
# for good; calls of 8 rows keep what batching gains (the HTTP and logging work per product) and
# bound that memory to what 8 single requests in flight already take.
ROWS_PER_RUN = 8


class ModelRuntime:
    """Predict with a bundle's text, image and fusion models (probabilities over `labels`).

    Attributes:
        path: The bundle directory.
        metadata: The bundle's metadata.json.
        version: The bundle's version id.
        labels: The prdtypecodes in output order.
        calibration: The conformal entries per model kind (calibration.json).
        image_size: The side images are resized to before the image models.
        engine: "onnx" (what serves), or "keras" (`models.training.keras_parity`).
    """

    def __init__(
        self,
        path: Path,
        metadata: dict[str, Any],
        calibration: dict[str, Any],
        predict: Predict,
        *,
        engine: str = "onnx",
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
    def from_bundle(
        cls, path: str | Path, *, threads: int = 1, concurrent_runs: int | None = None
    ) -> ModelRuntime:
        """Validate, load and warm up the bundle at `path` on ONNX Runtime.

        The API loads every version with this, and promotion verifies every version with it, so
        a version that passes promotion is one the API can load.

        Args:
            path: A complete bundle directory, with its serving exports.
            threads: ONNX Runtime intra-op threads per call (1: parallelism comes from
                concurrent requests, not from inside one).
            concurrent_runs: Model calls that may run at once; the others wait their turn
                (default: the CPUs this process may use). More calls than cores at once only
                share the cores, thrashing their caches, and every call in flight holds its
                own activation buffers in ONNX Runtime's arena.

        Returns:
            A warmed-up, self-checked runtime.

        Raises:
            BundleError: The bundle is incomplete, has no serving exports, or its models do not run.
        """
        path = Path(path)
        # Serving exports required: a bundle without them would pull TensorFlow into the API.
        bundle = load_bundle(path, require_serving=True)
        runs = concurrent_runs or _usable_cpus()
        predict = _onnx_predict(path, threads, len(bundle.metadata["labels"]), runs)
        runtime = cls(path, bundle.metadata, bundle.calibration, predict)
        runtime.self_check()  # also the warm-up call of every model
        logger.info("loaded bundle %s from %s", runtime.version, path)
        return runtime

    def predict(self, kind: str, text: str = "", image: np.ndarray | None = None) -> np.ndarray:
        """Probabilities over `labels` from the model `kind` ("text", "image" or "fusion").

        Args:
            kind: The model to run.
            text: A text already through `combine_text` (text and fusion).
            image: An RGB uint8 image (H x W x 3) of any size (image and fusion).

        Returns:
            float32 probabilities, one per label.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}; use one of {KINDS}")
        resized = None if kind == "text" else resize_image(image, self.image_size)
        return self._predict(kind, "" if kind == "image" else text or "", resized)

    def predict_text(self, text: str) -> np.ndarray:
        """Probabilities over `labels` for a text already through `combine_text`."""
        return self.predict("text", text)

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """Probabilities over `labels` for an RGB uint8 image (H x W x 3) of any size."""
        return self.predict("image", image=image)

    def predict_fusion(self, text: str, image: np.ndarray) -> np.ndarray:
        """Probabilities over `labels` for a product with both a text and an image."""
        return self.predict("fusion", text, image)

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
            self._predict(
                kind,
                "" if texts is None else texts[i] or "",
                None if resized is None else resized[i],
            )
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
            answers = {kind: self.predict(kind, _SELF_CHECK_TEXT, image) for kind in KINDS}
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


@dataclass
class OnnxModel:
    """One exported model: its session and, per ONNX input, its source and what computes it
    from the text (a vectoriser for source "text", the sentence encoder for "sentence"; both
    have `transform(texts)`), None for the image."""

    session: Any
    # (onnx name, source, what computes it from the text)
    inputs: list[tuple[str, str, NumpyTextVectorizer | SentenceEncoder | None]]


def bundle_sentence_encoder(path: Path, metadata: dict[str, Any], threads: int = 1) -> SentenceEncoder | None:
    """The sentence encoder the bundle's text model reads (metadata.json `sentence_encoder`), or None.

    Raises:
        BundleError: Its files are not where the metadata says, or it does not load.
    """
    entry = metadata.get("sentence_encoder")
    if not entry:
        return None
    files = entry.get("files", {})
    try:
        return open_sentence_encoder(
            path / files.get("encoder", ""),
            path / files.get("tokenizer", ""),
            max_tokens=entry.get("max_tokens"),
            threads=threads,
        )
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from exc


def open_sentence_encoder(
    encoder_file: Path, tokenizer_file: Path, *, max_tokens: int | None, threads: int = 1
) -> SentenceEncoder:
    """The sentence encoder whose files these are (what metadata.json or serving.json names).

    Raises:
        BundleError: They are not `ENCODER_FILE` and `TOKENIZER_FILE` in one folder, or do not load.
    """
    if (encoder_file.name, tokenizer_file.name) != (ENCODER_FILE, TOKENIZER_FILE) or (
        encoder_file.parent != tokenizer_file.parent
    ):
        raise BundleError(f"the sentence encoder must be {ENCODER_FILE} and {TOKENIZER_FILE} in one folder")
    folder = encoder_file.parent
    identity = _encoder_identity(folder, max_tokens, threads)
    with _SHARED_ENCODER_LOCK:
        if identity is not None and _SHARED_ENCODER.get(identity) is not None:
            return _SHARED_ENCODER[identity]
        try:
            encoder = SentenceEncoder.from_dir(folder, threads=threads, max_tokens=max_tokens)
        except Exception as exc:
            raise BundleError(f"the sentence encoder does not load: {exc}") from exc
        _SHARED_ENCODER.clear()
        if identity is not None:
            _SHARED_ENCODER[identity] = encoder
        return encoder


# The last sentence encoder loaded, by identity: a bundle that carries the same one (every
# retraining does, and the shadow version beside production) gets that object instead of an 80 MB
# second copy and a quarter-second load. One entry: an encoder no bundle uses any more is kept
# until the next one is loaded. Sessions and the tokenizer are safe to share between threads.
_SHARED_ENCODER: dict[tuple[Any, ...], SentenceEncoder] = {}
_SHARED_ENCODER_LOCK = threading.Lock()


def _encoder_identity(folder: Path, max_tokens: int | None, threads: int) -> tuple[Any, ...] | None:
    """What makes two encoders the same: the SHA-256 of both files its spec records, their sizes,
    the token cap and the threads; None without a spec that records them (never shared)."""
    try:
        digests = SentenceEncoder.read_spec(folder)["sha256"]
        files = tuple(
            (name, digests[name], (folder / name).stat().st_size) for name in (ENCODER_FILE, TOKENIZER_FILE)
        )
    except (KeyError, OSError, TypeError, ValueError):  # no spec, no digests, an unreadable one
        return None
    return (files, max_tokens, threads)


def load_onnx_models(path: Path, threads: int = 1) -> dict[str, OnnxModel]:
    """The ONNX sessions and vectorisers of the bundle at `path` (BundleError when they do not load)."""
    import onnxruntime as ort

    try:
        spec = json.loads((path / SERVING_SPEC_PATH).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable {SERVING_SPEC_PATH}: {exc}") from exc
    options = ort.SessionOptions()
    # One request per call: parallelism comes from concurrent requests, not inside one.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # The fusion model names the text model's vectoriser files (`models.training.export` writes
    # each vocabulary once): each file is loaded once.
    vectorizers: dict[Path, NumpyTextVectorizer] = {}

    def vectorizer(file: Path) -> NumpyTextVectorizer:
        if file not in vectorizers:
            vectorizers[file] = NumpyTextVectorizer.load(file)
        return vectorizers[file]

    # A text model and a graph that embeds it (the `concat` fusion) read the same embedding:
    # the encoder is loaded once.
    encoders: dict[tuple[str, str, int | None], SentenceEncoder] = {}

    def sentence_encoder(item: dict[str, Any]) -> SentenceEncoder:
        key = (item["encoder"], item["tokenizer"], item.get("max_tokens"))
        if key not in encoders:
            encoders[key] = open_sentence_encoder(
                path / SERVING_DIR / key[0], path / SERVING_DIR / key[1], max_tokens=key[2], threads=threads
            )
        return encoders[key]

    def from_text(item: dict[str, Any]) -> NumpyTextVectorizer | SentenceEncoder | None:
        if item["source"] == "text":
            return vectorizer(path / SERVING_DIR / item["vectorizer"])
        if item["source"] == "sentence":
            return sentence_encoder(item)
        return None

    models: dict[str, OnnxModel] = {}
    try:
        for kind, entry in spec["models"].items():
            if is_late_fusion(entry):  # computed from the text and image models (`load_late_fusion`)
                continue
            session = ort.InferenceSession(
                str(path / SERVING_DIR / entry["file"]),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
            inputs = [(item["name"], item["source"], from_text(item)) for item in entry["inputs"]]
            models[kind] = OnnxModel(session, inputs)
    except Exception as exc:  # corrupt ONNX files, missing vectorisers
        raise BundleError(f"{path}: cannot load the serving models: {exc}") from exc
    computed = {kind for kind, entry in spec["models"].items() if is_late_fusion(entry)}
    missing = set(KINDS) - set(models) - computed
    if missing:
        raise BundleError(f"{path}: serving models missing: {sorted(missing)}")
    return models


def load_late_fusion(path: Path, n_labels: int) -> LateFusion | None:
    """The bundle's late-fusion weights when its spec computes fusion from the two models' outputs.

    None for a bundle whose fusion is an ONNX graph of its own (the `concat` architecture, and
    bundles exported before late fusion was computed here).

    Raises:
        BundleError: The spec is unreadable or its late-fusion entry is malformed.
    """
    try:
        spec = json.loads((path / SERVING_SPEC_PATH).read_text(encoding="utf-8"))
        entry = spec["models"]["fusion"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: unreadable {SERVING_SPEC_PATH}: {exc}") from exc
    if not is_late_fusion(entry):
        return None
    try:
        return LateFusion.from_entry(entry, n_labels)
    except FusionSpecError as exc:
        raise BundleError(f"{path}: {SERVING_SPEC_PATH}: {exc}") from exc


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's cpuset counts)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _onnx_predict(path: Path, threads: int, n_labels: int, concurrent_runs: int) -> Predict:
    models = load_onnx_models(path, threads)
    fusion = load_late_fusion(path, n_labels)
    # Session calls in flight at once (`ModelRuntime.from_bundle`). Vectorising (Python and
    # NumPy) waits outside; the sentence encoder is a session call like the model's own, so it
    # runs inside: 8 requests would otherwise run 8 encoder sessions at once on 2 cores.
    gate = threading.BoundedSemaphore(concurrent_runs)

    def run_many(kind: str, texts: list[str] | None, images: list[np.ndarray] | None) -> np.ndarray:
        n = len(texts if texts is not None else images or [])
        if n <= ROWS_PER_RUN:
            return run_rows(kind, texts, images)
        # The gate is taken per chunk: single requests get their turn between a batch's chunks.
        return np.concatenate(
            [
                run_rows(
                    kind,
                    None if texts is None else texts[start : start + ROWS_PER_RUN],
                    None if images is None else images[start : start + ROWS_PER_RUN],
                )
                for start in range(0, n, ROWS_PER_RUN)
            ]
        )

    def run_rows(kind: str, texts: list[str] | None, images: list[np.ndarray] | None) -> np.ndarray:
        model = models[kind]
        texts = [t or "" for t in texts or []]
        feeds = {
            name: source.transform(texts)
            for name, _kind, source in model.inputs
            if isinstance(source, NumpyTextVectorizer)
        }
        with gate:
            for name, _kind, source in model.inputs:
                if isinstance(source, SentenceEncoder):
                    feeds[name] = source.transform(texts)
                elif source is None:
                    feeds[name] = np.stack(images or [])
            return model.session.run(None, feeds)[0]

    def run(kind: str, text: str, image: np.ndarray | None) -> np.ndarray:
        return run_many(kind, [text], None if image is None else [image])[0]

    def predict(kind: str, text: str, image: np.ndarray | None) -> np.ndarray:
        if kind == "fusion" and fusion is not None:
            return fusion(run("text", text, None), run("image", "", image))
        return run(kind, text, image)

    def predict_many(kind: str, texts: list[str] | None, images: list[np.ndarray] | None) -> np.ndarray:
        if kind == "fusion" and fusion is not None:
            return fusion(run_many("text", texts, None), run_many("image", None, images))
        return run_many(kind, texts, images)

    # `ModelRuntime.predict_batch` uses this when present: one session call for n products.
    predict.batch = predict_many  # type: ignore[attr-defined]
    return predict
