"""The prediction-log row of a request and the metrics that go with it, written in one place.

`/predict` declares `LoggedPrediction` before its other dependencies: the record is open before
authentication runs, so that a request refused there (401, 403, 429, 503) is logged with its
status like an answered one, and every exception on the way out is mapped to the row's
`outcome`, `status_code` and `error` here rather than in the route. `/predict/batch` logs each
item as its own row through `publish` as well.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy.exc import SQLAlchemyError

from api.deps import RateLimitExceededError
from api.inputs import BodyReadTimeoutError, BodyTooLargeError, InputError
from db.session import is_unreachable


@dataclass
class PredictionRecord:
    """One row of `prediction_logs`, filled in as the request goes."""

    request_id: str
    user_id: int | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    inputs: dict[str, Any] = field(default_factory=dict)
    designation: str | None = None  # the title as typed (LOG_TITLE_MAX_CHARS; api/retention.py clears it)
    answer: dict[str, Any] = field(default_factory=dict)  # model fields: see routes.predict.ranked_answer
    model_version: str | None = None
    outcome: str = "error"
    status_code: int = 500
    error: str | None = None
    latency_ms: float | None = None
    started: float = field(default_factory=time.perf_counter, repr=False)

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def answered(self, logged: dict[str, Any]) -> None:
        self.answer = logged
        self.model_version = logged["model_version"]
        self.outcome, self.status_code, self.error = "ok", 200, None

    def failed(self, status_code: int, outcome: str, error: str) -> None:
        self.outcome, self.status_code, self.error = outcome, status_code, error

    def row(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "user_id": self.user_id,
            "created_at": self.created_at,
            "inputs": self.inputs,
            "predictions": [],
            "designation": self.designation,
            "model_version": self.model_version,
            **self.answer,
            "outcome": self.outcome,
            "status_code": self.status_code,
            "error": self.error,
            "latency_ms": self.latency_ms,
        }


def publish(state: Any, record: PredictionRecord) -> None:
    """Count the request in the metrics and hand its row to the log writer (never blocks)."""
    state.metrics.predictions.labels(record.answer.get("model_kind") or "none", record.outcome).inc()
    if record.outcome == "ok":
        state.metrics.predicted_class.labels(str(record.answer["top_prdtypecode"])).inc()
    state.log_writer.submit(record.row())


def failure(exc: BaseException) -> tuple[int, str, str]:
    """The status, outcome and error a failed prediction request is logged with."""
    if isinstance(exc, InputError):
        return exc.status_code, exc.outcome, exc.detail
    if isinstance(exc, HTTPException):  # from authentication
        return exc.status_code, "unauthorized" if exc.status_code == 401 else "forbidden", str(exc.detail)
    if isinstance(exc, RateLimitExceededError):
        return 429, "rate_limited", str(exc)
    if isinstance(exc, BodyTooLargeError):
        return 413, "too_large", "request body over the size limit"
    if isinstance(exc, BodyReadTimeoutError):
        return 408, "body_timeout", "request body not received in time"
    if isinstance(exc, SQLAlchemyError):
        # Only the user lookup touches the database, and no recently seen user matched.
        if is_unreachable(exc):
            return 503, "db_unavailable", "database unreachable"
        return 500, "error", type(exc).__name__
    return 500, "error", f"{type(exc).__name__}: {exc}"


async def logged_prediction(request: Request) -> AsyncIterator[PredictionRecord]:
    """The request's log record; logged and counted however the request ends."""
    record = PredictionRecord(request.state.request_id)
    try:
        yield record
    except Exception as exc:
        record.failed(*failure(exc))
        raise  # answered by the app's exception handlers (api/main.py)
    finally:
        record.latency_ms = record.elapsed_ms()
        publish(request.app.state, record)


# Function scope: the row is written when the route returns, before the answer is sent.
LoggedPrediction = Annotated[PredictionRecord, Depends(logged_prediction, scope="function")]
