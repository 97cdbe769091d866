"""Prediction logs aggregated for the admin console's charts (`GET /stats`).

Counting, bucketing and percentiles run in the database (window functions and integer epoch
arithmetic, the same SQL on SQLite and Postgres). Confirmed hit rates read
`db.monitoring.confirmed_predictions`, the query the monitoring DAG reads too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, case, cast, func, literal_column, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from db.tables import Category, PredictionLog

PERCENTILES = (50, 90, 95, 99)
# Requests that failed are one series of their own: they have no (or no meaningful) model kind.
FAILED = "failed"


def epoch_seconds(column: Any, dialect: str) -> ColumnElement[int]:
    """Whole seconds since 1970 (UTC) of a timestamp column, as an integer expression."""
    if dialect == "sqlite":
        # SQLAlchemy stores SQLite datetimes as UTC text without an offset, which strftime reads.
        return cast(func.strftime("%s", column), Integer)
    return cast(func.floor(func.extract("epoch", column)), BigInteger)


def _window(since: datetime, until: datetime) -> list[ColumnElement[bool]]:
    return [PredictionLog.created_at >= since, PredictionLog.created_at < until]


def traffic_by_bucket(
    *, session: Session, since: datetime, until: datetime, bucket_seconds: int
) -> list[dict[str, Any]]:
    dialect = session.get_bind().dialect.name
    # The width is inlined (a trusted int) so that SELECT and GROUP BY hold the same expression.
    width = literal_column(str(int(bucket_seconds)), Integer)
    bucket = (epoch_seconds(PredictionLog.created_at, dialect) // width) * width
    series = case(
        (PredictionLog.outcome == "ok", func.coalesce(PredictionLog.model_kind, FAILED)), else_=FAILED
    )
    stmt = (
        select(bucket.label("bucket"), series.label("series"), func.count().label("n"))
        .where(*_window(since, until))
        .group_by(bucket, series)
        .order_by(bucket, series)
    )
    return [
        {"bucket_start": datetime.fromtimestamp(int(b), UTC), "series": s, "count": n}
        for b, s, n in session.execute(stmt)
    ]


def outcome_counts(*, session: Session, since: datetime, until: datetime) -> dict[str, int]:
    stmt = (
        select(PredictionLog.outcome, func.count())
        .where(*_window(since, until))
        .group_by(PredictionLog.outcome)
    )
    return {outcome: n for outcome, n in session.execute(stmt)}


def latency_by_kind(*, session: Session, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Nearest-rank percentiles of successful predictions, computed with window functions."""
    ok = [*_window(since, until), PredictionLog.outcome == "ok", PredictionLog.latency_ms.is_not(None)]
    ranked = (
        select(
            PredictionLog.model_kind.label("kind"),
            PredictionLog.latency_ms.label("ms"),
            func.row_number()
            .over(partition_by=PredictionLog.model_kind, order_by=PredictionLog.latency_ms)
            .label("rank"),
            func.count().over(partition_by=PredictionLog.model_kind).label("n"),
        )
        .where(*ok)
        .subquery()
    )
    # ceil(p * n / 100) in integer arithmetic, which both backends do alike.
    rank_of = {p: (ranked.c.n * p + 99) // 100 for p in PERCENTILES}
    rows = session.execute(
        select(ranked.c.kind, ranked.c.rank, ranked.c.n, ranked.c.ms).where(
            or_(*(ranked.c.rank == r for r in rank_of.values()))
        )
    ).all()
    values: dict[str, dict[int, float]] = {}
    for kind, rank, n, ms in rows:
        for p in PERCENTILES:
            if rank == (n * p + 99) // 100:
                values.setdefault(kind, {})[p] = float(ms)
    summary = session.execute(
        select(
            PredictionLog.model_kind,
            func.count(),
            func.avg(PredictionLog.latency_ms),
            func.max(PredictionLog.latency_ms),
        )
        .where(*ok)
        .group_by(PredictionLog.model_kind)
        .order_by(PredictionLog.model_kind)
    ).all()
    return [
        {
            "model_kind": kind or "unknown",
            "count": n,
            "mean_ms": round(float(mean), 3),
            "max_ms": float(top),
            **{f"p{p}_ms": values.get(kind, {}).get(p, float(top)) for p in PERCENTILES},
        }
        for kind, n, mean, top in summary
    ]


def class_distribution(*, session: Session, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """How often each product type was the top prediction."""
    n = func.count().label("n")
    stmt = (
        select(PredictionLog.top_prdtypecode, Category.name, n)
        .outerjoin(Category, Category.prdtypecode == PredictionLog.top_prdtypecode)
        .where(
            *_window(since, until), PredictionLog.outcome == "ok", PredictionLog.top_prdtypecode.is_not(None)
        )
        .group_by(PredictionLog.top_prdtypecode, Category.name)
        .order_by(n.desc(), PredictionLog.top_prdtypecode)
    )
    return [
        {"prdtypecode": code, "category": name or str(code), "count": c}
        for code, name, c in session.execute(stmt)
    ]
