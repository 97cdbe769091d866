"""Store operations that also keep the model versions table in step: the one promotion path.

Shared by `make run`'s bootstrap, the retraining DAG, the admin API and the registry CLI:
the store's pointer is the truth about production; the table is its queryable history.

Every promotion and rollback goes through `promote_version` / `rollback_production`, which
verify the target with `verify_servable` before the pointer moves: a version whose files do
not match its manifest, that is not a complete bundle, or that the serving runtime cannot load
and self-check is refused (`ChecksumMismatchError`, `UnservableVersionError`) and production
stays where it was.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db import model_versions
from db.session import session_scope
from store.model_store import Manifest, ModelStore, Promotion, UnservableVersionError

logger = logging.getLogger(__name__)


class DatabaseRecordError(RuntimeError):
    """The store was changed but recording it in the model versions table failed."""


def _parse_time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


@contextmanager
def _recording(session_factory: sessionmaker[Session], action: str) -> Iterator[Session]:
    """A session for recording a store change already made: any failure says exactly that."""
    try:
        with session_scope(session_factory) as session:
            yield session
    except Exception as exc:  # the store change is made: whatever failed, say so
        raise DatabaseRecordError(
            f"{action} done in the store, but recording it in the database failed: {exc}"
        ) from exc


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


def verify_servable(
    store: ModelStore, version: str, *, loader: Callable[[Path], object] | None = None
) -> Manifest:
    """Prove that the API could serve `version`: the bytes it would download, loaded as it loads them.

    Downloads every file to a scratch directory, checked against MANIFEST.json (a changed or
    missing file fails), then loads the copy with the serving runtime the API uses
    (`models.runtime.ModelRuntime.from_bundle`: bundle validation, ONNX load, self-check).

    Args:
        store: the model store.
        version: a complete version.
        loader: loads a bundle directory or raises; the serving runtime's loader by default.

    Returns:
        The version's manifest.

    Raises:
        VersionNotFoundError: unknown or incomplete version.
        ChecksumMismatchError: a stored file is missing or differs from the manifest.
        UnservableVersionError: the files verify, but the bundle does not load or check.
    """
    if loader is None:
        # Imported here: loading pulls ONNX Runtime, which most registry operations never need.
        from models.runtime import ModelRuntime

        loader = ModelRuntime.from_bundle
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"verify-{version}-") as scratch:
        path = store.download(version, scratch)
        try:
            loader(path)
        except Exception as exc:  # BundleError, or whatever a corrupt model file makes the runtime raise
            raise UnservableVersionError(version, _without(str(exc), scratch)) from exc
    logger.info(
        "verified %s: files match, loads and self-checks (%.1f s)", version, time.perf_counter() - started
    )
    return store.manifest(version)


def _without(message: str, scratch: str) -> str:
    # The scratch directory is gone by the time anyone reads the message: name the bundle instead.
    return message.replace(str(Path(scratch).resolve()), "<bundle>").replace(scratch, "<bundle>")


def publish_bundle(
    store: ModelStore, session_factory: sessionmaker[Session], bundle_dir: Path, *, exist_ok: bool = False
) -> str:
    """Publish a bundle (immutable) and record it as a candidate; returns its version."""
    version = store.publish(bundle_dir, exist_ok=exist_ok)
    record_published(store, session_factory, version)
    return version


def record_published(store: ModelStore, session_factory: sessionmaker[Session], version: str) -> None:
    """Record a version already in the store as a candidate (nothing when it is recorded)."""
    with _recording(session_factory, "publish") as session:
        ensure_recorded(session, store, version)


def promote_version(
    store: ModelStore,
    session_factory: sessionmaker[Session],
    version: str,
    *,
    gate: dict[str, Any] | None = None,
) -> Promotion:
    """Verify `version`, move the production pointer to it and record it (with the gate's decision).

    Raises:
        VersionNotFoundError, ChecksumMismatchError, UnservableVersionError: refused; the
            pointer did not move.
        DatabaseRecordError: the pointer moved but the table could not be updated.
    """
    promotion = store.promote(version, verify=lambda target: verify_servable(store, target))
    with _recording(session_factory, promotion.action) as session:
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
    """Verify the previously promoted version, point production back at it and record it.

    Raises:
        NothingToRollBackError: no earlier promotion.
        VersionNotFoundError, ChecksumMismatchError, UnservableVersionError: the target is
            refused; the pointer did not move.
        DatabaseRecordError: the pointer moved but the table could not be updated.
    """
    promotion = store.rollback(verify=lambda target: verify_servable(store, target))
    with _recording(session_factory, promotion.action) as session:
        ensure_recorded(session, store, promotion.version)
        model_versions.record_promotion(session=session, version=promotion.version)
    return promotion
