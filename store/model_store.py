"""The model registry's storage: immutable model versions and a production pointer.

Object layout below the store's root (a folder or `s3://bucket/prefix`)::

    versions/{version}/<bundle files, subfolders kept>   uploaded first
    versions/{version}/MANIFEST.json                      written last: the version is complete
    production.json                                       the pointer, written only by promote/rollback

A version is complete exactly when its manifest exists; the manifest lists every file with its
SHA-256 and size, so a download can prove it got what was published. Objects under a version
without a manifest are the leftovers of an interrupted publish: listings skip them and a later
publish of the same version overwrites them. Promotion only moves the pointer (convention 4).

`promote` and `rollback` take a `verify` callable, run on the target version before the pointer
moves: the store cannot load a model itself (`store` knows nothing of `models`), so the caller
passes the check (`pipelines.registry_ops.verify_servable`: checksums, bundle validation, the
serving runtime's load and self-check). Whatever it raises refuses the move.

Writers are expected to be serialised (one retraining DAG run at a time, or an admin): the
manifest is created with a conditional write, so two publishers of one version cannot both
succeed, but two concurrent promotions could each overwrite the other's pointer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from store.blob import BlobNotFoundError, BlobStore, open_blob_store

logger = logging.getLogger(__name__)

VERSIONS_PREFIX = "versions/"
MANIFEST_NAME = "MANIFEST.json"
SHADOW_KEY = "shadow.json"
POINTER_KEY = "production.json"
MANIFEST_FORMAT = 1
# Version names become object keys and `model_versions.version` (String(64)).
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CHUNK = 1024 * 1024


class ModelStoreError(Exception):
    """Base class of the registry's errors."""


class InvalidVersionError(ModelStoreError, ValueError):
    """Not a valid version name."""


class InvalidBundleError(ModelStoreError, ValueError):
    """The directory is not a publishable model bundle."""


class VersionExistsError(ModelStoreError):
    """The version is already published; versions are immutable."""


class VersionNotFoundError(ModelStoreError, LookupError):
    """No complete version of that name exists in the store."""


class ChecksumMismatchError(ModelStoreError):
    """A stored file is missing or differs from what its manifest says was published."""

    def __init__(self, version: str, path: str, expected: str, actual: str | None) -> None:
        self.version, self.path, self.expected, self.actual = version, path, expected, actual
        found = "it is missing" if actual is None else f"got {actual}"
        super().__init__(
            f"version {version}: file {path!r} does not match its manifest ({found}, expected {expected})"
        )


class NothingToRollBackError(ModelStoreError):
    """There is no previously promoted version to go back to."""


class UnservableVersionError(ModelStoreError):
    """The version's files match its manifest, but the serving runtime cannot load or check them."""

    def __init__(self, version: str, reason: str) -> None:
        self.version, self.reason = version, reason
        super().__init__(f"version {version} cannot be served: {reason}")


