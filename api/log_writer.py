"""Prediction logs written off the request path, in batches, without losing entries.

Requests hand a finished log row to `LogWriter.submit` (a queue put, microseconds). A
background thread inserts rows in batches; a failed insert (database hiccup) is retried
with backoff and the batch is kept until it lands. On shutdown everything queued is
flushed; rows that still cannot be written are spilled to a JSON-lines file that the
next start replays first, so nothing is dropped.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from db.tables import PredictionLog

logger = logging.getLogger(__name__)


class LogWriter:
    """A background batch writer of `prediction_logs` rows."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        batch_size: int = 200,
        flush_seconds: float = 0.5,
        max_queue: int = 100_000,
        spill_path: Path | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        self._session_factory = session_factory
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self._spill_path = spill_path
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[dict[str, Any]] = []
        self.written = 0
        self.failures = 0

    # -- request side -------------------------------------------------------------------
    def submit(self, row: dict[str, Any]) -> None:
        """Queue one row; blocks only if the queue is full (back-pressure, never loss)."""
        self._queue.put(row)

    @property
    def depth(self) -> int:
        """Rows waiting to be written (queued plus the batch in flight)."""
        return self._queue.qsize() + len(self._pending)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._replay_spill()
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Flush everything queued (retrying for up to `timeout` s), then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        self._drain_into_pending()
        while self._pending and time.monotonic() < deadline:
            if not self._write_pending():
                time.sleep(0.2)
        if self._pending:
            self._spill(self._pending)
            self._pending = []

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row submitted so far is written (for tests and admin tools)."""
        deadline = time.monotonic() + timeout
        while self.depth and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.depth == 0

    # -- writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            if not self._pending:
                try:
                    self._pending.append(self._queue.get(timeout=self._flush_seconds))
                except queue.Empty:
                    continue
                self._drain_into_pending()
            if self._write_pending():
                backoff = 0.1
            else:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    def _drain_into_pending(self) -> None:
        while len(self._pending) < self._batch_size:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break

    def _write_pending(self) -> bool:
        batch = self._pending[: self._batch_size]
        try:
            with self._session_factory() as session:
                session.execute(insert(PredictionLog), batch)
                session.commit()
        except Exception as exc:  # any database error: keep the batch and retry
            self.failures += 1
            logger.warning("writing %d prediction logs failed (will retry): %s", len(batch), exc)
            return False
        del self._pending[: len(batch)]
        self.written += len(batch)
        if len(self._pending) < self._batch_size:
            self._drain_into_pending()
        return True

    # -- spill file (last resort at shutdown) ---------------------------------------------
    def _spill(self, rows: list[dict[str, Any]]) -> None:
        if self._spill_path is None:
            logger.error("could not write %d prediction logs and no spill file is configured", len(rows))
            return
        self._spill_path.parent.mkdir(parents=True, exist_ok=True)
        with self._spill_path.open("a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, default=_json_default) + "\n")
        logger.error(
            "database unreachable at shutdown: spilled %d prediction logs to %s", len(rows), self._spill_path
        )

    def _replay_spill(self) -> None:
        if self._spill_path is None or not self._spill_path.is_file():
            return
        rows = []
        for line in self._spill_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                row["created_at"] = datetime.fromisoformat(row["created_at"])
                rows.append(row)
        replaying = self._spill_path.with_suffix(".replaying")
        self._spill_path.replace(replaying)
        for row in rows:
            self._queue.put(row)
        replaying.unlink()
        logger.info("replaying %d spilled prediction logs", len(rows))


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
