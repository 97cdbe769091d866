"""Keras 3 model builders: small named functions with named inputs.

Every model takes raw inputs by name: `text` (a string, already `combine_text`-ed) and/or
`image` (uint8 H x W x 3 of any size, resized inside the model); a text model built with a
sentence encoder also takes `sentence_embedding` (float32, the encoder's embedding of the same
text, computed outside the graph: `models.training.sentence_features` in training,
`models.runtime` in serving). Tokenisation and TF-IDF
weighting live inside the text models (TextVectorization layers adapted on the training
texts, IDF weights stored as layer weights), so a saved `.keras` file carries its own
vocabularies and `keras.models.load_model` needs nothing else but this module imported
(the custom layers are registered under the "rakuten" package).

The text vectorisers use Keras' built-in standardisation only: `models.training.export` replicates
them in NumPy for serving without TensorFlow, and refuses custom callables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from models.sentence_encoder import SENTENCE_INPUT

PACKAGE = "rakuten"


def text_input() -> keras.KerasTensor:
    """The named `text` input: one string per product."""
    return keras.Input(shape=(), dtype="string", name="text")


def sentence_input(dimension: int) -> keras.KerasTensor:
    """The named `sentence_embedding` input: a sentence encoder's embedding of the text."""
    return keras.Input(shape=(dimension,), dtype="float32", name=SENTENCE_INPUT)


def takes_sentence_embedding(model: keras.Model) -> bool:
    """Whether `model` (a text or fusion model) has the `sentence_embedding` input."""
    return any(tensor.name == SENTENCE_INPUT for tensor in model.inputs)


def image_input() -> keras.KerasTensor:
    """The named `image` input: uint8 RGB of any height and width."""
    return keras.Input(shape=(None, None, 3), dtype="uint8", name="image")


# --------------------------------------------------------------------------------- text


@keras.saving.register_keras_serializable(package=PACKAGE)
class SublinearTfIdf(layers.Layer):
    """Token counts -> L2-normalised (1 + log count) * idf, as scikit-learn's sublinear TF-IDF.

    Keras' own `tf_idf` output multiplies raw counts by the IDF and does not normalise; on
    product texts (a short title, an optional long description) the sublinear, normalised
    form is several points more accurate. The IDF is a non-trainable weight fitted once from
    the training texts (`fit_document_frequencies`), so it is saved with the model. The
    out-of-vocabulary bucket (index 0) gets an IDF of 0: unknown n-grams carry no signal.
    """

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.idf = self.add_weight(shape=(input_shape[-1],), initializer="ones", trainable=False, name="idf")

    def call(self, counts: Any) -> Any:
        weighted = ops.where(counts > 0, 1.0 + ops.log(ops.maximum(counts, 1.0)), 0.0) * self.idf
        norm = ops.sqrt(ops.sum(ops.square(weighted), axis=-1, keepdims=True))
        return weighted / ops.maximum(norm, 1e-12)

    def fit_document_frequencies(self, document_frequency: np.ndarray, n_documents: int) -> None:
        """Set the IDF from per-token document frequencies (smoothed, as scikit-learn)."""
        idf = smoothed_idf(document_frequency, n_documents)
        idf[0] = 0.0
        self.idf.assign(idf.astype("float32"))


def smoothed_idf(document_frequency: np.ndarray, n_documents: int) -> np.ndarray:
    """scikit-learn's smoothed IDF: log((1 + n) / (1 + df)) + 1."""
    return np.log((1.0 + n_documents) / (1.0 + np.asarray(document_frequency, dtype=np.float64))) + 1.0


def _document_frequencies(vectorizer: layers.TextVectorization, texts: Sequence[str]) -> np.ndarray:
    """In how many of `texts` each vocabulary index occurs (count or int output mode)."""
    import tensorflow as tf

    df = np.zeros(vectorizer.vocabulary_size(), dtype=np.int64)
    for start in range(0, len(texts), 256):
        out = np.asarray(vectorizer(tf.constant(list(texts[start : start + 256]), dtype=tf.string)))
        if vectorizer.get_config()["output_mode"] == "int":
            for ids in out:
                df[np.unique(ids)] += 1
        else:
            df += np.count_nonzero(out, axis=0)
    return df


