"""Reading prediction logs (writing is the API's batch writer)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.tables import PredictionLog, User


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
) -> tuple[int, list[tuple[PredictionLog, str | None]]]:
    """Total matching and one page of (log, username), newest first."""
    stmt: Select = select(PredictionLog, User.username).outerjoin(User, PredictionLog.user_id == User.id)
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
    return total, [(log, name) for log, name in rows]


def get_log(*, session: Session, request_id: str) -> PredictionLog | None:
    return session.scalar(select(PredictionLog).where(PredictionLog.request_id == request_id))
