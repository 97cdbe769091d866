"""Shadow evaluation: a published, unpromoted version answers live requests too, but nobody sees it.

The model store's shadow pointer (`ModelStore.shadow`, set by an admin or the retraining DAG
with GATE_SHADOW=first) names the version. Every API process loads it beside production (the
same cache, checksums and self-check) and, for a share of `/predict` requests (SHADOW_SHARE),
runs it after production has answered: the request only queues the inputs (a `put_nowait`,
dropped when the queue is full), and a background thread predicts and stores the ranking in
`shadow_predictions` under the request's id. Both live hit rates are then read on the same
confirmed products (`db.monitoring.shadow_confirmed`): GET /models/{version}/shadow, the admin
console and the promotion gate show them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db import monitoring
from store.model_cache import ModelCache

logger = logging.getLogger(__name__)

QUEUE_MAX = 1000
# Put in the queue by stop(): the worker's wait ends at once; never answered.
_WAKE = ("", "", "", None)
BATCH = 50


class ShadowRunner:
    """Loads the shadowed version and runs it off the request path on a share of requests."""

    def __init__(
        self,
        cache: ModelCache,
        session_factory: sessionmaker[Session],
        *,
        share: float,
        poll_seconds: float,
        loader: Callable[[Path], Any],
        top_k: int = 5,
    ) -> None:
        self._cache = cache
        self._session_factory = session_factory
        self._loader = loader
        self.share = share
        self._poll_seconds = poll_seconds
        self._top_k = top_k
        self._queue: queue.Queue[tuple[str, str, str, Any]] = queue.Queue(maxsize=QUEUE_MAX)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._random = random.Random()
        self.version: str | None = None
        self.since: str | None = None
        self._runtime: Any = None
        self.last_error: str | None = None
        self.answered = 0
        self.dropped = 0

    # -- request side ---------------------------------------------------------------------------
    def offer(self, request_id: str, kind: str, text: str, image: Any) -> None:
        """Queue a request for the shadow (never blocks; nothing when no shadow or not drawn)."""
        if self._runtime is None or self.share <= 0 or self._random.random() >= self.share:
            return
        try:
            self._queue.put_nowait((request_id, kind, text, image))
        except queue.Full:
            self.dropped += 1

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.refresh()
        for target, name in ((self._work, "shadow-runner"), (self._poll, "shadow-poller")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):  # ends the worker's wait on an empty queue now
            self._queue.put_nowait(_WAKE)
        for thread in self._threads:
            thread.join(timeout=5)

    def refresh(self) -> None:
        """Follow the store's shadow pointer: load a new version, or stop shadowing."""
        try:
            pointer = self._cache.store.shadow()
        except Exception as exc:  # the store being down: keep what we have
            self.last_error = f"shadow pointer unreadable: {exc}"
            return
        version = pointer["version"] if pointer else None
        if version == self.version:
            return
        if version is None:
            logger.info("shadowing stopped (was %s)", self.version)
            self.version, self.since, self._runtime = None, None, None
            return
        try:
            bundle = self._cache.fetch(version)
            runtime = self._loader(bundle.path)
            runtime.self_check()
        except Exception as exc:  # a shadow that cannot load never touches production
            self.last_error = f"shadow version {version} refused: {exc}"
            logger.error(self.last_error)
            return
        self.version, self.since, self._runtime, self.last_error = version, pointer["since"], runtime, None
        logger.info("shadowing %s on %.0f%% of requests", version, self.share * 100)

    def status(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "since": self.since,
            "share": self.share,
            "answered": self.answered,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_seconds or 30):
            self.refresh()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            rows = [self._answer(job)]
            while len(rows) < BATCH:
                try:
                    rows.append(self._answer(self._queue.get_nowait()))
                except queue.Empty:
                    break
            rows = [row for row in rows if row is not None]
            if not rows:
                continue
            try:
                with self._session_factory() as session:
                    monitoring.insert_shadow_predictions(session=session, rows=rows)
                self.answered += len(rows)
            except Exception as exc:  # the shadow's log is best effort: production's is not
                self.last_error = f"could not store shadow answers: {exc}"
                logger.warning(self.last_error)

    def _answer(self, job: tuple[str, str, str, Any]) -> dict[str, Any] | None:
        runtime, version = self._runtime, self.version
        if runtime is None or version is None or job is _WAKE:
            return None
        request_id, kind, text, image = job
        started = time.perf_counter()
        try:
            probs = runtime.predict(kind, text, image)
            size = len(runtime.suggestion_set(kind, probs))
        except Exception as exc:
            self.last_error = f"shadow {version} failed on a request: {exc}"
            return None
        order = probs.argsort()[::-1][: self._top_k]
        labels = runtime.labels
        return {
            "request_id": request_id,
            "model_version": version,
            "created_at": datetime.now(UTC),
            "predictions": [
                {"prdtypecode": int(labels[i]), "probability": round(float(probs[i]), 6)} for i in order
            ],
            "top_prdtypecode": int(labels[order[0]]),
            "suggestion_size": size,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
