"""Importing a challenge-layout folder: counts, content-addressed images, idempotence, rejections."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select, update

from catalog import importer
from catalog.importer import (
    DUPLICATE_PRODUCT_ID,
    INVALID_LABEL,
    MISSING_LABEL,
    MISSING_PRODUCT_ID,
    NO_TEXT_NO_IMAGE,
    UNDECODABLE_IMAGE,
    UNKNOWN_PRDTYPECODE,
    ChallengeLayoutError,
    import_folder,
)
from catalog.synthetic import generate_catalogue
from config import get_settings
from db import migrate
from db.session import make_engine, make_session_factory
from db.tables import Product
from models.data import IMAGE_DIR, X_FILE, Y_FILE, image_filename, load_challenge_folder
from store.blob import LocalBlobStore

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "rakuten"


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    return generate_catalogue(tmp_path_factory.mktemp("importer") / "catalogue", n_products=150, seed=11)


@pytest.fixture
def store(tmp_path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "images")


def _jpeg(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_folder(
    folder: Path,
    rows: list[tuple[str, str, str, str]],
    labels: list[str],
    images: dict[int, bytes] | None = None,
    *,
    encoding: str = "utf-8",
) -> Path:
    """A challenge-layout folder: rows are (designation, description, productid, imageid)."""
    (folder / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    with (folder / X_FILE).open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["", "designation", "description", "productid", "imageid"])
        writer.writerows([i, *row] for i, row in enumerate(rows))
    with (folder / Y_FILE).open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["", "prdtypecode"])
        writer.writerows([i, label] for i, label in enumerate(labels))
    for i, data in (images or {}).items():
        _, _, product_id, image_id = rows[i]
        (folder / IMAGE_DIR / image_filename(image_id, product_id)).write_bytes(data)
    return folder


def _products(session_factory) -> dict[str, Product]:
    with session_factory() as session:
        return {p.product_id: p for p in session.scalars(select(Product))}


def _copy(catalogue: Path, to: Path) -> Path:
    shutil.copytree(catalogue, to)
    return to


# --------------------------------------------------------------------------- a good folder


def test_a_synthetic_folder_is_imported_row_for_row(catalogue, session_factory, store):
    report = import_folder(catalogue, session_factory=session_factory, image_store=store, progress=False)
    dataset = load_challenge_folder(catalogue)
    assert report.total_rows == len(dataset) == 150
    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (150, 0, 0, 0)
    assert report.images_stored == int(dataset.has_image.sum())
    products = _products(session_factory)
    assert len(products) == 150
    for i, product_id in enumerate(dataset.product_ids):
        product = products[product_id]
        assert (product.designation, product.description) == (
            dataset.designations[i],
            dataset.descriptions[i],
        )
        assert product.prdtypecode == dataset.labels[i]
        assert (product.source, product.label_status) == ("challenge", "verified")
        assert (product.image_ref is not None) == bool(dataset.has_image[i])


def test_images_are_stored_as_original_bytes_under_their_sha256(catalogue, session_factory, store):
    import_folder(catalogue, session_factory=session_factory, image_store=store, progress=False)
    dataset = load_challenge_folder(catalogue)
    products = _products(session_factory)
    for i in range(len(dataset)):
        original = dataset.image_bytes(i)
        if original is None:
            continue
        digest = hashlib.sha256(original).hexdigest()
        ref = products[dataset.product_ids[i]].image_ref
        assert ref == f"products/{digest[:2]}/{digest}.jpg"
        assert store.get(ref) == original


def test_a_second_import_of_the_same_folder_changes_nothing(catalogue, session_factory, store):
    import_folder(catalogue, session_factory=session_factory, image_store=store, progress=False)
    keys_before = list(store.list())
    again = import_folder(catalogue, session_factory=session_factory, image_store=store, progress=False)
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (0, 0, 150, 0)
    assert list(store.list()) == keys_before
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Product)) == 150


def test_a_changed_row_is_updated_and_the_others_left_unchanged(catalogue, tmp_path, session_factory, store):
    import_folder(catalogue, session_factory=session_factory, image_store=store, progress=False)
    folder = _copy(catalogue, tmp_path / "changed")
    x_rows = list(csv.reader((folder / X_FILE).open(newline="", encoding="utf-8")))
    y_rows = list(csv.reader((folder / Y_FILE).open(newline="", encoding="utf-8")))
    text_row = next(r for r in x_rows[1:] if r[1])
    text_row[1] = "Bâche à bulles 4 x 8 m"
    label_row = y_rows[5]
    label_row[1] = "2583" if label_row[1] != "2583" else "2585"
    for name, rows in ((X_FILE, x_rows), (Y_FILE, y_rows)):
        with (folder / name).open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows)

    report = import_folder(folder, session_factory=session_factory, image_store=store, progress=False)

    assert (report.inserted, report.updated, report.unchanged) == (0, 2, 148)
    products = _products(session_factory)
    assert products[text_row[3]].designation == "Bâche à bulles 4 x 8 m"
    assert products[x_rows[5][3]].prdtypecode == int(label_row[1])


def test_an_updated_row_keeps_an_admins_quarantine(tmp_path, session_factory, store):
    rows = [("Pompe de filtration", "", "p1", "1")]
    import_folder(
        _write_folder(tmp_path / "v1", rows, ["2583"]),
        session_factory=session_factory,
        image_store=store,
        progress=False,
    )
    with session_factory() as session, session.begin():
        session.execute(update(Product).values(label_status="quarantined", quarantine_reason="doubtful"))
    import_folder(
        _write_folder(tmp_path / "v2", rows, ["2585"]),
        session_factory=session_factory,
        image_store=store,
        progress=False,
    )
    product = _products(session_factory)["p1"]
    assert (product.prdtypecode, product.label_status) == (2585, "quarantined")


def test_rows_can_be_imported_as_unverified_under_another_source(catalogue, session_factory, store):
    import_folder(
        catalogue,
        session_factory=session_factory,
        image_store=store,
        source="partner",
        label_status="unverified",
        progress=False,
    )
    assert {(p.source, p.label_status) for p in _products(session_factory).values()} == {
        ("partner", "unverified")
    }


def test_a_quarantined_label_status_or_an_oversized_source_is_refused(catalogue, session_factory, store):
    with pytest.raises(ValueError, match="label_status"):
        import_folder(
            catalogue, session_factory=session_factory, image_store=store, label_status="quarantined"
        )
    with pytest.raises(ValueError, match="source"):
        import_folder(catalogue, session_factory=session_factory, image_store=store, source="x" * 33)
    assert _products(session_factory) == {}


# --------------------------------------------------------------------------- broken folders


def test_a_folder_without_its_y_file_is_a_clear_error(catalogue, tmp_path, session_factory, store):
    folder = _copy(catalogue, tmp_path / "no-y")
    (folder / Y_FILE).unlink()
    with pytest.raises(ChallengeLayoutError, match=Y_FILE):
        import_folder(folder, session_factory=session_factory, image_store=store, progress=False)
    assert _products(session_factory) == {}


def test_a_folder_without_its_x_file_is_a_clear_error(tmp_path, session_factory, store):
    with pytest.raises(ChallengeLayoutError, match=X_FILE):
        import_folder(tmp_path, session_factory=session_factory, image_store=store, progress=False)


def test_a_file_without_its_index_column_or_a_column_is_a_clear_error(tmp_path, session_factory, store):
    folder = _write_folder(tmp_path, [("Titre", "", "p1", "1")], ["10"])
    (folder / Y_FILE).write_text("id,prdtypecode\n0,10\n", encoding="utf-8")
    with pytest.raises(ChallengeLayoutError, match="index column"):
        import_folder(folder, session_factory=session_factory, image_store=store, progress=False)
    (folder / Y_FILE).write_text(",label\n0,10\n", encoding="utf-8")
    with pytest.raises(ChallengeLayoutError, match="prdtypecode"):
        import_folder(folder, session_factory=session_factory, image_store=store, progress=False)


def test_every_broken_row_is_rejected_with_its_reason_and_the_rest_imported(tmp_path, session_factory, store):
    rows = [
        ("Piscine tubulaire", "<p>Avec pompe</p>", "p0", "100"),  # 0 ok, text only
        ("", "", "p1", "101"),  # 1 ok, image only
        ("Roman", "", "p2", "102"),  # 2 label not a number
        ("Roman", "", "p3", "103"),  # 3 label empty
        ("Roman", "", "p4", "104"),  # 4 unknown code
        ("", "", "p5", "105"),  # 5 nothing at all
        ("", "", "p6", "106"),  # 6 corrupt image, no text
        ("Tondeuse", "", "p7", "107"),  # 7 corrupt image, with text: kept without image
        ("Doublon", "", "p0", "108"),  # 8 duplicate product id
        ("Sans identifiant", "", "", "109"),  # 9 no product id
        ("Bâche", "", "p10", "110"),  # 10 label written as a float by pandas
        ("<p></p><br/>", "&nbsp;", "p11", "111"),  # 11 HTML-only text and no image
        ("Sans label", "", "p12", "112"),  # 12 no row in Y
    ]
    labels = ["2583", "1280", "abc", "", "9999", "10", "10", "2585", "10", "10", "2583.0", "10"]
    corrupt = _jpeg()[:40]
    images = {1: _jpeg(), 6: corrupt, 7: corrupt}
    folder = _write_folder(tmp_path / "broken", rows, labels, images)

    report = import_folder(folder, session_factory=session_factory, image_store=store, progress=False)

    assert {r.row: r.reason for r in report.rejected_rows} == {
        2: INVALID_LABEL,
        3: MISSING_LABEL,
        4: UNKNOWN_PRDTYPECODE,
        5: NO_TEXT_NO_IMAGE,
        6: UNDECODABLE_IMAGE,
        8: DUPLICATE_PRODUCT_ID,
        9: MISSING_PRODUCT_ID,
        11: NO_TEXT_NO_IMAGE,
        12: MISSING_LABEL,
    }
    assert [(r.row, r.product_id, r.reason) for r in report.rejected_images] == [(7, "p7", UNDECODABLE_IMAGE)]
    assert all(r.detail for r in report.rejected_rows + report.rejected_images)
    assert next(r for r in report.rejected_rows if r.row == 8).product_id == "p0"
    assert (report.total_rows, report.inserted, report.rejected) == (13, 4, 9)
    assert report.inserted + report.updated + report.unchanged + report.rejected == report.total_rows
    products = _products(session_factory)
    assert set(products) == {"p0", "p1", "p7", "p10"}
    assert products["p0"].description == "<p>Avec pompe</p>"  # stored raw
    assert products["p7"].image_ref is None and products["p1"].image_ref is not None
    assert products["p10"].prdtypecode == 2583
    assert len(list(store.list())) == 1


def test_files_saved_with_a_byte_order_mark_are_read(tmp_path, session_factory, store):
    folder = _write_folder(tmp_path, [("Cahier A4", "", "p1", "1")], ["2522"], encoding="utf-8-sig")
    report = import_folder(folder, session_factory=session_factory, image_store=store, progress=False)
    assert (report.inserted, report.rejected) == (1, 0)


def test_batches_smaller_than_the_file_give_the_same_result(catalogue, session_factory, store):
    report = import_folder(
        catalogue, session_factory=session_factory, image_store=store, progress=False, batch_size=7, workers=1
    )
    assert report.inserted == 150
    assert len(_products(session_factory)) == 150


def test_the_progress_bar_goes_to_stderr_unless_disabled(tmp_path, session_factory, store, capsys):
    folder = _write_folder(tmp_path, [("Cahier A4", "", "p1", "1")], ["2522"])
    import_folder(folder, session_factory=session_factory, image_store=store, progress=False)
    assert capsys.readouterr().err == ""
    import_folder(folder, session_factory=session_factory, image_store=store, progress=True)
    captured = capsys.readouterr()
    assert "import" in captured.err and "1/1" in captured.err
    assert captured.out == ""


def test_the_report_serialises_to_json_with_its_counts(tmp_path, session_factory, store):
    folder = _write_folder(tmp_path, [("Cahier", "", "p1", "1"), ("", "", "p2", "2")], ["2522", "2522"])
    report = import_folder(folder, session_factory=session_factory, image_store=store, progress=False)
    data = json.loads(json.dumps(report.to_dict()))
    assert (data["inserted"], data["rejected"], data["rejected_by_reason"]) == (1, 1, {NO_TEXT_NO_IMAGE: 1})
    assert data["rejected_rows"][0] == {
        "row": 1,
        "index": "1",
        "product_id": "p2",
        "reason": NO_TEXT_NO_IMAGE,
        "detail": "empty designation and description, and no image file",
    }
    assert "rejected 1 rows: no_text_no_image" in report.summary()


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def settings_env(monkeypatch, database_url, tmp_path):
    """Point the settings at the test database and a temporary image store."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("IMAGE_STORE_URI", str(tmp_path / "cli-images"))
    get_settings.cache_clear()
    yield tmp_path / "cli-images"
    get_settings.cache_clear()


