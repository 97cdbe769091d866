"""Which model bundle the API serves, and swapping it without downtime.

A new version is fetched (checksums verified), loaded and checked with sample predictions
before one reference assignment makes it current: requests in flight keep the runtime
they started with, so they all succeed. A version that fails to load or check is refused
and the previous one keeps serving. A background thread polls the production pointer.

At startup there is no previous one: when the production version cannot be fetched or loaded
(promotion verifies versions, but a pointer can be older than that check, or a stored file
can rot), the manager falls back to the newest version it can load among the earlier
promotions of the pointer's history, newest first, then the other cached bundles, most
recently used first (at most `fallback_tries` of them). The loaded model then carries
the reason, which `/ready` and `/models` show; the next successful load of the production
version clears it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.model_cache import CachedBundle, ModelCache, NoProductionModelError
from store.model_store import ChecksumMismatchError

if TYPE_CHECKING:
    from models.runtime import ModelRuntime

logger = logging.getLogger(__name__)


def load_runtime(path: Path) -> ModelRuntime:
    """Load a bundle's serving runtime, exactly as promotion verifies it."""
    # Imported here: ONNX Runtime costs a second at import, and the tests replace this loader.
    from models.runtime import ModelRuntime

    return ModelRuntime.from_bundle(path)


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
    # Why this is not the production version, when it was loaded as the startup fallback.
    fallback_reason: str | None = None


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
        fallback_tries: int = 3,
        loader: Callable[[Path], ModelRuntime] = load_runtime,
        on_change: Callable[[LoadedModel], None] | None = None,
        on_reload: Callable[[str], None] | None = None,
    ) -> None:
        self._cache = cache
        self._loader = loader
        self._poll_seconds = poll_seconds
        self._fallback_tries = fallback_tries
        self._on_change = on_change
        self._on_reload = on_reload
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: LoadedModel | None = None
        # Versions that failed to load or check, with why: versions are immutable, so the
        # poller does not load them again every cycle (an explicit reload still retries).
        self._refused: dict[str, str] = {}
        self.last_error: str | None = None
        self.last_check: datetime | None = None

    @property
    def current(self) -> LoadedModel:
        """The model to serve this request with (grab it once per request)."""
        loaded = self._current
        if loaded is None:
            raise NoModelError("No model is loaded yet")
        return loaded

    def reload(self, version: str | None = None, *, retry_refused: bool = True) -> ReloadResult:
        """Load `version` (default: the store's production version) if it is not current.

        Args:
            version: an explicit version, or None for the production one.
            retry_refused: load a version again even though it failed before (False for the poller).
        """
        with self._lock:
            previous = self._current.version if self._current else None
            self.last_check = datetime.now(UTC)
            if not retry_refused:
                # Checked before fetching: a refused version is not downloaded again every cycle.
                target = version or self._peek_production()
                if target is not None and target != previous and target in self._refused:
                    self.last_error = f"version {target} refused: {self._refused[target]}"
                    return ReloadResult(False, previous, previous, self.last_error)
            try:
                bundle = self._cache.fetch(version) if version else self._cache.fetch_production()
            except NoProductionModelError:
                self.last_error = "the model store has no production version yet"
                return ReloadResult(False, previous, previous, self.last_error)
            except Exception as exc:  # store unreachable without cache, checksum mismatch, unknown version
                if isinstance(exc, ChecksumMismatchError):
                    self._refused[exc.version] = str(exc)
                self._fail(f"could not fetch {version or 'the production version'}: {exc}")
                raise ReloadError(self.last_error) from exc
            if previous == bundle.version:
                self.last_error = None
                if version is None and self._current is not None and self._current.fallback_reason:
                    # Production came back to the version the fallback chose: no longer a fallback.
                    self._swap(dataclasses.replace(self._current, fallback_reason=None))
                    logger.info("%s is the production version again: fallback over", bundle.version)
                return ReloadResult(False, previous, previous, "already serving this version")
            if not retry_refused and bundle.version in self._refused:
                self.last_error = f"version {bundle.version} refused: {self._refused[bundle.version]}"
                return ReloadResult(False, previous, previous, self.last_error)
            try:
                started = time.perf_counter()
                loaded = self._load(bundle)
            except Exception as exc:  # a broken bundle must never replace a working one
                self._refused[bundle.version] = str(exc)
                self._fail(f"version {bundle.version} refused: {exc}")
                raise ReloadError(self.last_error) from exc
            self._refused.pop(bundle.version, None)
            self._swap(loaded)
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
            return ReloadResult(True, bundle.version, previous, f"loaded from {bundle.source}")

    def _peek_production(self) -> str | None:
        try:
            return self._cache.store.production()
        except Exception:  # unreachable: fetch_production will fall back to the cache and say so
            return None

    def _load(self, bundle: CachedBundle, *, fallback_reason: str | None = None) -> LoadedModel:
        runtime = self._loader(bundle.path)
        runtime.self_check()
        return LoadedModel(
            runtime=runtime,
            version=bundle.version,
            path=bundle.path,
            source=bundle.source,
            fallback_reason=fallback_reason,
        )

    def _swap(self, loaded: LoadedModel) -> None:
        self._current = loaded  # the atomic swap: requests in flight keep the one they took
        if self._on_change:
            self._on_change(loaded)

    def _fallback_candidates(self) -> tuple[str | None, list[str]]:
        """The production version that failed, and the versions to try instead, best first."""
        try:
            history = [promotion.version for promotion in self._cache.store.history()]
        except Exception as exc:  # the store is unreachable: the cache is all there is
            logger.warning("cannot read the promotion history (%s): trying cached versions only", exc)
            history = []
        production = history[0] if history else self._cache.cached_production()
        candidates: list[str] = []
        for version in [*history[1:], *self._cache.cached_versions()]:
            if version != production and version not in candidates and version not in self._refused:
                candidates.append(version)
        return production, candidates

    def fall_back(self) -> bool:
        """Serve the newest loadable earlier version when nothing is loaded; True if one now is."""
        with self._lock:
            if self._current is not None:
                return True
            production, candidates = self._fallback_candidates()
            failure = self.last_error or "unknown error"
            reason = f"production version {production} could not be served: {failure}"
            for version in candidates[: self._fallback_tries]:
                try:
                    loaded = self._load(self._cache.fetch(version), fallback_reason=reason)
                except Exception as exc:  # try the next one; each failure is logged
                    self._refused[version] = str(exc)
                    logger.error("fallback candidate %s refused: %s", version, exc)
                    continue
                self._swap(loaded)
                logger.warning("serving %s as a FALLBACK (from %s): %s", version, loaded.source, reason)
                if self._on_reload:
                    self._on_reload("fallback")
                return True
            return False

    def _fail(self, message: str) -> None:
        self.last_error = message
        logger.error(message)
        if self._on_reload:
            self._on_reload("failed")

    def start(self) -> None:
        """Load the production model (if any, else a fallback) and start polling the pointer."""
        try:
            self.reload()
        except ReloadError:
            if not self.fall_back():
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
                self.reload(retry_refused=False)

    def status(self, *, redact: bool = False) -> dict[str, Any]:
        """What is served and the last error; `redact` hides store URIs and local paths in texts."""
        loaded = self._current

        def text(value: str | None) -> str | None:
            return self._redact(value) if redact and value else value

        return {
            "version": loaded.version if loaded else None,
            "source": loaded.source if loaded else None,
            "loaded_at": loaded.loaded_at.isoformat() if loaded else None,
            "fallback": bool(loaded and loaded.fallback_reason),
            "reason": text(loaded.fallback_reason if loaded else None),
            "last_error": text(self.last_error),
            "last_check": self.last_check.isoformat() if self.last_check else None,
        }

    def _redact(self, value: str) -> str:
        # Longest first: the cache directory may sit inside a local store's folder or vice versa.
        places = {
            self._cache.store.uri.rstrip("/"): "<model store>",
            str(self._cache.cache_dir.resolve()): "<model cache>",
            str(self._cache.cache_dir): "<model cache>",
        }
        for place in sorted(places, key=len, reverse=True):
            if place:
                value = value.replace(place, places[place])
        return value
