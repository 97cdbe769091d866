"""A model bundle on disk: what it holds, how to read it, and how to tell it is complete.

Layout (written by `models.training.train`, immutable once written):

    text.keras, image.keras, fusion.keras   the Keras models (raw inputs: `text`, `image`)
    metadata.json                           version, labels, categories, inputs, image size,
                                            data fingerprint, hyperparameters, code revision, counts
    metrics.json                            test-split figures, `models.training.evaluate` schema
    calibration.json                        conformal thresholds per model kind
    report.md, confusion_matrix.png, training_curves.png
    serving/                                ONNX exports + NumPy vectorisers (`models.training.export`),
                                            and the sentence encoder's files when the text
                                            model reads one (metadata.json `sentence_encoder`)

Reading a bundle needs no TensorFlow; `models.training.keras_parity` loads the `.keras` models.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from models.fusion import FusionSpecError, LateFusion, is_late_fusion

METADATA_FILE = "metadata.json"
METRICS_FILE = "metrics.json"
CALIBRATION_FILE = "calibration.json"
REPORT_FILE = "report.md"
CONFUSION_FILE = "confusion_matrix.png"
CURVES_FILE = "training_curves.png"
SERVING_DIR = "serving"
SERVING_SPEC = "serving.json"
SERVING_SPEC_PATH = f"{SERVING_DIR}/{SERVING_SPEC}"
# The three model kinds, in this order everywhere: text only, image only, both.
KINDS: tuple[str, ...] = ("text", "image", "fusion")
MODEL_FILES: dict[str, str] = {kind: f"{kind}.keras" for kind in KINDS}
# What metadata.json's `sentence_encoder.files` names, when the text model reads an embedding.
SENTENCE_ENCODER_FILES: tuple[str, ...] = ("encoder", "tokenizer")
REQUIRED_FILES: tuple[str, ...] = (
    *MODEL_FILES.values(),
    METADATA_FILE,
    METRICS_FILE,
    CALIBRATION_FILE,
    REPORT_FILE,
    CONFUSION_FILE,
    CURVES_FILE,
)
REQUIRED_METADATA: tuple[str, ...] = (
    "version",
    "created_at",
    "labels",
    "categories",
    "inputs",
    "image_size",
    "data_fingerprint",
    "hyperparameters",
    "code_revision",
    "counts",
)
# v + UTC time + "-" + the first 6 hex digits of the training data's fingerprint.
BUNDLE_VERSION_FORMAT = "v%Y%m%d-%H%M%S-<6 hex of data fingerprint>"
VERSION_PATTERN = re.compile(r"v\d{8}-\d{6}-[0-9a-f]{6}")


class BundleError(RuntimeError):
    """The directory is not a complete, consistent model bundle (the message says why)."""


def make_version(fingerprint: str, created: datetime) -> str:
    """The version id of a bundle: `v20261127-113005-ab12cd` (UTC time, data fingerprint)."""
    return f"v{created:%Y%m%d-%H%M%S}-{fingerprint[:6]}"


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON, UTF-8, French names kept readable."""
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or BundleError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"{path.parent}: {path.name} is missing") from exc
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def read_metadata(bundle_dir: Path) -> dict[str, Any]:
    """The bundle's metadata.json (BundleError when missing or unreadable)."""
    return read_json(Path(bundle_dir) / METADATA_FILE)


