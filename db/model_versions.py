"""Data access for the model versions table: the registry's record of publications and decisions.

The object store holds the truth about which version is in production (its pointer); this
table is the queryable history that the API, the admin UI and the pipelines read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.tables import ModelVersion


class ModelVersionNotFoundError(LookupError):
    """The version was never recorded as published."""


def get_model_version(*, session: Session, version: str) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.version == version))


def get_production_version(*, session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.status == "production"))


def list_model_versions(*, session: Session) -> list[ModelVersion]:
    """Every recorded version, newest first."""
    return list(
        session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc()))
    )


def record_published(
    *,
    session: Session,
    version: str,
    location: str,
    metrics: dict[str, Any],
    created_at: datetime | None = None,
) -> ModelVersion:
    """Record a newly published version as a candidate (idempotent: a second call updates nothing but
    location and metrics, and never changes the status)."""
    row = get_model_version(session=session, version=version)
    if row is None:
        row = ModelVersion(version=version, location=location, status="candidate", metrics=metrics)
        if created_at is not None:
            row.created_at = created_at
        session.add(row)
        try:
            session.commit()
        except IntegrityError:  # a concurrent recorder won: update its row instead
            session.rollback()
            row = get_model_version(session=session, version=version)
            if row is None:
                raise
    if (row.location, row.metrics) != (location, metrics):
        row.location, row.metrics = location, metrics
        session.commit()
    session.refresh(row)
    return row


def record_promotion(*, session: Session, version: str, gate: dict[str, Any] | None = None) -> ModelVersion:
    """Mark `version` as production (the previous production becomes retired).

    Also used for rollbacks. `gate` is the promotion gate's decision, kept when None.

    Raises:
        ModelVersionNotFoundError: the version was never recorded as published.
    """
    row = get_model_version(session=session, version=version)
    if row is None:
        raise ModelVersionNotFoundError(f"model version {version} is not recorded")
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.status == "production", ModelVersion.version != version)
        .values(status="retired")
    )
    row.status = "production"
    row.promoted_at = datetime.now(UTC)
    if gate is not None:
        row.gate = gate
    session.commit()
    session.refresh(row)
    return row


def record_rejection(*, session: Session, version: str, gate: dict[str, Any]) -> ModelVersion:
    """Mark a candidate as refused by the promotion gate, keeping the gate's figures.

    Raises:
        ModelVersionNotFoundError: the version was never recorded as published.
        ValueError: the version is the production one (roll back or promote another instead).
    """
    row = get_model_version(session=session, version=version)
    if row is None:
        raise ModelVersionNotFoundError(f"model version {version} is not recorded")
    if row.status == "production":
        raise ValueError(f"model version {version} is in production and cannot be rejected")
    row.status = "rejected"
    row.gate = gate
    session.commit()
    session.refresh(row)
    return row
