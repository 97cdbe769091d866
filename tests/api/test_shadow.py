"""Shadow evaluation: the shadowed version answers a share of requests off the request path, logged beside production."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from api.shadow import ShadowRunner
from db import monitoring
from db.tables import PredictionLog, Product, ShadowPrediction

LABELS = [10, 40, 2583]


class FakeRuntime:
    labels = LABELS

    def __init__(self, best: int) -> None:
        self.best = best
        self.calls = 0

    def self_check(self) -> None:
        pass

    def predict(self, kind: str, text: str, image) -> np.ndarray:
        self.calls += 1
        probs = np.full(len(LABELS), 0.1)
        probs[LABELS.index(self.best)] = 0.8
        return probs

    def suggestion_set(self, kind: str, probs: np.ndarray) -> np.ndarray:
        return np.array([int(np.argmax(probs))])


@dataclass
class Bundle:
    path: Path


class FakeStore:
    def __init__(self) -> None:
        self.pointer: dict | None = None

    def shadow(self) -> dict | None:
        return self.pointer


class FakeCache:
    def __init__(self) -> None:
        self.store = FakeStore()

    def fetch(self, version: str) -> Bundle:
        return Bundle(Path(version))


def runner(session_factory, share: float, runtime: FakeRuntime) -> tuple[ShadowRunner, FakeCache]:
    cache = FakeCache()
    shadow = ShadowRunner(cache, session_factory, share=share, poll_seconds=0.05, loader=lambda path: runtime)
    return shadow, cache


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_without_a_shadow_pointer_nothing_runs(session_factory):
    runtime = FakeRuntime(best=40)
    shadow, _ = runner(session_factory, 1.0, runtime)
    shadow.start()
    try:
        shadow.offer(str(uuid.uuid4()), "text", "Roman", None)
        time.sleep(0.2)
    finally:
        shadow.stop()

    assert runtime.calls == 0 and shadow.status()["version"] is None


def test_an_idle_runner_stops_at_once(session_factory):
    shadow, _ = runner(session_factory, 1.0, FakeRuntime(best=40))
    shadow.start()
    time.sleep(0.1)  # its worker waits on an empty queue
    started = time.monotonic()
    shadow.stop()

    assert time.monotonic() - started < 0.3
    assert not any(thread.is_alive() for thread in shadow._threads)


def test_the_shadowed_version_answers_off_the_request_path_and_both_live_hit_rates_are_read(session_factory):
    runtime = FakeRuntime(best=40)
    shadow, cache = runner(session_factory, 1.0, runtime)
    cache.store.pointer = {"version": "v2", "since": "2026-01-01T00:00:00+00:00"}
    request_ids = [str(uuid.uuid4()) for _ in range(4)]
    with session_factory() as session:
        for i, request_id in enumerate(request_ids):
            # Production answered 10; sellers confirmed 40 for three of them and 10 for one.
            session.add(
                PredictionLog(request_id=request_id, top_prdtypecode=10, outcome="ok", status_code=200)
            )
            session.add(
                Product(
                    product_id=f"p{i}", designation="x", prdtypecode=40 if i else 10, request_id=request_id
                )
            )
        session.commit()
    shadow.start()
    try:
        assert shadow.status()["version"] == "v2"
        started = time.perf_counter()
        for request_id in request_ids:
            shadow.offer(request_id, "text", "Roman", None)
        offered = time.perf_counter() - started
        wait_for(lambda: shadow.answered == 4)
    finally:
        shadow.stop()

    assert offered < 0.05  # the request only queued the inputs
    with session_factory() as session:
        rows = session.scalars(select(ShadowPrediction)).all()
        confirmed = monitoring.shadow_confirmed(
            session=session,
            version="v2",
            since=rows[0].created_at.replace(year=2000),
            until=rows[0].created_at.replace(year=2100),
        )
    assert {r.request_id for r in rows} == set(request_ids)
    assert {r.top_prdtypecode for r in rows} == {40} and all(r.model_version == "v2" for r in rows)
    rates = monitoring.shadow_hit_rates(confirmed)
    assert rates == {"confirmed": 4, "production_top1_rate": 0.25, "shadow_top1_rate": 0.75}


def test_only_the_configured_share_of_requests_is_shadowed_and_stopping_the_pointer_stops_it(session_factory):
    runtime = FakeRuntime(best=40)
    shadow, cache = runner(session_factory, 0.0, runtime)
    cache.store.pointer = {"version": "v2", "since": "2026-01-01T00:00:00+00:00"}
    shadow.start()
    try:
        for _ in range(20):
            shadow.offer(str(uuid.uuid4()), "text", "Roman", None)
        time.sleep(0.2)
        assert runtime.calls == 0  # share 0: loaded, but never run
        cache.store.pointer = None
        wait_for(lambda: shadow.status()["version"] is None)
    finally:
        shadow.stop()

    assert shadow.status()["version"] is None
