"""The model builders at toy size: named raw inputs, probabilities out, saved models that reload."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.preprocessing import combine_text
from models.training import builders
from models.training.word_vectors import PretrainedVectors

N_CLASSES = 27
TEXTS = [
    "Bâche de piscine hors sol 4x8 m",
    "Roman policier, édition de poche",
    "Console PS4 Pro 1 To + manette",
    "Lot de 3 livres : Harry Potter, tome 1 à 3",
    "Filtre à sable pour piscine, débit 6 m3/h",
    "Figurine Pop Star Wars vinyl",
] * 2
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _strings(texts: list[str]) -> tf.Tensor:
    return tf.constant(texts, dtype=tf.string)


def _assert_probabilities(probs: np.ndarray, n: int) -> None:
    assert probs.shape == (n, N_CLASSES)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def toy_vectors() -> PretrainedVectors:
    """Four words on two table rows (the real ones come from `models.training.word_vectors`)."""
    table = np.array([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]], dtype="float32")
    return PretrainedVectors(
        ["piscine", "bassin", "roman", "livre"], np.array([0, 0, 1, 1], "int32"), table, "toy"
    )


@pytest.fixture(scope="module")
def tfidf_model() -> keras.Model:
    return builders.build_text_tfidf(
        TEXTS,
        N_CLASSES,
        word_tokens=200,
        char_tokens=500,
        word_vectors=toy_vectors(),
        word_vector_length=8,
        title_tokens=300,
    )


@pytest.fixture(scope="module")
def image_model() -> keras.Model:
    return builders.build_image_cnn(N_CLASSES, size=32, filters=(8, 16), top_filters=16, histogram_bins=8)


def test_the_tfidf_text_model_takes_a_string_named_text_and_outputs_probabilities(tfidf_model) -> None:
    assert [t.name for t in tfidf_model.inputs] == ["text"]
    assert tfidf_model.inputs[0].dtype == "string"
    _assert_probabilities(np.asarray(tfidf_model(_strings(["piscine hors sol", "", "ÉTÉ"]))), 3)


def test_the_word_vector_branch_is_the_idf_weighted_mean_of_the_pretrained_vectors() -> None:
    inp = builders.text_input()
    # "piscine" is in every training text (idf 1), "roman" in one of two (idf 1 + log 1.5).
    out = builders.word_vector_branch(inp, ["piscine roman", "piscine"], toy_vectors(), length=4)
    model = keras.Model(inp, out)
    got = np.asarray(model(_strings(["Bassin, ROMAN inconnu", "", "bassin bassin"])))
    idf_roman = 1.0 + np.log(3 / 2)
    # "bassin" was never seen in training: it still brings its vector (row 0), at the largest idf.
    idf_unseen = 1.0 + np.log(3 / 1)
    expected = idf_unseen * np.array([1.0, 0, 0]) + idf_roman * np.array([0, 0.6, 0.8])
    np.testing.assert_allclose(got[0], expected / np.linalg.norm(expected), atol=1e-6)
    np.testing.assert_allclose(got[1], 0.0)  # no known word: a zero vector, not NaN
    np.testing.assert_allclose(got[2], [1.0, 0.0, 0.0], atol=1e-6)


def test_the_title_layer_keeps_what_precedes_the_tab_of_a_combined_text() -> None:
    texts = [combine_text("Piscine hors sol", "Bâche\tincluse"), combine_text("Roman", None), ""]
    got = [t.decode() for t in np.asarray(builders.TitleOf()(_strings(texts)))]
    assert got == ["piscine hors sol", "roman", ""]


def test_the_lstm_reference_model_takes_a_string_named_text_and_outputs_probabilities() -> None:
    model = builders.build_text_lstm(TEXTS, N_CLASSES, vocab=100, length=12, embed=8, units=8)
    assert [t.name for t in model.inputs] == ["text"]
    _assert_probabilities(np.asarray(model(_strings(["roman de poche", ""]))), 2)


def test_the_tfidf_weighting_matches_scikit_learn_sublinear_tfidf() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    corpus = ["piscine piscine filtre", "roman poche roman roman", "filtre sable piscine", "console manette"]
    inp = builders.text_input()
    features = builders.tfidf_branch(
        inp, corpus, name="word", max_tokens=100, standardize="lower_and_strip_punctuation"
    )
    model = keras.Model(inp, features)
    vectorizer = model.get_layer("word_counts")
    ours = np.asarray(model(_strings(corpus)))
    reference = TfidfVectorizer(sublinear_tf=True).fit(corpus)
    theirs = reference.transform(corpus).toarray()
    vocabulary = vectorizer.get_vocabulary()
    for token, column in reference.vocabulary_.items():
        np.testing.assert_allclose(ours[:, vocabulary.index(token)], theirs[:, column], atol=1e-6)


@pytest.mark.parametrize("shape", [(32, 32), (50, 70), (120, 90), (17, 300)])
def test_the_image_model_accepts_uint8_images_of_any_size(image_model, shape) -> None:
    assert [t.name for t in image_model.inputs] == ["image"]
    images = np.random.default_rng(0).integers(0, 256, (2, *shape, 3), dtype=np.uint8)
    _assert_probabilities(np.asarray(image_model(images)), 2)


def test_image_augmentation_is_active_only_in_training(image_model) -> None:
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(image_model(images)), np.asarray(image_model(images)))
    twin = builders.image_training_model(image_model)
    assert not np.allclose(np.asarray(twin(images, training=True)), np.asarray(twin(images, training=True)))


def test_flip_averaging_makes_the_image_model_mirror_invariant(image_model) -> None:
    images = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        np.asarray(image_model(images)), np.asarray(image_model(images[:, :, ::-1])), atol=1e-5
    )


def test_the_image_training_twin_shares_the_weights_of_the_image_model(image_model) -> None:
    twin = builders.image_training_model(image_model)
    backbone = image_model.get_layer("image_backbone")
    assert twin.get_layer("image_backbone") is backbone


def test_an_image_ensemble_averages_the_logits_of_its_members_each_trained_by_its_own_twin() -> None:
    model = builders.build_image_cnn(
        N_CLASSES, size=32, filters=(8, 16), top_filters=16, histogram_bins=8, members=2, flip_average=False
    )
    assert builders.image_members(model) == 2
    twins = [builders.image_training_model(model, member) for member in (0, 1)]
    assert twins[1].get_layer(builders.backbone_name(1)) is model.get_layer("image_backbone_1")
    images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    pixels = images.astype("float32") / 255
    logits = [np.asarray(model.get_layer(builders.backbone_name(m))(pixels)) for m in (0, 1)]
    expected = np.asarray(keras.ops.softmax((logits[0] + logits[1]) / 2))
    np.testing.assert_allclose(np.asarray(model(images)), expected, atol=1e-5)
    assert not np.allclose(logits[0], logits[1])  # two members, two initialisations


def test_the_colour_histogram_sums_to_one_per_channel() -> None:
    layer = builders.ColourHistogram(bins=8)
    images = np.random.default_rng(3).random((2, 10, 10, 3)).astype("float32")
    sums = np.asarray(layer(images)).reshape(2, 3, 8).sum(axis=-1)
    np.testing.assert_allclose(sums, 1.0, atol=1e-5)


@pytest.mark.parametrize("build", [builders.build_fusion, "concat"])
def test_the_fusion_models_take_text_and_image_by_name(tfidf_model, image_model, build) -> None:
    if build == "concat":
        fusion = builders.build_fusion_concat(tfidf_model, image_model, N_CLASSES, hidden=8)
    else:
        fusion = build(tfidf_model, image_model)
    assert sorted(t.name for t in fusion.inputs) == ["image", "text"]
    images = np.random.default_rng(4).integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)
    _assert_probabilities(
        np.asarray(fusion({"text": _strings(["piscine", "roman"]), "image": tf.constant(images)})), 2
    )


def test_late_fusion_starts_as_the_normalised_product_of_the_two_models() -> None:
    text = np.array([[0.7, 0.2, 0.1]], dtype="float32")
    image = np.array([[0.2, 0.2, 0.6]], dtype="float32")
    product = text * image / (text * image).sum()
    np.testing.assert_allclose(np.asarray(builders.LateFusion()([text, image])), product, atol=1e-5)


def test_the_served_late_fusion_is_read_from_the_keras_layer_and_computes_the_same(
    tfidf_model, image_model
) -> None:
    from models.training.export import late_fusion_of

    fusion = builders.build_fusion(tfidf_model, image_model)
    layer = fusion.get_layer("late_fusion")
    layer.text_weight.assign(2.4)
    layer.image_weight.assign(0.7)
    layer.bias.assign(np.random.default_rng(6).normal(size=N_CLASSES).astype("float32"))
    served = late_fusion_of(fusion)
    assert served is not None and served.text_weight == pytest.approx(2.4)
    text, image = (
        np.random.default_rng(s).dirichlet(np.full(N_CLASSES, 0.2), 4).astype("float32") for s in (7, 8)
    )
    np.testing.assert_allclose(served(text, image), np.asarray(layer([text, image])), atol=1e-6)
    concat = builders.build_fusion_concat(tfidf_model, image_model, N_CLASSES, hidden=8)
    assert late_fusion_of(concat) is None  # exported as a graph of its own


def test_saved_models_reload_in_a_fresh_process_with_identical_predictions(
    tfidf_model, image_model, tmp_path
) -> None:
    fusion = builders.build_fusion(tfidf_model, image_model)
    texts = ["piscine hors sol", "roman", ""]
    images = np.random.default_rng(5).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    expected = {
        "text": np.asarray(tfidf_model(_strings(texts))),
        "image": np.asarray(image_model(images)),
        "fusion": np.asarray(fusion({"text": _strings(texts), "image": tf.constant(images)})),
    }
    for kind, model in (("text", tfidf_model), ("image", image_model), ("fusion", fusion)):
        model.save(tmp_path / f"{kind}.keras")
        np.save(tmp_path / f"{kind}.expected.npy", expected[kind])
    script = textwrap.dedent(
        f"""
        import numpy as np, keras, tensorflow as tf
        import models.training.builders  # registers the custom layers
        folder = {str(tmp_path)!r}
        texts = tf.constant({texts!r})
        images = tf.constant(np.load(folder + "/images.npy"))
        inputs = {{"text": texts, "image": images, "fusion": {{"text": texts, "image": images}}}}
        for kind in ("text", "image", "fusion"):
            model = keras.models.load_model(f"{{folder}}/{{kind}}.keras")
            got = np.asarray(model(inputs[kind]))
            np.testing.assert_allclose(got, np.load(f"{{folder}}/{{kind}}.expected.npy"), atol=1e-6)
        print("identical")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "identical" in result.stdout


@pytest.mark.parametrize("arch", ["tfidf", "lstm"])
def test_both_text_architectures_export_to_onnx_with_the_keras_answers(arch, tfidf_model, tmp_path) -> None:
    from models.training.export import _run_onnx, export_model

    if arch == "lstm":
        model = builders.build_text_lstm(TEXTS, N_CLASSES, vocab=100, length=12, embed=8, units=8)
    else:
        model = tfidf_model
    texts = [combine_text("Piscine HORS SOL", "Bâche incluse"), "roman de poche", "", "x" * 500]
    entry = export_model(model, tmp_path, "text")
    expected = np.asarray(model(_strings(texts)))
    np.testing.assert_allclose(_run_onnx(tmp_path, entry, texts, None), expected, atol=1e-5)
