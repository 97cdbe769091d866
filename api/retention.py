"""Clearing typed titles from the prediction log once LOG_TITLE_RETENTION_DAYS have passed.

A task of the API rather than of the monitoring DAG: the embedded default (`make run`) runs no
Airflow, and the rule must hold there too. It runs at start and then every
LOG_TITLE_PURGE_SECONDS in a daemon thread; with several replicas each runs it, which is
harmless (the update is idempotent). A database outage only delays it to the next run.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from db.logs import clear_typed_titles

logger = logging.getLogger(__name__)


class TitleRetention:
    """Periodically clears typed titles older than the retention period."""

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings) -> None:
        self._session_factory = session_factory
        self._retention = timedelta(days=settings.LOG_TITLE_RETENTION_DAYS)
        self._interval = settings.LOG_TITLE_PURGE_SECONDS
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: datetime | None = None) -> int:
        """Clear the titles logged before `now` minus the retention; returns how many."""
        before = (now or datetime.now(UTC)) - self._retention
        try:
            with self._session_factory() as session:
                cleared = clear_typed_titles(session=session, before=before)
        except Exception as exc:  # the database being down must not kill the thread
            logger.warning("clearing typed titles from the prediction log failed: %s", exc)
            return 0
        if cleared:
            logger.info("cleared the typed title of %d prediction logs older than %s", cleared, before)
        return cleared

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="title-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self._interval)
