"""Fitting and predicting with Keras: the loop every model of the bundle is trained by."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.training.hyperparameters import LABELS, Hyperparameters
from models.training.prepare import PreparedData

logger = logging.getLogger(__name__)


def epoch_logger(name: str, total: int) -> Any:
    import keras

    class EpochLog(keras.callbacks.Callback):
        """One log line per epoch: progress on long runs."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            figures = " ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items() if np.isscalar(v))
            logger.info("%s epoch %d/%d %s", name, epoch + 1, total, figures)

    return EpochLog()


def strings(values: Any) -> Any:
    """A tf.string tensor of `values` (what the text models take)."""
    import tensorflow as tf

    return tf.constant([str(v) for v in values], dtype=tf.string)


def text_feed(model: Any, p: PreparedData, rows: np.ndarray) -> Any:
    """What the text model (or a model embedding it) takes for the texts of `rows`: the strings,
    with their sentence embeddings when the model reads them (`p.sentence`)."""
    from models.training.builders import SENTENCE_INPUT, takes_sentence_embedding

    texts = strings(p.texts[rows])
    if not takes_sentence_embedding(model):
        return texts
    if p.sentence is None:
        raise ValueError("the model reads sentence embeddings, but none were computed")
    return {"text": texts, SENTENCE_INPUT: p.sentence.vectors[rows]}


def pair_feed(model: Any, p: PreparedData, text_rows: np.ndarray, image_rows: np.ndarray) -> dict[str, Any]:
    """What a fusion model takes for (text of row t, image of row i) pairs."""
    texts = text_feed(model, p, text_rows)
    return {**(texts if isinstance(texts, dict) else {"text": texts}), "image": p.images[image_rows]}


def one_hot(y: np.ndarray) -> np.ndarray:
    """Class indices as one-hot rows over LABELS."""
    out = np.zeros((len(y), len(LABELS)), dtype=np.float32)
    out[np.arange(len(y)), y] = 1.0
    return out


def fit(
    model: Any,
    x: Any,
    y: np.ndarray,
    validation: tuple[Any, np.ndarray] | None,
    *,
    name: str,
    epochs: int,
    patience: int,
    learning_rate: Any,
    weight_decay: float,
    hp: Hyperparameters,
    balanced: bool = False,
) -> dict[str, list[float]]:
    import keras

    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=hp.label_smoothing),
        metrics=["accuracy"],
    )
    callbacks = [epoch_logger(name, epochs)]
    validation_data = None
    if validation is not None and len(validation[1]):
        validation_data = (validation[0], one_hot(validation[1]))
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=patience, restore_best_weights=True, mode="max"
            )
        )
    batches = x.batches(y, hp.batch_size) if isinstance(x, Views) else None
    history = model.fit(
        batches if batches is not None else x,
        None if batches is not None else one_hot(y),
        validation_data=validation_data,
        epochs=epochs,
        batch_size=None if batches is not None else hp.batch_size,
        verbose=0,
        callbacks=callbacks,
        shuffle=batches is None,  # Views reshuffle themselves every epoch
        class_weight=balanced_class_weights(y) if balanced else None,
    )
    return {k: [float(v) for v in values] for k, values in history.history.items()}


@dataclass(frozen=True)
class Views:
    """Several views of the same training rows (a photo's activations and its mirror's), which
    `fit` trains on as one stacked array with the rows' labels repeated, in batches gathered on
    the fly: no concatenated copy, nor the tensor copy Keras makes of an array it is given.

    Each epoch visits every row of every view once, in an order reshuffled from `seed`.
    """

    arrays: tuple[np.ndarray, ...]
    seed: int = 0

    def batches(self, y: np.ndarray, batch_size: int) -> Any:
        import keras

        arrays, n = self.arrays, len(y)
        if any(len(a) != n for a in arrays):
            raise ValueError(f"every view must have the {n} rows of the labels")
        rng = np.random.default_rng(self.seed)

        class Batches(keras.utils.PyDataset):
            def __init__(self) -> None:
                super().__init__()
                self.order = rng.permutation(n * len(arrays))

            def __len__(self) -> int:
                return -(-len(self.order) // batch_size)

            def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
                view, row = np.divmod(self.order[index * batch_size : (index + 1) * batch_size], n)
                x = np.empty((len(row), *arrays[0].shape[1:]), dtype=np.float32)
                for v, array in enumerate(arrays):
                    x[view == v] = array[row[view == v]]
                return x, one_hot(y[row])

            def on_epoch_end(self) -> None:
                self.order = rng.permutation(len(self.order))

        return Batches()


def balanced_class_weights(y: np.ndarray) -> dict[int, float]:
    """scikit-learn's "balanced" weights, n / (classes x count), for the classes present."""
    classes, counts = np.unique(y, return_counts=True)
    return {int(c): float(len(y) / (len(classes) * n)) for c, n in zip(classes, counts, strict=True)}


def predict_probs(model: Any, x: Any, n: int, batch_size: int = 256) -> np.ndarray:
    """Inference-mode probabilities of `model` on `n` inputs (an empty array when n is 0)."""
    if n == 0:
        return np.zeros((0, len(LABELS)), dtype=np.float32)
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


@dataclass
class Predictor:
    """Cached inference-mode probabilities of the single models, per product row."""

    p: PreparedData
    text_model: Any
    image_model: Any
    _text: dict[int, np.ndarray] = field(default_factory=dict)
    _image: dict[int, np.ndarray] = field(default_factory=dict)

    def text(self, rows: np.ndarray) -> np.ndarray:
        return self._cached(
            self._text,
            rows,
            lambda r: predict_probs(self.text_model, text_feed(self.text_model, self.p, r), len(r)),
        )

    def preset_image(self, rows: np.ndarray, probs: np.ndarray) -> None:
        """Image probabilities already computed (a pretrained model's head on cached features)."""
        for r, row_probs in zip(rows, probs, strict=True):
            self._image[int(r)] = row_probs

    def image(self, rows: np.ndarray) -> np.ndarray:
        return self._cached(
            self._image, rows, lambda r: predict_probs(self.image_model, self.p.images[r], len(r))
        )

    @staticmethod
    def _cached(cache: dict[int, np.ndarray], rows: np.ndarray, run: Any) -> np.ndarray:
        missing = np.array(sorted({int(r) for r in rows} - set(cache)), dtype=np.int64)
        if len(missing):
            for r, probs in zip(missing, run(missing), strict=True):
                cache[int(r)] = probs
        if not len(rows):
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        return np.stack([cache[int(r)] for r in rows])


def accuracy(probs: np.ndarray, y: np.ndarray) -> float | None:
    """Top-1 accuracy, or None without products."""
    return float(np.mean(probs.argmax(axis=1) == y)) if len(y) else None
