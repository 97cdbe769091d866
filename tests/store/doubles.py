"""Blob stores wrapping a real one, to watch the order of writes or break in the middle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from store.blob import BlobStore, BlobStoreUnavailableError


class RecordingBlobStore(BlobStore):
    """Delegates everything and records the key of every write, in order."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.writes: list[str] = []

    def _write(self, key: str) -> None:
        self.writes.append(key)

    def put(self, key: str, data: bytes) -> None:
        self._write(key)
        self.inner.put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._write(key)
        return self.inner.put_if_absent(key, data)

    def put_file(self, key: str, path: Path) -> None:
        self._write(key)
        self.inner.put_file(key, path)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_file(self, key: str, path: Path) -> None:
        self.inner.get_file(key, path)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._write(key)
        self.inner.delete(key)


class BreakingBlobStore(RecordingBlobStore):
    """Loses its connection after `writes_allowed` writes, like a publish killed halfway."""

    def __init__(self, inner: BlobStore, writes_allowed: int) -> None:
        super().__init__(inner)
        self.writes_allowed = writes_allowed

    def _write(self, key: str) -> None:
        if len(self.writes) >= self.writes_allowed:
            raise BlobStoreUnavailableError(f"connection lost before writing {key}")
        super()._write(key)