def tfidf_branch(
    inp: keras.KerasTensor, texts: Sequence[str], *, name: str, max_tokens: int, **vectorizer_options: Any
) -> keras.KerasTensor:
    """A TextVectorization (count mode, adapted on `texts`) followed by `SublinearTfIdf`."""
    vectorizer = layers.TextVectorization(
        max_tokens=max_tokens, output_mode="count", name=f"{name}_counts", **vectorizer_options
    )
    vectorizer.adapt(list(texts), batch_size=256)
    weighting = SublinearTfIdf(name=f"{name}_tfidf")
    out = weighting(vectorizer(inp))
    weighting.fit_document_frequencies(_document_frequencies(vectorizer, texts), len(texts))
    return out


@keras.saving.register_keras_serializable(package=PACKAGE)
class TitleOf(layers.Layer):
    """string -> the title part of it: what precedes the first tab (`combine_text` puts
    one between the title and the description). `models.preprocessing.title_of` is the same
    function in Python, which the serving replica of the next vectoriser applies."""

    def call(self, text: Any) -> Any:
        import tensorflow as tf

        from models.preprocessing import TITLE_END

        # TITLE_END is a tab: no regex metacharacter, so it stands for itself in the pattern.
        return tf.strings.regex_replace(text, TITLE_END + r"[\s\S]*$", "")

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def compute_output_spec(self, text: Any) -> Any:
        return keras.KerasTensor(text.shape, dtype="string")


@keras.saving.register_keras_serializable(package=PACKAGE)
class WordVectorMean(layers.Layer):
    """Token ids -> L2-normalised, IDF-weighted mean of pretrained word vectors.

    All three tables are non-trainable weights, filled once by `set_tables` and saved with
    the model: `rows` maps a token id of the `TextVectorization` (int mode) to a row of
    `table`, the pretrained vectors (`models.training.word_vectors`), and `idf` weighs each token
    (0 for padding and out-of-vocabulary ids, so they count for nothing). Many words share a
    row, which keeps 200,000 words in a 20,000-row table.
    """

    def __init__(self, vocabulary_size: int, table_rows: int, dimension: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.table_rows = table_rows
        self.dimension = dimension

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.rows = self.add_weight(
            shape=(self.vocabulary_size,), initializer="zeros", dtype="int32", trainable=False, name="rows"
        )
        self.idf = self.add_weight(
            shape=(self.vocabulary_size,), initializer="zeros", trainable=False, name="idf"
        )
        self.table = self.add_weight(
            shape=(self.table_rows, self.dimension), initializer="zeros", trainable=False, name="table"
        )

    def call(self, ids: Any) -> Any:
        ids = ops.cast(ids, "int32")
        vectors = ops.take(self.table, ops.take(self.rows, ids, axis=0), axis=0)
        weights = ops.expand_dims(ops.take(self.idf, ids, axis=0), -1)
        total = ops.sum(vectors * weights, axis=1)
        norm = ops.sqrt(ops.sum(ops.square(total), axis=-1, keepdims=True))
        return total / ops.maximum(norm, 1e-12)

    def set_tables(self, rows: np.ndarray, idf: np.ndarray, table: np.ndarray) -> None:
        self.rows.assign(np.asarray(rows, dtype="int32"))
        self.idf.assign(np.asarray(idf, dtype="float32"))
        self.table.assign(np.asarray(table, dtype="float32"))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "table_rows": self.table_rows,
            "dimension": self.dimension,
        }


def word_vector_branch(
    inp: keras.KerasTensor, texts: Sequence[str], vectors: Any, *, length: int = 256, name: str = "wordvec"
) -> keras.KerasTensor:
    """Pretrained word vectors of the text's first `length` words, IDF-weighted on `texts`.

    Args:
        inp: The string input.
        texts: Training texts (for the IDF weights only: the vocabulary is the pretrained one,
            so words never seen in training still bring their vector).
        vectors: A `models.training.word_vectors.PretrainedVectors`.
        length: Words read per text (padding and truncation).
        name: Prefix of the layer names.
    """
    tokens = layers.TextVectorization(
        output_mode="int",
        output_sequence_length=length,
        standardize="lower_and_strip_punctuation",
        name=f"{name}_tokens",
    )
    tokens.set_vocabulary(list(vectors.words))
    size = tokens.vocabulary_size()  # the words, after padding (0) and out-of-vocabulary (1)
    mean = WordVectorMean(size, vectors.table.shape[0], vectors.dimension, name=f"{name}_mean")
    out = mean(tokens(inp))
    idf = smoothed_idf(_document_frequencies(tokens, texts), len(texts))
    idf[:2] = 0.0
    rows = np.zeros(size, dtype=np.int32)
    rows[2:] = vectors.rows
    mean.set_tables(rows, idf, vectors.table)
    return out


