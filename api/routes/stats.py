"""`GET /stats`: prediction logs aggregated for the admin console's charts.

The queries live in `db.stats` (counting, bucketing and percentiles in SQL) and
`db.monitoring.confirmed_predictions` (the live-accuracy query the monitoring DAG shares); the
route checks the window and shapes the answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy.orm import Session

from api.deps import AdminUser, SessionDep
from api.params import UtcDateTime
from api.schemas import Bucket, ClassCount, HitRate, LatencyStats, Stats, TrafficPoint
from db import stats
from db.monitoring import confirmed_predictions

router = APIRouter(tags=["stats"])

BUCKET_SECONDS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
DEFAULT_WINDOW = timedelta(days=1)
MAX_BUCKETS = 2000


def pick_bucket(span: timedelta) -> Bucket:
    """The finest bucket that keeps a chart readable over `span`."""
    if span <= timedelta(hours=3):
        return "minute"
    if span <= timedelta(days=7):
        return "hour"
    return "day"


def hit_rates(*, session: Session, since: datetime, until: datetime) -> list[HitRate]:
    """Where sellers confirmed a product: was it the top prediction, was it in the suggestion set?

    The confirmed predictions are those the monitoring DAG judges (`db.monitoring`): a request
    confirmed more than once counts once, with its latest product; quarantined products do not
    count.
    """
    tallies: dict[str, dict[str, int]] = {}
    for c in confirmed_predictions(session=session, since=since, until=until):
        for key in (c.model_kind or "unknown", "all"):
            t = tallies.setdefault(
                key, dict.fromkeys(("confirmed", "top1", "in_set", "unknown", "sizes", "sized"), 0)
            )
            t["confirmed"] += 1
            t["top1"] += int(c.top_prdtypecode == c.confirmed)
            if c.suggestion_size is not None:
                t["sizes"] += c.suggestion_size
                t["sized"] += 1
                if c.confirmed in c.ranked[: c.suggestion_size]:
                    t["in_set"] += 1
                elif c.suggestion_size > len(c.ranked):
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
    outcomes = stats.outcome_counts(session=session, since=since, until=until)
    return Stats(
        since=since,
        until=until,
        bucket=bucket,
        bucket_seconds=seconds,
        requests=sum(outcomes.values()),
        outcomes=outcomes,
        traffic=[
            TrafficPoint(**point)
            for point in stats.traffic_by_bucket(
                session=session, since=since, until=until, bucket_seconds=seconds
            )
        ],
        latency=[
            LatencyStats(**row) for row in stats.latency_by_kind(session=session, since=since, until=until)
        ],
        classes=[
            ClassCount(**row) for row in stats.class_distribution(session=session, since=since, until=until)
        ],
        hit_rate=hit_rates(session=session, since=since, until=until),
    )


def _aware(moment: datetime) -> datetime:
    # Naive query times are taken as UTC, like the stored timestamps (SQLite keeps no offset).
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
