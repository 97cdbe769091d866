"""Frozen-backbone features, computed once per input content and reused by later trainings.

A pretrained backbone does not learn, so what it makes of an image depends only on the image
and on the backbone: the features are cached under `cache_dir/{key}/`, one `.npy` file per
input named by the SHA-256 of the exact array the backbone sees (the decoded, resized pixels),
or of the exact text a sentence encoder reads, where `key` names the backbone (or encoder)
and its input size (or text cap). The weekly retraining then pays the
backbone only for the products that are new since the last run; a changed backbone or size is
another key, so nothing stale is ever read.

Writes are atomic (a temporary file renamed into place): two trainings sharing the cache, or
one killed mid-write, never leave a half-written file behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

Extract = Callable[[np.ndarray], np.ndarray]


def content_key(array: np.ndarray | str) -> str:
    """The SHA-256 of an input array's dtype, shape and bytes, or of a text's UTF-8 bytes."""
    if isinstance(array, str):
        return hashlib.sha256(b"str:" + array.encode("utf-8")).hexdigest()
    digest = hashlib.sha256(f"{array.dtype}:{array.shape}:".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def cached_features(
    extract: Extract,
    inputs: np.ndarray,
    *,
    key: str,
    cache_dir: Path | None,
    batch_size: int = 64,
    progress: str = "features",
) -> np.ndarray:
    """`extract(inputs)` row by row, through the cache when `cache_dir` is set.

    Args:
        extract: inputs (n, ...) -> features (n, d), in batches.
        inputs: the arrays the backbone sees (n, ...), or the texts an encoder reads (an
            object array of str).
        key: names the backbone and its preprocessing (a folder of the cache).
        cache_dir: where the features are kept; None computes everything.
        batch_size: inputs per `extract` call.
        progress: the name logged with the progress lines.

    Returns:
        (n, d) float32 features, in the order of `inputs`.
    """
    n = len(inputs)
    folder = cache_dir / key if cache_dir is not None else None
    names = [content_key(inputs[i]) for i in range(n)] if folder is not None else []
    found: dict[int, np.ndarray] = {}
    if folder is not None:
        for i, name in enumerate(names):
            path = folder / name[:2] / f"{name}.npy"
            if path.is_file():
                try:
                    found[i] = np.load(path)
                except (OSError, ValueError):
                    logger.warning("feature cache: %s is unreadable, computed again", path)
    missing = [i for i in range(n) if i not in found]
    logger.info("%s: %d of %d inputs cached, computing %d", progress, len(found), n, len(missing))
    started, last = time.perf_counter(), time.perf_counter()
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        values = np.asarray(extract(inputs[chunk]), dtype=np.float32)
        for i, value in zip(chunk, values, strict=True):
            found[i] = value
            if folder is not None:
                _write(folder / names[i][:2] / f"{names[i]}.npy", value)
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            done = start + len(chunk)
            rate = done / (last - started)
            logger.info("%s: %d/%d computed (%.0f a second)", progress, done, len(missing), rate)
    if not n:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([found[i] for i in range(n)]).astype(np.float32)


def _write(path: Path, value: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, value)
    os.replace(tmp, path)
