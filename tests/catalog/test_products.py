"""The products table as a Dataset: same content as the imported folder, images read lazily."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from catalog.importer import import_folder
from catalog.products import load_products
from catalog.synthetic import generate_catalogue
from db.tables import Product
from models.data import load_challenge_folder
from store.blob import LocalBlobStore


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    return generate_catalogue(tmp_path_factory.mktemp("sources") / "catalogue", n_products=120, seed=21)


@pytest.fixture
def store(tmp_path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "images")


class CountingStore(LocalBlobStore):
    """A folder store that counts reads."""

    gets = 0

    def get(self, key: str) -> bytes:
        self.gets += 1
        return super().get(key)


def _add(session_factory, *products: Product) -> None:
    with session_factory() as session, session.begin():
        session.add_all(products)


def test_the_round_trip_gives_the_folders_texts_labels_and_images(catalogue, session_factory, store):
    import_folder(catalogue, session_factory=session_factory, image_store=store, progress=False)
    folder = load_challenge_folder(catalogue)
    table = load_products(session_factory, store)

    order = np.argsort(folder.product_ids, kind="stable")
    expected = folder.subset(order)
    assert table.product_ids == expected.product_ids
    assert table.designations == expected.designations
    assert table.descriptions == expected.descriptions
    assert table.texts == expected.texts
    assert np.array_equal(table.labels, expected.labels)
    assert np.array_equal(table.has_image, expected.has_image)
    assert table.fingerprint() == expected.fingerprint()
    assert all(table.image_bytes(i) == expected.image_bytes(i) for i in range(len(table)))
    images, ok = table.load_images(range(len(table)), size=32)
    assert np.array_equal(ok, expected.has_image)
    assert np.array_equal(images, expected.load_images(range(len(expected)), size=32)[0])


def test_products_come_in_product_id_order(session_factory, store):
    _add(
        session_factory,
        *(Product(product_id=pid, designation=pid, prdtypecode=10) for pid in ("b", "c", "a")),
    )
    assert load_products(session_factory, store).product_ids == ["a", "b", "c"]


def test_quarantined_products_are_left_out_unless_asked_for(session_factory, store):
    _add(
        session_factory,
        Product(product_id="ok", designation="Roman", prdtypecode=10, label_status="verified"),
        Product(product_id="new", designation="Roman", prdtypecode=10, label_status="unverified"),
        Product(product_id="bad", designation="Roman", prdtypecode=10, label_status="quarantined"),
    )
    assert load_products(session_factory, store).product_ids == ["new", "ok"]
    assert load_products(session_factory, store, statuses=("verified",)).product_ids == ["ok"]
    assert load_products(session_factory, store, statuses=("quarantined",)).product_ids == ["bad"]


def test_an_empty_table_gives_an_empty_dataset(session_factory, store):
    dataset = load_products(session_factory, store)
    assert len(dataset) == 0 and dataset.labels.shape == (0,)


def test_images_are_read_only_when_asked_for(catalogue, tmp_path, session_factory):
    store = CountingStore(tmp_path / "counted")
    import_folder(catalogue, session_factory=session_factory, image_store=store, progress=False)
    dataset = load_products(session_factory, store)
    assert store.gets == 0
    first_with_image = int(np.flatnonzero(dataset.has_image)[0])
    assert dataset.image_bytes(first_with_image) is not None
    assert store.gets == 1


def test_a_missing_image_blob_reads_as_no_image_with_a_warning(session_factory, store, caplog):
    key = store.put_content_addressed(b"\xff\xd8 not really a jpeg", suffix=".jpg", namespace="products")
    _add(session_factory, Product(product_id="p1", designation="Chaise", prdtypecode=1560, image_ref=key))
    store.delete(key)
    dataset = load_products(session_factory, store)
    with caplog.at_level(logging.WARNING, logger="catalog.products"):
        assert dataset.image_bytes(0) is None
    assert "p1" in caplog.text


def test_an_unknown_status_is_refused(session_factory, store):
    with pytest.raises(ValueError, match="verifed"):
        load_products(session_factory, store, statuses=("verifed",))


def test_the_fingerprint_changes_when_a_label_changes(catalogue, session_factory, store):
    import_folder(catalogue, session_factory=session_factory, image_store=store, progress=False)
    before = load_products(session_factory, store).fingerprint()
    assert load_products(session_factory, store).fingerprint() == before
    with session_factory() as session, session.begin():
        session.execute(update(Product).where(Product.prdtypecode == 10).values(prdtypecode=2705))
    assert load_products(session_factory, store).fingerprint() != before


def test_the_live_holdout_is_recent_confirmations_not_trained_on_and_not_quarantined(session_factory, store):
    from datetime import UTC, datetime, timedelta

    from catalog.products import load_confirmed

    now = datetime.now(UTC)
    _add(
        session_factory,
        Product(product_id="recent", designation="Roman", prdtypecode=10, request_id="r1", created_at=now),
        Product(product_id="trained", designation="Roman", prdtypecode=10, request_id="r2", created_at=now),
        Product(
            product_id="old",
            designation="Roman",
            prdtypecode=10,
            request_id="r3",
            created_at=now - timedelta(days=30),
        ),
        Product(
            product_id="doubtful",
            designation="Roman",
            prdtypecode=10,
            request_id="r4",
            created_at=now,
            label_status="quarantined",
        ),
        Product(product_id="imported", designation="Roman", prdtypecode=10, created_at=now),
    )

    live = load_confirmed(session_factory, store, since=now - timedelta(days=7), exclude={"trained"})

    assert live.product_ids == ["recent"]
