import numpy as np
import pytest

from models.text_vectorizer import NumpyTextVectorizer

TRAIN = [
    "Bâche de piscine hors sol 4x8 m",
    "Roman policier - édition de poche",
    "Lot de 3 livres : Harry Potter, tome 1 à 3",
    "Console PS4 Pro 1 To + manette",
    "ÉCOLE des loisirs, album jeunesse",
    "Filtre à sable pour piscine, débit 6 m3/h",
] * 3
TEXTS = [
    "Piscine tubulaire + filtre",
    "",
    "   ",
    "ÉCOLE Été Über CAFÉ",
    "a-b.c,d!e (f) [g] {h} 'i' \"j\"",
    "emoji 😀 ok ✓",
    "tab\tsep\nnewline",
    "x" * 5000,
    "livre livre livre poche",
]


@pytest.mark.parametrize(
    "config",
    [
        {"output_mode": "tf_idf", "ngrams": 2, "max_tokens": 500},
        {"output_mode": "tf_idf", "split": "character", "ngrams": (2, 3, 4, 5), "max_tokens": 2000},
        {"output_mode": "count", "standardize": "lower", "max_tokens": 300},
        {"output_mode": "multi_hot", "standardize": None, "max_tokens": 300},
        {"output_mode": "int", "output_sequence_length": 6, "max_tokens": 300},
    ],
    ids=["word-tfidf", "char-tfidf", "count", "multi-hot", "int"],
)
def test_the_numpy_replica_matches_the_keras_layer_exactly(config, tmp_path):
    import keras
    import tensorflow as tf

    layer = keras.layers.TextVectorization(**config)
    layer.adapt(tf.constant(TRAIN))
    expected = layer(tf.constant(TEXTS)).numpy()
    replica = NumpyTextVectorizer.from_keras_layer(layer)
    np.testing.assert_array_equal(replica.transform(TEXTS), expected)
    replica.save(tmp_path / "vectorizer.json")
    np.testing.assert_array_equal(
        NumpyTextVectorizer.load(tmp_path / "vectorizer.json").transform(TEXTS), expected
    )


def test_keras_lowercases_ascii_only_and_so_does_the_replica():
    replica = NumpyTextVectorizer("lower_and_strip_punctuation", "whitespace", None, "count", ["[UNK]"], None)
    assert replica.tokens("ÉCOLE Café, PISCINE!") == ["École", "café", "piscine"]


def test_unsupported_configurations_are_refused():
    with pytest.raises(ValueError, match="output_mode"):
        NumpyTextVectorizer(None, "whitespace", None, "sequence", ["[UNK]"], None)
    with pytest.raises(ValueError, match="sequence_length"):
        NumpyTextVectorizer(None, "whitespace", None, "int", ["", "[UNK]"], None)
    with pytest.raises(ValueError, match="segment"):
        NumpyTextVectorizer(None, "whitespace", None, "count", ["[UNK]"], None, segment="description")


def test_an_int_mode_replica_pads_truncates_and_marks_unknown_words():
    replica = NumpyTextVectorizer(
        "lower_and_strip_punctuation", "whitespace", None, "int", ["", "[UNK]", "piscine", "bâche"], None, 4
    )
    ids = replica.transform(["Piscine, BÂCHE", "bâche zzz piscine piscine piscine", ""])
    assert ids.dtype == np.int64
    # ASCII-only lowercasing: "BÂCHE" becomes "bÂche", an unknown word (1); 0 pads.
    np.testing.assert_array_equal(ids, [[2, 1, 0, 0], [3, 1, 2, 2], [0, 0, 0, 0]])


def test_a_title_replica_reads_only_the_title_of_a_combined_text():
    from models.preprocessing import combine_text

    replica = NumpyTextVectorizer("lower", "whitespace", None, "count", ["[UNK]", "piscine", "bâche"], None)
    title = NumpyTextVectorizer(
        "lower", "whitespace", None, "count", ["[UNK]", "piscine", "bâche"], None, segment="title"
    )
    text = combine_text("Piscine", "Bâche bâche")
    np.testing.assert_array_equal(replica.transform([text]), [[0, 1, 2]])
    np.testing.assert_array_equal(title.transform([text]), [[0, 1, 0]])
