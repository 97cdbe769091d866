"""Prediction logs: a seller's own history, and every log for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import AdminUser, CurrentUser, SessionDep
from api.params import IdQuery, Offset, TextQuery, UtcDateTime, limit_query
from api.schemas import LogOut, Page
from db import logs

router = APIRouter(prefix="/logs", tags=["logs"])

Limit = Annotated[int, limit_query(200)]
Since = Annotated[UtcDateTime | None, Query(description="Only logs at or after this time (ISO 8601)")]
Until = Annotated[UtcDateTime | None, Query(description="Only logs before this time (ISO 8601)")]


def _page(total: int, rows, offset: int, limit: int) -> Page[LogOut]:
    items = [
        LogOut.model_validate(log).model_copy(update={"username": name, "product": product})
        for log, name, product in rows
    ]
    return Page[LogOut](items=items, total=total, offset=offset, limit=limit)


def _check_range(since: datetime | None, until: datetime | None) -> None:
    if since and until and since >= until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must be before until")


@router.get("/me", response_model=Page[LogOut])
def my_logs(
    session: SessionDep,
    user: CurrentUser,
    since: Since = None,
    until: Until = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> Page[LogOut]:
    """The signed-in user's own prediction logs, newest first."""
    _check_range(since, until)
    total, rows = logs.query_logs(
        session=session, user_id=user.id, since=since, until=until, offset=offset, limit=limit
    )
    return _page(total, rows, offset, limit)


@router.get("", response_model=Page[LogOut])
def all_logs(
    session: SessionDep,
    _admin: AdminUser,
    user_id: IdQuery = None,
    username: TextQuery = None,
    model_kind: Literal["text", "image", "fusion"] | None = None,
    outcome: TextQuery = None,
    since: Since = None,
    until: Until = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> Page[LogOut]:
    """Every prediction log, filtered by user, model kind, outcome and time (admins only)."""
    _check_range(since, until)
    total, rows = logs.query_logs(
        session=session,
        user_id=user_id,
        username=username,
        model_kind=model_kind,
        outcome=outcome,
        since=since,
        until=until,
        offset=offset,
        limit=limit,
    )
    return _page(total, rows, offset, limit)
