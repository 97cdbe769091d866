"""Monitoring reports of the daily monitoring DAG: live accuracy, confidence and drift (admins only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool

from api.deps import AdminUser, SessionDep
from api.params import Offset, limit_query
from api.schemas import MonitoringReportOut, Page
from db import monitoring
from pipelines import monitor

router = APIRouter(prefix="/monitoring", tags=["monitoring"])

Limit = Annotated[int, limit_query(100)]


@router.get("/reports", response_model=Page[MonitoringReportOut])
def list_reports(
    session: SessionDep, _admin: AdminUser, offset: Offset = 0, limit: Limit = 20
) -> Page[MonitoringReportOut]:
    """Monitoring reports, latest window first (admins only)."""
    total, rows = monitoring.list_reports(session=session, offset=offset, limit=limit)
    items = [MonitoringReportOut.model_validate(row) for row in rows]
    return Page[MonitoringReportOut](items=items, total=total, offset=offset, limit=limit)


@router.get("/reports/latest", response_model=MonitoringReportOut)
def latest_report(session: SessionDep, _admin: AdminUser) -> MonitoringReportOut:
    """The report of the latest monitored window (admins only)."""
    row = monitoring.latest_report(session=session)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No monitoring report yet")
    return MonitoringReportOut.model_validate(row)


@router.post("/reports/run", response_model=MonitoringReportOut, status_code=status.HTTP_201_CREATED)
async def run_report(request: Request, session: SessionDep, _admin: AdminUser) -> MonitoringReportOut:
    """Build and store the report of the last 24 hours now, as the monitoring DAG does (admins only)."""
    end = datetime.now(UTC)
    # The same function as the DAG's report task and `python -m pipelines.monitor`.
    await run_in_threadpool(monitor.monitor_window, request.app.state.settings, end - timedelta(days=1), end)
    row = monitoring.latest_report(session=session)
    if row is None:  # another run stored a later window in between: still not an error
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No monitoring report yet")
    return MonitoringReportOut.model_validate(row)
