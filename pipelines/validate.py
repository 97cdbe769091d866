"""Validate the product database before a retraining: quarantine bad rows, count the usable ones.

Checks every product that is not already quarantined:

- `missing_label` / `unknown_label`: no prdtypecode, or one that is not a known category;
- `no_text_no_image`: neither a designation/description with content nor an image;
- `missing_image` / `undecodable_image`: the image is not in the image store, or does not
  decode (the decoder the API and training use);
- `duplicate`: the same cleaned text and the same image (the image key is its SHA-256) as
  another product. Duplicates that agree on the label keep the oldest row; duplicates that
  disagree are all quarantined (`conflicting_duplicate`), since nobody can tell which is right.

Bad rows get `label_status="quarantined"` and a `quarantine_reason` starting with the reason
code; nothing is deleted, and an admin can put a row back (PATCH /products/{id}). Running it
twice changes nothing the second time. Fewer usable rows than `min_rows` raise
`InsufficientDataError` after the quarantines are saved, so the run fails and says why.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.tables import Category, Product
from models.preprocessing import ImageDecodeError, combine_text, decode_image
from store.blob import BlobNotFoundError, BlobStore

logger = logging.getLogger(__name__)

MISSING_LABEL = "missing_label"
UNKNOWN_LABEL = "unknown_label"
NO_TEXT_NO_IMAGE = "no_text_no_image"
MISSING_IMAGE = "missing_image"
UNDECODABLE_IMAGE = "undecodable_image"
DUPLICATE = "duplicate"
CONFLICTING_DUPLICATE = "conflicting_duplicate"

_BATCH = 500


class InsufficientDataError(RuntimeError):
    """Too few usable products to train on."""


@dataclass
class ValidationReport:
    """What a validation did: rows checked, newly quarantined per reason, usable rows left."""

    checked: int = 0
    usable: int = 0
    min_rows: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few product ids per reason
    seconds: float = 0.0

    @property
    def total_quarantined(self) -> int:
        return sum(self.quarantined.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "usable": self.usable,
            "min_rows": self.min_rows,
            "quarantined": dict(self.quarantined),
            "total_quarantined": self.total_quarantined,
            "examples": {k: v[:5] for k, v in self.examples.items()},
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class ProductRow:
    """The fields of a product that validation looks at (text already cleaned)."""

    id: int
    product_id: str
    prdtypecode: int | None
    text: str
    image_ref: str | None


def _image_problem(image_store: BlobStore, ref: str, max_pixels: int) -> str | None:
    """The reason code of what is wrong with the image under `ref`, or None."""
    try:
        data = image_store.get(ref)
    except BlobNotFoundError:
        return MISSING_IMAGE
    try:
        decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError:
        return UNDECODABLE_IMAGE
    return None


def find_problems(
    rows: Iterable[ProductRow],
    *,
    known_codes: set[int],
    image_store: BlobStore | None,
    max_pixels: int = 40_000_000,
    workers: int = 4,
) -> dict[int, tuple[str, str]]:
    """Row id -> (reason code, detail) for every row that must be quarantined."""
    rows = list(rows)
    problems: dict[int, tuple[str, str]] = {}
    for row in rows:
        if row.prdtypecode is None:
            problems[row.id] = (MISSING_LABEL, "no prdtypecode")
        elif row.prdtypecode not in known_codes:
            problems[row.id] = (UNKNOWN_LABEL, f"prdtypecode {row.prdtypecode} is not a known category")
        elif not row.text and row.image_ref is None:
            problems[row.id] = (NO_TEXT_NO_IMAGE, "empty designation and description, and no image")

    if image_store is not None:
        with_images = [r for r in rows if r.image_ref is not None and r.id not in problems]
        # Distinct keys only: duplicates share a content-addressed key and decode alike.
        refs = sorted({r.image_ref for r in with_images if r.image_ref})
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            verdicts = dict(
                zip(
                    refs,
                    pool.map(lambda ref: _image_problem(image_store, ref, max_pixels), refs),
                    strict=True,
                )
            )
        for row in with_images:
            verdict = verdicts[row.image_ref]  # type: ignore[index]
            if verdict is not None:
                problems[row.id] = (verdict, f"image {row.image_ref}")

    groups: dict[tuple[str, str | None], list[ProductRow]] = defaultdict(list)
    for row in rows:
        if row.id not in problems:
            groups[(row.text.casefold(), row.image_ref)].append(row)
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda r: r.id)
        labels = {r.prdtypecode for r in members}
        if len(labels) > 1:
            ids = ", ".join(r.product_id for r in members[:10])
            for row in members:
                problems[row.id] = (
                    CONFLICTING_DUPLICATE,
                    f"same text and image as {len(members) - 1} other product(s) with different labels: {ids}",
                )
        else:
            keeper = members[0]
            for row in members[1:]:
                problems[row.id] = (DUPLICATE, f"same text, image and label as product {keeper.product_id}")
    return problems


def validate_products(
    session_factory: sessionmaker[Session],
    image_store: BlobStore,
    *,
    min_rows: int,
    check_images: bool = True,
    max_pixels: int = 40_000_000,
) -> ValidationReport:
    """Quarantine the bad products and return what was done.

    Raises:
        InsufficientDataError: fewer than `min_rows` usable products remain (quarantines are kept).
    """
    started = time.perf_counter()
    with session_factory() as session:
        known_codes = set(session.scalars(select(Category.prdtypecode)))
        rows = [
            ProductRow(
                r.id, r.product_id, r.prdtypecode, combine_text(r.designation, r.description), r.image_ref
            )
            for r in session.execute(
                select(
                    Product.id,
                    Product.product_id,
                    Product.prdtypecode,
                    Product.designation,
                    Product.description,
                    Product.image_ref,
                ).where(Product.label_status != "quarantined")
            )
        ]
    problems = find_problems(
        rows,
        known_codes=known_codes,
        image_store=image_store if check_images else None,
        max_pixels=max_pixels,
    )

    report = ValidationReport(checked=len(rows), min_rows=min_rows)
    counts: Counter[str] = Counter()
    by_id = {r.id: r for r in rows}
    items = sorted(problems.items())
    for start in range(0, len(items), _BATCH):
        with session_factory() as session, session.begin():
            for row_id, (reason, detail) in items[start : start + _BATCH]:
                session.execute(
                    update(Product)
                    .where(Product.id == row_id, Product.label_status != "quarantined")
                    .values(label_status="quarantined", quarantine_reason=f"{reason}: {detail}"[:2000])
                )
                counts[reason] += 1
                report.examples.setdefault(reason, [])
                if len(report.examples[reason]) < 5:
                    report.examples[reason].append(by_id[row_id].product_id)
    report.quarantined = dict(sorted(counts.items()))
    report.usable = len(rows) - len(problems)
    report.seconds = time.perf_counter() - started
    logger.info(
        "validated %d products in %.1f s: %d quarantined %s, %d usable",
        report.checked,
        report.seconds,
        report.total_quarantined,
        report.quarantined,
        report.usable,
    )
    if report.usable < min_rows:
        raise InsufficientDataError(
            f"only {report.usable} usable products after validation ({report.total_quarantined} "
            f"quarantined: {report.quarantined}); at least MIN_TRAINING_ROWS={min_rows} are needed"
        )
    return report
