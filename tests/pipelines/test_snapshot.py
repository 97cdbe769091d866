"""Training-set snapshots: keyed by data interval, idempotent, a fixed evaluation split, read back as a Dataset."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image
from sqlalchemy import select

from db.tables import Product
from models.data import X_FILE, Y_FILE, read_challenge_rows
from pipelines.snapshot import (
    MANIFEST_FILE,
    SnapshotNotFoundError,
    is_evaluation,
    load_snapshot,
    snapshot_key,
    take_snapshot,
)
from store.blob import LocalBlobStore, open_blob_store

START = datetime(2025, 6, 2, 3, tzinfo=UTC)
END = START + timedelta(weeks=1)
CODES = (10, 2583, 1560)


def jpeg(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (shade, 100, 50)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def image_store(tmp_path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "images")


@pytest.fixture
def products(session_factory, image_store) -> int:
    """60 products (every other one with an image) and 2 quarantined ones; returns the usable count."""
    with session_factory() as session:
        for i in range(60):
            ref = (
                image_store.put_content_addressed(jpeg(i), suffix=".jpg", namespace="products")
                if i % 2
                else None
            )
            session.add(
                Product(
                    product_id=f"p{i:03d}",
                    designation=f"Produit numéro {i}",
                    description='Une description, avec une virgule et des "guillemets"\nsur deux lignes',
                    prdtypecode=CODES[i % 3],
                    image_ref=ref,
                    label_status="verified" if i % 4 else "unverified",
                )
            )
        for i in range(2):
            session.add(
                Product(
                    product_id=f"q{i}", designation="quarantined", prdtypecode=10, label_status="quarantined"
                )
            )
        session.commit()
    return 60


def snapshot(session_factory, data_store, image_store, start=START, end=END, fraction=0.25, **extra):
    return take_snapshot(
        session_factory,
        data_store,
        image_store_uri=image_store.uri,
        start=start,
        end=end,
        eval_fraction=fraction,
        **extra,
    )


def test_the_snapshot_is_challenge_like_and_keyed_by_the_interval(
    session_factory, tmp_path, image_store, products
):
    data_store = LocalBlobStore(tmp_path / "datasets")

    manifest = snapshot(session_factory, data_store, image_store)

    key = "snapshots/20250602T030000Z_20250609T030000Z"
    assert snapshot_key(START, END) == key
    assert manifest["uri"] == f"{data_store.uri}/{key}"
    assert sorted(data_store.list(key)) == sorted(f"{key}/{name}" for name in (MANIFEST_FILE, X_FILE, Y_FILE))
    assert manifest["rows"] == products  # quarantined rows left out
    assert manifest["splits"]["train"] + manifest["splits"]["eval"] == products
    assert manifest["with_image"] == 30
    assert manifest["label_counts"] == {"10": 20, "1560": 20, "2583": 20}
    # The existing challenge reader understands it (text with commas, quotes and newlines).
    rows = read_challenge_rows(tmp_path / "datasets" / key)
    assert len(rows) == products
    assert rows[1]["description"].endswith("sur deux lignes")
    assert {r["split"] for r in rows} == {"train", "eval"}
    assert all(r["image_ref"].startswith("products/") for r in rows if r["imageid"])


def test_a_rerun_of_the_same_interval_reuses_the_snapshot(session_factory, tmp_path, image_store, products):
    data_store = LocalBlobStore(tmp_path / "datasets")
    first = snapshot(session_factory, data_store, image_store)
    with session_factory() as session:
        session.add(Product(product_id="late", designation="Arrivé après", prdtypecode=10))
        session.commit()

    again = snapshot(session_factory, data_store, image_store)
    next_week = snapshot(session_factory, data_store, image_store, start=END, end=END + timedelta(weeks=1))

    assert again == first
    assert next_week["rows"] == products + 1
    assert next_week["uri"] != first["uri"]


def test_the_evaluation_split_is_fixed_by_product_id(session_factory, tmp_path, image_store, products):
    data_store = LocalBlobStore(tmp_path / "datasets")
    manifest = snapshot(session_factory, data_store, image_store, fraction=0.25)

    train = load_snapshot(manifest["uri"], split="train")
    held_out = load_snapshot(manifest["uri"], split="eval")
    everything = load_snapshot(manifest["uri"], split="all")

    assert set(train.product_ids).isdisjoint(held_out.product_ids)
    assert sorted(train.product_ids + held_out.product_ids) == sorted(everything.product_ids)
    assert all(is_evaluation(pid, 0.25) for pid in held_out.product_ids)
    assert not any(is_evaluation(pid, 0.25) for pid in train.product_ids)
    assert 5 <= len(held_out) <= 25  # about a quarter of 60
    # The same products are held out whatever else is in the table.
    assert is_evaluation("p007", 0.25) == is_evaluation("p007", 0.25)
    shares = [is_evaluation(f"x{i}", 0.2) for i in range(5000)]
    assert 0.18 < sum(shares) / len(shares) < 0.22


def test_a_loaded_snapshot_has_the_labels_text_and_images_of_the_table(
    session_factory, tmp_path, image_store, products
):
    data_store = LocalBlobStore(tmp_path / "datasets")
    dataset = load_snapshot(snapshot(session_factory, data_store, image_store)["uri"], split="all")

    with session_factory() as session:
        table = {
            p.product_id: p
            for p in session.scalars(select(Product).where(Product.label_status != "quarantined"))
        }
    assert dataset.product_ids == sorted(table)
    for i, pid in enumerate(dataset.product_ids):
        assert int(dataset.labels[i]) == table[pid].prdtypecode
        assert dataset.designations[i] == table[pid].designation
        assert dataset.descriptions[i] == table[pid].description
        expected = image_store.get(table[pid].image_ref) if table[pid].image_ref else None
        assert dataset.image_bytes(i) == expected
    assert int(dataset.has_image.sum()) == 30


def test_a_tampered_or_missing_snapshot_is_refused(session_factory, tmp_path, image_store, products):
    data_store = LocalBlobStore(tmp_path / "datasets")
    manifest = snapshot(session_factory, data_store, image_store)
    key = manifest["key"]
    y = data_store.get(f"{key}/{Y_FILE}").decode().replace(",10\n", ",2583\n", 1)
    data_store.put(f"{key}/{Y_FILE}", y.encode())

    with pytest.raises(ValueError, match="does not match its manifest"):
        load_snapshot(manifest["uri"])
    with pytest.raises(SnapshotNotFoundError):
        load_snapshot(f"{data_store.uri}/snapshots/nothing-here")


@pytest.fixture
def s3_env(monkeypatch) -> Iterator[str]:
    from tests.store.s3server import (
        AWS_VARIABLES_TO_CLEAR,
        create_bucket,
        running_moto_server,
        s3_environment,
    )

    with running_moto_server() as endpoint:
        for name in AWS_VARIABLES_TO_CLEAR:
            monkeypatch.delenv(name, raising=False)
        for name, value in s3_environment(endpoint).items():
            monkeypatch.setenv(name, value)
        yield create_bucket(endpoint)


def test_snapshots_round_trip_through_s3(session_factory, image_store, products, s3_env):
    data_store = open_blob_store(f"s3://{s3_env}/datasets")

    manifest = snapshot(session_factory, data_store, image_store)
    again = snapshot(session_factory, data_store, image_store)
    dataset = load_snapshot(manifest["uri"], split="all")

    assert manifest["uri"] == f"s3://{s3_env}/datasets/snapshots/20250602T030000Z_20250609T030000Z"
    assert again == manifest
    assert len(dataset) == products
    assert json.loads(data_store.get(f"{manifest['key']}/{MANIFEST_FILE}"))["rows"] == products


def test_sellers_confirmations_held_out_are_not_on_the_gates_yardstick(
    session_factory, tmp_path, image_store, products
):
    # A seller who floods wrong labels must not move the split the gate compares models on.
    data_store = LocalBlobStore(tmp_path / "datasets")
    manifest = snapshot(session_factory, data_store, image_store, fraction=0.5, min_verified_eval=5)

    status = {f"p{i:03d}": "verified" if i % 4 else "unverified" for i in range(60)}
    held_out = load_snapshot(manifest["uri"], split="eval")
    holdout = load_snapshot(manifest["uri"], split="holdout")
    train = load_snapshot(manifest["uri"], split="train")
    assert held_out.product_ids and holdout.product_ids
    assert {status[p] for p in held_out.product_ids} == {"verified"}
    assert {status[p] for p in holdout.product_ids} == {"unverified"}
    assert all(is_evaluation(p, 0.5) for p in held_out.product_ids + holdout.product_ids)
    assert set(train.product_ids).isdisjoint(holdout.product_ids)  # no model trains on them
    assert manifest["eval_labels"] == "verified"
    assert sum(manifest["splits"].values()) == products


def test_with_too_few_verified_products_the_yardstick_takes_the_unverified_ones(
    session_factory, tmp_path, image_store, products
):
    data_store = LocalBlobStore(tmp_path / "datasets")
    manifest = snapshot(session_factory, data_store, image_store, fraction=0.5, min_verified_eval=1000)

    assert manifest["eval_labels"] == "verified+unverified"
    assert manifest["splits"]["holdout"] == 0
    assert len(load_snapshot(manifest["uri"], split="eval")) == manifest["splits"]["eval"] > 0
