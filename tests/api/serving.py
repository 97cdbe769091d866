"""Helpers for serving tests: model stores holding the quick bundle, images, clients."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from store.model_store import open_model_store


def copy_bundle_as(bundle: Path, dest: Path, version: str, *, break_file: str | None = None) -> Path:
    """A copy of `bundle` under another version id (optionally with one file corrupted)."""
    shutil.copytree(bundle, dest)
    meta_path = dest / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = version
    meta_path.write_text(json.dumps(meta))
    if break_file:
        (dest / break_file).write_bytes(b"this is not a keras file")
    return dest


def publish(store_uri: str, bundle: Path, *, promote: bool = True) -> str:
    """Publish `bundle` and move the pointer to it directly, unverified: tests use it to set up a
    pointer to a broken version too, as an older release or a hand edit could have left it."""
    store = open_model_store(store_uri)
    version = store.publish(bundle)
    if promote:
        store.promote(version, verify=None)
    return version


def jpeg_bytes(size: tuple[int, int] = (500, 500), color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    rng = np.random.default_rng(0)
    pixels = (rng.random((size[1], size[0], 3)) * 60 + np.array(color)).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
