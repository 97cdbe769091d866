"""The API's local copy of model bundles, so that it can start and serve while the store is down.

Layout of the cache directory::

    bundles/{version}/...   verified bundles (renamed into place complete, never partial)
    production.json         {"version", "recorded_at"}: the last production version fetched

`fetch_production()` asks the store which version is in production and downloads it if it is
not cached yet. When the store cannot be reached it serves the last cached production bundle
instead and says so (`source="cache"` and a warning), rather than failing the API's startup.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from store.blob import BlobStoreUnavailableError
from store.model_store import ModelStore, check_version, utc_now

logger = logging.getLogger(__name__)

BUNDLES_DIR = "bundles"
PRODUCTION_RECORD = "production.json"
# What "the store is unreachable" looks like from here (S3 errors arrive as the first one).
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    BlobStoreUnavailableError,
    ConnectionError,
    TimeoutError,
)


class NoProductionModelError(LookupError):
    """The store has no production version (nothing was ever promoted)."""


class ModelUnavailableError(RuntimeError):
    """The store is unreachable and the cache holds no usable copy."""


@dataclass(frozen=True)
class CachedBundle:
    """A bundle on local disk.

    `source` is "store" when the store was reached and confirmed or delivered this version, and
    "cache" when it was served from disk alone (the store being unreachable, or an explicitly
    requested version already cached: versions are immutable). `downloaded` says whether this
    call transferred it.
    """

    version: str
    path: Path
    source: Literal["store", "cache"]
    downloaded: bool = False


class ModelCache:
    """Verified local copies of model versions, at most `keep` of them."""

    def __init__(self, store: ModelStore, cache_dir: str | Path, *, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.store = store
        self.cache_dir = Path(cache_dir)
        self.bundles_dir = self.cache_dir / BUNDLES_DIR
        self.keep = keep

    def fetch_production(self) -> CachedBundle:
        """The production bundle: from the store when reachable, else the last cached one.

        Raises:
            NoProductionModelError: the store answered that nothing is in production.
            ModelUnavailableError: the store is unreachable and no production bundle is cached.
            ChecksumMismatchError: the store's copy is corrupt (never silently replaced by the cache).
        """
        try:
            version = self.store.production()
            if version is None:
                raise NoProductionModelError(f"no production model version in {self.store.uri}")
            bundle = self._ensure(version, source="store")
        except UNREACHABLE_ERRORS as exc:
            return self._fallback(exc)
        self._record_production(version)
        self._prune(version)
        return bundle

    def fetch(self, version: str) -> CachedBundle:
        """One explicit version, from disk if cached, else downloaded (verified) from the store."""
        check_version(version)
        path = self.bundles_dir / version
        if path.is_dir():
            _touch(path)
            return CachedBundle(version=version, path=path, source="cache")
        try:
            bundle = self._ensure(version, source="store")
        except UNREACHABLE_ERRORS as exc:
            raise ModelUnavailableError(
                f"model store {self.store.uri} is unreachable and version {version} is not cached: {exc}"
            ) from exc
        self._prune(version)
        return bundle

    def cached_versions(self) -> list[str]:
        """Versions on disk, most recently used first."""
        if not self.bundles_dir.is_dir():
            return []
        dirs = [p for p in self.bundles_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return [p.name for p in sorted(dirs, key=lambda p: p.stat().st_mtime_ns, reverse=True)]

    def cached_production(self) -> str | None:
        """The last production version this cache fetched from the store."""
        try:
            data = json.loads((self.cache_dir / PRODUCTION_RECORD).read_text(encoding="utf-8"))
            return check_version(data["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _ensure(self, version: str, *, source: Literal["store", "cache"]) -> CachedBundle:
        path = self.bundles_dir / version
        if path.is_dir():
            _touch(path)
            return CachedBundle(version=version, path=path, source=source)
        # replace=False: another worker sharing this cache may have installed it meanwhile.
        path = self.store.download(version, self.bundles_dir, replace=False)
        _touch(path)
        return CachedBundle(version=version, path=path, source=source, downloaded=True)

    def _fallback(self, error: BaseException) -> CachedBundle:
        version = self.cached_production()
        path = self.bundles_dir / version if version else None
        if version is None or path is None or not path.is_dir():
            raise ModelUnavailableError(
                f"model store {self.store.uri} is unreachable and no production bundle is cached "
                f"in {self.cache_dir}: {error}"
            ) from error
        logger.warning(
            "model store %s is unreachable (%s): serving the cached production version %s",
            self.store.uri,
            error,
            version,
        )
        return CachedBundle(version=version, path=path, source="cache")

    def _record_production(self, version: str) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"version": version, "recorded_at": utc_now()}).encode("utf-8")
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, self.cache_dir / PRODUCTION_RECORD)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _prune(self, just_fetched: str) -> None:
        """Keep the `keep` most recently used versions; never the production one or `just_fetched`."""
        cached = self.cached_versions()
        protected = {just_fetched, self.cached_production()} & set(cached)
        kept = len(protected)
        for version in cached:
            if version in protected:
                continue
            if kept < self.keep:
                kept += 1
                continue
            # Renamed first so that a half-deleted bundle never looks complete.
            trash = self.bundles_dir / f".trash-{version}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(self.bundles_dir / version, trash)
            except OSError:
                continue  # another process pruned it already
            shutil.rmtree(trash, ignore_errors=True)
            logger.info("evicted model version %s from the cache", version)


def _touch(path: Path) -> None:
    os.utime(path)
