"""The synthetic catalogue: deterministic, in the challenge layout, with the real data's noise."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catalog import synthetic
from catalog.synthetic import MANIFEST_FILE, generate_catalogue
from db.categories import CATEGORIES
from models.data import IMAGE_DIR, X_FILE, Y_FILE, image_filename, load_challenge_folder

N_PRODUCTS = 400


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    return generate_catalogue(
        tmp_path_factory.mktemp("synthetic") / "catalogue", n_products=N_PRODUCTS, seed=3
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _x_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / X_FILE).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_same_seed_gives_byte_identical_files(tmp_path):
    first = _files(generate_catalogue(tmp_path / "a", n_products=60, seed=5))
    second = _files(generate_catalogue(tmp_path / "b", n_products=60, seed=5))
    assert first == second
    assert sum(name.endswith(".jpg") for name in first) > 30


def test_a_different_seed_gives_a_different_catalogue(tmp_path):
    first = _files(generate_catalogue(tmp_path / "a", n_products=60, seed=5))
    second = _files(generate_catalogue(tmp_path / "b", n_products=60, seed=6))
    assert first[X_FILE] != second[X_FILE]
    assert {k for k in first if k.endswith(".jpg")}.isdisjoint(k for k in second if k.endswith(".jpg"))


def test_the_files_have_the_challenge_headers(catalogue):
    assert (catalogue / X_FILE).read_text(encoding="utf-8").splitlines()[0] == (
        ",designation,description,productid,imageid"
    )
    assert (catalogue / Y_FILE).read_text(encoding="utf-8").splitlines()[0] == ",prdtypecode"
    with (catalogue / "categories.csv").open(newline="", encoding="utf-8") as handle:
        assert {int(r["prdtypecode"]): r["name"] for r in csv.DictReader(handle)} == CATEGORIES


def test_the_layout_is_readable_by_load_challenge_folder(catalogue):
    dataset = load_challenge_folder(catalogue)
    assert len(dataset) == N_PRODUCTS
    assert len(set(dataset.product_ids)) == N_PRODUCTS
    assert set(dataset.labels.tolist()) <= set(CATEGORIES)
    images, ok = dataset.load_images(np.flatnonzero(dataset.has_image)[:20], size=32)
    assert ok.all() and images.shape == (20, 32, 32, 3)


def test_every_category_is_present_and_the_mix_is_mildly_imbalanced(catalogue):
    counts = Counter(load_challenge_folder(catalogue).labels.tolist())
    assert set(counts) == set(CATEGORIES)
    ratio = max(counts.values()) / min(counts.values())
    assert 1.5 < ratio < 8


def test_every_category_has_a_vocabulary_and_a_look():
    assert set(synthetic._VOCABULARY) == set(CATEGORIES)
    assert set(synthetic._LOOKS) == set(CATEGORIES)


def test_the_modality_mix_is_about_70_15_15_as_in_the_files(catalogue):
    rows = _x_rows(catalogue)
    image_dir = catalogue / IMAGE_DIR
    with_image = [(image_dir / image_filename(r["imageid"], r["productid"])).is_file() for r in rows]
    with_text = [bool(r["designation"] or r["description"]) for r in rows]
    both = sum(i and t for i, t in zip(with_image, with_text, strict=True)) / len(rows)
    text_only = sum(t and not i for i, t in zip(with_image, with_text, strict=True)) / len(rows)
    image_only = sum(i and not t for i, t in zip(with_image, with_text, strict=True)) / len(rows)
    assert both + text_only + image_only == pytest.approx(1.0)  # never neither
    assert both == pytest.approx(0.70, abs=0.07)
    assert text_only == pytest.approx(0.15, abs=0.05)
    assert image_only == pytest.approx(0.15, abs=0.05)
    manifest = json.loads((catalogue / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["modalities"]["image_only"] == round(image_only * len(rows))


def test_texts_carry_the_real_noise(catalogue):
    descriptions = [r["description"] for r in _x_rows(catalogue) if r["designation"]]
    non_empty = [d for d in descriptions if d]
    assert 1 - len(non_empty) / len(descriptions) == pytest.approx(0.35, abs=0.08)
    with_tags = sum(bool(re.search(r"<(p|br|ul|li|strong)\b", d)) for d in non_empty) / len(non_empty)
    assert 0.1 < with_tags < 0.5
    assert any(re.search(r"&(eacute|agrave|#39);", d) for d in non_empty)
    assert any("&amp;" in d for d in non_empty)  # double-escaped


def test_titles_use_french_words_of_their_category(catalogue):
    rows = _x_rows(catalogue)
    with (catalogue / Y_FILE).open(newline="", encoding="utf-8") as handle:
        labels = [int(r["prdtypecode"]) for r in csv.DictReader(handle)]
    pool_words = re.compile(r"piscine|bâche|filtre|skimmer|pompe|liner", re.IGNORECASE)
    hits = Counter(
        label for r, label in zip(rows, labels, strict=True) if pool_words.search(r["designation"])
    )
    assert hits.most_common(1)[0][0] == 2583
    assert hits[2583] > sum(hits.values()) / 2


def test_a_few_labels_and_images_are_wrong_on_purpose_and_listed(catalogue):
    manifest = json.loads((catalogue / MANIFEST_FILE).read_text(encoding="utf-8"))
    dataset = load_challenge_folder(catalogue)
    written = dict(zip(dataset.product_ids, dataset.labels.tolist(), strict=True))
    assert 0 < len(manifest["wrong_labels"]) <= 0.05 * N_PRODUCTS
    for wrong in manifest["wrong_labels"]:
        assert wrong["written"] != wrong["true"]
        assert written[str(wrong["productid"])] == wrong["written"]
    assert 0 < len(manifest["wrong_images"]) <= 0.07 * N_PRODUCTS
    assert all(w["image_of"] != w["prdtypecode"] for w in manifest["wrong_images"])


def test_images_are_jpegs_of_the_requested_size_and_not_flat(tmp_path):
    folder = generate_catalogue(tmp_path, n_products=40, seed=1, image_size=48)
    paths = sorted((folder / IMAGE_DIR).glob("*.jpg"))
    assert paths
    for path in paths:
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            assert image.format == "JPEG" and image.size == (48, 48)
            assert np.asarray(image).std() > 10


def test_image_colours_depend_on_the_category(catalogue):
    """A nearest-centroid on saturated-pixel hue histograms beats chance several times over."""
    from matplotlib.colors import rgb_to_hsv

    dataset = load_challenge_folder(catalogue)
    indices = np.flatnonzero(dataset.has_image)
    images, _ = dataset.load_images(indices, size=32)
    hsv = rgb_to_hsv(images / 255.0)
    features = np.array([np.histogram(h[..., 0][h[..., 1] > 0.45], bins=24, range=(0, 1))[0] for h in hsv])
    features = features / 1024.0
    labels = dataset.labels[indices]
    half = len(indices) // 2
    codes = sorted(set(labels[:half].tolist()))
    centroids = np.array([features[:half][labels[:half] == c].mean(axis=0) for c in codes])
    distances = ((features[half:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    accuracy = (np.array(codes)[distances.argmin(axis=1)] == labels[half:]).mean()
    assert accuracy > 4 / len(CATEGORIES)


def test_regenerating_into_the_same_folder_leaves_no_stale_image(tmp_path):
    generate_catalogue(tmp_path, n_products=50, seed=1)
    generate_catalogue(tmp_path, n_products=50, seed=2)
    expected = {
        image_filename(r["imageid"], r["productid"])
        for r in _x_rows(tmp_path)
        if (tmp_path / IMAGE_DIR / image_filename(r["imageid"], r["productid"])).is_file()
    }
    assert {p.name for p in (tmp_path / IMAGE_DIR).glob("*.jpg")} == expected


def test_a_tiny_catalogue_is_still_valid(tmp_path):
    dataset = load_challenge_folder(generate_catalogue(tmp_path, n_products=5, seed=0))
    assert len(dataset) == 5


def test_the_cli_writes_a_catalogue(tmp_path, capsys):
    synthetic.main(["--out", str(tmp_path / "cli"), "--n", "30", "--seed", "4"])
    assert len(load_challenge_folder(tmp_path / "cli")) == 30
    assert str(tmp_path / "cli") in capsys.readouterr().out


def test_nonsense_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError):
        generate_catalogue(tmp_path, n_products=0)
    with pytest.raises(ValueError):
        generate_catalogue(tmp_path, image_size=4)
