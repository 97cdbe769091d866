"""A NumPy replica of a fitted Keras `TextVectorization` layer, for serving without TensorFlow.

Importing TensorFlow costs a serving process over 600 MB of memory; the dense parts of the
models run under ONNX Runtime instead, and the text layers' string work (standardise, split,
n-grams, vocabulary lookup, TF-IDF weighting) is done here. The tables are read from the
trained layer itself (`from_keras_layer`), never re-fitted, and `models.runtime` checks the
replica against the Keras model when a bundle is exported (parity is also tested).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.preprocessing import title_of

# Exactly the pattern Keras' "strip_punctuation" applies (a TF regex, same meaning in Python).
_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
# tf.strings.lower without an encoding lowers ASCII letters only ("É" stays "É").
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_SPACE = re.compile(r"[ \t\n\r\v\f]+")
SUPPORTED_STANDARDIZE = {None, "lower", "strip_punctuation", "lower_and_strip_punctuation"}
SUPPORTED_OUTPUT = {"tf_idf", "count", "multi_hot", "int"}
SUPPORTED_SEGMENTS = {None, "title"}
# In "int" mode Keras reserves index 0 for padding and index 1 for out-of-vocabulary words.
_INT_OOV = 1


def keras_standardize(text: str, standardize: str | None = "lower_and_strip_punctuation") -> str:
    """What a `TextVectorization(standardize=...)` layer does to `text` before splitting."""
    if standardize in ("lower", "lower_and_strip_punctuation"):
        text = text.translate(_ASCII_LOWER)
    if standardize in ("strip_punctuation", "lower_and_strip_punctuation"):
        text = _PUNCTUATION.sub("", text)
    return text


@dataclass
class NumpyTextVectorizer:
    """Turn strings into the same dense vectors as the Keras layer it was read from."""

    standardize: str | None
    split: str | None  # "whitespace", "character" or None
    ngrams: tuple[int, ...] | None
    output_mode: str
    vocabulary: list[str]  # index 0 is the OOV token ("int" mode: 0 is padding, 1 OOV)
    idf_weights: np.ndarray | None
    sequence_length: int | None = None  # "int" mode only: pad or truncate to this length
    segment: str | None = None  # "title": the layer reads `title_of(text)` (a `TitleOf` layer)

    def __post_init__(self) -> None:
        if self.standardize not in SUPPORTED_STANDARDIZE:
            raise ValueError(f"unsupported standardize={self.standardize!r}")
        if self.output_mode not in SUPPORTED_OUTPUT:
            raise ValueError(f"unsupported output_mode={self.output_mode!r}")
        if self.output_mode == "int" and not self.sequence_length:
            raise ValueError("output_mode='int' needs a fixed sequence_length")
        if self.segment not in SUPPORTED_SEGMENTS:
            raise ValueError(f"unsupported segment={self.segment!r}")
        self._index = {token: i for i, token in enumerate(self.vocabulary)}
        if self.idf_weights is not None:
            self.idf_weights = np.asarray(self.idf_weights, dtype=np.float32)

    @property
    def size(self) -> int:
        """Width of one output row: the vocabulary size, or the sequence length in "int" mode."""
        return int(self.sequence_length) if self.output_mode == "int" else len(self.vocabulary)

    @classmethod
    def from_keras_layer(cls, layer: Any, segment: str | None = None) -> NumpyTextVectorizer:
        """Read the fitted tables of a Keras `TextVectorization` layer (`segment`: what part
        of the text reaches it, see `models.training.export`)."""
        config = layer.get_config()
        if callable(config.get("standardize")) or callable(config.get("split")):
            raise ValueError("custom standardize/split callables cannot be replicated")
        ngrams = config.get("ngrams")
        if isinstance(ngrams, int):
            ngrams = tuple(range(1, ngrams + 1))
        idf = None
        if config["output_mode"] == "tf_idf":
            idf = np.asarray(layer._lookup_layer.idf_weights_const, dtype=np.float32)
        return cls(
            standardize=config.get("standardize"),
            split=config.get("split"),
            ngrams=tuple(ngrams) if ngrams else None,
            output_mode=config["output_mode"],
            vocabulary=[str(t) for t in layer.get_vocabulary(include_special_tokens=True)],
            idf_weights=idf,
            sequence_length=config.get("output_sequence_length") if config["output_mode"] == "int" else None,
            segment=segment,
        )

    def tokens(self, text: str) -> list[str]:
        """The tokens (n-grams included) the Keras layer would look up for `text`."""
        if self.segment == "title":
            text = title_of(text)
        text = keras_standardize(text, self.standardize)
        if self.split == "whitespace":
            parts = [p for p in _ASCII_SPACE.split(text) if p]
        elif self.split == "character":
            parts = list(text)
        else:
            parts = [text]
        if not self.ngrams:
            return parts
        out: list[str] = []
        for width in self.ngrams:
            out.extend(" ".join(parts[i : i + width]) for i in range(len(parts) - width + 1))
        return out

    def transform(self, texts: list[str]) -> np.ndarray:
        """What the Keras layer outputs: float32 (len(texts) x vocabulary size), or in "int"
        mode int64 token ids (len(texts) x sequence length, zero-padded)."""
        if self.output_mode == "int":
            ids = np.zeros((len(texts), self.size), dtype=np.int64)
            for row, text in enumerate(texts):
                found = [self._index.get(tok, _INT_OOV) for tok in self.tokens(text)[: self.size]]
                ids[row, : len(found)] = found
            return ids
        out = np.zeros((len(texts), self.size), dtype=np.float32)
        for row, text in enumerate(texts):
            counts = Counter(self._index.get(tok, 0) for tok in self.tokens(text))
            if not counts:
                continue
            index = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            values = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
            if self.output_mode == "multi_hot":
                values = np.ones_like(values)
            elif self.output_mode == "tf_idf":
                values = values * self.idf_weights[index]
            out[row, index] = values
        return out

    def save(self, path: Path) -> None:
        """Write the tables as JSON (vocabulary) plus a .npy of the IDF weights."""
        path = Path(path)
        meta = {
            "standardize": self.standardize,
            "split": self.split,
            "ngrams": list(self.ngrams) if self.ngrams else None,
            "output_mode": self.output_mode,
            "vocabulary": self.vocabulary,
            "sequence_length": self.sequence_length,
            "segment": self.segment,
        }
        path.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        if self.idf_weights is not None:
            np.save(path.with_suffix(".idf.npy"), self.idf_weights)

    @classmethod
    def load(cls, path: Path) -> NumpyTextVectorizer:
        path = Path(path)
        meta = json.loads(path.read_text(encoding="utf-8"))
        idf_path = path.with_suffix(".idf.npy")
        return cls(
            standardize=meta["standardize"],
            split=meta["split"],
            ngrams=tuple(meta["ngrams"]) if meta["ngrams"] else None,
            output_mode=meta["output_mode"],
            vocabulary=meta["vocabulary"],
            idf_weights=np.load(idf_path) if idf_path.is_file() else None,
            sequence_length=meta.get("sequence_length"),
            segment=meta.get("segment"),
        )
