"""Splits by product id: a product keeps its split when the data grows; same-class pseudo pairs."""

from __future__ import annotations

import hashlib

import numpy as np

SPLITS: dict[str, float] = {"train": 0.65, "validation": 0.10, "calibration": 0.10, "test": 0.15}


def split_of(product_ids: list[str], seed: int) -> np.ndarray:
    """The split name of each product: a hash of (seed, product id), stable across runs and sources.

    Args:
        product_ids: Product ids (the same id always lands in the same split).
        seed: Changes the assignment.

    Returns:
        An array of split names ("train", "validation", "calibration", "test").
    """
    cuts = np.cumsum(list(SPLITS.values()))
    cuts[-1] = 1.0
    names = np.array(list(SPLITS))
    out = np.empty(len(product_ids), dtype=object)
    for i, pid in enumerate(product_ids):
        h = int.from_bytes(hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8], "big") / 2**64
        out[i] = names[min(int(np.searchsorted(cuts, h, side="right")), len(names) - 1)]
    return out.astype(str)


def pseudo_pairs(
    text_rows: np.ndarray, image_rows: np.ndarray, y: np.ndarray, *, per_text: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pair each text product with up to `per_text` image products of the same class.

    Real text+image pairs are rare (273 in the real sample); given the class, a product's
    text and its image are close to independent, which is exactly what late fusion assumes,
    so same-class pseudo pairs of held-out products are a sound way to fit and calibrate it.

    Returns:
        (text row, image row) index arrays of equal length.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, np.ndarray] = {
        int(c): image_rows[y[image_rows] == c] for c in np.unique(y[image_rows])
    }
    t_out: list[int] = []
    i_out: list[int] = []
    for row in text_rows:
        candidates = by_class.get(int(y[row]))
        if candidates is None or not len(candidates):
            continue
        chosen = rng.choice(candidates, size=min(per_text, len(candidates)), replace=False)
        t_out.extend([int(row)] * len(chosen))
        i_out.extend(int(c) for c in chosen)
    return np.array(t_out, dtype=np.int64), np.array(i_out, dtype=np.int64)
