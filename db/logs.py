"""Reading prediction logs (writing is the API's batch writer)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from db.tables import PredictionLog, Product, User


def query_logs(
    *,
    session: Session,
    user_id: int | None = None,
    username: str | None = None,
    model_kind: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[int, list[tuple[PredictionLog, str | None, int | None]]]:
    """Total matching and one page of (log, username, id of the product saved from it), newest first."""
    stmt: Select = (
        select(PredictionLog, User.username, Product.id)
        .outerjoin(User, PredictionLog.user_id == User.id)
        .outerjoin(Product, Product.request_id == PredictionLog.request_id)
    )
    if user_id is not None:
        stmt = stmt.where(PredictionLog.user_id == user_id)
    if username is not None:
        stmt = stmt.where(User.username == username)
    if model_kind is not None:
        stmt = stmt.where(PredictionLog.model_kind == model_kind)
    if outcome is not None:
        stmt = stmt.where(PredictionLog.outcome == outcome)
    if since is not None:
        stmt = stmt.where(PredictionLog.created_at >= since)
    if until is not None:
        stmt = stmt.where(PredictionLog.created_at < until)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.order_by(PredictionLog.created_at.desc(), PredictionLog.id.desc()).offset(offset).limit(limit)
    ).all()
    return total, [(log, name, product_id) for log, name, product_id in rows]


def get_log(*, session: Session, request_id: str) -> PredictionLog | None:
    return session.scalar(select(PredictionLog).where(PredictionLog.request_id == request_id))


def clear_typed_titles(*, session: Session, before: datetime) -> int:
    """Forget the typed titles of logs written before `before`; returns how many were cleared."""
    result = session.execute(
        update(PredictionLog)
        .where(PredictionLog.created_at < before, PredictionLog.designation.is_not(None))
        .values(designation=None)
    )
    session.commit()
    return result.rowcount or 0
