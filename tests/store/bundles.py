"""Fake model bundles: the shape `models/training/train.py` writes, with random bytes for weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LABELS = ["10", "40", "50", "2583"]


def fake_metrics(weighted_f1: float = 0.8) -> dict[str, Any]:
    def kind(f1: float) -> dict[str, Any]:
        return {
            "n": 100,
            "accuracy": f1,
            "weighted_f1": f1,
            "macro_f1": f1 - 0.02,
            "top3": 0.95,
            "top5": 0.98,
            "set_coverage": 0.9,
            "set_mean_size": 1.7,
            "per_class_recall": {label: f1 for label in LABELS},
        }

    return {"text": kind(weighted_f1 - 0.05), "image": kind(weighted_f1 - 0.2), "fusion": kind(weighted_f1)}


def make_bundle(
    parent: Path,
    version: str,
    *,
    weights_bytes: int = 4096,
    created_at: str = "2026-11-27T11:30:05+00:00",
    weighted_f1: float = 0.8,
) -> Path:
    """A bundle directory `parent/version` with metadata, metrics, weights, a report and a subfolder."""
    bundle = parent / version
    (bundle / "plots").mkdir(parents=True)
    for name in ("text.keras", "image.keras", "fusion.keras"):
        (bundle / name).write_bytes(os.urandom(weights_bytes))
    metadata = {"version": version, "created_at": created_at, "labels": LABELS}
    (bundle / "metadata.json").write_text(json.dumps(metadata))
    (bundle / "metrics.json").write_text(json.dumps(fake_metrics(weighted_f1)))
    (bundle / "calibration.json").write_text(json.dumps({"temperature": 1.3}))
    (bundle / "report.md").write_text(f"# Model {version}\n")
    (bundle / "plots" / "confusion.png").write_bytes(b"\x89PNG fake")
    return bundle


def bundle_files(bundle: Path) -> dict[str, bytes]:
    """Relative path → content of every file below `bundle`."""
    return {
        p.relative_to(bundle).as_posix(): p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()
    }


def _constant_onnx(probs: list[float]) -> bytes:
    """An ONNX model with no inputs that always answers `probs` (a batch of one)."""
    from onnx import TensorProto, helper

    output = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, len(probs)])
    constant = helper.make_node(
        "Constant",
        inputs=[],
        outputs=["probs"],
        value=helper.make_tensor("value", TensorProto.FLOAT, [1, len(probs)], probs),
    )
    graph = helper.make_graph([constant], "constant", inputs=[], outputs=[output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def make_servable_bundle(
    parent: Path,
    version: str,
    *,
    created_at: str = "2026-11-27T11:30:05+00:00",
    weighted_f1: float = 0.8,
    probs: list[float] | None = None,
) -> Path:
    """A bundle the serving runtime loads and self-checks in milliseconds, with no training.

    Its three ONNX models take no input and answer the constant `probs` (a uniform
    distribution by default; pass one that does not sum to 1 for a bundle that loads but
    fails the self-check). The `.keras` files are placeholders: the ONNX engine never reads them.
    """
    labels = [int(label) for label in LABELS]
    probs = probs if probs is not None else [1.0 / len(labels)] * len(labels)
    bundle = parent / version
    (bundle / "serving").mkdir(parents=True)
    for name in ("text.keras", "image.keras", "fusion.keras"):
        (bundle / name).write_bytes(b"placeholder: served through serving/*.onnx")
    metadata = {
        "version": version,
        "created_at": created_at,
        "labels": labels,
        "categories": {str(label): f"category {label}" for label in labels},
        "inputs": ["designation", "description", "image"],
        "image_size": 16,
        "data_fingerprint": "0" * 64,
        "hyperparameters": {},
        "code_revision": "test",
        "counts": {"train": 1, "val": 1, "test": 1},
    }
    (bundle / "metadata.json").write_text(json.dumps(metadata))
    (bundle / "metrics.json").write_text(json.dumps(fake_metrics(weighted_f1)))
    calibration = {kind: {"method": "lac", "threshold": 0.9} for kind in ("text", "image", "fusion")}
    (bundle / "calibration.json").write_text(json.dumps(calibration))
    (bundle / "report.md").write_text(f"# Model {version}\n")
    for name in ("confusion_matrix.png", "training_curves.png"):
        (bundle / name).write_bytes(b"\x89PNG fake")
    spec: dict[str, Any] = {"format": 1, "opset": 17, "image_size": 16, "models": {}}
    for kind in ("text", "image", "fusion"):
        (bundle / "serving" / f"{kind}.onnx").write_bytes(_constant_onnx(probs))
        spec["models"][kind] = {"file": f"{kind}.onnx", "inputs": []}
    (bundle / "serving" / "serving.json").write_text(json.dumps(spec))
    return bundle


# How a published version can be broken, and a fragment of the error each gives at promotion.
# The first two break the stored bytes after publishing; the others are published as they are,
# with a valid manifest, so only loading them tells.
BROKEN_VERSIONS: dict[str, str] = {
    "tampered": "does not match its manifest",
    "missing file": "it is missing",
    "corrupt onnx": "cannot load the serving models",
    "fails self-check": "does not output probabilities",
    "incomplete bundle": "calibration.json is missing",
}


def publish_broken(store: Any, parent: Path, version: str, how: str) -> str:
    """Publish a servable bundle as `version` in a `ModelStore`, broken as `how` says (BROKEN_VERSIONS)."""
    if how not in BROKEN_VERSIONS:
        raise ValueError(f"unknown way to break a version: {how!r}")
    if how == "fails self-check":
        bundle = make_servable_bundle(parent, version, probs=[0.5] * len(LABELS))
    else:
        bundle = make_servable_bundle(parent, version)
    if how == "corrupt onnx":
        (bundle / "serving" / "fusion.onnx").write_bytes(b"this is not an ONNX model")
    if how == "incomplete bundle":
        (bundle / "calibration.json").unlink()
    store.publish(bundle)
    key = f"versions/{version}/serving/fusion.onnx"
    if how == "tampered":
        store.blobs.put(key, b"not the published bytes")
    if how == "missing file":
        store.blobs.delete(key)
    return version
