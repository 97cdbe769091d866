"""Which model bundle the API serves, and swapping it without downtime.

A new version is fetched (checksums verified), loaded and checked with sample predictions
before one reference assignment makes it current: requests in flight keep the runtime
they started with, so they all succeed. A version that fails to load or check is refused
and the previous one keeps serving. A background thread polls the production pointer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.cache import ModelCache, NoProductionModelError

if TYPE_CHECKING:
    from models.runtime import ModelRuntime

logger = logging.getLogger(__name__)


def load_runtime(path: Path) -> ModelRuntime:
    """Load a bundle's serving runtime (TensorFlow is imported here, not at module import)."""
    from models.runtime import ModelRuntime

    # ONNX only: a bundle without serving exports would pull TensorFlow into the API worker.
    return ModelRuntime.from_bundle(path, engine="onnx")


class NoModelError(RuntimeError):
    """No model is loaded yet (empty store and no cache)."""


class ReloadError(RuntimeError):
    """The requested version could not be fetched, loaded or checked."""


@dataclass(frozen=True)
class LoadedModel:
    runtime: ModelRuntime
    version: str
    path: Path
    source: str  # "store" or "cache" (the store was unreachable)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class ReloadResult:
    changed: bool
    version: str | None
    previous: str | None
    detail: str


class ModelManager:
    def __init__(
        self,
        cache: ModelCache,
        *,
        poll_seconds: float = 0.0,
        loader: Callable[[Path], ModelRuntime] = load_runtime,
        on_change: Callable[[LoadedModel], None] | None = None,
        on_reload: Callable[[str], None] | None = None,
    ) -> None:
        self._cache = cache
        self._loader = loader
        self._poll_seconds = poll_seconds
        self._on_change = on_change
        self._on_reload = on_reload
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: LoadedModel | None = None
        self.last_error: str | None = None
        self.last_check: datetime | None = None

    @property
    def current(self) -> LoadedModel:
        """The model to serve this request with (grab it once per request)."""
        loaded = self._current
        if loaded is None:
            raise NoModelError("No model is loaded yet")
        return loaded

    @property
    def loaded(self) -> LoadedModel | None:
        return self._current

    def reload(self, version: str | None = None) -> ReloadResult:
        """Load `version` (default: the store's production version) if it is not current."""
        with self._lock:
            previous = self._current.version if self._current else None
            self.last_check = datetime.now(UTC)
            try:
                bundle = self._cache.fetch(version) if version else self._cache.fetch_production()
            except NoProductionModelError:
                self.last_error = "the model store has no production version yet"
                return ReloadResult(False, previous, previous, self.last_error)
            except Exception as exc:  # store unreachable without cache, checksum mismatch, unknown version
                self._fail(f"could not fetch {version or 'the production version'}: {exc}")
                raise ReloadError(self.last_error) from exc
            if previous == bundle.version:
                self.last_error = None
                return ReloadResult(False, previous, previous, "already serving this version")
            try:
                started = time.perf_counter()
                runtime = self._loader(bundle.path)
                runtime.self_check()
            except Exception as exc:  # a broken bundle must never replace a working one
                self._fail(f"version {bundle.version} refused: {exc}")
                raise ReloadError(self.last_error) from exc
            loaded = LoadedModel(
                runtime=runtime, version=bundle.version, path=bundle.path, source=bundle.source
            )
            self._current = loaded  # the atomic swap
            self.last_error = None
            logger.info(
                "now serving model %s (from %s, loaded in %.1f s; previous %s)",
                bundle.version,
                bundle.source,
                time.perf_counter() - started,
                previous,
            )
            if self._on_reload:
                self._on_reload("loaded")
            if self._on_change:
                self._on_change(loaded)
            return ReloadResult(True, bundle.version, previous, f"loaded from {bundle.source}")

    def _fail(self, message: str) -> None:
        self.last_error = message
        logger.error(message)
        if self._on_reload:
            self._on_reload("failed")

    def start(self) -> None:
        """Load the production model (if any) and start polling the production pointer."""
        try:
            self.reload()
        except ReloadError:
            logger.error("starting without a model: %s", self.last_error)
        if self._poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            with contextlib.suppress(ReloadError):  # already logged; keep serving the current one
                self.reload()

    def status(self) -> dict[str, Any]:
        loaded = self._current
        return {
            "version": loaded.version if loaded else None,
            "source": loaded.source if loaded else None,
            "loaded_at": loaded.loaded_at.isoformat() if loaded else None,
            "last_error": self.last_error,
            "last_check": self.last_check.isoformat() if self.last_check else None,
        }
