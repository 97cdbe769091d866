"""The training data decoded, split and row-aligned: what every training stage reads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.data import Dataset
from models.training.hyperparameters import LABELS
from models.training.splits import SPLITS, pseudo_pairs, split_of

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """The training data, decoded and split; row i is product i of `data`."""

    data: Dataset
    y: np.ndarray  # class index per product
    split: np.ndarray
    texts: np.ndarray
    has_text: np.ndarray
    has_image: np.ndarray
    images: np.ndarray  # uint8 (n, size, size, 3); zeros where there is no image
    # The sentence encoder's embedding of every text (`models.training.sentence_features.
    # SentenceEmbeddings`), once a text model that reads one has computed it; else None.
    sentence: Any = None

    def rows(self, split: str, mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero((self.split == split) & mask)

    @property
    def both(self) -> np.ndarray:
        return self.has_text & self.has_image


def prepare_data(
    datasets: list[Dataset], *, seed: int, image_size: int, decode_images: bool = True
) -> PreparedData:
    """Concatenate, drop unknown labels, split by product id, decode and resize the images.

    Args:
        datasets: The datasets to train on.
        seed: Seed of the split.
        image_size: Side the images are resized to (`models.preprocessing.resize_image`).
        decode_images: False to skip the images (text-only experiments).

    Returns:
        Everything the training steps need, row-aligned.
    """
    data = Dataset.concat(datasets)
    known = np.isin(data.labels, LABELS)
    if not known.all():
        logger.warning("dropping %d products whose prdtypecode is not one of the 27", int((~known).sum()))
        data = data.subset(np.flatnonzero(known))
    if len(data) == 0:
        raise ValueError("no labelled products to train on")
    texts = np.array(data.texts, dtype=object)
    has_text = np.array([bool(t) for t in texts], dtype=bool)
    has_image = data.has_image if decode_images else np.zeros(len(data), dtype=bool)
    image_rows = np.flatnonzero(has_image)
    logger.info("decoding %d images at %dx%d", len(image_rows), image_size, image_size)
    pixels, decoded = data.load_images(image_rows, image_size)
    images = np.zeros((len(data), image_size, image_size, 3), dtype=np.uint8)
    images[image_rows[decoded]] = pixels[decoded]
    has_image = has_image.copy()
    has_image[image_rows[~decoded]] = False
    prepared = PreparedData(
        data=data,
        y=np.searchsorted(LABELS, data.labels),
        split=split_of(data.product_ids, seed),
        texts=texts,
        has_text=has_text,
        has_image=has_image,
        images=images,
    )
    logger.info(
        "%d products (%d with text, %d with an image, %d with both); split %s",
        len(data),
        int(has_text.sum()),
        int(has_image.sum()),
        int(prepared.both.sum()),
        {name: int((prepared.split == name).sum()) for name in SPLITS},
    )
    return prepared


def pairs(p: PreparedData, split: str, *, per_text: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Real (text, image) pairs of `split` followed by same-class pseudo pairs of its products."""
    real = p.rows(split, p.both)
    t, i = pseudo_pairs(
        p.rows(split, p.has_text), p.rows(split, p.has_image), p.y, per_text=per_text, seed=seed
    )
    distinct = t != i  # a real pair drawn as its own pseudo pair would count twice
    return np.concatenate([real, t[distinct]]), np.concatenate([real, i[distinct]])
