"""Live quality from the database: confirmed predictions (the one live-accuracy query) and the
monitoring reports.

A prediction is *confirmed* when a seller saved a product with the request's id. Quarantined
products are left out: validation or an admin quarantines a row because its label cannot be
trusted (unknown code, a duplicate, nothing usable), so it is no evidence of what the right
answer was. The admin console's hit rates (`GET /stats`) and the monitoring DAG's flags both
read this one query, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.tables import MonitoringReport, PredictionLog, Product


@dataclass(frozen=True)
class ConfirmedPrediction:
    """An answered request and the category a seller then confirmed for it."""

    request_id: str
    model_kind: str | None
    ranked: tuple[int, ...]  # the prdtypecodes answered, best first
    top_prdtypecode: int | None
    suggestion_size: int | None
    confirmed: int


def confirmed_predictions(*, session: Session, since: datetime, until: datetime) -> list[ConfirmedPrediction]:
    """The answered requests of [since, until) that a seller confirmed, quarantined products excluded.

    A request confirmed more than once counts once, with its latest product.
    """
    stmt = (
        select(
            PredictionLog.request_id,
            PredictionLog.model_kind,
            PredictionLog.predictions,
            PredictionLog.top_prdtypecode,
            PredictionLog.suggestion_size,
            Product.prdtypecode,
        )
        .join(Product, Product.request_id == PredictionLog.request_id)
        .where(
            PredictionLog.created_at >= since,
            PredictionLog.created_at < until,
            PredictionLog.outcome == "ok",
            Product.label_status != "quarantined",
        )
        .order_by(Product.id)
        .execution_options(yield_per=1000)
    )
    latest: dict[str, ConfirmedPrediction] = {}
    for request_id, kind, predictions, top, size, confirmed in session.execute(stmt):
        ranked = tuple(
            int(p["prdtypecode"]) for p in predictions or [] if isinstance(p, dict) and "prdtypecode" in p
        )
        latest[request_id] = ConfirmedPrediction(request_id, kind, ranked, top, size, int(confirmed))
    return list(latest.values())


def list_reports(*, session: Session, offset: int = 0, limit: int = 20) -> tuple[int, list[MonitoringReport]]:
    """Total and one page of monitoring reports, latest window first."""
    total = session.scalar(select(func.count()).select_from(MonitoringReport)) or 0
    rows = session.scalars(
        select(MonitoringReport)
        .order_by(MonitoringReport.window_end.desc(), MonitoringReport.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return total, list(rows)


def latest_report(*, session: Session) -> MonitoringReport | None:
    """The report of the latest window, or None before the first one."""
    _, rows = list_reports(session=session, offset=0, limit=1)
    return rows[0] if rows else None