def test_the_cli_imports_with_the_settings_and_writes_the_report(catalogue, tmp_path, settings_env, capsys):
    report_path = tmp_path / "out" / "report.json"
    code = importer.main(["--data", str(catalogue), "--report", str(report_path), "--no-progress"])
    assert code == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert (report["inserted"], report["rejected"], report["total_rows"]) == (150, 0, 150)
    assert "inserted 150" in capsys.readouterr().out
    assert any(settings_env.rglob("*.jpg"))


def test_the_cli_exits_with_2_on_a_folder_that_is_not_in_the_layout(tmp_path, settings_env):
    assert (
        importer.main(["--data", str(tmp_path), "--report", str(tmp_path / "r.json"), "--no-progress"]) == 2
    )
    assert not (tmp_path / "r.json").exists()


# --------------------------------------------------------------------------- the real data


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real challenge sample not found at {REAL_DATA}")
def test_the_real_challenge_sample_imports_completely(tmp_path):
    url = f"sqlite:///{tmp_path / 'real.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        started = time.perf_counter()
        report = import_folder(
            REAL_DATA,
            session_factory=make_session_factory(engine),
            image_store=LocalBlobStore(tmp_path / "images"),
            progress=False,
        )
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    print(f"\n{report.summary()}\n({seconds:.1f} s)")
    assert report.total_rows == 7405
    assert report.inserted + report.rejected == 7405
    assert report.images_stored + len(report.rejected_images) <= 5804
    assert report.rejected == 0, report.reasons()
    assert report.images_stored == 5804
