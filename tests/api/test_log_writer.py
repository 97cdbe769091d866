import json
import time
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


def test_an_idle_writer_stops_at_once_not_after_its_flush_interval(session_factory):
    # A worker's shutdown (and every test app's) waited for the writer's idle wait to end.
    writer = LogWriter(session_factory, flush_seconds=5.0)
    writer.start()
    writer.submit(row())
    assert writer.flush()
    time.sleep(0.1)  # the writer is back waiting on an empty queue
    started = time.monotonic()
    writer.stop()
    assert time.monotonic() - started < 1.0
    writer.submit(row())  # what comes after stop is not lost either: written at the next stop
    writer.stop()
    assert count(session_factory) == 2


def test_rows_that_cannot_be_written_at_shutdown_are_spilled_and_replayed(session_factory, tmp_path):
    spill = tmp_path / "spill"
    down = FlakyFactory(session_factory, failures=10**6)
    writer = LogWriter(down, spill_dir=spill)
    for _ in range(3):
        writer.submit(row())
    writer.stop(timeout=0.5)
    assert count(session_factory) == 0
    assert sum(len(p.read_text().splitlines()) for p in spill.glob("spill-*.jsonl")) == 3

    again = LogWriter(session_factory, flush_seconds=0.05, spill_dir=spill)
    again.start()
    assert again.flush()
    again.stop()
    assert count(session_factory) == 3
    assert not list(spill.glob("spill-*.jsonl"))


def dead_letters(directory):
    path = directory / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_one_bad_row_is_dead_lettered_and_the_rest_of_its_batch_is_written(session_factory, tmp_path):
    """On main, one duplicate request_id made every later batch fail forever."""
    counted = []
    writer = LogWriter(session_factory, flush_seconds=0.05, spill_dir=tmp_path, on_dead_letter=counted.append)
    taken = row()
    writer.submit(taken)
    writer.start()
    assert writer.flush()
    batch = [row() for _ in range(5)]
    batch.insert(2, row(request_id=taken["request_id"], user_id=None, outcome="unauthorized"))
    for item in batch:
        writer.submit(item)
    for _ in range(20):  # and later batches still land
        writer.submit(row())
    assert writer.flush()
    writer.stop()
    assert count(session_factory) == 1 + 5 + 20
    letters = dead_letters(tmp_path)
    assert len(letters) == 1 and len(counted) == 1
    assert letters[0]["row"]["outcome"] == "unauthorized"
    assert "IntegrityError" in letters[0]["error"]
    assert writer.dead_letters == 1


def test_a_row_replayed_twice_after_a_crash_is_not_a_dead_letter(session_factory, tmp_path):
    writer = LogWriter(session_factory, flush_seconds=0.05, spill_dir=tmp_path)
    written = row()
    writer.submit(written)
    writer.start()
    assert writer.flush()
    # A crash mid-replay leaves a spill file whose first rows are already in the table.
    spill = tmp_path / "spill-crashed-1-abcdef12.jsonl"
    again = [written, row()]
    spill.write_text("".join(json.dumps(r, default=str) + "\n" for r in again))
    assert writer.flush()
    writer.stop()
    assert count(session_factory) == 2
    assert dead_letters(tmp_path) == []


def test_nul_bytes_in_a_row_do_not_stop_it_being_written(session_factory):
    writer = LogWriter(session_factory, flush_seconds=0.05)
    writer.start()
    writer.submit(row(error="Unknown form field(s): a\x00b", inputs={"k\x00": "v\x00"}))
    assert writer.flush()
    writer.stop()
    with session_factory() as session:
        stored = session.scalars(select(PredictionLog)).one()
    assert "\x00" not in stored.error and "\x00" not in json.dumps(stored.inputs)


def test_a_full_queue_never_blocks_submit_and_spills_to_disk(session_factory, tmp_path):
    """On main, submit() was a blocking put: with the queue full, the event loop stalled."""
    down = FlakyFactory(session_factory, failures=10**6)
    writer = LogWriter(down, max_queue=10, flush_seconds=0.05, max_backoff=0.05, spill_dir=tmp_path)
    writer.start()
    started = time.perf_counter()
    rows = [row() for _ in range(1000)]
    for item in rows:
        writer.submit(item)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0  # on main this never returned
    assert writer.spilled >= 1000 - 10 - 200
    # The database comes back: the spill is replayed by the same process, no restart.
    down.failures = 0
    assert writer.flush(timeout=20)
    writer.stop()
    with session_factory() as session:
        stored = set(session.scalars(select(PredictionLog.request_id)))
    assert stored == {r["request_id"] for r in rows}
    assert not list(tmp_path.glob("spill-*.jsonl"))


def test_shutdown_with_the_database_down_spills_everything_queued(session_factory, tmp_path):
    """On main, stop() drained at most LOG_BATCH_SIZE rows: 73 of 273 were lost."""
    down = FlakyFactory(session_factory, failures=10**6)
    writer = LogWriter(down, batch_size=200, flush_seconds=0.05, max_backoff=0.05, spill_dir=tmp_path)
    writer.start()
    rows = [row() for _ in range(273)]
    for item in rows:
        writer.submit(item)
    started = time.monotonic()
    writer.stop(timeout=1.0)
    assert time.monotonic() - started < 3.0  # bounded by the drain time
    spilled = [
        json.loads(line)["request_id"]
        for path in tmp_path.glob("spill-*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sorted(spilled) == sorted(r["request_id"] for r in rows)


def test_a_live_writers_spill_file_is_not_replayed_by_another_worker(session_factory, tmp_path):
    down = FlakyFactory(session_factory, failures=10**6)
    first = LogWriter(down, max_queue=1, spill_dir=tmp_path)  # never started: its rows spill
    for _ in range(5):
        first.submit(row())
    other = LogWriter(session_factory, flush_seconds=0.05, spill_dir=tmp_path)
    other.start()
    time.sleep(1.5)
    assert count(session_factory) == 0  # first's file is locked while first lives
    first.stop(timeout=0.1)  # closes (and unlocks) it
    assert other.flush(timeout=10)
    other.stop()
    assert count(session_factory) == 5
