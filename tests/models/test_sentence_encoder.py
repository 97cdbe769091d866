"""The serving side of the sentence encoder: ONNX Runtime, NumPy and SentencePiece only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import models.sentence_encoder as sentence_encoder
from models.sentence_encoder import (
    EMBEDDING_DIM,
    ENCODER_FILE,
    TOKENIZER_FILE,
    SentenceEncoder,
    SentenceEncoderError,
)
from tests.models.sentence_texts import PRODUCT_TEXTS
from tests.models.serving_imports import heavy_modules_after


@pytest.fixture(scope="module")
def encoder(sentence_encoder_dir: Path) -> SentenceEncoder:
    return SentenceEncoder.from_dir(sentence_encoder_dir)


def test_encode_gives_one_unit_float32_row_per_text(encoder) -> None:
    vectors = encoder.encode(PRODUCT_TEXTS)
    assert vectors.shape == (len(PRODUCT_TEXTS), EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({row.tobytes() for row in vectors}) == len(PRODUCT_TEXTS) - 2  # "", "   " and "\n\n" coincide


def test_an_embedding_does_not_depend_on_its_batch_or_its_place_in_it(encoder, monkeypatch) -> None:
    alone = np.concatenate([encoder.encode([text]) for text in PRODUCT_TEXTS])
    monkeypatch.setattr(sentence_encoder, "BATCH_TOKENS", 64)  # many padded batches, texts reordered
    np.testing.assert_allclose(encoder.encode(PRODUCT_TEXTS), alone, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(PRODUCT_TEXTS[::-1]), alone[::-1], atol=1e-5)


def test_no_text_gives_no_rows(encoder) -> None:
    assert encoder.encode([]).shape == (0, EMBEDDING_DIM)


def test_texts_wrap_their_pieces_in_bos_and_eos_and_a_text_without_pieces_is_one_unknown(encoder) -> None:
    bos, eos, unk = 1, 2, 0
    tokens = encoder.tokenize(["", "   ", "Bâche de piscine", "train 🚂🚃🚃"])
    assert tokens[0] == tokens[1] == [bos, unk, eos]
    assert tokens[3].count(unk) == 3  # one per unknown character, as the package counts them
    assert tokens[2][0] == bos and tokens[2][-1] == eos and unk not in tokens[2] and len(tokens[2]) > 3


def test_related_listings_are_closer_than_unrelated_ones(encoder) -> None:
    cover, tarp, novel, pad = encoder.encode(
        [
            "Bâche de piscine hors sol 4x8 m",
            "Couverture de protection pour bassin",
            "Roman policier",
            "Tapis de souris",
        ]
    )
    assert cover @ tarp > max(cover @ novel, cover @ pad) + 0.1


def test_batches_hold_each_text_once_by_increasing_length_within_the_budget() -> None:
    lengths = [5, 300, 3, 3, 40, 700, 41, 3]
    batches = sentence_encoder._batches(lengths, 100)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    flat = [lengths[i] for batch in batches for i in batch]
    assert flat == sorted(lengths)
    assert all(len(b) * lengths[b[-1]] <= 100 or len(b) == 1 for b in batches)
    assert [lengths[b[0]] for b in batches if len(b) == 1 and lengths[b[0]] > 100] == [300, 700]


@pytest.mark.parametrize("missing", [ENCODER_FILE, TOKENIZER_FILE])
def test_a_folder_without_its_files_is_refused_naming_them(sentence_encoder_dir, tmp_path, missing) -> None:
    for name in (ENCODER_FILE, TOKENIZER_FILE):
        if name != missing:
            (tmp_path / name).symlink_to(sentence_encoder_dir / name)
    with pytest.raises(SentenceEncoderError, match=missing):
        SentenceEncoder.from_dir(tmp_path)


def test_a_corrupt_encoder_is_refused(sentence_encoder_dir, tmp_path) -> None:
    (tmp_path / ENCODER_FILE).write_bytes(b"not an onnx graph")
    (tmp_path / TOKENIZER_FILE).symlink_to(sentence_encoder_dir / TOKENIZER_FILE)
    with pytest.raises(SentenceEncoderError, match="does not load"):
        SentenceEncoder.from_dir(tmp_path)


def test_serving_the_encoder_imports_neither_tensorflow_onnx_nor_the_package(sentence_encoder_dir) -> None:
    code = (
        "from models.sentence_encoder import SentenceEncoder\n"
        f"SentenceEncoder.from_dir({str(sentence_encoder_dir)!r}).encode(['Bâche de piscine'])"
    )
    assert heavy_modules_after(code) == "[]"


def test_a_token_cap_keeps_the_first_pieces_between_bos_and_eos(sentence_encoder_dir) -> None:
    capped = SentenceEncoder.from_dir(sentence_encoder_dir, max_tokens=8)
    full = SentenceEncoder.from_dir(sentence_encoder_dir)
    long_text, short_text = "Piscine hors sol tubulaire ronde 3 mètres avec pompe et bâche " * 5, "Bâche"
    (long_tokens, short_tokens), (long_full, short_full) = (
        capped.tokenize([long_text, short_text]),
        full.tokenize([long_text, short_text]),
    )
    assert long_tokens == [*long_full[:7], long_full[-1]] and len(long_tokens) == 8
    assert short_tokens == short_full
    vectors = capped.encode([long_text, short_text])
    np.testing.assert_allclose(vectors[1], full.encode([short_text])[0], atol=1e-6)
    assert np.abs(vectors[0] - full.encode([long_text])[0]).max() > 1e-3
    with pytest.raises(ValueError, match="max_tokens"):
        SentenceEncoder.from_dir(sentence_encoder_dir, max_tokens=2)