def build_text_tfidf(
    texts: Sequence[str],
    n_classes: int,
    *,
    word_tokens: int = 50_000,
    char_tokens: int = 50_000,
    dropout: float = 0.5,
    hidden: int = 0,
    word_vectors: Any = None,
    word_vector_length: int = 256,
    title_tokens: int = 30_000,
    sentence_embedding: int = 0,
) -> keras.Model:
    """The shipped text model: word 1-2-gram and character 2-5-gram TF-IDF, and the mean of
    pretrained French word vectors, then a dense softmax.

    Args:
        texts: Training texts the vectorisers and IDF weights are fitted on.
        n_classes: Number of output classes.
        word_tokens: Vocabulary size of the word 1-2-grams (most frequent kept).
        char_tokens: Vocabulary size of the character 2-5-grams (most frequent kept).
        dropout: Dropout on the TF-IDF features (strong: a few thousand texts, 100k features).
        hidden: Width of an optional hidden ReLU layer (0: a linear softmax head, the default).
        word_vectors: `models.training.word_vectors.PretrainedVectors`, or None for n-grams only.
        word_vector_length: Words per text the word-vector branch reads.
        title_tokens: Vocabulary of a third TF-IDF branch, character 2-5-grams of the title
            alone (`TitleOf`), which carries most of the signal; 0 leaves it out.
        sentence_embedding: Width of a sentence encoder's embedding, a second input
            (`sentence_embedding`) concatenated with the other features before the head,
            under the same dropout (it is L2-normalised, as each of them); 0 leaves it out.

    Returns:
        An uncompiled model `text -> probabilities`, or `{text, sentence_embedding} ->
        probabilities` with a sentence embedding.
    """
    inp = text_input()
    words = tfidf_branch(
        inp, texts, name="word", max_tokens=word_tokens, ngrams=2, standardize="lower_and_strip_punctuation"
    )
    chars = tfidf_branch(
        inp,
        texts,
        name="char",
        max_tokens=char_tokens,
        ngrams=(2, 3, 4, 5),
        split="character",
        standardize="lower",
    )
    features = [words, chars]
    if title_tokens:
        from models.preprocessing import title_of

        features.append(
            tfidf_branch(
                TitleOf(name="title")(inp),
                [title_of(t) for t in texts],
                name="title_char",
                max_tokens=title_tokens,
                ngrams=(2, 3, 4, 5),
                split="character",
                standardize="lower",
            )
        )
    if word_vectors is not None:
        features.append(word_vector_branch(inp, texts, word_vectors, length=word_vector_length))
    inputs: Any = inp
    if sentence_embedding:
        sentence = sentence_input(sentence_embedding)
        features.append(sentence)
        inputs = {"text": inp, SENTENCE_INPUT: sentence}
    x = layers.Concatenate(name="text_features")(features)
    x = layers.Dropout(dropout, name="feature_dropout")(x)
    if hidden:
        x = layers.Dense(hidden, activation="relu", name="hidden")(x)
        x = layers.Dropout(dropout, name="hidden_dropout")(x)
    out = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, out, name="text_tfidf")


def build_text_lstm(
    texts: Sequence[str],
    n_classes: int,
    *,
    vocab: int = 20_000,
    length: int = 80,
    embed: int = 64,
    units: int = 64,
    dropout: float = 0.4,
) -> keras.Model:
    """The original design's reference text model: embedding + (bidirectional) LSTM.

    Args:
        texts: Training texts the vectoriser is adapted on.
        n_classes: Number of output classes.
        vocab: Vocabulary size.
        length: Tokens kept per text (the title and the start of the description).
        embed: Embedding width.
        units: LSTM units per direction.
        dropout: Dropout before the classifier.

    Returns:
        An uncompiled model `text -> probabilities`.
    """
    tokens = layers.TextVectorization(max_tokens=vocab, output_sequence_length=length, name="tokens")
    tokens.adapt(list(texts), batch_size=256)
    inp = text_input()
    x = layers.Embedding(vocab, embed, mask_zero=True, name="embedding")(tokens(inp))
    x = layers.Bidirectional(layers.LSTM(units), name="lstm")(x)
    x = layers.Dropout(dropout, name="text_features")(x)
    out = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out, name="text_lstm")


