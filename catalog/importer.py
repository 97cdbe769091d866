"""Import a challenge-layout folder into the products table and its images into the image store.

Idempotent by product id: importing the same folder twice inserts nothing the second time,
and a row whose text, label or image changed is updated. Nothing is dropped silently: every
row that is not imported is listed in the report with its position, product id and reason.

Decisions:
- Text is stored raw (HTML and all): cleaning is `models.preprocessing.clean_text`'s job at
  training and serving time, so the stored row stays what the seller wrote. Only NUL
  characters are removed (Postgres text cannot hold them).
- Images are stored as uploaded (original bytes) under a content-addressed key, after
  checking that `decode_image` reads them.
- A row whose image does not decode keeps its text and is imported without an image; the
  image is listed under `rejected_images`. Without text it is rejected as a whole.
- For a product id that appears several times in the file, the first row wins and the
  later ones are rejected as `duplicate_product_id`.
- A row already in the table is compared on its content (designation, description, label,
  image). Its status is left alone when nothing changed; when something changed the row
  takes the import's `source` and `label_status`, except that a quarantined row stays
  quarantined (an admin's decision is only undone by an admin).

Usage: python -m catalog.importer --data DIR [--source NAME] [--report FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from db.tables import LABEL_STATUSES, Category, Product, utcnow
from models.data import IMAGE_DIR, X_FILE, Y_FILE, image_filename, read_challenge_rows
from models.preprocessing import ImageDecodeError, combine_text, decode_image
from store.blob import BlobStore

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
IMAGE_NAMESPACE = "products"
MAX_PRODUCT_ID_CHARS = 64  # the width of products.product_id
MAX_SOURCE_CHARS = 32  # the width of products.source

# Stable reason codes (the report and its readers rely on them).
MISSING_PRODUCT_ID = "missing_product_id"
INVALID_PRODUCT_ID = "invalid_product_id"
DUPLICATE_PRODUCT_ID = "duplicate_product_id"
MISSING_LABEL = "missing_label"
INVALID_LABEL = "invalid_label"
UNKNOWN_PRDTYPECODE = "unknown_prdtypecode"
NO_TEXT_NO_IMAGE = "no_text_no_image"
UNDECODABLE_IMAGE = "undecodable_image"

_X_COLUMNS = ("designation", "description", "productid", "imageid")
# How pandas names the unnamed index column when writing, and when reading back and writing again.
_INDEX_COLUMNS = ("", "Unnamed: 0")


class ChallengeLayoutError(ValueError):
    """The folder is not in the challenge layout (a file or a column is missing)."""


@dataclass
class Rejection:
    """One row (or one row's image) that was not imported, and why."""

    row: int  # 0-based position of the data row in the X file
    index: str  # the row's value in the file's index column
    product_id: str
    reason: str  # one of the reason codes above
    detail: str = ""


@dataclass
class ImportReport:
    """What an import did: counts, and every rejected row or image with its reason."""

    folder: str
    source: str
    label_status: str
    total_rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    images_stored: int = 0  # rows in the table after the import (new or not) that have an image
    rejected_rows: list[Rejection] = field(default_factory=list)
    rejected_images: list[Rejection] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rejected(self) -> int:
        return len(self.rejected_rows)

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.seconds if self.seconds > 0 else 0.0

    def reasons(self) -> dict[str, int]:
        """Rejected rows per reason."""
        return dict(sorted(Counter(r.reason for r in self.rejected_rows).items()))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rejected"] = self.rejected
        data["rejected_by_reason"] = self.reasons()
        data["images_rejected"] = len(self.rejected_images)
        data["rows_per_second"] = round(self.rows_per_second, 1)
        data["seconds"] = round(self.seconds, 3)
        return data

    def summary(self) -> str:
        lines = [
            f"{self.folder}: {self.total_rows} rows in {self.seconds:.1f} s ({self.rows_per_second:.0f} rows/s)",
            f"  inserted {self.inserted}, updated {self.updated}, unchanged {self.unchanged}, "
            f"rejected {self.rejected}; {self.images_stored} with an image, "
            f"{len(self.rejected_images)} images rejected (row kept without image)",
        ]
        lines += [f"  rejected {count} rows: {reason}" for reason, count in self.reasons().items()]
        return "\n".join(lines)


@dataclass
class _Checked:
    """A row that passed the checks that need no image: its image is still to be verified."""

    row: int
    index: str
    product_id: str
    designation: str
    description: str
    prdtypecode: int
    has_text: bool
    image_path: Path | None


@dataclass
class _Candidate:
    """A row ready to be compared with the table."""

    product_id: str
    designation: str
    description: str
    prdtypecode: int
    image_ref: str | None


def import_folder(
    folder: str | Path,
    *,
    session_factory: sessionmaker[Session],
    image_store: BlobStore,
    source: str = "challenge",
    label_status: str = "verified",
    progress: bool = True,
    batch_size: int = BATCH_SIZE,
    workers: int = 4,
    max_image_pixels: int = 40_000_000,
) -> ImportReport:
    """Load a challenge-layout folder into the products table and the image store.

    Args:
        folder: Folder with `X_train_update.csv`, `Y_train_CVw08PX.csv` and `image_train/`.
        session_factory: Sessions on a migrated database (categories seeded).
        image_store: Where the images go, under `products/<sha256[:2]>/<sha256>.jpg`.
        source: Value of `products.source` for the rows written.
        label_status: `verified` or `unverified`, for the rows written.
        progress: Show a progress bar on stderr.
        batch_size: Rows per transaction.
        workers: Threads that verify and store images (decoding and I/O release the GIL).
        max_image_pixels: Images with more pixels are rejected (decompression bombs).

    Returns:
        The report; `inserted + updated + unchanged + rejected == total_rows`.

    Raises:
        ChallengeLayoutError: The folder lacks the X or Y file, its index column or a column.
    """
    if label_status not in LABEL_STATUSES or label_status == "quarantined":
        raise ValueError(f"label_status must be 'verified' or 'unverified', not {label_status!r}")
    if not source or len(source) > MAX_SOURCE_CHARS:
        raise ValueError(f"source must have 1 to {MAX_SOURCE_CHARS} characters, not {source!r}")
    started = time.perf_counter()
    folder = Path(folder)
    rows = _read_rows(folder)
    image_dir = folder / IMAGE_DIR
    report = ImportReport(folder=str(folder), source=source, label_status=label_status, total_rows=len(rows))
    with session_factory() as session:
        known_codes = set(session.scalars(select(Category.prdtypecode)))
    first_row: dict[str, int] = {}

    def store_image(checked: _Checked) -> tuple[str | None, str]:
        if checked.image_path is None:
            return None, ""
        return _store_image(checked.image_path, image_store, max_image_pixels)

    bar = tqdm(total=len(rows), desc="import", unit="row", file=sys.stderr, disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                checked: list[_Checked] = []
                for position, raw in enumerate(batch, start):
                    outcome = _check_row(position, raw, image_dir, known_codes, first_row)
                    if isinstance(outcome, Rejection):
                        report.rejected_rows.append(outcome)
                    else:
                        checked.append(outcome)
                candidates: list[_Candidate] = []
                for row, (image_ref, error) in zip(checked, pool.map(store_image, checked), strict=True):
                    if error:
                        rejection = Rejection(row.row, row.index, row.product_id, UNDECODABLE_IMAGE, error)
                        if not row.has_text:
                            rejection.detail += " (and no text)"
                            report.rejected_rows.append(rejection)
                            continue
                        report.rejected_images.append(rejection)
                    candidates.append(
                        _Candidate(
                            row.product_id, row.designation, row.description, row.prdtypecode, image_ref
                        )
                    )
                _write_batch(candidates, session_factory, source, label_status, report)
                bar.update(len(batch))
    finally:
        bar.close()
    report.rejected_rows.sort(key=lambda r: r.row)
    report.seconds = time.perf_counter() - started
    logger.info(
        "imported %s: %d inserted, %d updated, %d unchanged, %d rejected in %.1f s",
        folder,
        report.inserted,
        report.updated,
        report.unchanged,
        report.rejected,
        report.seconds,
    )
    return report


def _read_rows(folder: Path) -> list[dict[str, str]]:
    for name, columns in ((X_FILE, _X_COLUMNS), (Y_FILE, ("prdtypecode",))):
        path = folder / name
        if not path.is_file():
            raise ChallengeLayoutError(f"{path} not found: {folder} is not a challenge-layout folder")
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        if not header or header[0] not in _INDEX_COLUMNS:
            raise ChallengeLayoutError(f"{path} does not start with the index column (header {header[:3]})")
        missing = [c for c in columns if c not in header]
        if missing:
            raise ChallengeLayoutError(f"{path} lacks the column(s) {', '.join(missing)}")
    return read_challenge_rows(folder)


def _check_row(
    position: int, raw: dict[str, str], image_dir: Path, known_codes: set[int], first_row: dict[str, int]
) -> _Checked | Rejection:
    """The row's fields, or why it is rejected (every check but the image's)."""
    index = raw.get("index") or ""
    product_id = (raw.get("productid") or "").strip()

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(position, index, product_id, reason, detail)

    if not product_id:
        return reject(MISSING_PRODUCT_ID, "the productid column is empty")
    if len(product_id) > MAX_PRODUCT_ID_CHARS:
        return reject(INVALID_PRODUCT_ID, f"product id longer than {MAX_PRODUCT_ID_CHARS} characters")
    if product_id in first_row:
        return reject(DUPLICATE_PRODUCT_ID, f"product id already at row {first_row[product_id]}")
    first_row[product_id] = position

    label = (raw.get("prdtypecode") or "").strip()
    if not label:
        return reject(MISSING_LABEL, "no prdtypecode for this index in the Y file")
    code = _parse_code(label)
    if code is None:
        return reject(INVALID_LABEL, f"prdtypecode {label!r} is not an integer")
    if code not in known_codes:
        return reject(UNKNOWN_PRDTYPECODE, f"prdtypecode {code} is not a known category")

    designation = (raw.get("designation") or "").replace("\x00", "")
    description = (raw.get("description") or "").replace("\x00", "")
    has_text = bool(combine_text(designation, description))
    image_id = (raw.get("imageid") or "").strip()
    image_path = image_dir / image_filename(image_id, product_id) if image_id else None
    if image_path is not None and not image_path.is_file():
        image_path = None
    if not has_text and image_path is None:
        return reject(NO_TEXT_NO_IMAGE, "empty designation and description, and no image file")
    return _Checked(position, index, product_id, designation, description, code, has_text, image_path)


def _store_image(path: Path, image_store: BlobStore, max_pixels: int) -> tuple[str | None, str]:
    """Verify that the image decodes and store its original bytes: (key, "") or (None, why not)."""
    try:
        data = path.read_bytes()
        decode_image(data, max_pixels=max_pixels)
    except (OSError, ImageDecodeError) as exc:
        return None, f"{path.name}: {exc}"
    return image_store.put_content_addressed(data, suffix=".jpg", namespace=IMAGE_NAMESPACE), ""


def _parse_code(label: str) -> int | None:
    """The integer in `label`; "2583.0" counts (pandas writes integer columns with gaps so)."""
    try:
        return int(label)
    except ValueError:
        pass
    try:
        value = float(label)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _write_batch(
    candidates: list[_Candidate],
    session_factory: sessionmaker[Session],
    source: str,
    label_status: str,
    report: ImportReport,
) -> None:
    """Insert new products, update changed ones, count unchanged ones; one transaction."""
    if not candidates:
        return
    with session_factory() as session, session.begin():
        existing = {
            p.product_id: p
            for p in session.scalars(
                select(Product).where(Product.product_id.in_([c.product_id for c in candidates]))
            )
        }
        now = utcnow()
        new_rows: list[Product] = []
        for c in candidates:
            product = existing.get(c.product_id)
            if product is None:
                new_rows.append(
                    Product(
                        product_id=c.product_id,
                        designation=c.designation,
                        description=c.description,
                        prdtypecode=c.prdtypecode,
                        image_ref=c.image_ref,
                        source=source,
                        label_status=label_status,
                        created_at=now,
                    )
                )
                continue
            content = (product.designation, product.description, product.prdtypecode, product.image_ref)
            if content == (c.designation, c.description, c.prdtypecode, c.image_ref):
                report.unchanged += 1
                continue
            product.designation, product.description = c.designation, c.description
            product.prdtypecode, product.image_ref = c.prdtypecode, c.image_ref
            product.source = source
            if product.label_status != "quarantined":
                product.label_status = label_status
            report.updated += 1
        session.add_all(new_rows)
        report.inserted += len(new_rows)
        report.images_stored += sum(1 for c in candidates if c.image_ref is not None)


def _has_products_table(session_factory: sessionmaker[Session]) -> bool:
    with session_factory() as session:
        return inspect(session.get_bind()).has_table("products")


def main(argv: list[str] | None = None) -> int:
    from config import VAR_DIR, get_settings
    from db.session import make_engine, make_session_factory
    from store.blob import open_blob_store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="challenge-layout folder to import")
    parser.add_argument(
        "--source", default="challenge", help="products.source of the rows (default challenge)"
    )
    parser.add_argument(
        "--label-status", default="verified", choices=["verified", "unverified"], help="default verified"
    )
    parser.add_argument(
        "--report", type=Path, default=VAR_DIR / "import-report.json", help="where to write the JSON report"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    settings = get_settings()
    engine = make_engine(settings.DATABASE_URL)
    try:
        session_factory = make_session_factory(engine)
        if not _has_products_table(session_factory):
            logger.error("the database has no products table: run `python -m db.migrate` first")
            return 2
        try:
            report = import_folder(
                args.data,
                session_factory=session_factory,
                image_store=open_blob_store(settings.IMAGE_STORE_URI),
                source=args.source,
                label_status=args.label_status,
                progress=not args.no_progress,
                max_image_pixels=settings.MAX_IMAGE_PIXELS,
            )
        except ChallengeLayoutError as exc:
            logger.error("%s", exc)
            return 2
    finally:
        engine.dispose()
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(
        json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    sys.stdout.write(f"{report.summary()}\nfull report: {args.report}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
