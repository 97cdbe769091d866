"""Data access for the labelled product database."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.tables import Category, Product


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
