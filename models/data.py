"""The dataset object every data source yields, and the challenge-layout reader.

Three sources give the same `Dataset`: a folder in the Rakuten challenge layout
(`load_challenge_folder`), the products table of the database (`catalog.products`), and the
synthetic catalogue (`catalog.synthetic`, which writes a challenge-layout folder).
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.preprocessing import IMAGE_SIZE, ImageDecodeError, combine_text, load_image

logger = logging.getLogger(__name__)

X_FILE = "X_train_update.csv"
Y_FILE = "Y_train_CVw08PX.csv"
IMAGE_DIR = "image_train"

csv.field_size_limit(10_000_000)


def image_filename(imageid: str, productid: str) -> str:
    return f"image_{imageid}_product_{productid}.jpg"


@dataclass
class Dataset:
    """Labelled products: raw text fields, an optional image per product, the label.

    `image_loader(i)` returns the raw bytes of product i's image (or None); it hides
    whether images live in a folder, the image store, or nowhere.
    """

    product_ids: list[str]
    designations: list[str]
    descriptions: list[str]
    labels: np.ndarray  # prdtypecode per product (int64)
    image_paths: list[Path | None] = field(default_factory=list)
    image_reader: Callable[[int], bytes | None] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.product_ids)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if not self.image_paths:
            self.image_paths = [None] * n
        lengths = {len(self.designations), len(self.descriptions), len(self.labels), len(self.image_paths)}
        if lengths != {n}:
            raise ValueError("dataset columns have different lengths")

    def __len__(self) -> int:
        return len(self.product_ids)

    @property
    def texts(self) -> list[str]:
        """Cleaned text per product ('' where the product has none)."""
        return [combine_text(d, s) for d, s in zip(self.designations, self.descriptions, strict=True)]

    @property
    def has_text(self) -> np.ndarray:
        return np.array([bool(t) for t in self.texts], dtype=bool)

    @property
    def has_image(self) -> np.ndarray:
        if self.image_reader is not None:
            return np.array([p is not None for p in self.image_paths], dtype=bool)
        return np.array([p is not None and Path(p).is_file() for p in self.image_paths], dtype=bool)

    def image_bytes(self, i: int) -> bytes | None:
        if self.image_reader is not None:
            return self.image_reader(i)
        path = self.image_paths[i]
        return Path(path).read_bytes() if path is not None and Path(path).is_file() else None

    def load_images(self, indices: Sequence[int], size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
        """Decoded, resized images for `indices` and a mask of which decoded."""
        out = np.zeros((len(indices), size, size, 3), dtype=np.uint8)
        ok = np.zeros(len(indices), dtype=bool)
        for row, i in enumerate(indices):
            data = self.image_bytes(int(i))
            if data is None:
                continue
            try:
                out[row] = load_image(data, size)
                ok[row] = True
            except ImageDecodeError as exc:
                logger.warning("skipping undecodable image of product %s: %s", self.product_ids[i], exc)
        return out, ok

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        idx = [int(i) for i in indices]
        reader = None
        if self.image_reader is not None:
            parent = self.image_reader
            reader = lambda j: parent(idx[j])  # noqa: E731
        return Dataset(
            product_ids=[self.product_ids[i] for i in idx],
            designations=[self.designations[i] for i in idx],
            descriptions=[self.descriptions[i] for i in idx],
            labels=self.labels[idx],
            image_paths=[self.image_paths[i] for i in idx],
            image_reader=reader,
            source=self.source,
        )

    @staticmethod
    def concat(parts: Sequence[Dataset]) -> Dataset:
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p) for p in parts])
        readers = [p.image_reader or p.image_bytes for p in parts]

        def reader(i: int) -> bytes | None:
            k = int(np.searchsorted(offsets, i, side="right") - 1)
            return readers[k](i - int(offsets[k]))

        any_reader = any(p.image_reader is not None for p in parts)
        return Dataset(
            product_ids=[x for p in parts for x in p.product_ids],
            designations=[x for p in parts for x in p.designations],
            descriptions=[x for p in parts for x in p.descriptions],
            labels=np.concatenate([p.labels for p in parts]),
            image_paths=[
                (x if x is not None and (p.image_reader is not None or Path(x).is_file()) else None)
                for p in parts
                for x in p.image_paths
            ],
            image_reader=reader if any_reader else None,
            source="+".join(p.source for p in parts),
        )

    def fingerprint(self) -> str:
        """A SHA-256 over ids, labels, text and image presence: identifies the training data."""
        digest = hashlib.sha256()
        for pid, des, desc, label, path in zip(
            self.product_ids, self.designations, self.descriptions, self.labels, self.image_paths, strict=True
        ):
            digest.update(f"{pid}\x1f{label}\x1f{des}\x1f{desc}\x1f{path is not None}\x1e".encode())
        return digest.hexdigest()


def read_challenge_rows(folder: Path) -> list[dict[str, str]]:
    """Rows of X joined with Y by index, as dicts (strings as found)."""
    folder = Path(folder)
    x_path, y_path = folder / X_FILE, folder / Y_FILE
    for path in (x_path, y_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: not a challenge-layout folder")
    with y_path.open(newline="", encoding="utf-8-sig") as handle:
        labels = {
            row[""] if "" in row else row[next(iter(row))]: row["prdtypecode"]
            for row in csv.DictReader(handle)
        }
    rows: list[dict[str, str]] = []
    with x_path.open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            index = row.get("") if "" in row else row.get("Unnamed: 0", "")
            row["index"] = index or ""
            row["prdtypecode"] = labels.get(row["index"], "")
            rows.append(row)
    return rows


def load_challenge_folder(folder: str | Path, *, only_labels: set[int] | None = None) -> Dataset:
    """Read a challenge-layout folder into a Dataset (rows without a valid label are skipped)."""
    folder = Path(folder)
    image_dir = folder / IMAGE_DIR
    ids, des, desc, labels, paths = [], [], [], [], []
    skipped = 0
    for row in read_challenge_rows(folder):
        try:
            label = int(row["prdtypecode"])
        except (TypeError, ValueError):
            skipped += 1
            continue
        if only_labels is not None and label not in only_labels:
            skipped += 1
            continue
        image = image_dir / image_filename(row.get("imageid", ""), row.get("productid", ""))
        ids.append(row.get("productid") or row["index"])
        des.append(row.get("designation") or "")
        desc.append(row.get("description") or "")
        labels.append(label)
        paths.append(image if image.is_file() else None)
    if skipped:
        logger.warning("%s: skipped %d rows without a usable label", folder, skipped)
    # A catalogue of catalog.synthetic says so (synthetic.json): bundles trained on it are demos.
    source = f"synthetic:{folder}" if (folder / "synthetic.json").is_file() else str(folder)
    return Dataset(ids, des, desc, np.array(labels, dtype=np.int64), paths, source=source)
