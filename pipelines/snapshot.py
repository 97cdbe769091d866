"""Training-set snapshots in the data store: what one retraining run trained and evaluated on.

A snapshot freezes the usable rows of the products table (verified and unverified; never the
quarantined ones) under a key made of the run's data interval, so that a rerun or a retried
task of the same interval finds and reuses it instead of reading a database that has moved on.
Layout below `DATA_STORE_URI` (a folder or `s3://bucket/prefix`), challenge-like::

    snapshots/{start}_{end}/X_train_update.csv   ,designation,description,productid,imageid,image_ref,split
    snapshots/{start}_{end}/Y_train_CVw08PX.csv  ,prdtypecode
    snapshots/{start}_{end}/manifest.json        written last: the snapshot is complete

Images are not copied: `image_ref` is the content-addressed key of the image in the image store
named by the manifest (`products/ab/<sha256>.jpg`), immutable by construction.

A fixed share of products, chosen by a hash of the product id (not at random per run), is held
out of training, so the candidate and the production model are compared on products that
neither trained on, and a product stays on the same side from one week to the next. Of those:

- `eval`: the *verified* ones (imported catalogue, or checked by an admin), the gate's fixed
  yardstick. Sellers' confirmations are not on it: a seller who floods wrong labels would
  otherwise move the yardstick with the training set, and a model that learned the flood
  would score better on it (the learning-loop scenario showed exactly that).
- `holdout`: the unverified ones (sellers' confirmations). No model trains on them; the gate
  sees them as part of its live holdout (`pipelines.retrain.live_holdout`), where they can
  show a candidate better or refuse it, but never make up for a loss on `eval`.

With fewer than `min_verified_eval` verified products held out (a database that only sellers
fill), `eval` takes the unverified ones too, and the manifest's `eval_labels` says so.

`load_snapshot(uri)` reads a snapshot back as a training `Dataset` (the train split by default);
the training image calls it for `--snapshot URI`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.tables import Product
from models.data import X_FILE, Y_FILE, Dataset
from store.blob import BlobNotFoundError, BlobStore, open_blob_store

logger = logging.getLogger(__name__)

SNAPSHOTS_PREFIX = "snapshots"
MANIFEST_FILE = "manifest.json"
SNAPSHOT_FORMAT = 1
X_COLUMNS = ("", "designation", "description", "productid", "imageid", "image_ref", "split")
Split = Literal["train", "eval", "holdout", "all"]
MIN_VERIFIED_EVAL = 30


class SnapshotNotFoundError(LookupError):
    """No complete snapshot at that URI (no manifest)."""


def is_evaluation(product_id: str, fraction: float) -> bool:
    """Whether a product belongs to the fixed evaluation split (stable across snapshots)."""
    digest = hashlib.sha256(f"eval-split:{product_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def snapshot_key(start: datetime, end: datetime) -> str:
    """The data store prefix of the snapshot for a data interval."""

    def stamp(moment: datetime) -> str:
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
        return moment.strftime("%Y%m%dT%H%M%SZ")

    return f"{SNAPSHOTS_PREFIX}/{stamp(start)}_{stamp(end)}"


def _join(uri: str, key: str) -> str:
    return f"{uri.rstrip('/')}/{key}"


def _csv_bytes(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _image_id(image_ref: str | None) -> str:
    """A short stable image id for the challenge-like `imageid` column ('' without an image)."""
    if not image_ref:
        return ""
    return image_ref.rsplit("/", 1)[-1].split(".", 1)[0][:16]


def take_snapshot(
    session_factory: sessionmaker[Session],
    data_store: BlobStore,
    *,
    image_store_uri: str,
    start: datetime,
    end: datetime,
    eval_fraction: float,
    min_verified_eval: int = MIN_VERIFIED_EVAL,
) -> dict[str, Any]:
    """Write the snapshot of the usable products for [start, end), or reuse the existing one.

    Returns:
        The manifest (with `uri`, the snapshot's location, added), small enough for XCom.
    """
    key = snapshot_key(start, end)
    manifest_key = f"{key}/{MANIFEST_FILE}"
    uri = _join(data_store.uri, key)
    if data_store.exists(manifest_key):
        manifest = json.loads(data_store.get(manifest_key))
        logger.info("snapshot %s already exists (%d rows): reused", uri, manifest["rows"])
        return {**manifest, "uri": uri}

    query = select(
        Product.product_id,
        Product.designation,
        Product.description,
        Product.prdtypecode,
        Product.image_ref,
        Product.label_status,
    ).where(Product.label_status.in_(["verified", "unverified"]))
    with session_factory() as session:
        rows = sorted(session.execute(query), key=lambda r: r.product_id)
    held = [is_evaluation(row.product_id, eval_fraction) for row in rows]
    verified_held = sum(1 for row, h in zip(rows, held, strict=True) if h and row.label_status == "verified")
    trusted_only = verified_held >= min_verified_eval
    x_rows, y_rows = [], []
    splits: Counter[str] = Counter()
    labels: Counter[int] = Counter()
    for index, (row, held_out) in enumerate(zip(rows, held, strict=True)):
        if not held_out:
            split = "train"
        elif row.label_status == "verified" or not trusted_only:
            split = "eval"
        else:
            split = "holdout"
        splits[split] += 1
        labels[int(row.prdtypecode)] += 1
        x_rows.append(
            (
                index,
                row.designation or "",
                row.description or "",
                row.product_id,
                _image_id(row.image_ref),
                row.image_ref or "",
                split,
            )
        )
        y_rows.append((index, int(row.prdtypecode)))
    files = {X_FILE: _csv_bytes(X_COLUMNS, x_rows), Y_FILE: _csv_bytes(("", "prdtypecode"), y_rows)}
    for name, data in files.items():
        data_store.put(f"{key}/{name}", data)
    manifest = {
        "format": SNAPSHOT_FORMAT,
        "key": key,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_interval": {"start": start.isoformat(), "end": end.isoformat()},
        "source": "products[verified,unverified]",
        "image_store": image_store_uri,
        "rows": len(rows),
        "splits": {"train": splits["train"], "eval": splits["eval"], "holdout": splits["holdout"]},
        "eval_fraction": eval_fraction,
        "eval_labels": "verified" if trusted_only else "verified+unverified",
        "with_image": sum(1 for r in rows if r.image_ref),
        "label_counts": {str(code): n for code, n in sorted(labels.items())},
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    # The commit point, created only if absent: a concurrent attempt of the same interval
    # cannot replace a snapshot that a training already read.
    if not data_store.put_if_absent(manifest_key, json.dumps(manifest, indent=2).encode("utf-8")):
        manifest = json.loads(data_store.get(manifest_key))
        logger.info("snapshot %s was completed concurrently: reused", uri)
    else:
        logger.info("snapshot %s: %d rows (%s)", uri, len(rows), manifest["splits"])
    return {**manifest, "uri": uri}


def read_manifest(uri: str) -> dict[str, Any]:
    """The manifest of the snapshot at `uri` (a folder or `s3://bucket/prefix/snapshots/KEY`)."""
    store = open_blob_store(uri)
    try:
        return json.loads(store.get(MANIFEST_FILE))
    except BlobNotFoundError:
        raise SnapshotNotFoundError(f"no complete snapshot at {uri} (no {MANIFEST_FILE})") from None


def load_snapshot(uri: str, *, split: Split = "train", image_store: BlobStore | None = None) -> Dataset:
    """Read a snapshot back as a `Dataset`, checking its files against the manifest.

    Args:
        uri: the snapshot's location (`take_snapshot()["uri"]`).
        split: `train` (the default: what a training run may see), `eval` (the held-out
            products the gate compares models on), `holdout` (held-out sellers'
            confirmations) or `all`.
        image_store: where the images are; by default the store named in the manifest.

    Returns:
        The rows of that split, in product-id order, images read lazily by their keys.

    Raises:
        SnapshotNotFoundError: no manifest at `uri`.
        ValueError: a file differs from the manifest (the snapshot was tampered with).
    """
    store = open_blob_store(uri)
    manifest = read_manifest(uri)
    contents = {}
    for name, expected in manifest["files"].items():
        data = store.get(name)
        if hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(f"snapshot {uri}: {name} does not match its manifest")
        contents[name] = data.decode("utf-8")
    labels = {row[""]: int(row["prdtypecode"]) for row in csv.DictReader(io.StringIO(contents[Y_FILE]))}
    ids, designations, descriptions, codes, refs = [], [], [], [], []
    for row in csv.DictReader(io.StringIO(contents[X_FILE])):
        if split != "all" and row["split"] != split:
            continue
        ids.append(row["productid"])
        designations.append(row["designation"])
        descriptions.append(row["description"])
        codes.append(labels[row[""]])
        refs.append(row["image_ref"] or None)
    images = image_store if image_store is not None else open_blob_store(manifest["image_store"])

    def read_image(i: int) -> bytes | None:
        ref = refs[i]
        if ref is None:
            return None
        try:
            return images.get(ref)
        except BlobNotFoundError:
            logger.warning("image %s of product %s is missing from %s", ref, ids[i], images.uri)
            return None

    return Dataset(
        product_ids=ids,
        designations=designations,
        descriptions=descriptions,
        labels=np.array(codes, dtype=np.int64),
        image_paths=[Path(ref) if ref else None for ref in refs],
        image_reader=read_image,
        source=f"snapshot:{uri}[{split}]",
    )
