"""The API's model cache: verified local copies, and serving the last one when the store is down."""

from __future__ import annotations

import logging

import pytest

from store.blob import open_blob_store
from store.model_cache import PRODUCTION_RECORD, ModelCache, ModelUnavailableError, NoProductionModelError
from store.model_store import ChecksumMismatchError, ModelStore, VersionNotFoundError
from tests.store.bundles import bundle_files, make_bundle
from tests.store.s3server import closed_port_url, create_bucket, running_moto_server

V1, V2, V3, V4 = "v1", "v2", "v3", "v4"


def published(store: ModelStore, bundles_dir, *versions: str, promote: str | None = None) -> ModelStore:
    for version in versions:
        store.publish(make_bundle(bundles_dir, version))
    if promote:
        store.promote(promote, verify=None)
    return store


def test_fetch_production_downloads_the_production_bundle_from_the_store(model_store, bundles_dir, tmp_path):
    published(model_store, bundles_dir, V1, V2, promote=V2)
    cache = ModelCache(model_store, tmp_path / "cache")

    bundle = cache.fetch_production()

    assert (bundle.version, bundle.source, bundle.downloaded) == (V2, "store", True)
    assert bundle.path == tmp_path / "cache" / "bundles" / V2
    assert bundle_files(bundle.path) == bundle_files(bundles_dir / V2)
    assert cache.cached_production() == V2


def test_a_cached_production_bundle_is_not_downloaded_again(model_store, bundles_dir, tmp_path):
    published(model_store, bundles_dir, V1, promote=V1)
    cache = ModelCache(model_store, tmp_path / "cache")
    cache.fetch_production()

    again = cache.fetch_production()

    assert (again.version, again.source, again.downloaded) == (V1, "store", False)


def test_fetch_production_follows_a_new_promotion_and_a_rollback(model_store, bundles_dir, tmp_path):
    published(model_store, bundles_dir, V1, V2, promote=V1)
    cache = ModelCache(model_store, tmp_path / "cache")
    assert cache.fetch_production().version == V1

    model_store.promote(V2, verify=None)
    assert cache.fetch_production().version == V2
    model_store.rollback(verify=None)
    assert cache.fetch_production().version == V1


def test_fetch_production_without_any_promotion_is_an_error(model_store, bundles_dir, tmp_path):
    published(model_store, bundles_dir, V1)

    with pytest.raises(NoProductionModelError):
        ModelCache(model_store, tmp_path / "cache").fetch_production()


def test_a_tampered_production_bundle_is_refused_and_nothing_is_cached(
    model_store, blob_store, bundles_dir, tmp_path
):
    published(model_store, bundles_dir, V1, promote=V1)
    blob_store.put(f"versions/{V1}/fusion.keras", b"tampered")
    cache = ModelCache(model_store, tmp_path / "cache")

    with pytest.raises(ChecksumMismatchError, match="fusion"):
        cache.fetch_production()

    assert cache.cached_versions() == []
    assert cache.cached_production() is None


def test_fetch_of_an_explicit_version_downloads_it_once_then_serves_it_from_disk(
    model_store, bundles_dir, tmp_path
):
    published(model_store, bundles_dir, V1)
    cache = ModelCache(model_store, tmp_path / "cache")

    first, second = cache.fetch(V1), cache.fetch(V1)

    assert (first.source, first.downloaded) == ("store", True)
    assert (second.source, second.downloaded) == ("cache", False)
    with pytest.raises(VersionNotFoundError):
        cache.fetch(V2)


def test_the_cache_keeps_at_most_n_versions_and_always_the_production_one(model_store, bundles_dir, tmp_path):
    published(model_store, bundles_dir, V1, V2, V3, V4, promote=V1)
    cache = ModelCache(model_store, tmp_path / "cache", keep=2)
    cache.fetch_production()

    for version in (V2, V3, V4):
        cache.fetch(version)

    assert sorted(cache.cached_versions()) == [V1, V4]
    assert sorted(p.name for p in (tmp_path / "cache" / "bundles").iterdir()) == [V1, V4]  # no trash left


# -- the store unreachable (S3) --------------------------------------------------------------


def test_an_unreachable_store_is_answered_with_the_cached_production_bundle(
    s3_bucket, bundles_dir, tmp_path, monkeypatch, caplog
):
    store = published(ModelStore(open_blob_store(f"s3://{s3_bucket}/m")), bundles_dir, V1, promote=V1)
    ModelCache(store, tmp_path / "cache").fetch_production()
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port_url())
    unreachable = ModelStore(open_blob_store(f"s3://{s3_bucket}/m"))

    with caplog.at_level(logging.WARNING, logger="store.model_cache"):
        bundle = ModelCache(unreachable, tmp_path / "cache").fetch_production()

    assert (bundle.version, bundle.source, bundle.downloaded) == (V1, "cache", False)
    assert bundle_files(bundle.path) == bundle_files(bundles_dir / V1)
    assert any("unreachable" in r.message and V1 in r.message for r in caplog.records)


def test_a_stopped_s3_server_is_answered_with_the_cached_production_bundle(
    s3_endpoint, bundles_dir, tmp_path, monkeypatch, caplog
):
    with running_moto_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        bucket = create_bucket(endpoint)
        store = published(ModelStore(open_blob_store(f"s3://{bucket}")), bundles_dir, V1, V2, promote=V2)
        cache = ModelCache(store, tmp_path / "cache")
        assert cache.fetch_production().source == "store"

    with caplog.at_level(logging.WARNING, logger="store.model_cache"):
        bundle = cache.fetch_production()  # same client, its server gone

    assert (bundle.version, bundle.source) == (V2, "cache")
    assert "unreachable" in caplog.text


def test_an_unreachable_store_with_an_empty_cache_is_a_clear_error(s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port_url())
    cache = ModelCache(ModelStore(open_blob_store("s3://models")), tmp_path / "cache")

    with pytest.raises(ModelUnavailableError, match="no production bundle is cached"):
        cache.fetch_production()
    with pytest.raises(ModelUnavailableError, match="not cached"):
        cache.fetch(V1)


def test_a_cached_production_record_without_its_bundle_is_not_served(
    s3_bucket, bundles_dir, tmp_path, monkeypatch
):
    store = published(ModelStore(open_blob_store(f"s3://{s3_bucket}")), bundles_dir, V1, promote=V1)
    cache = ModelCache(store, tmp_path / "cache")
    cache.fetch_production()
    (tmp_path / "cache" / PRODUCTION_RECORD).write_text('{"version": "v9"}')
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port_url())

    with pytest.raises(ModelUnavailableError):
        ModelCache(ModelStore(open_blob_store(f"s3://{s3_bucket}")), tmp_path / "cache").fetch_production()
