"""Keras 3 model builders: small named functions with named inputs.

Every model takes raw inputs: `text` (a string, already `combine_text`-ed) and/or `image`
(uint8 H x W x 3 of any size; resized inside the model). Tokenisation lives inside the models
(TextVectorization layers adapted on the training texts), so the saved `.keras` files carry
their own vocabularies.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops


def text_input() -> keras.KerasTensor:
    return keras.Input(shape=(), dtype="string", name="text")


def image_input() -> keras.KerasTensor:
    return keras.Input(shape=(None, None, 3), dtype="uint8", name="image")


def build_text_tfidf(
    texts: Sequence[str],
    n_classes: int,
    *,
    word_tokens: int = 40_000,
    char_tokens: int = 40_000,
    dropout: float = 0.5,
    hidden: int = 0,
) -> keras.Model:
    """The shipped text model: word 1-2-gram and character 2-5-gram TF-IDF, then a dense head.

    Args:
        texts: training texts the vectorisers are adapted on.
        n_classes: number of output classes.
        word_tokens: vocabulary size of the word n-grams.
        char_tokens: vocabulary size of the character n-grams.
        dropout: dropout on the TF-IDF features.
        hidden: size of an optional hidden layer (0: a linear softmax head).

    Returns:
        An uncompiled model `text -> probabilities`.
    """
    words = layers.TextVectorization(
        max_tokens=word_tokens, output_mode="tf_idf", ngrams=2, name="word_tfidf"
    )
    chars = layers.TextVectorization(
        max_tokens=char_tokens,
        output_mode="tf_idf",
        split="character",
        ngrams=(2, 3, 4, 5),
        name="char_tfidf",
    )
    words.adapt(list(texts), batch_size=256)
    chars.adapt(list(texts), batch_size=256)
    inp = text_input()
    x = layers.Concatenate(name="tfidf")([words(inp), chars(inp)])
    x = layers.Dropout(dropout)(x)
    if hidden:
        x = layers.Dense(hidden, activation="relu")(x)
        x = layers.Dropout(dropout)(x)
    out = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out, name="text_tfidf")


def build_text_lstm(
    texts: Sequence[str],
    n_classes: int,
    *,
    vocab: int = 20_000,
    length: int = 80,
    embed: int = 64,
    units: int = 64,
) -> keras.Model:
    """The original design's reference text model: embedding + LSTM.

    Args:
        texts: training texts the vectoriser is adapted on.
        n_classes: number of output classes.
        vocab: vocabulary size.
        length: tokens kept per text.
        embed: embedding width.
        units: LSTM units.

    Returns:
        An uncompiled model `text -> probabilities`.
    """
    tokens = layers.TextVectorization(max_tokens=vocab, output_sequence_length=length, name="tokens")
    tokens.adapt(list(texts), batch_size=256)
    inp = text_input()
    x = layers.Embedding(vocab, embed, mask_zero=True)(tokens(inp))
    x = layers.Bidirectional(layers.LSTM(units))(x)
    x = layers.Dropout(0.4)(x)
    out = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out, name="text_lstm")


def conv_block(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    for _ in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        # momentum 0.9: with a few thousand images the default 0.99 leaves inference statistics stale
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.Activation("relu")(x)
    return layers.MaxPooling2D()(x)


def build_image_cnn(
    n_classes: int, *, size: int = 64, filters: Sequence[int] = (32, 64, 128, 192), dropout: float = 0.4
) -> keras.Model:
    """A CNN of convolution + pooling blocks, trained from scratch, with augmentation.

    Args:
        n_classes: number of output classes.
        size: side the image is resized to inside the model.
        filters: filters of each convolution block (two 3x3 convolutions, then max pooling).
        dropout: dropout before the classifier.

    Returns:
        An uncompiled model `image (uint8, any size) -> probabilities`.
    """
    inp = image_input()
    x = layers.Resizing(size, size, name="resize")(ops.cast(inp, "float32"))
    x = layers.Rescaling(1.0 / 255, name="scale")(x)
    # Augmentation layers are active only in training.
    x = layers.RandomFlip("horizontal")(x)
    x = layers.RandomRotation(0.05, fill_mode="constant", fill_value=1.0)(x)
    x = layers.RandomZoom((-0.15, 0.15), fill_mode="constant", fill_value=1.0)(x)
    x = layers.RandomContrast(0.2)(x)
    for f in filters:
        x = conv_block(x, f)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    out = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out, name="image_cnn")


@keras.saving.register_keras_serializable(package="rakuten")
class LateFusion(layers.Layer):
    """softmax(a * log p_text + b * log p_image + c): learned trust in each model."""

    def build(self, input_shape: Sequence[tuple]) -> None:
        n = input_shape[0][-1]
        self.text_weight = self.add_weight(shape=(), initializer="ones", name="text_weight")
        self.image_weight = self.add_weight(shape=(), initializer="ones", name="image_weight")
        self.bias = self.add_weight(shape=(n,), initializer="zeros", name="bias")

    def call(self, inputs: Sequence[keras.KerasTensor]) -> keras.KerasTensor:
        text, image = inputs
        logits = self.text_weight * ops.log(text + 1e-7) + self.image_weight * ops.log(image + 1e-7)
        return ops.softmax(logits + self.bias)


def build_fusion(text_model: keras.Model, image_model: keras.Model) -> keras.Model:
    """Late fusion of the two trained models (frozen) under a small learned combination.

    Args:
        text_model: the trained text model.
        image_model: the trained image model.

    Returns:
        An uncompiled model `{text, image} -> probabilities`; only the fusion layer trains.
    """
    text_model.trainable = False
    image_model.trainable = False
    text, image = text_input(), image_input()
    out = LateFusion(name="late_fusion")([text_model(text), image_model(image)])
    return keras.Model({"text": text, "image": image}, out, name="fusion")
