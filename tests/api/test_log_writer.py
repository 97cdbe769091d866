import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from api.log_writer import LogWriter
from db.tables import PredictionLog


def row(**overrides):
    base = {
        "request_id": str(uuid.uuid4()),
        "user_id": None,
        "created_at": datetime.now(UTC),
        "inputs": {"text_chars": 3},
        "predictions": [],
        "outcome": "ok",
        "status_code": 200,
    }
    return base | overrides


class FlakyFactory:
    """A session factory whose first `failures` sessions fail on execute (a database hiccup)."""

    def __init__(self, factory, failures):
        self.factory, self.failures, self.calls = factory, failures, 0

    def __call__(self):
        self.calls += 1
        session = self.factory()
        if self.calls <= self.failures:

            def broken(*args, **kwargs):
                raise OperationalError("INSERT", {}, Exception("connection reset"))

            session.execute = broken
        return session


def count(session_factory):
    with session_factory() as session:
        return len(session.scalars(select(PredictionLog)).all())


def test_rows_are_written_in_the_background(session_factory):
    writer = LogWriter(session_factory, flush_seconds=0.05)
    writer.start()
    for _ in range(250):
        writer.submit(row())
    assert writer.flush()
    writer.stop()
    assert count(session_factory) == 250


def test_a_database_hiccup_is_retried_and_nothing_is_lost(session_factory):
    flaky = FlakyFactory(session_factory, failures=2)
    writer = LogWriter(flaky, flush_seconds=0.05, max_backoff=0.05)
    writer.start()
    for _ in range(10):
        writer.submit(row())
    assert writer.flush(timeout=10)
    writer.stop()
    assert writer.failures == 2
    assert count(session_factory) == 10


def test_stop_flushes_everything_still_queued(session_factory):
    writer = LogWriter(session_factory)  # never started: only stop() can write these
    for _ in range(7):
        writer.submit(row())
    writer.stop()
    assert count(session_factory) == 7


def test_rows_that_cannot_be_written_at_shutdown_are_spilled_and_replayed(session_factory, tmp_path):
    spill = tmp_path / "spill.jsonl"
    down = FlakyFactory(session_factory, failures=10**6)
    writer = LogWriter(down, spill_path=spill)
    for _ in range(3):
        writer.submit(row())
    writer.stop(timeout=0.5)
    assert count(session_factory) == 0
    assert len(spill.read_text().splitlines()) == 3

    again = LogWriter(session_factory, flush_seconds=0.05, spill_path=spill)
    again.start()
    assert again.flush()
    again.stop()
    assert count(session_factory) == 3
    assert not spill.exists()
