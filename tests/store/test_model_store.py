"""The model store, run against a local folder and a real S3 endpoint alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store.model_store import (
    MANIFEST_NAME,
    POINTER_KEY,
    ChecksumMismatchError,
    InvalidBundleError,
    InvalidVersionError,
    ModelStore,
    ModelStoreError,
    NothingToRollBackError,
    UnservableVersionError,
    VersionExistsError,
    VersionNotFoundError,
)
from tests.store.bundles import bundle_files, make_bundle
from tests.store.doubles import BreakingBlobStore, RecordingBlobStore

V1, V2, V3 = "v20261127-113005-ab12cd", "v20261204-090000-cd34ef", "v20261211-090000-ef56ab"


def publish(store: ModelStore, bundles_dir: Path, version: str, **kwargs: object) -> str:
    return store.publish(make_bundle(bundles_dir, version, **kwargs))  # type: ignore[arg-type]


# -- publishing ----------------------------------------------------------------------------


def test_publish_uploads_every_file_under_the_version_and_returns_its_name(
    model_store, blob_store, bundles_dir
):
    bundle = make_bundle(bundles_dir, V1)

    version = model_store.publish(bundle)

    assert version == V1
    stored = set(blob_store.list(f"versions/{V1}/"))
    expected = {f"versions/{V1}/{name}" for name in bundle_files(bundle)} | {f"versions/{V1}/{MANIFEST_NAME}"}
    assert stored == expected
    assert f"versions/{V1}/plots/confusion.png" in stored


def test_the_manifest_lists_each_file_with_its_checksum_and_size(model_store, bundles_dir):
    bundle = make_bundle(bundles_dir, V1, weights_bytes=1000)
    model_store.publish(bundle)

    manifest = model_store.manifest(V1)

    assert {entry.path for entry in manifest.files} == set(bundle_files(bundle))
    text = next(entry for entry in manifest.files if entry.path == "text.keras")
    assert text.size == 1000
    assert len(text.sha256) == 64
    assert manifest.created_at == "2026-11-27T11:30:05+00:00"
    assert manifest.metadata["labels"] == ["10", "40", "50", "2583"]
    assert manifest.metrics["fusion"]["weighted_f1"] == pytest.approx(0.8)
    assert "per_class_recall" not in manifest.metrics["fusion"]


def test_list_versions_gives_complete_versions_oldest_first_with_a_metrics_summary(model_store, bundles_dir):
    publish(model_store, bundles_dir, V2, created_at="2026-12-04T09:00:00+00:00")
    publish(model_store, bundles_dir, V1, created_at="2026-11-27T11:30:05+00:00")

    versions = model_store.list_versions()

    assert [v.version for v in versions] == [V1, V2]
    assert all(v.complete for v in versions)
    assert versions[0].created_at == "2026-11-27T11:30:05+00:00"
    assert versions[0].n_files == 8
    assert versions[0].metrics["text"]["weighted_f1"] == pytest.approx(0.75)


def test_versions_whose_names_share_a_prefix_are_kept_apart(model_store, bundles_dir):
    publish(model_store, bundles_dir, "v1")
    publish(model_store, bundles_dir, "v10")

    assert [v.version for v in model_store.list_versions()] == ["v1", "v10"]
    assert len(model_store.manifest("v1").files) == 8


def test_publishing_an_existing_version_is_refused_and_leaves_it_unchanged(
    model_store, bundles_dir, tmp_path
):
    original = make_bundle(bundles_dir, V1)
    model_store.publish(original)
    impostor = make_bundle(tmp_path / "other", V1)

    with pytest.raises(VersionExistsError, match="immutable"):
        model_store.publish(impostor)

    downloaded = model_store.download(V1, tmp_path / "out")
    assert bundle_files(downloaded) == bundle_files(original)


def test_republishing_the_same_files_with_exist_ok_is_accepted_but_not_different_ones(
    model_store, bundles_dir, tmp_path
):
    bundle = make_bundle(bundles_dir, V1)
    model_store.publish(bundle)

    assert model_store.publish(bundle, exist_ok=True) == V1
    with pytest.raises(VersionExistsError):
        model_store.publish(make_bundle(tmp_path / "other", V1), exist_ok=True)


def test_the_manifest_is_written_last(blob_store, bundles_dir):
    recording = RecordingBlobStore(blob_store)

    ModelStore(recording).publish(make_bundle(bundles_dir, V1))

    assert recording.writes[-1] == f"versions/{V1}/{MANIFEST_NAME}"
    assert len(recording.writes) == 9
    assert POINTER_KEY not in recording.writes  # publishing never promotes


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (None, "no metadata.json"),
        ({"created_at": "2026-11-27"}, "invalid version"),
        ({"version": "../escape"}, "invalid version"),
        ({"version": "x" * 65}, "invalid version"),
    ],
)
def test_bundles_without_a_valid_version_are_refused(model_store, tmp_path, metadata, message):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "text.keras").write_bytes(b"weights")
    if metadata is not None:
        (bundle / "metadata.json").write_text(json.dumps(metadata))

    with pytest.raises(InvalidBundleError, match=message):
        model_store.publish(bundle)
    assert model_store.list_versions(include_incomplete=True) == []


def test_a_bundle_carrying_its_own_manifest_file_is_refused(model_store, bundles_dir):
    bundle = make_bundle(bundles_dir, V1)
    (bundle / MANIFEST_NAME).write_text("{}")

    with pytest.raises(InvalidBundleError, match="reserved"):
        model_store.publish(bundle)


# -- interrupted publishes -------------------------------------------------------------------


def test_an_interrupted_publish_leaves_an_incomplete_version_that_listings_ignore(blob_store, bundles_dir):
    store = ModelStore(blob_store)
    publish(store, bundles_dir, V1)
    breaking = ModelStore(BreakingBlobStore(blob_store, writes_allowed=3))

    with pytest.raises(Exception, match="connection lost"):
        breaking.publish(make_bundle(bundles_dir, V2))

    assert [v.version for v in store.list_versions()] == [V1]
    flagged = store.list_versions(include_incomplete=True)
    assert [(v.version, v.complete) for v in flagged] == [(V1, True), (V2, False)]
    assert store.incomplete_versions() == [V2]
    with pytest.raises(VersionNotFoundError, match="incomplete"):
        store.manifest(V2)
    with pytest.raises(VersionNotFoundError):
        store.promote(V2, verify=None)
    assert store.production() is None


def test_a_later_publish_of_an_interrupted_version_completes_it_and_drops_stale_files(
    blob_store, bundles_dir, tmp_path
):
    store = ModelStore(blob_store)
    first_attempt = make_bundle(bundles_dir, V1)
    (first_attempt / "stale.bin").write_bytes(b"only in the first attempt")
    with pytest.raises(Exception, match="connection lost"):
        ModelStore(BreakingBlobStore(blob_store, writes_allowed=9)).publish(
            first_attempt
        )  # 9 files, no manifest
    second_attempt = make_bundle(tmp_path / "retry", V1)

    assert store.publish(second_attempt) == V1

    assert [v.version for v in store.list_versions()] == [V1]
    assert f"versions/{V1}/stale.bin" not in set(blob_store.list(f"versions/{V1}/"))
    assert bundle_files(store.download(V1, tmp_path / "out")) == bundle_files(second_attempt)


# -- downloading -----------------------------------------------------------------------------


def test_download_reproduces_the_bundle_byte_for_byte(model_store, bundles_dir, tmp_path):
    bundle = make_bundle(bundles_dir, V1)
    model_store.publish(bundle)

    path = model_store.download(V1, tmp_path / "downloads")

    assert path == tmp_path / "downloads" / V1
    assert bundle_files(path) == bundle_files(bundle)
    assert [p.name for p in (tmp_path / "downloads").iterdir()] == [V1]  # no temporary left over


def test_download_of_a_tampered_object_fails_naming_the_file_and_leaves_nothing(
    model_store, blob_store, bundles_dir, tmp_path
):
    publish(model_store, bundles_dir, V1)
    blob_store.put(f"versions/{V1}/image.keras", b"weights swapped behind the registry's back")
    dest = tmp_path / "downloads"

    with pytest.raises(ChecksumMismatchError, match=r"image\.keras") as caught:
        model_store.download(V1, dest)

    assert caught.value.path == "image.keras"
    assert caught.value.version == V1
    assert list(dest.iterdir()) == []


def test_download_of_a_version_missing_a_file_fails_naming_the_file(
    model_store, blob_store, bundles_dir, tmp_path
):
    publish(model_store, bundles_dir, V1)
    blob_store.delete(f"versions/{V1}/plots/confusion.png")

    with pytest.raises(ChecksumMismatchError, match=r"plots/confusion\.png.*missing"):
        model_store.download(V1, tmp_path / "downloads")


def test_download_of_an_unknown_version_is_refused(model_store, tmp_path):
    with pytest.raises(VersionNotFoundError, match=V1):
        model_store.download(V1, tmp_path / "downloads")
    with pytest.raises(InvalidVersionError):
        model_store.download("../../etc", tmp_path / "downloads")


def test_a_manifest_naming_a_path_outside_the_bundle_is_refused(
    model_store, blob_store, bundles_dir, tmp_path
):
    publish(model_store, bundles_dir, V1)
    key = f"versions/{V1}/{MANIFEST_NAME}"
    manifest = json.loads(blob_store.get(key))
    manifest["files"][0]["path"] = "../../outside.txt"
    blob_store.put(key, json.dumps(manifest).encode())

    with pytest.raises(ModelStoreError, match="invalid file path"):
        model_store.download(V1, tmp_path / "downloads")
    assert not (tmp_path / "outside.txt").exists()


def test_verify_and_read_file_check_contents_against_the_manifest(model_store, blob_store, bundles_dir):
    publish(model_store, bundles_dir, V1)
    assert model_store.metrics(V1)["fusion"]["per_class_recall"]["2583"] == pytest.approx(0.8)
    assert model_store.verify(V1).version == V1

    blob_store.put(f"versions/{V1}/metrics.json", b'{"fusion": {"weighted_f1": 0.99}}')

    with pytest.raises(ChecksumMismatchError, match=r"metrics\.json"):
        model_store.metrics(V1)
    with pytest.raises(ChecksumMismatchError, match=r"metrics\.json"):
        model_store.verify(V1)


# -- the production pointer -----------------------------------------------------------------


def test_nothing_is_in_production_before_the_first_promotion(model_store, bundles_dir):
    publish(model_store, bundles_dir, V1)

    assert model_store.production() is None
    assert model_store.history() == []


def test_promote_points_production_at_the_version(model_store, bundles_dir):
    publish(model_store, bundles_dir, V1)

    promotion = model_store.promote(V1, verify=None)

    assert promotion.version == V1
    assert promotion.action == "promote"
    assert model_store.production() == V1


def test_promotion_writes_only_the_pointer(blob_store, bundles_dir):
    recording = RecordingBlobStore(blob_store)
    store = ModelStore(recording)
    publish(store, bundles_dir, V1)
    recording.writes.clear()

    store.promote(V1, verify=None)

    assert recording.writes == [POINTER_KEY]
    pointer = json.loads(blob_store.get(POINTER_KEY))
    assert pointer["version"] == V1
    assert pointer["history"] == []
    assert pointer["promoted_at"]


def test_promote_refuses_an_unknown_version_and_keeps_production(model_store, bundles_dir):
    publish(model_store, bundles_dir, V1)
    model_store.promote(V1, verify=None)

    with pytest.raises(VersionNotFoundError, match=V2):
        model_store.promote(V2, verify=None)

    assert model_store.production() == V1


def test_promoting_the_production_version_again_changes_nothing(model_store, bundles_dir):
    publish(model_store, bundles_dir, V1)
    first = model_store.promote(V1, verify=None)

    assert model_store.promote(V1, verify=None) == first
    assert len(model_store.history()) == 1


def test_rollback_returns_to_the_previously_promoted_version(model_store, bundles_dir):
    for version in (V1, V2, V3):
        publish(model_store, bundles_dir, version)
        model_store.promote(version, verify=None)
    assert [p.version for p in model_store.history()] == [V3, V2, V1]

    back = model_store.rollback(verify=None)

    assert (back.version, back.action, back.rolled_back_from) == (V2, "rollback", V3)
    assert model_store.production() == V2
    assert [p.version for p in model_store.history()] == [V2, V1]
    assert model_store.rollback(verify=None).version == V1
    assert model_store.production() == V1


def test_a_promotion_the_verifier_refuses_leaves_the_pointer_where_it_was(model_store, bundles_dir):
    for version in (V1, V2):
        publish(model_store, bundles_dir, version)
    model_store.promote(V1, verify=None)
    checked: list[str] = []

    def refuse(version: str) -> None:
        checked.append(version)
        raise UnservableVersionError(version, "does not load")

    with pytest.raises(UnservableVersionError, match=f"{V2} cannot be served: does not load"):
        model_store.promote(V2, verify=refuse)

    assert checked == [V2]
    assert [p.version for p in model_store.history()] == [V1]


def test_a_rollback_the_verifier_refuses_leaves_the_pointer_where_it_was(model_store, bundles_dir):
    for version in (V1, V2):
        publish(model_store, bundles_dir, version)
        model_store.promote(version, verify=None)
    checked: list[str] = []

    def refuse(version: str) -> None:
        checked.append(version)
        raise UnservableVersionError(version, "does not load")

    with pytest.raises(UnservableVersionError):
        model_store.rollback(verify=refuse)

    assert checked == [V1]  # the target of the rollback, not the current version
    assert [p.version for p in model_store.history()] == [V2, V1]


def test_rollback_with_no_earlier_promotion_is_an_error(model_store, bundles_dir):
    with pytest.raises(NothingToRollBackError, match="no production"):
        model_store.rollback(verify=None)
    publish(model_store, bundles_dir, V1)
    model_store.promote(V1, verify=None)

    with pytest.raises(NothingToRollBackError, match="nothing to roll back"):
        model_store.rollback(verify=None)

    assert model_store.production() == V1
