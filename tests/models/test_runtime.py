"""The serving runtime: thread-safe, refuses broken bundles (Keras parity: tests/models/training)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from models.bundle import BundleError, validate_bundle
from models.fusion import is_late_fusion
from models.preprocessing import combine_text
from models.runtime import ModelRuntime

pytestmark = pytest.mark.slow

TEXTS = [
    "Bâche de piscine hors sol 4x8 m",
    "Roman policier, édition de poche",
    "Console PS4 Pro 1 To + manette",
    "Figurine Pop Star Wars",
    "",
    "x" * 3000,
    combine_text("Piscine HORS SOL tubulaire", "<p>Bâche d&eacute;t&eacute; incluse, filtre à sable</p>"),
]


@pytest.fixture(scope="module")
def runtime(quick_bundle: Path) -> ModelRuntime:
    return ModelRuntime.from_bundle(quick_bundle)


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(48, 48), (256, 256), (31, 97), (500, 120), (64, 64), (10, 10)]
    return [rng.integers(0, 256, (*shapes[i % len(shapes)], 3), dtype=np.uint8) for i in range(n)]


def test_the_runtime_knows_its_version_and_labels(runtime: ModelRuntime, quick_bundle: Path) -> None:
    metadata = json.loads((quick_bundle / "metadata.json").read_text())
    assert runtime.version == metadata["version"]
    assert runtime.labels == metadata["labels"]
    runtime.self_check()


def test_suggestion_sets_are_label_indices_by_decreasing_probability(runtime: ModelRuntime) -> None:
    probs = runtime.predict_text("piscine hors sol")
    members = runtime.suggestion_set("text", probs)
    assert len(members) >= 1 and members[0] == int(np.argmax(probs))
    assert np.all(np.diff(probs[members]) <= 0)
    assert all(0 <= m < len(runtime.labels) for m in members)
    with pytest.raises(ValueError):
        runtime.suggestion_set("audio", probs)


def test_concurrent_callers_get_the_same_answers_as_one_caller(runtime: ModelRuntime) -> None:
    images = _images(12, seed=1)
    texts = [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(12)]
    sequential = [
        (runtime.predict_text(t), runtime.predict_image(im), runtime.predict_fusion(t, im))
        for t, im in zip(texts, images, strict=True)
    ]

    def work(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            runtime.predict_text(texts[i]),
            runtime.predict_image(images[i]),
            runtime.predict_fusion(texts[i], images[i]),
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(work, [i % 12 for i in range(96)]))
    for k, answers in enumerate(concurrent):
        for got, want in zip(answers, sequential[k % 12], strict=True):
            np.testing.assert_allclose(got, want, atol=1e-6)


def _broken(quick_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(quick_bundle, copy)
    return copy


def test_a_bundle_without_a_model_is_refused(quick_bundle: Path, tmp_path: Path) -> None:
    bundle = _broken(quick_bundle, tmp_path)
    (bundle / "image.keras").unlink()
    with pytest.raises(BundleError, match=r"image\.keras is missing"):
        ModelRuntime.from_bundle(bundle)


def test_a_bundle_with_a_corrupt_serving_model_is_refused(quick_bundle: Path, tmp_path: Path) -> None:
    bundle = _broken(quick_bundle, tmp_path)
    (bundle / "serving" / "text.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError):
        ModelRuntime.from_bundle(bundle)


def test_a_bundle_without_calibration_is_refused(quick_bundle: Path, tmp_path: Path) -> None:
    bundle = _broken(quick_bundle, tmp_path)
    (bundle / "calibration.json").write_text(json.dumps({"text": {"method": "lac"}}))
    with pytest.raises(BundleError, match="no entry for the image model"):
        ModelRuntime.from_bundle(bundle)


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such bundle"):
        ModelRuntime.from_bundle(tmp_path / "nowhere")


def _spec(bundle: Path) -> dict:
    return json.loads((bundle / "serving" / "serving.json").read_text())


def test_the_late_fusion_is_computed_from_the_two_models_without_a_graph_of_its_own(
    runtime: ModelRuntime, quick_bundle: Path
) -> None:
    from models.runtime import load_late_fusion, load_onnx_models

    assert is_late_fusion(_spec(quick_bundle)["models"]["fusion"])
    assert not (quick_bundle / "serving" / "fusion.onnx").exists()
    assert set(load_onnx_models(quick_bundle)) == {"text", "image"}  # one copy of each network
    fusion = load_late_fusion(quick_bundle, len(runtime.labels))
    texts, images = TEXTS[:4], _images(4, seed=3)
    for text, image in zip(texts, images, strict=True):
        expected = fusion(runtime.predict_text(text), runtime.predict_image(image))
        np.testing.assert_allclose(runtime.predict_fusion(text, image), expected, atol=1e-7)
    batch = runtime.predict_batch("fusion", texts, images)
    single = np.stack([runtime.predict_fusion(t, im) for t, im in zip(texts, images, strict=True)])
    np.testing.assert_allclose(batch, single, atol=1e-6)


def test_a_large_batch_runs_in_calls_of_bounded_rows_and_answers_as_single_calls(
    quick_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime's arena keeps a call's largest buffers for good: one call of 50 texts left
    a worker 184 MB larger. A batch is cut into calls of ROWS_PER_RUN rows at most."""
    import models.runtime as runtime_module

    rows_seen: list[int] = []

    class Recording:
        def __init__(self, session: object) -> None:
            self._session = session

        def run(self, outputs: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            rows_seen.append(len(next(iter(feeds.values()))))
            return self._session.run(outputs, feeds)

    load = runtime_module.load_onnx_models

    def recording_load(path: Path, threads: int = 1) -> dict:
        models = load(path, threads)
        return {kind: runtime_module.OnnxModel(Recording(m.session), m.inputs) for kind, m in models.items()}

    monkeypatch.setattr(runtime_module, "load_onnx_models", recording_load)
    runtime = ModelRuntime.from_bundle(quick_bundle)
    n = 2 * runtime_module.ROWS_PER_RUN + 3
    texts, images = [TEXTS[i % len(TEXTS)] for i in range(n)], _images(n, seed=5)
    rows_seen.clear()
    batch = {kind: runtime.predict_batch(kind, texts, images) for kind in ("text", "image", "fusion")}
    assert rows_seen and max(rows_seen) <= runtime_module.ROWS_PER_RUN
    assert sum(rows_seen) == 4 * n  # text, image, and fusion's text and image: every row once
    assert all(probs.shape == (n, len(runtime.labels)) for probs in batch.values())
    single = np.stack([runtime.predict_text(t) for t in texts])
    np.testing.assert_allclose(batch["text"], single, atol=1e-5)
    np.testing.assert_allclose(batch["image"][-1], runtime.predict_image(images[-1]), atol=1e-5)


def test_a_tampered_fusion_spec_is_refused_with_what_is_wrong(quick_bundle: Path, tmp_path: Path) -> None:
    bundle = _broken(quick_bundle, tmp_path)
    spec = _spec(bundle)
    spec["models"]["fusion"]["late_fusion"]["bias"] = spec["models"]["fusion"]["late_fusion"]["bias"][:-1]
    spec["models"]["fusion"]["late_fusion"]["text_weight"] = float("nan")
    (bundle / "serving" / "serving.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match=r"late_fusion\.text_weight must be a finite number, got nan"):
        validate_bundle(bundle)
    with pytest.raises(BundleError, match=r"late_fusion\.text_weight"):
        ModelRuntime.from_bundle(bundle)
    validate_bundle(bundle, require_serving=False)  # the Keras models themselves are complete


def test_a_bundle_whose_fusion_is_an_onnx_graph_is_still_served_by_that_graph(
    runtime: ModelRuntime, quick_bundle: Path, tmp_path: Path
) -> None:
    # Bundles exported before (and `concat` fusion) name a fusion graph; this one names the text
    # graph, so the answers show which graph ran.
    bundle = _broken(quick_bundle, tmp_path)
    spec = _spec(bundle)
    spec["models"]["fusion"] = {**spec["models"]["text"]}
    spec["format"] = 1
    (bundle / "serving" / "serving.json").write_text(json.dumps(spec))
    old = ModelRuntime.from_bundle(bundle)
    image = _images(1)[0]
    np.testing.assert_allclose(old.predict_fusion(TEXTS[0], image), runtime.predict_text(TEXTS[0]), atol=1e-6)
    np.testing.assert_allclose(
        old.predict_batch("fusion", TEXTS[:2], [image, image]),
        np.stack([runtime.predict_text(t) for t in TEXTS[:2]]),
        atol=1e-6,
    )
    spec["models"]["fusion"]["file"] = "fusion.onnx"  # named but absent
    (bundle / "serving" / "serving.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match=r"serving/fusion\.onnx \(the fusion model\) is missing"):
        ModelRuntime.from_bundle(bundle)


@pytest.mark.parametrize("limit", [1, 3])
def test_no_more_model_calls_run_at_once_than_the_runtime_allows(
    quick_bundle: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    import threading
    import time

    import onnxruntime as ort

    runtime = ModelRuntime.from_bundle(quick_bundle, concurrent_runs=limit)
    lock, running, seen = threading.Lock(), [0], [0]
    original = ort.InferenceSession.run

    def counted_run(self, *args, **kwargs):
        with lock:
            running[0] += 1
            seen[0] = max(seen[0], running[0])
        time.sleep(0.01)
        try:
            return original(self, *args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(ort.InferenceSession, "run", counted_run)
    image = _images(1)[0]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: runtime.predict_fusion(TEXTS[i % 3], image), range(24)))
    assert seen[0] == limit  # never more; and as many as allowed when 8 callers wait
