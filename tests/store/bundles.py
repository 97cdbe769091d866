"""Fake model bundles: the shape `models/train.py` writes, with random bytes for weights."""

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
