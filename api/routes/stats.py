"""`GET /stats`: prediction logs aggregated for the admin console's charts.

Counting, bucketing and percentiles run in the database (window functions and integer epoch
arithmetic, the same SQL on SQLite and Postgres); only the confirmed predictions, one row per
product a seller confirmed, come back to Python to be matched against the logged ranking.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel
from sqlalchemy import BigInteger, Integer, case, cast, func, literal_column, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from api.deps import AdminUser, SessionDep
from api.params import UtcDateTime
from db.tables import Category, PredictionLog, Product

router = APIRouter(tags=["stats"])

Bucket = Literal["minute", "hour", "day"]
BUCKET_SECONDS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
PERCENTILES = (50, 90, 95, 99)
DEFAULT_WINDOW = timedelta(days=1)
MAX_BUCKETS = 2000
# Requests that failed are one series of their own: they have no (or no meaningful) model kind.
FAILED = "failed"


class TrafficPoint(BaseModel):
    bucket_start: datetime
    series: str  # text | image | fusion | failed
    count: int


class LatencyStats(BaseModel):
    model_kind: str
    count: int
    mean_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float


class ClassCount(BaseModel):
    prdtypecode: int
    category: str
    count: int


class HitRate(BaseModel):
    model_kind: str
    confirmed: int
    top1_hits: int
    top1_rate: float | None
    in_suggestions: int
    # Sets larger than the logged top_k cannot always be checked; they are left out of the rate.
    suggestions_unknown: int
    suggestion_rate: float | None
    mean_suggestion_size: float | None


class Stats(BaseModel):
    since: datetime
    until: datetime
    bucket: Bucket
    bucket_seconds: int
    requests: int
    outcomes: dict[str, int]
    traffic: list[TrafficPoint]
    latency: list[LatencyStats]
    classes: list[ClassCount]
    hit_rate: list[HitRate]


def pick_bucket(span: timedelta) -> Bucket:
    """The finest bucket that keeps a chart readable over `span`."""
    if span <= timedelta(hours=3):
        return "minute"
    if span <= timedelta(days=7):
        return "hour"
    return "day"


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
) -> list[TrafficPoint]:
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
        TrafficPoint(bucket_start=datetime.fromtimestamp(int(b), UTC), series=s, count=n)
        for b, s, n in session.execute(stmt)
    ]


def outcome_counts(*, session: Session, since: datetime, until: datetime) -> dict[str, int]:
    stmt = (
        select(PredictionLog.outcome, func.count())
        .where(*_window(since, until))
        .group_by(PredictionLog.outcome)
    )
    return {outcome: n for outcome, n in session.execute(stmt)}


def latency_by_kind(*, session: Session, since: datetime, until: datetime) -> list[LatencyStats]:
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
        LatencyStats(
            model_kind=kind or "unknown",
            count=n,
            mean_ms=round(float(mean), 3),
            max_ms=float(top),
            **{f"p{p}_ms": values.get(kind, {}).get(p, float(top)) for p in PERCENTILES},
        )
        for kind, n, mean, top in summary
    ]


def class_distribution(*, session: Session, since: datetime, until: datetime) -> list[ClassCount]:
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
        ClassCount(prdtypecode=code, category=name or str(code), count=c)
        for code, name, c in session.execute(stmt)
    ]


def hit_rates(*, session: Session, since: datetime, until: datetime) -> list[HitRate]:
    """Where sellers confirmed a product: was it the top prediction, was it in the suggestion set?

    A request confirmed more than once counts once, with its latest product.
    """
    stmt = (
        select(
            PredictionLog.request_id,
            PredictionLog.model_kind,
            PredictionLog.top_prdtypecode,
            PredictionLog.predictions,
            PredictionLog.suggestion_size,
            Product.prdtypecode,
        )
        .join(Product, Product.request_id == PredictionLog.request_id)
        .where(*_window(since, until), PredictionLog.outcome == "ok")
        .order_by(Product.id)
        .execution_options(yield_per=1000)
    )
    latest: dict[str, tuple] = {}
    for request_id, *row in session.execute(stmt):
        latest[request_id] = tuple(row)
    tallies: dict[str, dict[str, int]] = {}
    for kind, top, predictions, size, confirmed in latest.values():
        for key in (kind or "unknown", "all"):
            t = tallies.setdefault(
                key, dict.fromkeys(("confirmed", "top1", "in_set", "unknown", "sizes", "sized"), 0)
            )
            t["confirmed"] += 1
            t["top1"] += int(top == confirmed)
            ranked = [p.get("prdtypecode") for p in predictions or [] if isinstance(p, dict)]
            if size is not None:
                t["sizes"] += size
                t["sized"] += 1
                if confirmed in ranked[:size]:
                    t["in_set"] += 1
                elif size > len(ranked):
                    t["unknown"] += 1
    order = {"text": 0, "image": 1, "fusion": 2, "all": 9}
    return [
        HitRate(
            model_kind=kind,
            confirmed=t["confirmed"],
            top1_hits=t["top1"],
            top1_rate=round(t["top1"] / t["confirmed"], 4),
            in_suggestions=t["in_set"],
            suggestions_unknown=t["unknown"],
            suggestion_rate=round(t["in_set"] / checked, 4)
            if (checked := t["sized"] - t["unknown"])
            else None,
            mean_suggestion_size=round(t["sizes"] / t["sized"], 3) if t["sized"] else None,
        )
        for kind, t in sorted(tallies.items(), key=lambda item: (order.get(item[0], 5), item[0]))
    ]


@router.get("/stats", response_model=Stats)
def read_stats(
    session: SessionDep,
    _admin: AdminUser,
    since: Annotated[
        UtcDateTime | None, Query(description="Start of the window (ISO 8601); default a day ago")
    ] = None,
    until: Annotated[
        UtcDateTime | None, Query(description="End of the window (ISO 8601); default now")
    ] = None,
    bucket: Annotated[
        Bucket | None, Query(description="Traffic bucket; default from the window's length")
    ] = None,
) -> Stats:
    """Traffic, latency, predicted classes and confirmed hit rates over a time window (admins only)."""
    until = _aware(until) if until else datetime.now(UTC)
    try:
        since = _aware(since) if since else until - DEFAULT_WINDOW
    except OverflowError as exc:  # `until` within a day of year 1
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "until is too early") from exc
    if since >= until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must be before until")
    bucket = bucket or pick_bucket(until - since)
    seconds = BUCKET_SECONDS[bucket]
    if (until - since).total_seconds() / seconds > MAX_BUCKETS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"Over {MAX_BUCKETS} {bucket} buckets: pick a coarser bucket",
        )
    outcomes = outcome_counts(session=session, since=since, until=until)
    return Stats(
        since=since,
        until=until,
        bucket=bucket,
        bucket_seconds=seconds,
        requests=sum(outcomes.values()),
        outcomes=outcomes,
        traffic=traffic_by_bucket(session=session, since=since, until=until, bucket_seconds=seconds),
        latency=latency_by_kind(session=session, since=since, until=until),
        classes=class_distribution(session=session, since=since, until=until),
        hit_rate=hit_rates(session=session, since=since, until=until),
    )


def _aware(moment: datetime) -> datetime:
    # Naive query times are taken as UTC, like the stored timestamps (SQLite keeps no offset).
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
