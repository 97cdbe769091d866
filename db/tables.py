"""ORM tables (SQLAlchemy 2). The schema itself is created only by Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names so that migrations (and their downgrades) work on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; Postgres gets a real BIGINT.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

ROLES = ("admin", "seller")
LABEL_STATUSES = ("unverified", "verified", "quarantined")
MODEL_STATUSES = ("candidate", "production", "retired", "rejected")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONType, list[Any]: JSONType}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'seller')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="seller")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # In every token; bumped by logout, deactivation and password change, which revokes the
    # tokens issued before.
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# `ADMIN` next to `admin` would be two accounts a person cannot tell apart; logins look names
# up through the same expression, so this index also serves them.
Index("uq_users_username_lower", func.lower(User.username), unique=True)


class LoginThrottle(Base):
    """Login attempts per key: a client address, a (username, address) pair or a username.

    Every key of an attempt is counted before its password is hashed (db/users.py); a key over
    its limit is locked for a while, twice as long each time it is locked again.
    """

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lockouts: Mapped[int] = mapped_column(Integer, default=0)
    # When the row stops mattering (window and any lock over): rows past it are pruned.
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Category(Base):
    __tablename__ = "categories"

    prdtypecode: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))


class PredictionLog(Base):
    __tablename__ = "prediction_logs"
    __table_args__ = (
        Index("ix_prediction_logs_user_created", "user_id", "created_at"),
        Index("ix_prediction_logs_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_kind: Mapped[str | None] = mapped_column(String(16), index=True)
    model_version: Mapped[str | None] = mapped_column(String(64))
    predictions: Mapped[list[Any]] = mapped_column(default=list)
    top_prdtypecode: Mapped[int | None] = mapped_column(Integer)
    top_probability: Mapped[float | None] = mapped_column(Float)
    suggestion_size: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(32), index=True)
    status_code: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    # The title as typed, cut to LOG_TITLE_MAX_CHARS and cleared after LOG_TITLE_RETENTION_DAYS.
    designation: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User | None] = relationship(lazy="raise")


class Product(Base):
    """A labelled listing of the product database, used for retraining."""

    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("label_status IN ('unverified', 'verified', 'quarantined')", name="label_status"),
        Index("ix_products_prdtypecode", "prdtypecode"),
        Index("ix_products_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    product_id: Mapped[str] = mapped_column(String(64), unique=True)
    designation: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    image_ref: Mapped[str | None] = mapped_column(String(255))
    prdtypecode: Mapped[int] = mapped_column(ForeignKey("categories.prdtypecode"))
    source: Mapped[str] = mapped_column(String(32), default="seller")
    label_status: Mapped[str] = mapped_column(String(16), default="unverified", index=True)
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    # One product per prediction (migration 0003): a second confirmation updates this one.
    request_id: Mapped[str | None] = mapped_column(String(36), index=True, unique=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    """Every model version the registry has seen; promotions and rollbacks move `status`."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint("status IN ('candidate', 'production', 'retired', 'rejected')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    location: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default="candidate", index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MonitoringReport(Base):
    """One live-quality report of the monitoring pipeline."""

    __tablename__ = "monitoring_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_version: Mapped[str | None] = mapped_column(String(64))
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    flags: Mapped[list[Any]] = mapped_column(default=list)


class ShadowPrediction(Base):
    """The answer of the shadowed version to a live request (migration 0005), beside production's log row."""

    __tablename__ = "shadow_predictions"
    __table_args__ = (
        UniqueConstraint("request_id", "model_version", name="uq_shadow_predictions_request_id"),
        Index("ix_shadow_predictions_version_created", "model_version", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(36))
    model_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    predictions: Mapped[list[Any]] = mapped_column(default=list)
    top_prdtypecode: Mapped[int | None] = mapped_column(Integer)
    suggestion_size: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
