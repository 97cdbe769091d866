"""Request and response schemas of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from api.params import DbText

Role = Literal["admin", "seller"]
USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]+$"
# A request id: what /predict answers with, what a client may send as X-Request-ID, what a
# product refers to. Ids outside it (too long for the logs' column, odd bytes) are replaced.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9-]{1,36}$"


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires")
    role: Role


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=3, max_length=64, pattern=USERNAME_PATTERN)
    password: str = Field(min_length=8, max_length=128)
    role: Role = "seller"


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=128)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    is_active: bool


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    is_active: bool
    created_at: datetime


class Message(BaseModel):
    detail: str


class LogOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    request_id: str
    user_id: int | None
    username: str | None = None
    created_at: datetime
    inputs: dict
    model_kind: str | None
    model_version: str | None
    predictions: list
    top_prdtypecode: int | None
    top_probability: float | None
    suggestion_size: int | None
    latency_ms: float | None
    outcome: str
    status_code: int
    error: str | None
    designation: str | None = Field(
        default=None, description="The title as typed (cut to LOG_TITLE_MAX_CHARS; cleared after retention)"
    )
    product: int | None = Field(
        default=None, description="Id of the product the seller saved from it (GET /products/{id})"
    )


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


LabelStatus = Literal["unverified", "verified", "quarantined"]


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    product_id: str
    designation: str
    description: str
    image_ref: str | None
    prdtypecode: int
    source: str
    label_status: LabelStatus
    quarantine_reason: str | None
    request_id: str | None
    created_by: int | None
    created_at: datetime


class ProductUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label_status: LabelStatus
    reason: DbText | None = Field(default=None, max_length=2000)


class CategoryOut(BaseModel):
    prdtypecode: int
    category: str


# -- /predict and /predict/batch ---------------------------------------------------------------


class Recommendation(BaseModel):
    prdtypecode: int
    category: str
    probability: float


class PredictResponse(BaseModel):
    request_id: str
    model: Literal["text", "image", "fusion"]
    model_version: str
    predictions: list[Recommendation]
    suggestions: list[Recommendation]
    latency_ms: float


class BatchItemError(BaseModel):
    request_id: str
    status_code: int
    detail: str


class BatchResponse(BaseModel):
    items: list[PredictResponse | BatchItemError] = Field(
        description="One answer per item, in input order: a /predict answer or an error"
    )
    answered: int
    failed: int
    latency_ms: float


# -- /monitoring --------------------------------------------------------------------------------


class MonitoringReportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    window_start: datetime
    window_end: datetime
    model_version: str | None
    flagged: bool
    flags: list[dict[str, Any]]
    report: dict[str, Any]


# -- /stats -------------------------------------------------------------------------------------

Bucket = Literal["minute", "hour", "day"]


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
