"""Validation of the product database before a retraining: quarantine, never delete; fail below a minimum."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import func, select

from db.tables import Product
from pipelines.validate import (
    CONFLICTING_DUPLICATE,
    DUPLICATE,
    MISSING_IMAGE,
    MISSING_LABEL,
    NO_TEXT_NO_IMAGE,
    UNDECODABLE_IMAGE,
    UNKNOWN_LABEL,
    InsufficientDataError,
    ProductRow,
    find_problems,
    validate_products,
)
from store.blob import LocalBlobStore


def jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def image_store(tmp_path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "images")


def add(
    session, product_id: str, *, code: int = 2583, designation: str = "", image_ref: str | None = None
) -> None:
    session.add(
        Product(
            product_id=product_id,
            designation=designation,
            description="",
            prdtypecode=code,
            image_ref=image_ref,
            source="test",
            label_status="verified",
        )
    )


@pytest.fixture
def seeded(session_factory, image_store) -> dict[str, str]:
    """Twelve good products and one of each kind of bad row; returns the image keys used."""
    good = image_store.put_content_addressed(jpeg((200, 30, 30)), suffix=".jpg", namespace="products")
    broken = image_store.put_content_addressed(b"not an image at all", suffix=".jpg", namespace="products")
    with session_factory() as session:
        for i in range(12):
            add(session, f"good-{i:02d}", designation=f"Bâche de piscine modèle {i}", code=2583)
        add(session, "good-image-only", image_ref=good, code=1560)
        add(session, "empty", designation="   <br/>  ")
        add(session, "broken-image", designation="Lampe de chevet", image_ref=broken, code=2060)
        add(
            session,
            "lost-image",
            designation="Chaise de jardin",
            image_ref="products/ff/" + "f" * 64 + ".jpg",
        )
        add(session, "dup-a", designation="Jeu de cartes Pokémon", image_ref=good, code=1160)
        add(session, "dup-b", designation="jeu de cartes pokémon", image_ref=good, code=1160)
        add(session, "clash-a", designation="Figurine Dragon Ball", code=1140)
        add(session, "clash-b", designation="Figurine Dragon Ball", code=1280)
        session.commit()
    return {"good": good, "broken": broken}


def statuses(session_factory) -> dict[str, tuple[str, str | None]]:
    with session_factory() as session:
        rows = session.execute(select(Product.product_id, Product.label_status, Product.quarantine_reason))
        return {pid: (status, reason) for pid, status, reason in rows}


def test_bad_rows_are_quarantined_with_their_reason_and_never_deleted(session_factory, image_store, seeded):
    report = validate_products(session_factory, image_store, min_rows=5)

    rows = statuses(session_factory)
    assert len(rows) == 20  # nothing deleted
    expected = {
        "empty": NO_TEXT_NO_IMAGE,
        "broken-image": UNDECODABLE_IMAGE,
        "lost-image": MISSING_IMAGE,
        "dup-b": DUPLICATE,
        "clash-a": CONFLICTING_DUPLICATE,
        "clash-b": CONFLICTING_DUPLICATE,
    }
    for product_id, reason in expected.items():
        status, why = rows[product_id]
        assert status == "quarantined", product_id
        assert why is not None and why.startswith(f"{reason}: "), (product_id, why)
    assert "dup-a" in rows["dup-b"][1]  # says which product it duplicates
    kept = {pid for pid, (status, _) in rows.items() if status != "quarantined"}
    assert kept == {f"good-{i:02d}" for i in range(12)} | {"good-image-only", "dup-a"}
    assert report.checked == 20
    assert report.usable == 14
    assert report.quarantined == {
        CONFLICTING_DUPLICATE: 2,
        DUPLICATE: 1,
        MISSING_IMAGE: 1,
        NO_TEXT_NO_IMAGE: 1,
        UNDECODABLE_IMAGE: 1,
    }


def test_a_second_validation_quarantines_nothing_more(session_factory, image_store, seeded):
    validate_products(session_factory, image_store, min_rows=5)
    before = statuses(session_factory)

    report = validate_products(session_factory, image_store, min_rows=5)

    assert report.total_quarantined == 0
    assert report.checked == report.usable == 14
    assert statuses(session_factory) == before


def test_fewer_usable_rows_than_the_minimum_fail_clearly_and_keep_the_quarantines(
    session_factory, image_store, seeded
):
    with pytest.raises(InsufficientDataError, match=r"only 14 usable products .* MIN_TRAINING_ROWS=50"):
        validate_products(session_factory, image_store, min_rows=50)

    with session_factory() as session:
        quarantined = session.scalar(
            select(func.count()).select_from(Product).where(Product.label_status == "quarantined")
        )
    assert quarantined == 6


def test_an_admin_decision_is_not_revisited(session_factory, image_store, seeded):
    with session_factory() as session:
        row = session.scalar(select(Product).where(Product.product_id == "empty"))
        row.label_status, row.quarantine_reason = "quarantined", "admin: spam"
        session.commit()

    validate_products(session_factory, image_store, min_rows=5)

    assert statuses(session_factory)["empty"] == ("quarantined", "admin: spam")


def test_image_checks_can_be_skipped(session_factory, image_store, seeded):
    report = validate_products(session_factory, image_store, min_rows=5, check_images=False)

    assert MISSING_IMAGE not in report.quarantined and UNDECODABLE_IMAGE not in report.quarantined
    assert statuses(session_factory)["broken-image"][0] == "verified"


def test_labels_that_are_missing_or_unknown_are_problems():
    rows = [
        ProductRow(1, "a", None, "Un titre", None),
        ProductRow(2, "b", 9999, "Un autre titre", None),
        ProductRow(3, "c", 2583, "Piscine", None),
    ]

    problems = find_problems(rows, known_codes={2583}, image_store=None)

    assert problems[1][0] == MISSING_LABEL
    assert problems[2][0] == UNKNOWN_LABEL
    assert 3 not in problems
