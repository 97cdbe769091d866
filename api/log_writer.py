"""Prediction logs written off the request path, in batches, without losing or jamming any.

What the service promises about a row handed to `LogWriter.submit` (docs/security.md):

- `submit` never blocks the event loop: it is a `put_nowait` on a bounded queue; when the
  queue is full the row is appended to this process's spill file instead (a buffered write;
  the writer thread fsyncs the file in batches).
- A background thread inserts rows in batches. When the database is unreachable the batch
  is kept and retried with backoff. When a batch fails for any other reason (a duplicate
  `request_id`, a value the database refuses), the rows are written one by one and each one
  that still fails goes to the dead-letter file with its error: one bad row never blocks
  the others.
- Spill files (this process's and those left by earlier processes or other workers) are
  replayed while the database answers, without a restart. A file is claimed with an
  exclusive `flock`, so two workers never replay the same file, and the file of a live
  writer is never replayed under it.
- `stop()` writes what it can within `drain_seconds`, then spills everything still queued
  (fsync'd): after a shutdown every submitted row is in the database, a spill file or the
  dead-letter file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from db.session import is_unreachable
from db.tables import PredictionLog

logger = logging.getLogger(__name__)

SPILL_GLOB = "spill-*.jsonl"
DEAD_LETTER_FILE = "dead-letter.jsonl"
MAX_ERROR_CHARS = 2000


def clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of `row` the database can store: no NUL characters, errors of bounded length."""
    return {key: _clean(value) for key, value in row.items()}


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")[:MAX_ERROR_CHARS] if value else value
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class SpillLog:
    """Append-only JSON-lines files of rows that could not be queued or written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._handle: IO[str] | None = None
        self._path: Path | None = None
        self._unsynced = 0
        self.spilled = 0

    # -- this process's own file --------------------------------------------------------
    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append rows to this process's file (buffered; `sync` makes them durable)."""
        lines = "".join(json.dumps(row, default=_json_default) + "\n" for row in rows)
        with self._lock:
            handle = self._open()
            handle.write(lines)
            handle.flush()  # to the OS now, so a crash of this process loses nothing
            self._unsynced += len(rows)
            self.spilled += len(rows)

    def sync(self) -> None:
        """fsync what was appended since the last call."""
        with self._lock:
            if self._handle is not None and self._unsynced:
                os.fsync(self._handle.fileno())
                self._unsynced = 0

    def rotate(self) -> None:
        """Close this process's file (fsync'd) so that it can be replayed; the next append opens a new one."""
        with self._lock:
            if self._handle is None:
                return
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()  # closing releases the flock
            self._handle, self._path, self._unsynced = None, None, 0

    @property
    def has_own_rows(self) -> bool:
        return self._handle is not None

    def _open(self) -> IO[str]:
        if self._handle is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"spill-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._path = self.directory / name
            handle = self._path.open("a", encoding="utf-8")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # ours while open: never replayed under us
            self._handle = handle
        return self._handle

    # -- replay -------------------------------------------------------------------------
    @contextlib.contextmanager
    def claim(self) -> Iterator[list[tuple[Path, IO[str]]]]:
        """The spill files no live writer holds, each locked for the caller until the block ends."""
        claimed: list[tuple[Path, IO[str]]] = []
        try:
            for path in sorted(self.directory.glob(SPILL_GLOB)) if self.directory.is_dir() else []:
                if path == self._path:
                    continue
                try:
                    handle = path.open("r+", encoding="utf-8")
                except FileNotFoundError:  # replayed and removed by another worker just now
                    continue
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a live writer's file, or another worker replays it
                    handle.close()
                    continue
                if not path.exists():  # removed between our open and our lock
                    handle.close()
                    continue
                claimed.append((path, handle))
            yield claimed
        finally:
            for _, handle in claimed:
                handle.close()

    def pending_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [p for p in self.directory.glob(SPILL_GLOB) if p != self._path]


def read_rows(handle: IO[str]) -> list[dict[str, Any]]:
    """The rows of a spill file (a torn last line, from a crash mid-write, is skipped)."""
    handle.seek(0)
    rows = []
    for line in handle:
        if not line.endswith("\n"):
            logger.warning("skipping a torn line at the end of a spill file")
            break
        if line.strip():
            row = json.loads(line)
            row["created_at"] = datetime.fromisoformat(row["created_at"])
            rows.append(row)
    return rows


