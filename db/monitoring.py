"""Live quality from the database: the window's prediction logs, confirmed predictions (the one
live-accuracy query), the training rows' profile and the monitoring reports.

A prediction is *confirmed* when a seller saved a product with the request's id. Quarantined
products are left out: validation or an admin quarantines a row because its label cannot be
trusted (unknown code, a duplicate, nothing usable), so it is no evidence of what the right
answer was. The admin console's hit rates (`GET /stats`) and the monitoring DAG's flags both
read this one query, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.tables import ModelVersion, MonitoringReport, PredictionLog, Product, ShadowPrediction


@dataclass(frozen=True)
class LogRow:
    """The fields of a prediction log the monitoring report reads."""

    request_id: str
    outcome: str
    model_kind: str | None = None
    model_version: str | None = None
    top_prdtypecode: int | None = None
    top_probability: float | None = None
    predicted: tuple[int, ...] = ()  # the ranked prdtypecodes answered
    text_chars: int = 0
    has_image: bool = False
    suggestion_size: int | None = None  # the suggestion set shown: the first n of `predicted`

    @classmethod
    def from_log(cls, log: PredictionLog) -> LogRow:
        inputs = log.inputs or {}
        return cls(
            request_id=log.request_id,
            outcome=log.outcome,
            model_kind=log.model_kind,
            model_version=log.model_version,
            top_prdtypecode=log.top_prdtypecode,
            top_probability=log.top_probability,
            predicted=_ranked(log.predictions),
            text_chars=int(inputs.get("text_chars") or 0),
            has_image=bool(inputs.get("has_image")),
            suggestion_size=log.suggestion_size,
        )


def _ranked(predictions: Any) -> tuple[int, ...]:
    """The prdtypecodes of a log's stored ranking, best first."""
    return tuple(
        int(p["prdtypecode"]) for p in predictions or [] if isinstance(p, dict) and "prdtypecode" in p
    )


def window_logs(*, session: Session, since: datetime, until: datetime) -> list[LogRow]:
    """Every prediction log created in [since, until), oldest first."""
    stmt = select(PredictionLog).where(PredictionLog.created_at >= since, PredictionLog.created_at < until)
    return [LogRow.from_log(log) for log in session.scalars(stmt.order_by(PredictionLog.id))]


def usable_products(*, session: Session) -> Iterator[tuple[int, str | None, str | None, bool]]:
    """(prdtypecode, designation, description, has an image) of every product not quarantined."""
    stmt = select(Product.prdtypecode, Product.designation, Product.description, Product.image_ref).where(
        Product.label_status != "quarantined"
    )
    for code, designation, description, image_ref in session.execute(stmt.execution_options(yield_per=1000)):
        yield int(code), designation, description, image_ref is not None


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
        latest[request_id] = ConfirmedPrediction(
            request_id, kind, _ranked(predictions), top, size, int(confirmed)
        )
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


def save_report(
    *,
    session: Session,
    window_start: datetime,
    window_end: datetime,
    model_version: str | None,
    figures: dict[str, Any],
    flagged: bool,
    flags: list[dict[str, Any]],
) -> MonitoringReport:
    """Store the report of a window, replacing an earlier one of the same window (reruns)."""
    session.execute(
        delete(MonitoringReport).where(
            MonitoringReport.window_start == window_start, MonitoringReport.window_end == window_end
        )
    )
    row = MonitoringReport(
        window_start=window_start,
        window_end=window_end,
        model_version=model_version,
        report=figures,
        flagged=flagged,
        flags=flags,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


@dataclass(frozen=True)
class ShadowConfirmed:
    """A confirmed request that the shadowed version also answered."""

    request_id: str
    production_top: int | None
    shadow_top: int | None
    confirmed: int


def shadow_confirmed(
    *, session: Session, version: str, since: datetime, until: datetime
) -> list[ShadowConfirmed]:
    """The confirmed requests of [since, until) that `version` answered in shadow (quarantined excluded)."""
    stmt = (
        select(
            PredictionLog.request_id,
            PredictionLog.top_prdtypecode,
            ShadowPrediction.top_prdtypecode,
            Product.prdtypecode,
        )
        .join(ShadowPrediction, ShadowPrediction.request_id == PredictionLog.request_id)
        .join(Product, Product.request_id == PredictionLog.request_id)
        .where(
            ShadowPrediction.model_version == version,
            PredictionLog.created_at >= since,
            PredictionLog.created_at < until,
            PredictionLog.outcome == "ok",
            Product.label_status != "quarantined",
        )
        .order_by(Product.id)
    )
    latest: dict[str, ShadowConfirmed] = {}
    for request_id, production_top, shadow_top, confirmed in session.execute(stmt):
        latest[request_id] = ShadowConfirmed(request_id, production_top, shadow_top, int(confirmed))
    return list(latest.values())


def shadow_hit_rates(rows: list[ShadowConfirmed]) -> dict[str, Any]:
    """Top-1 hit rates of production and of the shadowed version on the same confirmed requests."""
    n = len(rows)
    if not n:
        return {"confirmed": 0, "production_top1_rate": None, "shadow_top1_rate": None}
    return {
        "confirmed": n,
        "production_top1_rate": sum(r.production_top == r.confirmed for r in rows) / n,
        "shadow_top1_rate": sum(r.shadow_top == r.confirmed for r in rows) / n,
    }


def insert_shadow_predictions(*, session: Session, rows: list[dict[str, Any]]) -> None:
    """Store a batch of shadow answers (a request answered twice by a version keeps the first)."""
    for row in rows:
        exists = session.scalar(
            select(ShadowPrediction.id).where(
                ShadowPrediction.request_id == row["request_id"],
                ShadowPrediction.model_version == row["model_version"],
            )
        )
        if exists is None:
            session.add(ShadowPrediction(**row))
    session.commit()


def rejected_versions(*, session: Session) -> int:
    """How many model versions were refused (status `rejected`), for the alerting rules."""
    return session.scalar(select(func.count()).where(ModelVersion.status == "rejected")) or 0
