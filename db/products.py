"""Data access for the labelled product database."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.tables import Category, PredictionLog, Product


def list_categories(*, session: Session) -> dict[int, str]:
    return {c.prdtypecode: c.name for c in session.scalars(select(Category).order_by(Category.prdtypecode))}


def create_product(
    *,
    session: Session,
    product_id: str,
    designation: str,
    description: str,
    image_ref: str | None,
    prdtypecode: int,
    source: str,
    label_status: str,
    request_id: str | None,
    created_by: int | None,
) -> Product:
    product = Product(
        product_id=product_id,
        designation=designation,
        description=description,
        image_ref=image_ref,
        prdtypecode=prdtypecode,
        source=source,
        label_status=label_status,
        request_id=request_id,
        created_by=created_by,
    )
    session.add(product)
    session.commit()
    session.refresh(product)
    return product


def get_product(*, session: Session, id: int) -> Product | None:
    return session.get(Product, id)


def list_products(
    *,
    session: Session,
    label_status: str | None = None,
    source: str | None = None,
    prdtypecode: int | None = None,
    created_by: int | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[int, list[Product]]:
    stmt = select(Product)
    if label_status is not None:
        stmt = stmt.where(Product.label_status == label_status)
    if source is not None:
        stmt = stmt.where(Product.source == source)
    if prdtypecode is not None:
        stmt = stmt.where(Product.prdtypecode == prdtypecode)
    if created_by is not None:
        stmt = stmt.where(Product.created_by == created_by)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(Product.created_at.desc(), Product.id.desc()).offset(offset).limit(limit)
    )
    return total, list(rows)


def delete_product(*, session: Session, product: Product) -> None:
    session.delete(product)
    session.commit()


def set_label_status(
    *, session: Session, product: Product, label_status: str, reason: str | None = None
) -> Product:
    product.label_status = label_status
    product.quarantine_reason = reason if label_status == "quarantined" else None
    session.commit()
    session.refresh(product)
    return product


def get_product_by_request_id(*, session: Session, request_id: str) -> Product | None:
    return session.scalar(select(Product).where(Product.request_id == request_id))


def update_confirmation(
    *,
    session: Session,
    product: Product,
    designation: str,
    description: str,
    image_ref: str | None,
    prdtypecode: int,
) -> Product:
    """A seller changed their mind about the product of one prediction: it is relabelled."""
    product.designation = designation
    product.description = description
    if image_ref is not None:
        product.image_ref = image_ref
    product.prdtypecode = prdtypecode
    product.label_status = "unverified"
    product.quarantine_reason = None
    session.commit()
    session.refresh(product)
    return product


@dataclass(frozen=True)
class SellerConfirmation:
    """A product a seller confirmed from one of their predictions, with the model's answer."""

    id: int
    seller_id: int | None
    confirmed: int
    top1: int | None
    label_status: str


def seller_confirmations(*, session: Session) -> list[SellerConfirmation]:
    """Every product confirmed from a prediction (quarantined ones excluded), oldest first."""
    stmt = (
        select(
            Product.id,
            Product.created_by,
            Product.prdtypecode,
            PredictionLog.top_prdtypecode,
            Product.label_status,
        )
        .join(PredictionLog, PredictionLog.request_id == Product.request_id)
        .where(Product.label_status != "quarantined", PredictionLog.outcome == "ok")
        .order_by(Product.id)
        .execution_options(yield_per=1000)
    )
    return [
        SellerConfirmation(id=i, seller_id=seller, confirmed=int(code), top1=top, label_status=status)
        for i, seller, code, top, status in session.execute(stmt)
    ]


def quarantine_products(*, session: Session, ids: list[int], reason: str) -> int:
    """Quarantine the unverified products among `ids` with `reason` (no commit); how many changed."""
    changed = 0
    for start in range(0, len(ids), 500):
        result = session.execute(
            update(Product)
            .where(Product.id.in_(ids[start : start + 500]), Product.label_status == "unverified")
            .values(label_status="quarantined", quarantine_reason=reason[:2000])
        )
        changed += result.rowcount or 0
    return changed
