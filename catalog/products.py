"""The products table as a training `Dataset`, with images read lazily from the image store."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.tables import LABEL_STATUSES, Product
from models.data import Dataset
from store.blob import BlobNotFoundError, BlobStore

logger = logging.getLogger(__name__)


def load_confirmed(
    session_factory: sessionmaker[Session],
    image_store: BlobStore,
    *,
    since: datetime,
    exclude: Collection[str] = (),
) -> Dataset:
    """The products sellers confirmed from a prediction since `since`, quarantined ones and
    `exclude` (product ids, e.g. what a candidate trained on) left out: the gate's live holdout."""
    query = select(
        Product.product_id, Product.designation, Product.description, Product.prdtypecode, Product.image_ref
    ).where(
        Product.request_id.is_not(None),
        Product.label_status != "quarantined",
        Product.created_at >= since,
    )
    excluded = set(exclude)
    with session_factory() as session:
        rows = [row for row in session.execute(query) if row.product_id not in excluded]
    return _dataset(rows, image_store, source=f"confirmed products since {since.isoformat()}")


def load_products(
    session_factory: sessionmaker[Session],
    image_store: BlobStore,
    *,
    statuses: Sequence[str] = ("verified", "unverified"),
) -> Dataset:
    """Read the products with one of `statuses` into a Dataset, ordered by product id.

    Quarantined rows are left out unless asked for. Text is returned raw (as stored);
    images are not read here but on demand by `Dataset.image_bytes`, through
    `image_store.get(image_ref)`. `image_paths` holds the store keys (not local paths), so
    that `has_image` and `fingerprint` see which products have one.

    Args:
        session_factory: Sessions on the application database.
        image_store: The store the importer and the API put product images in.
        statuses: Label statuses to include.

    Returns:
        The products as a Dataset whose `source` names the table and the statuses.
    """
    unknown = set(statuses) - set(LABEL_STATUSES)
    if unknown:
        raise ValueError(f"unknown label status(es): {', '.join(sorted(unknown))}")
    query = select(
        Product.product_id, Product.designation, Product.description, Product.prdtypecode, Product.image_ref
    ).where(Product.label_status.in_(list(statuses)))
    with session_factory() as session:
        rows = list(session.execute(query))
    return _dataset(rows, image_store, source=f"products[{','.join(statuses)}]")


def _dataset(rows: list[Any], image_store: BlobStore, *, source: str) -> Dataset:
    # Sorted here rather than in SQL: string collation differs between SQLite and Postgres.
    rows.sort(key=lambda row: row.product_id)
    refs = [row.image_ref for row in rows]

    def read_image(i: int) -> bytes | None:
        ref = refs[i]
        if ref is None:
            return None
        try:
            return image_store.get(ref)
        except BlobNotFoundError:
            logger.warning(
                "image %s of product %s is missing from %s", ref, rows[i].product_id, image_store.uri
            )
            return None

    return Dataset(
        product_ids=[row.product_id for row in rows],
        designations=[row.designation or "" for row in rows],
        descriptions=[row.description or "" for row in rows],
        labels=np.array([row.prdtypecode for row in rows], dtype=np.int64),
        image_paths=[Path(ref) if ref else None for ref in refs],
        image_reader=read_image,
        source=source,
    )