def validate_bundle(bundle_dir: str | Path, *, require_serving: bool | None = None) -> dict[str, Any]:
    """Check that `bundle_dir` is a complete bundle; return its metadata.

    Args:
        bundle_dir: The directory to check.
        require_serving: Also require the ONNX serving exports; None (default) requires them
            unless metadata.json says the bundle was written without (`serving_exports`: false,
            the LSTM reference).

    Returns:
        The metadata.

    Raises:
        BundleError: With every problem found, when the bundle is incomplete or inconsistent.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle directory")
    problems: list[str] = []
    metadata: dict[str, Any] = {}
    if (root / METADATA_FILE).is_file():
        try:
            metadata = read_metadata(root)
        except BundleError as exc:
            problems.append(str(exc))
    if require_serving is None:
        require_serving = bool(metadata.get("serving_exports", True))
    expected = list(REQUIRED_FILES) + ([SERVING_SPEC_PATH] if require_serving else [])
    problems += [f"{name} is missing" for name in expected if not (root / name).is_file()]
    problems += [
        f"{name} is empty"
        for name in expected
        if (root / name).is_file() and (root / name).stat().st_size == 0
    ]
    if metadata:
        problems += [f"metadata.json has no {key!r}" for key in REQUIRED_METADATA if key not in metadata]
        labels = metadata.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(c, int) for c in labels):
            problems.append("metadata.json 'labels' must be a non-empty list of int prdtypecodes")
        elif len(set(labels)) != len(labels):
            problems.append("metadata.json 'labels' has duplicates")
        if not isinstance(metadata.get("image_size"), int) or metadata.get("image_size", 0) < 8:
            problems.append("metadata.json 'image_size' must be an int >= 8")
        problems += _sentence_encoder_problems(root, metadata)
    if require_serving and (root / SERVING_SPEC_PATH).is_file() and (root / SERVING_SPEC_PATH).stat().st_size:
        problems += serving_spec_problems(root, metadata.get("labels"))
    if (root / CALIBRATION_FILE).is_file():
        try:
            calibration = read_json(root / CALIBRATION_FILE)
            for kind in KINDS:
                entry = calibration.get(kind)
                if not isinstance(entry, dict) or "method" not in entry:
                    problems.append(f"calibration.json has no entry for the {kind} model")
        except BundleError as exc:
            problems.append(str(exc))
    if problems:
        raise BundleError(f"{root} is not a complete bundle: " + "; ".join(problems))
    return metadata


def serving_spec_problems(root: Path, labels: Any) -> list[str]:
    """What is wrong with `serving/serving.json`: a model kind without an ONNX file it names, or
    a late-fusion entry (`models.fusion`) whose weights are missing, not finite, or not one bias
    per label. The ONNX files themselves are checked when the runtime loads them."""
    try:
        models = read_json(root / SERVING_SPEC_PATH).get("models")
    except BundleError as exc:
        return [str(exc)]
    if not isinstance(models, dict):
        return [f"{SERVING_SPEC_PATH} has no 'models' object"]
    problems: list[str] = []
    for kind in KINDS:
        entry = models.get(kind)
        if kind == "fusion" and is_late_fusion(entry):
            try:
                LateFusion.from_entry(entry, len(labels) if isinstance(labels, list) else 0)
            except FusionSpecError as exc:
                problems.append(f"{SERVING_SPEC_PATH}: {exc}")
        elif not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            problems.append(f"{SERVING_SPEC_PATH} names no ONNX file for the {kind} model")
        elif not (root / SERVING_DIR / entry["file"]).is_file():
            problems.append(f"{SERVING_DIR}/{entry['file']} (the {kind} model) is missing")
    return problems


def _sentence_encoder_problems(root: Path, metadata: dict[str, Any]) -> list[str]:
    """What is wrong with the sentence encoder a text model reads (none when it reads none).

    Both engines need its files (`models.runtime` and `models.training.keras_parity` compute
    the embedding before the model), so they are required with or without the ONNX exports.
    """
    entry = metadata.get("sentence_encoder")
    if entry is None:
        return []
    if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
        return ["metadata.json 'sentence_encoder' must say which files the encoder is"]
    problems = []
    max_tokens = entry.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 3):
        problems.append("metadata.json 'sentence_encoder.max_tokens' must be an int >= 3 or null")
    for role in SENTENCE_ENCODER_FILES:
        name = entry["files"].get(role)
        if not isinstance(name, str) or not (root / name).is_file() or not (root / name).stat().st_size:
            problems.append(f"the sentence encoder's {role} ({name}) is missing or empty")
    return problems


@dataclass
class Bundle:
    """A validated bundle: the contents of its JSON files."""

    path: Path
    metadata: dict[str, Any]
    metrics: dict[str, Any]
    calibration: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def labels(self) -> list[int]:
        return [int(c) for c in self.metadata["labels"]]

    @property
    def image_size(self) -> int:
        return int(self.metadata["image_size"])


def load_bundle(bundle_dir: str | Path, *, require_serving: bool | None = None) -> Bundle:
    """Validate and read a bundle.

    Args:
        bundle_dir: The bundle directory.
        require_serving: Require the ONNX serving exports (see `validate_bundle`).

    Returns:
        The `Bundle`.

    Raises:
        BundleError: When the bundle is incomplete.
    """
    root = Path(bundle_dir)
    metadata = validate_bundle(root, require_serving=require_serving)
    return Bundle(
        path=root,
        metadata=metadata,
        metrics=read_json(root / METRICS_FILE),
        calibration=read_json(root / CALIBRATION_FILE),
    )