# Put in the queue by stop(): ends the writer thread's idle wait at once, never written.
_WAKE: dict[str, Any] = {}


class LogWriter:
    """A background batch writer of `prediction_logs` rows."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        batch_size: int = 200,
        flush_seconds: float = 0.5,
        max_queue: int = 100_000,
        spill_dir: Path | None = None,
        max_backoff: float = 5.0,
        drain_seconds: float = 10.0,
        on_dead_letter: Callable[[int], None] | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self._spill = SpillLog(spill_dir) if spill_dir is not None else None
        self._max_backoff = max_backoff
        self._drain_seconds = drain_seconds
        self._on_dead_letter = on_dead_letter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[dict[str, Any]] = []
        self._next_replay = 0.0
        self._next_warning = 0.0
        self._fallback: deque[dict[str, Any]] = deque()  # queue full and no spill directory
        self.written = 0
        self.failures = 0
        self.dead_letters = 0
        self.replayed = 0

    # -- request side -------------------------------------------------------------------
    def submit(self, row: dict[str, Any]) -> None:
        """Queue one row without blocking; a full queue spills it to disk instead."""
        row = clean_row(row)
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            if self._spill is not None:
                self._spill.append([row])
            else:  # tests without a spill directory: keep it in memory rather than lose it
                self._fallback.append(row)

    @property
    def depth(self) -> int:
        """Rows waiting to be written (queued plus the batch in flight)."""
        return self._queue.qsize() + len(self._pending) + len(self._fallback)

    @property
    def spilled(self) -> int:
        """Rows appended to this process's spill files so far."""
        return self._spill.spilled if self._spill is not None else 0

    @property
    def backlog_files(self) -> int:
        """Spill files waiting to be replayed (this process's open one included)."""
        if self._spill is None:
            return 0
        return len(self._spill.pending_files()) + int(self._spill.has_own_rows)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Write everything queued within `timeout` s (default `drain_seconds`), spill the rest."""
        deadline = time.monotonic() + (self._drain_seconds if timeout is None else timeout)
        self._stop.set()
        with contextlib.suppress(queue.Full):  # a full queue: the thread is not waiting on it
            self._queue.put_nowait(_WAKE)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():  # stuck in a database call: spill behind its back
                logger.error("the log writer thread did not stop in time; spilling what is queued")
        self._drain_into_pending(everything=True)
        while self._pending and time.monotonic() < deadline:
            if not self._write_pending():
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        rest = self._pending + list(self._fallback)
        self._pending = []
        self._fallback.clear()
        if self._spill is not None:
            if rest:
                self._spill.append(rest)
                logger.error("database unreachable at shutdown: spilled %d prediction logs", len(rest))
            self._spill.rotate()
        elif rest:
            logger.error("could not write %d prediction logs and no spill directory is configured", len(rest))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row submitted so far is written (for tests and admin tools)."""
        deadline = time.monotonic() + timeout
        while (self.depth or self.backlog_files) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.depth == 0 and self.backlog_files == 0

    # -- writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            if not self._pending:
                if self._fallback:
                    while self._fallback and len(self._pending) < self._batch_size:
                        self._pending.append(self._fallback.popleft())
                else:
                    try:
                        row = self._queue.get(timeout=self._flush_seconds)
                    except queue.Empty:
                        self._sync_and_replay()
                        continue
                    if row is _WAKE:
                        continue
                    self._pending.append(row)
                self._drain_into_pending()
            if self._write_pending():
                backoff = 0.1
                if self._queue.qsize() < self._batch_size:
                    self._sync_and_replay()
            else:
                if self._spill is not None:
                    self._spill.sync()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    def _drain_into_pending(self, *, everything: bool = False) -> None:
        while everything or len(self._pending) < self._batch_size:
            try:
                row = self._queue.get_nowait()
            except queue.Empty:
                break
            if row is not _WAKE:
                self._pending.append(row)

    def _write_pending(self) -> bool:
        """Write the first batch of `_pending`; False when the database is unreachable."""
        batch = self._pending[: self._batch_size]
        done = self._write(batch)
        del self._pending[:done]
        if done < len(batch):
            return False
        if len(self._pending) < self._batch_size:
            self._drain_into_pending()
        return True

    def _write(self, batch: list[dict[str, Any]]) -> int:
        """Insert `batch`; returns how many rows are done (written or dead-lettered), in order."""
        try:
            with self._session_factory() as session:
                session.execute(insert(PredictionLog), batch)
                session.commit()
        except Exception as exc:
            if is_unreachable(exc):
                self.failures += 1
                now = time.monotonic()
                if now >= self._next_warning:  # once per 5 s during an outage, not per retry
                    self._next_warning = now + 5.0
                    logger.warning(
                        "writing %d prediction logs failed (will retry; %d queued): %s",
                        len(batch),
                        self.depth,
                        _brief(exc),
                    )
                return 0
            logger.warning("a batch of %d prediction logs was refused; isolating the bad rows", len(batch))
            return self._write_one_by_one(batch)
        self.written += len(batch)
        return len(batch)

    def _write_one_by_one(self, batch: list[dict[str, Any]]) -> int:
        for done, row in enumerate(batch):
            try:
                with self._session_factory() as session:
                    session.execute(insert(PredictionLog), [row])
                    session.commit()
            except Exception as exc:
                if is_unreachable(exc):
                    self.failures += 1
                    return done
                if not self._already_written(row):
                    self._dead_letter(row, exc)
                continue
            self.written += 1
        return len(batch)

    def _already_written(self, row: dict[str, Any]) -> bool:
        """True when this very row is in the table (a replay after a crash mid-replay)."""
        try:
            with self._session_factory() as session:
                existing = session.scalar(
                    select(PredictionLog).where(PredictionLog.request_id == row.get("request_id"))
                )
        except Exception:
            return False
        if existing is None:
            return False
        return _utc(existing.created_at) == _utc(row.get("created_at")) and existing.user_id == row.get(
            "user_id"
        )

    def _dead_letter(self, row: dict[str, Any], error: BaseException) -> None:
        self.dead_letters += 1
        if self._on_dead_letter is not None:
            self._on_dead_letter(1)
        message = _brief(error)
        logger.error("prediction log %s moved to the dead-letter file: %s", row.get("request_id"), message)
        if self._spill is None:
            return
        record = {"failed_at": datetime.now(UTC).isoformat(), "error": message, "row": row}
        directory = self._spill.directory
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / DEAD_LETTER_FILE).open("a", encoding="utf-8") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # several workers append to one file
            handle.write(json.dumps(record, default=_json_default) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    # -- spill replay (in the writer thread, while the database answers) ----------------
    def _sync_and_replay(self) -> None:
        if self._spill is None:
            return
        self._spill.sync()
        now = time.monotonic()
        if now < self._next_replay:
            return
        self._next_replay = now + max(1.0, self._flush_seconds)
        if self._queue.qsize() == 0 and self._spill.has_own_rows:
            self._spill.rotate()  # the queue has room again: our own spilled rows can go back
        if not self._spill.pending_files():
            return
        with self._spill.claim() as files:
            for path, handle in files:
                if self._stop.is_set() or not self._replay_file(path, handle):
                    return

    def _replay_file(self, path: Path, handle: IO[str]) -> bool:
        """Write one claimed spill file; False (file kept, rewritten to what is left) on an outage."""
        rows = read_rows(handle)
        done = 0
        while done < len(rows):
            batch = rows[done : done + self._batch_size]
            written = self._write(batch)
            done += written
            if written < len(batch):
                _rewrite(path, rows[done:])
                return False
            self.replayed += written
        path.unlink()
        logger.info("replayed %d spilled prediction logs from %s", len(rows), path.name)
        return True


def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace a claimed file by one holding only `rows`, durably and atomically.

    The rest is written under a name no claimant matches, fsync'd, renamed into place (a new
    spill name), and only then is the original removed: a crash in between leaves rows twice,
    which the replay recognises (`_already_written`), never zero times.
    """
    tmp = path.with_name(f".rest-{uuid.uuid4().hex[:8]}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, default=_json_default) + "\n")
        out.flush()
        os.fsync(out.fileno())
    tmp.rename(path.with_name(f"{path.stem}-r{uuid.uuid4().hex[:4]}.jsonl"))
    path.unlink()


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _brief(error: BaseException) -> str:
    # SQLAlchemy's messages end with the statement and its parameters: keep the first line,
    # so that what a client typed never reaches the logs.
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:MAX_ERROR_CHARS]


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