# Called with the target version before the production pointer moves; raising refuses the move.
Verifier = Callable[[str], object]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_version(version: str) -> str:
    """`version` if it is a valid version name, else InvalidVersionError."""
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise InvalidVersionError(
            f"invalid version name {version!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return version


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What was published under a version: files with checksums, plus metadata and a metrics summary."""

    version: str
    created_at: str | None
    published_at: str
    files: tuple[ManifestEntry, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [asdict(entry) for entry in self.files]
        return {"format": MANIFEST_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        files = tuple(
            ManifestEntry(path=_check_relative(f["path"]), sha256=str(f["sha256"]), size=int(f["size"]))
            for f in data["files"]
        )
        return cls(
            version=check_version(data["version"]),
            created_at=data.get("created_at"),
            published_at=data["published_at"],
            files=files,
            metadata=dict(data.get("metadata") or {}),
            metrics=dict(data.get("metrics") or {}),
        )


@dataclass(frozen=True)
class VersionInfo:
    """One version as `list_versions` sees it (incomplete ones only carry their name)."""

    version: str
    complete: bool
    created_at: str | None = None
    published_at: str | None = None
    n_files: int = 0
    size: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Promotion:
    """One position of the production pointer."""

    version: str
    promoted_at: str
    action: Literal["promote", "rollback"] = "promote"
    rolled_back_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Promotion:
        return cls(
            version=data["version"],
            promoted_at=data["promoted_at"],
            action=data.get("action", "promote"),
            rolled_back_from=data.get("rolled_back_from"),
        )


@dataclass(frozen=True)
class ProductionPointer:
    """Contents of `production.json`: the current promotion and the earlier ones, newest first.

    `history` is the rollback stack: a rollback pops its head back into `current`.
    """

    current: Promotion
    history: tuple[Promotion, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**self.current.to_dict(), "history": [p.to_dict() for p in self.history]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProductionPointer:
        return cls(
            current=Promotion.from_dict(data),
            history=tuple(Promotion.from_dict(p) for p in data.get("history", [])),
        )


def _check_relative(path: str) -> str:
    # Manifests are read back from the store: never let one name a file outside the bundle.
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or str(pure) != path:
        raise ModelStoreError(f"invalid file path in manifest: {path!r}")
    return path


def _file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidBundleError(f"cannot read {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidBundleError(f"{path.name} must hold a JSON object")
    return data


def metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar figures of each model kind (per-class detail left out)."""
    return {
        kind: {k: v for k, v in figures.items() if isinstance(v, int | float | str | None)}
        for kind, figures in metrics.items()
        if isinstance(figures, dict)
    }


def read_bundle(bundle_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any], list[Path]]:
    """metadata.json, metrics.json (or {}) and the sorted file list of a bundle directory."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise InvalidBundleError(f"{root} is not a directory")
    metadata_path = root / "metadata.json"
    if not metadata_path.is_file():
        raise InvalidBundleError(f"{root} has no metadata.json")
    metadata = _read_json(metadata_path)
    try:
        check_version(metadata.get("version"))  # type: ignore[arg-type]
    except InvalidVersionError as exc:
        raise InvalidBundleError(f"metadata.json of {root}: {exc}") from exc
    metrics = _read_json(root / "metrics.json") if (root / "metrics.json").exists() else {}
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if (root / MANIFEST_NAME) in files:
        raise InvalidBundleError(f"{MANIFEST_NAME} is reserved for the registry; remove it from {root}")
    return metadata, metrics, files


class ModelStore:
    """Publish, list, download, promote and roll back model versions over a `BlobStore`."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    @property
    def uri(self) -> str:
        return self.blobs.uri

    def location(self, version: str) -> str:
        """Where a version's files live, for humans and the model versions table."""
        return f"{self.uri.rstrip('/')}/{VERSIONS_PREFIX}{version}"

    @staticmethod
    def _key(version: str, path: str = "") -> str:
        return f"{VERSIONS_PREFIX}{version}/{path}"

    # -- publishing ------------------------------------------------------------------------

    def publish(self, bundle_dir: str | Path, *, exist_ok: bool = False) -> str:
        """Upload a bundle directory as the version named in its metadata.json.

        Every file goes under `versions/{version}/`, then the manifest is written last.

        Args:
            bundle_dir: the directory written by training.
            exist_ok: when the version already exists with exactly these files, return it instead
                of failing (for retried pipeline tasks); different files still fail.

        Returns:
            The published version.

        Raises:
            InvalidBundleError: no readable metadata.json with a valid version.
            VersionExistsError: the version is already published (versions are immutable).
        """
        root = Path(bundle_dir)
        metadata, metrics, files = read_bundle(root)
        version = metadata["version"]
        entries = []
        for path in files:
            digest, size = _file_digest(path)
            entries.append(ManifestEntry(path=path.relative_to(root).as_posix(), sha256=digest, size=size))

        manifest_key = self._key(version, MANIFEST_NAME)
        if self.blobs.exists(manifest_key):
            return self._already_published(version, entries, exist_ok)

        leftovers = set(self.blobs.list(self._key(version)))
        if leftovers:
            logger.warning(
                "version %s has %d objects but no manifest (an interrupted publish): overwriting",
                version,
                len(leftovers),
            )
        for entry, path in zip(entries, files, strict=True):
            self.blobs.put_file(self._key(version, entry.path), path)
            leftovers.discard(self._key(version, entry.path))
        for key in leftovers:  # stale files of the interrupted attempt that this bundle lacks
            self.blobs.delete(key)

        manifest = Manifest(
            version=version,
            created_at=metadata.get("created_at"),
            published_at=utc_now(),
            files=tuple(entries),
            metadata=metadata,
            metrics=metrics_summary(metrics),
        )
        # The commit point: created only if absent, so a concurrent publisher cannot also win.
        if not self.blobs.put_if_absent(manifest_key, _dumps(manifest.to_dict())):
            return self._already_published(version, entries, exist_ok)
        logger.info(
            "published %s: %d files, %d bytes to %s",
            version,
            len(entries),
            manifest.size,
            self.location(version),
        )
        return version

    def _already_published(self, version: str, entries: list[ManifestEntry], exist_ok: bool) -> str:
        if exist_ok and set(self.manifest(version).files) == set(entries):
            logger.info("version %s is already published with the same files", version)
            return version
        raise VersionExistsError(
            f"version {version} is already published in {self.uri}; versions are immutable"
        )

    # -- reading -----------------------------------------------------------------------------

    def _version_keys(self) -> dict[str, set[str]]:
        by_version: dict[str, set[str]] = {}
        for key in self.blobs.list(VERSIONS_PREFIX):
            version, _, rest = key[len(VERSIONS_PREFIX) :].partition("/")
            if rest:
                by_version.setdefault(version, set()).add(rest)
        return by_version

    def list_versions(self, *, include_incomplete: bool = False) -> list[VersionInfo]:
        """Complete versions, oldest first (then incomplete ones, flagged, when asked)."""
        infos = []
        for version, names in self._version_keys().items():
            if MANIFEST_NAME in names:
                manifest = self.manifest(version)
                infos.append(
                    VersionInfo(
                        version=version,
                        complete=True,
                        created_at=manifest.created_at,
                        published_at=manifest.published_at,
                        n_files=len(manifest.files),
                        size=manifest.size,
                        metrics=manifest.metrics,
                    )
                )
            elif include_incomplete:
                infos.append(VersionInfo(version=version, complete=False, n_files=len(names)))
            else:
                logger.debug("skipping incomplete version %s (no manifest)", version)
        return sorted(
            infos,
            key=lambda info: (not info.complete, info.created_at or info.published_at or "", info.version),
        )

    def incomplete_versions(self) -> list[str]:
        """Versions with objects but no manifest (interrupted publishes)."""
        return sorted(v for v, names in self._version_keys().items() if MANIFEST_NAME not in names)

    def exists(self, version: str) -> bool:
        """Whether `version` is published and complete."""
        return self.blobs.exists(self._key(check_version(version), MANIFEST_NAME))

    def manifest(self, version: str) -> Manifest:
        """The manifest of a complete version; VersionNotFoundError otherwise."""
        check_version(version)
        try:
            raw = self.blobs.get(self._key(version, MANIFEST_NAME))
        except BlobNotFoundError:
            incomplete = any(True for _ in self.blobs.list(self._key(version)))
            detail = " (incomplete: its publish never finished)" if incomplete else ""
            raise VersionNotFoundError(f"no version {version} in {self.uri}{detail}") from None
        try:
            return Manifest.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelStoreError(f"manifest of {version} is unreadable: {exc}") from exc

    def read_file(self, version: str, path: str) -> bytes:
        """One file of a version, checked against the manifest."""
        manifest = self.manifest(version)
        entry = next((e for e in manifest.files if e.path == path), None)
        if entry is None:
            raise FileNotFoundError(f"version {version} has no file {path!r}")
        try:
            data = self.blobs.get(self._key(version, path))
        except BlobNotFoundError:
            raise ChecksumMismatchError(version, path, entry.sha256, None) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != entry.sha256:
            raise ChecksumMismatchError(version, path, entry.sha256, actual)
        return data

    def metrics(self, version: str) -> dict[str, Any]:
        """The full metrics.json of a version ({} when the bundle had none)."""
        try:
            return json.loads(self.read_file(version, "metrics.json"))
        except FileNotFoundError:
            return {}

    def download(self, version: str, dest_dir: str | Path, *, replace: bool = True) -> Path:
        """Download a version to `dest_dir/{version}`, verifying every file, and return that path.

        Files land in a temporary sibling directory renamed into place once all are verified,
        so `dest_dir/{version}` is either absent or complete.

        Args:
            version: a complete version.
            dest_dir: parent directory of the bundle directory.
            replace: when `dest_dir/{version}` already exists, swap in the fresh copy (True) or
                keep the existing one (False, for caches shared by several processes).

        Raises:
            VersionNotFoundError: unknown or incomplete version.
            ChecksumMismatchError: a stored file differs from its manifest (names the file).
        """
        manifest = self.manifest(version)
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        final = dest_dir / version
        tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=f".tmp-{version}-"))
        try:
            for entry in manifest.files:
                target = tmp / entry.path
                try:
                    self.blobs.get_file(self._key(version, entry.path), target)
                except BlobNotFoundError:
                    raise ChecksumMismatchError(version, entry.path, entry.sha256, None) from None
                actual, size = _file_digest(target)
                if actual != entry.sha256 or size != entry.size:
                    raise ChecksumMismatchError(version, entry.path, entry.sha256, actual)
            _install_dir(tmp, final, replace=replace)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info(
            "downloaded %s (%d files, %d bytes) to %s", version, len(manifest.files), manifest.size, final
        )
        return final

    def verify(self, version: str) -> Manifest:
        """Download a version to a scratch directory to prove every file matches its manifest."""
        with tempfile.TemporaryDirectory(prefix="verify-") as scratch:
            self.download(version, scratch)
        return self.manifest(version)

    # -- the production pointer ----------------------------------------------------------------

    def production_pointer(self) -> ProductionPointer | None:
        try:
            raw = self.blobs.get(POINTER_KEY)
        except BlobNotFoundError:
            return None
        try:
            return ProductionPointer.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelStoreError(f"{POINTER_KEY} in {self.uri} is unreadable: {exc}") from exc

    def production(self) -> str | None:
        """The production version, or None before the first promotion."""
        pointer = self.production_pointer()
        return pointer.current.version if pointer else None

    def history(self) -> list[Promotion]:
        """The current promotion followed by the earlier ones still reachable by rollback."""
        pointer = self.production_pointer()
        return [pointer.current, *pointer.history] if pointer else []

    def promote(self, version: str, *, verify: Verifier | None) -> Promotion:
        """Point production at a complete version (a no-op if it already is production).

        Args:
            version: a complete version.
            verify: run on `version` before the pointer moves (an exception refuses the
                promotion); None skips it, for tests and tools that just checked the bundle.
                Required so that skipping it is visible where it happens.
        """
        self.manifest(version)  # VersionNotFoundError for unknown or incomplete versions
        pointer = self.production_pointer()
        if pointer and pointer.current.version == version:
            logger.info("%s is already the production version", version)
            return pointer.current
        if verify is not None:
            verify(version)
        promotion = Promotion(version=version, promoted_at=utc_now(), action="promote")
        history = (pointer.current, *pointer.history) if pointer else ()
        self._write_pointer(ProductionPointer(current=promotion, history=history))
        logger.info("promoted %s (previous: %s)", version, pointer.current.version if pointer else None)
        return promotion

    def rollback(self, *, verify: Verifier | None) -> Promotion:
        """Point production back at the previously promoted version (`verify` as for `promote`)."""
        pointer = self.production_pointer()
        if pointer is None:
            raise NothingToRollBackError(f"no production version in {self.uri}: nothing to roll back")
        if not pointer.history:
            raise NothingToRollBackError(
                f"no version was in production before {pointer.current.version} in {self.uri}: "
                "nothing to roll back to"
            )
        target = pointer.history[0]
        if not self.exists(target.version):
            raise VersionNotFoundError(
                f"previous version {target.version} is no longer complete in {self.uri}"
            )
        if verify is not None:
            verify(target.version)
        promotion = Promotion(
            version=target.version,
            promoted_at=utc_now(),
            action="rollback",
            rolled_back_from=pointer.current.version,
        )
        self._write_pointer(ProductionPointer(current=promotion, history=pointer.history[1:]))
        logger.warning("rolled production back from %s to %s", pointer.current.version, target.version)
        return promotion

    def _write_pointer(self, pointer: ProductionPointer) -> None:
        self.blobs.put(POINTER_KEY, _dumps(pointer.to_dict()))

    # -- the shadow pointer: a published version run beside production, never answering -------

    def shadow(self) -> dict[str, Any] | None:
        """`{"version", "since"}` of the version being shadowed, or None."""
        try:
            data = json.loads(self.blobs.get(SHADOW_KEY))
        except BlobNotFoundError:
            return None
        except ValueError as exc:
            raise ModelStoreError(f"{SHADOW_KEY} in {self.uri} is unreadable: {exc}") from exc
        return data if data.get("version") else None

    def set_shadow(self, version: str | None) -> dict[str, Any] | None:
        """Shadow a complete version from now (None: stop shadowing); the new pointer."""
        if version is None:
            self.blobs.put(SHADOW_KEY, _dumps({"version": None, "since": utc_now()}))
            return None
        self.manifest(version)  # VersionNotFoundError for unknown or incomplete versions
        current = self.shadow()
        if current and current["version"] == version:
            return current
        pointer = {"version": version, "since": utc_now()}
        self.blobs.put(SHADOW_KEY, _dumps(pointer))
        logger.info("shadowing %s", version)
        return pointer


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode("utf-8")


def _install_dir(tmp: Path, final: Path, *, replace: bool) -> None:
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if not final.exists():
            raise
    if not replace:
        logger.debug("%s already present: keeping it", final)
        return
    old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def open_model_store(uri: str | Path) -> ModelStore:
    """A model store over `uri`: a local folder or `s3://bucket/prefix`."""
    return ModelStore(open_blob_store(uri))