# -------------------------------------------------------------------------------- image


@keras.saving.register_keras_serializable(package=PACKAGE)
class HorizontalFlip(layers.Layer):
    """Mirror images left-right (deterministic; used for test-time flip averaging)."""

    def call(self, images: Any) -> Any:
        return ops.flip(images, axis=-2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ColourHistogram(layers.Layer):
    """Soft per-channel colour histograms of an RGB image in [0, 1], computed in the graph.

    Each pixel votes for its two nearest bins (triangular kernel), so the features are
    differentiable and stable under small colour shifts. Product photos are mostly objects
    on white: the colour mix says a lot about the category (pools are blue, books colourful,
    furniture brown) at almost no cost.
    """

    def __init__(self, bins: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bins = bins

    def call(self, images: Any) -> Any:
        centres = ops.linspace(0.0, 1.0, self.bins)
        width = 1.0 / (self.bins - 1)
        channels = []
        for c in range(3):
            votes = ops.relu(1.0 - ops.abs(images[..., c : c + 1] - centres) / width)
            channels.append(ops.mean(votes, axis=(1, 2)))
        return ops.concatenate(channels, axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], 3 * self.bins)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bins": self.bins}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageAugmentation(layers.Layer):
    """Random flip, small rotation and zoom (filled with white), contrast: only when training.

    Keras' random image layers augment whenever `training` is not explicitly False (a plain
    `model(images)` call would augment); this wrapper augments only when `training` is True,
    so every inference path sees the image as it is.
    """

    def __init__(
        self,
        rotation: float = 0.05,
        zoom: float = 0.15,
        contrast: float = 0.2,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rotation, self.zoom, self.contrast, self.seed = rotation, zoom, contrast, seed
        self.flip = layers.RandomFlip("horizontal", seed=seed)
        self.rotate = layers.RandomRotation(rotation, fill_mode="constant", fill_value=1.0, seed=seed)
        self.scale = layers.RandomZoom((-zoom, zoom), fill_mode="constant", fill_value=1.0, seed=seed)
        self.contrast_jitter = layers.RandomContrast(contrast, seed=seed)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        for layer in (self.flip, self.rotate, self.scale, self.contrast_jitter):
            layer.build(input_shape)

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training:
            return images
        for layer in (self.flip, self.rotate, self.scale, self.contrast_jitter):
            images = layer(images, training=True)
        return images

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "zoom": self.zoom,
            "contrast": self.contrast,
            "seed": self.seed,
        }


def conv_bn_relu(x: keras.KerasTensor, filters: int, *, strides: int = 1, name: str) -> keras.KerasTensor:
    """3x3 convolution, batch normalisation, ReLU."""
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    # momentum 0.9: with a few thousand images the default 0.99 leaves inference statistics stale.
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def conv_block(x: keras.KerasTensor, filters: int, *, convolutions: int, name: str) -> keras.KerasTensor:
    """`convolutions` conv-BN-ReLU layers, then 2x2 max pooling."""
    for i in range(convolutions):
        x = conv_bn_relu(x, filters, name=f"{name}_{i}")
    return layers.MaxPooling2D(name=f"{name}_pool")(x)


def build_image_backbone(
    n_classes: int,
    *,
    size: int,
    filters: Sequence[int] = (32, 64, 128),
    top_filters: int = 256,
    histogram_bins: int = 16,
    dropout: float = 0.4,
    name: str = "image_backbone",
) -> keras.Model:
    """The trainable part of the image model: a float image in [0, 1] -> class logits.

    A stride-2 stem, convolution + pooling blocks (one convolution in the first block, two in
    the others), a last convolution, global average pooling, concatenated with a colour
    histogram branch, dropout and a linear classifier. Augmentation is the first stage.
    """
    inp = keras.Input(shape=(size, size, 3), name="pixels")
    x = ImageAugmentation(name="augmentation")(inp)
    colours = layers.Dense(64, activation="relu", name="colour_dense")(
        ColourHistogram(histogram_bins, name="colour_histogram")(x)
    )
    x = conv_bn_relu(x, max(filters[0] * 3 // 4, 8), strides=2, name="stem")
    for i, f in enumerate(filters):
        x = conv_block(x, f, convolutions=1 if i == 0 else 2, name=f"block{i + 1}")
    x = conv_bn_relu(x, top_filters, name="top")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Concatenate(name="image_features")([x, colours])
    x = layers.Dropout(dropout, name="feature_dropout")(x)
    logits = layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inp, logits, name=name)


def backbone_name(member: int) -> str:
    """Layer name of the image model's `member`-th backbone (the first keeps the plain name)."""
    return "image_backbone" if member == 0 else f"image_backbone_{member}"


def image_members(model: keras.Model) -> int:
    """How many backbones (ensemble members) an image model averages."""
    return sum(1 for layer in model.layers if layer.name.startswith("image_backbone"))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResizeImages(layers.Layer):
    """Bilinear resize to `size` x `size` (the identity on images already of that size).

    Serving resizes with `models.preprocessing.resize_image` first, as training did; this
    makes the saved model accept any size for other callers. A plain layer on purpose:
    Keras' `Resizing` defaults to `training=True`, which then leaks into the layers called
    after it (dropout and augmentation would run on a bare `model(images)` call).
    """

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = size

    def call(self, images: Any) -> Any:
        return ops.image.resize(images, (self.size, self.size), interpolation="bilinear")

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


def _image_pixels(inp: keras.KerasTensor, size: int) -> keras.KerasTensor:
    x = layers.Rescaling(1.0 / 255, name="scale")(inp)
    return ResizeImages(size, name="resize")(x)


def build_image_cnn(
    n_classes: int,
    *,
    size: int = 64,
    filters: Sequence[int] = (32, 64, 128),
    top_filters: int = 256,
    histogram_bins: int = 16,
    dropout: float = 0.4,
    flip_average: bool = True,
    members: int = 1,
) -> keras.Model:
    """The image model: a CNN trained from scratch, with augmentation and a colour branch.

    Args:
        n_classes: Number of output classes.
        size: Side the image is resized to inside the model.
        filters: Filters of each convolution + pooling block.
        top_filters: Filters of the last convolution, before global pooling.
        histogram_bins: Bins per channel of the colour histogram branch.
        dropout: Dropout before the classifier.
        flip_average: Average the logits of the image and its mirror at inference
            (test-time augmentation; training sees one random view, see `image_training_model`).
        members: Backbones of the same architecture, each trained on its own
            (`image_training_model(model, member)`), whose logits are averaged: an ensemble,
            which is steadier than one CNN trained from scratch on a few thousand photos.

    Returns:
        An uncompiled model `image (uint8, any size) -> probabilities`.
    """
    inp = image_input()
    pixels = _image_pixels(inp, size)
    mirrored = HorizontalFlip(name="mirror")(pixels) if flip_average else None
    member_logits = []
    for member in range(members):
        backbone = build_image_backbone(
            n_classes,
            size=size,
            filters=filters,
            top_filters=top_filters,
            histogram_bins=histogram_bins,
            dropout=dropout,
            name=backbone_name(member),
        )
        logits = backbone(pixels)
        if flip_average:
            suffix = "" if member == 0 else f"_{member}"
            logits = layers.Average(name=f"flip_average{suffix}")([logits, backbone(mirrored)])
        member_logits.append(logits)
    logits = member_logits[0] if members == 1 else layers.Average(name="member_average")(member_logits)
    out = layers.Softmax(name="probabilities")(logits)
    return keras.Model(inp, out, name="image_cnn")


def image_training_model(model: keras.Model, member: int = 0) -> keras.Model:
    """The single-view twin of one member of the image model (same layers and weights), to
    train with `fit`."""
    inp = image_input()
    pixels = model.get_layer("resize")(model.get_layer("scale")(inp))
    out = layers.Softmax(name="probabilities")(model.get_layer(backbone_name(member))(pixels))
    return keras.Model(inp, out, name="image_cnn_training")


def build_image_head(n_classes: int, *, features: int, dropout: float) -> keras.Model:
    """The trained part of a pretrained image model: pooled backbone features -> probabilities."""
    inp = keras.Input(shape=(features,), name="backbone_features")
    x = layers.Dropout(dropout, name="head_dropout")(inp)
    out = layers.Dense(n_classes, activation="softmax", name="head_probabilities")(x)
    return keras.Model(inp, out, name="image_head")


def build_image_pretrained(backbone: keras.Model, head: keras.Model, *, size: int) -> keras.Model:
    """The image model on a pretrained backbone: image (uint8, any size) -> probabilities.

    `backbone` (EfficientNet-Lite, `models.training.efficientnet_lite`) takes float RGB in 0..255
    and normalises it itself; `head` is `build_image_head`, trained on the backbone's features.
    """
    inp = image_input()
    pixels = ResizeImages(size, name="resize")(layers.Rescaling(1.0, name="to_float")(inp))  # 0..255
    out = head(backbone(pixels))
    return keras.Model(inp, layers.Identity(name="probabilities")(out), name="image_pretrained")


# ------------------------------------------------------------------------------- fusion


@keras.saving.register_keras_serializable(package=PACKAGE)
class LateFusion(layers.Layer):
    """softmax(a * log p_text + b * log p_image + c): learned trust in each model, per-class bias.

    The bias corrects the class prior that a product of two posteriors counts twice.
    """

    def build(self, input_shape: Sequence[tuple[int | None, ...]]) -> None:
        n = input_shape[0][-1]
        self.text_weight = self.add_weight(shape=(), initializer="ones", name="text_weight")
        self.image_weight = self.add_weight(shape=(), initializer="ones", name="image_weight")
        self.bias = self.add_weight(shape=(n,), initializer="zeros", name="bias")

    def call(self, inputs: Sequence[Any]) -> Any:
        text, image = inputs
        logits = self.text_weight * ops.log(text + 1e-7) + self.image_weight * ops.log(image + 1e-7)
        return ops.softmax(logits + self.bias)


def build_fusion(text_model: keras.Model, image_model: keras.Model) -> keras.Model:
    """Late fusion of the two trained models (frozen) under a learned `LateFusion` layer.

    Args:
        text_model: The trained text model.
        image_model: The trained image model.

    Returns:
        An uncompiled model `{text, image} -> probabilities`; only the fusion layer trains
        (fit it on held-out probabilities, see `models.training.train`).
    """
    text_model.trainable = False
    image_model.trainable = False
    text_inputs, text_feed = _text_model_inputs(text_model)
    image = image_input()
    out = LateFusion(name="late_fusion")([text_model(text_feed), image_model(image)])
    return keras.Model({**text_inputs, "image": image}, out, name="fusion")


def _text_model_inputs(text_model: keras.Model) -> tuple[dict[str, keras.KerasTensor], Any]:
    """New inputs for a model that embeds `text_model`: by name, and as `text_model` is called.

    `text` alone, or with `sentence_embedding` when the text model reads one (the fusion model
    then takes it too, under the same name).
    """
    inputs = {"text": text_input()}
    for tensor in text_model.inputs:
        if tensor.name == SENTENCE_INPUT:
            inputs[SENTENCE_INPUT] = sentence_input(tensor.shape[-1])
    return inputs, inputs if len(inputs) > 1 else inputs["text"]


def build_fusion_concat(
    text_model: keras.Model,
    image_model: keras.Model,
    n_classes: int,
    *,
    hidden: int = 128,
    dropout: float = 0.5,
) -> keras.Model:
    """The original design's fusion: both feature extractors (frozen), concatenated, a new head.

    Args:
        text_model: The trained text model (its `text_features` layer is the extractor).
        image_model: The trained image model (its backbone's `image_features` layer).
        n_classes: Number of output classes.
        hidden: Width of the text projection and of the head's hidden layer.
        dropout: Dropout in the head.

    Returns:
        An uncompiled model `{text, image} -> probabilities` whose extractors are frozen.
    """
    text_features = keras.Model(text_model.input, text_model.get_layer("text_features").output)
    backbone = image_model.get_layer("image_backbone")
    image_features = keras.Model(backbone.input, backbone.get_layer("image_features").output)
    text_features.trainable = False
    image_features.trainable = False
    size = backbone.input.shape[1]
    text_inputs, text_feed = _text_model_inputs(text_model)
    image = image_input()
    t = layers.Dense(hidden, activation="relu", name="text_projection")(text_features(text_feed))
    i = image_features(_image_pixels(image, size))
    x = layers.Concatenate(name="fused_features")([t, i])
    x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Dense(hidden, activation="relu", name="head_hidden")(x)
    out = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model({**text_inputs, "image": image}, out, name="fusion_concat")


def n_parameters(model: keras.Model) -> int:
    """Number of weights of a model (trainable or not), for the report."""
    return int(sum(math.prod(w.shape) for w in model.weights))
