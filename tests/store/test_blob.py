"""Blob store behaviours the model registry relies on, on a folder and on S3."""

from __future__ import annotations

import os

import pytest

from store.blob import BlobNotFoundError, BlobStoreUnavailableError, open_blob_store
from tests.store.s3server import closed_port_url


def test_listing_a_folder_prefix_does_not_match_a_sibling_with_a_longer_name(blob_store):
    blob_store.put("versions/v1/a.bin", b"a")
    blob_store.put("versions/v10/b.bin", b"b")

    assert list(blob_store.list("versions/v1/")) == ["versions/v1/a.bin"]
    assert list(blob_store.list("versions/")) == ["versions/v1/a.bin", "versions/v10/b.bin"]


def test_put_if_absent_creates_a_key_once_and_never_overwrites_it(blob_store):
    assert blob_store.put_if_absent("pointer.json", b"first") is True
    assert blob_store.put_if_absent("pointer.json", b"second") is False
    assert blob_store.get("pointer.json") == b"first"


def test_files_round_trip_through_put_file_and_get_file(blob_store, tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several read chunks
    target = tmp_path / "out" / "weights.bin"

    blob_store.put_file("w/weights.bin", source)
    blob_store.get_file("w/weights.bin", target)

    assert target.read_bytes() == source.read_bytes()
    assert not (tmp_path / "out" / "weights.bin.part").exists()


def test_getting_a_missing_key_raises_not_found(blob_store, tmp_path):
    with pytest.raises(BlobNotFoundError):
        blob_store.get("nope.json")
    with pytest.raises(BlobNotFoundError):
        blob_store.get_file("nope.json", tmp_path / "nope.json")
    assert not (tmp_path / "nope.json").exists()


def test_an_s3_endpoint_nobody_listens_on_is_reported_unavailable(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port_url())
    store = open_blob_store("s3://models/registry")

    with pytest.raises(BlobStoreUnavailableError, match="s3://models/registry"):
        store.get("production.json")
