"""Store operations that also keep the model versions table in step.

Shared by `make run`'s bootstrap, the retraining DAG, the admin API and the registry CLI:
the store's pointer is the truth about production; the table is its queryable history.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db import model_versions
from db.session import session_scope
from store.models import ModelStore, Promotion


def _parse_time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def ensure_recorded(session: Session, store: ModelStore, version: str) -> None:
    """Record a version the store has but the table does not (e.g. published by another tool)."""
    if model_versions.get_model_version(session=session, version=version) is None:
        manifest = store.manifest(version)
        model_versions.record_published(
            session=session,
            version=version,
            location=store.location(version),
            metrics=store.metrics(version),
            created_at=_parse_time(manifest.created_at),
        )


def publish_bundle(
    store: ModelStore, session_factory: sessionmaker[Session], bundle_dir: Path, *, exist_ok: bool = False
) -> str:
    """Publish a bundle (immutable) and record it as a candidate; returns its version."""
    version = store.publish(bundle_dir, exist_ok=exist_ok)
    with session_scope(session_factory) as session:
        ensure_recorded(session, store, version)
    return version


def promote_version(
    store: ModelStore,
    session_factory: sessionmaker[Session],
    version: str,
    *,
    gate: dict[str, Any] | None = None,
) -> Promotion:
    """Move the production pointer to `version` and record it (with the gate's decision)."""
    promotion = store.promote(version)
    with session_scope(session_factory) as session:
        ensure_recorded(session, store, version)
        model_versions.record_promotion(session=session, version=version, gate=gate)
    return promotion


def reject_version(
    store: ModelStore, session_factory: sessionmaker[Session], version: str, *, gate: dict[str, Any]
) -> None:
    """Record that the promotion gate refused `version` (it stays in the store, unpromoted)."""
    with session_scope(session_factory) as session:
        ensure_recorded(session, store, version)
        model_versions.record_rejection(session=session, version=version, gate=gate)


def rollback_production(store: ModelStore, session_factory: sessionmaker[Session]) -> Promotion:
    """Point production back at the previously promoted version and record it."""
    promotion = store.rollback()
    with session_scope(session_factory) as session:
        ensure_recorded(session, store, promotion.version)
        model_versions.record_promotion(session=session, version=promotion.version)
    return promotion
