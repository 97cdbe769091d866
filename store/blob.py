"""Object storage behind one small interface: a local folder (embedded default) or S3.

`open_blob_store("var/images")` gives a folder store; `open_blob_store("s3://bucket/prefix")`
an S3 one (the endpoint comes from boto3's standard `AWS_ENDPOINT_URL`, so MinIO and a local
S3 server work unchanged). Keys are '/'-separated relative paths.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO


class BlobNotFoundError(KeyError):
    """The key does not exist in the store."""


class BlobStoreUnavailableError(RuntimeError):
    """The store could not be reached (network, credentials, missing bucket)."""


class _PreconditionFailedError(Exception):
    """A conditional S3 write found its condition false (internal to S3BlobStore)."""


_CHUNK = 1024 * 1024


def _check_key(key: str) -> str:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"invalid object key: {key!r}")
    return str(path)


class BlobStore(ABC):
    """Put, get, list and delete byte objects by key."""

    uri: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix`, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` only if it does not exist; False when it already did.

        This default checks then writes; the implementations below make it atomic so that
        two writers racing for the same key cannot both win.
        """
        if self.exists(key):
            return False
        self.put(key, data)
        return True

    def put_file(self, key: str, path: Path) -> None:
        self.put(key, Path(path).read_bytes())

    def get_file(self, key: str, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.get(key)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def put_content_addressed(self, data: bytes, *, suffix: str = "", namespace: str = "") -> str:
        """Store `data` under a key derived from its SHA-256 and return the key (idempotent)."""
        digest = hashlib.sha256(data).hexdigest()
        key = f"{namespace.strip('/') + '/' if namespace else ''}{digest[:2]}/{digest}{suffix}"
        if not self.exists(key):
            self.put(key, data)
        return key

    def describe(self) -> str:
        return self.uri


class LocalBlobStore(BlobStore):
    """Objects as files below a root folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            # link() fails if the target exists, and readers only ever see a complete file.
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise BlobNotFoundError(key)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFoundError(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self.root.exists():
            return iter(())
        keys = (
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        return iter(sorted(k for k in keys if k.startswith(prefix)))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3BlobStore(BlobStore):
    """Objects in an S3 bucket under an optional prefix, through boto3."""

    def __init__(self, bucket: str, prefix: str = "", client: object | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = client or boto3.client(
            "s3",
            config=Config(
                connect_timeout=3, read_timeout=20, retries={"max_attempts": 3, "mode": "standard"}
            ),
        )

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, method: str, **kwargs: object) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise BlobNotFoundError(kwargs.get("Key", "")) from exc
            if code in {"PreconditionFailed", "412"}:
                raise _PreconditionFailedError(kwargs.get("Key", "")) from exc
            raise BlobStoreUnavailableError(f"{self.uri}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise BlobStoreUnavailableError(f"{self.uri}: {exc}") from exc

    def _read_body(self, key: str, sink: BinaryIO | None = None) -> bytes:
        """GET `key`; the body goes to `sink` in chunks when given (errors mid-stream included)."""
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError

        body = self._call("get_object", Key=self._key(key))["Body"]
        try:
            if sink is None:
                return body.read()
            for chunk in body.iter_chunks(chunk_size=_CHUNK):
                sink.write(chunk)
            return b""
        except (BotoCoreError, HTTPError) as exc:
            # Only network failures: an OSError writing to `sink` (disk full) is not the store's.
            raise BlobStoreUnavailableError(f"{self.uri}: reading {key}: {exc}") from exc
        finally:
            body.close()

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", Key=self._key(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            self._call("put_object", Key=self._key(key), Body=data, IfNoneMatch="*")
        except _PreconditionFailedError:
            return False
        return True

    def put_file(self, key: str, path: Path) -> None:
        # A single streamed PUT (up to 5 GB): the file is never held in memory.
        with Path(path).open("rb") as handle:
            self._call("put_object", Key=self._key(key), Body=handle)

    def get(self, key: str) -> bytes:
        return self._read_body(key)

    def get_file(self, key: str, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        try:
            with tmp.open("wb") as handle:
                self._read_body(key, handle)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Key=self._key(key))
        except BlobNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        full = self._key(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        if prefix.endswith("/") and not full.endswith("/"):
            # _check_key normalises "a/b/" to "a/b", which would also match "a/bc/...".
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, object] = {"Prefix": full}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", **kwargs)
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=self._key(key))


def open_blob_store(uri: str | Path) -> BlobStore:
    """A store for `uri`: `s3://bucket/prefix` or a local folder path (`file://` optional)."""
    uri = str(uri)
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {uri!r}")
        return S3BlobStore(bucket, prefix)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return LocalBlobStore(uri)
