"""The text model's sentence-embedding input in training: the encoder exported once, embeddings cached.

A sentence encoder (the multilingual USE v3, `models.training.sentence_encoder`) cannot run
inside the Keras graph (its tokenizer is SentencePiece, and ONNX cannot run string ops), so the
text model takes its 512-d embedding as a second input, computed outside the graph: here in
training, by `models.runtime` in serving, with the same `models.sentence_encoder.SentenceEncoder`
on the same text (`combine_text`) and the same token cap.

The encoder does not learn, so an embedding depends only on the text, the encoder and the cap:
embeddings are cached by content (`models.training.features.cached_features`, keyed by the
text's SHA-256 under a folder named by the encoder, the SHA-256 of its ONNX graph and the cap),
and the weekly retraining embeds only the new texts. The exported encoder folder is kept in the
cache too (one per package version), and copied into the bundle's `serving/` folder.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from models.sentence_encoder import ENCODER_FILE, SENTENCE_INPUT, SPEC_FILE, TOKENIZER_FILE, SentenceEncoder
from models.training.hyperparameters import SENTENCE_ENCODERS

logger = logging.getLogger(__name__)

_PROCESS_EXPORTS: dict[str, Path] = {}


@dataclass
class SentenceEmbeddings:
    """The sentence-embedding input of every product row, and where it came from.

    Attributes:
        encoder: The encoder's name (`SENTENCE_ENCODERS`).
        folder: The exported encoder (what the bundle's `serving/` gets a copy of).
        max_tokens: Tokens read per text, `<s>` and `</s>` included.
        key: The cache key: encoder, the SHA-256 of its graph, the cap.
        vectors: float32 (n, 512), row i for product i (zeros where it has no text).
    """

    encoder: str
    folder: Path
    max_tokens: int
    key: str
    vectors: np.ndarray


def encoder_folder(encoder: str, cache_dir: Path | None) -> Path:
    """The exported encoder: under `cache_dir` (once per package version), else once per process
    (in a temporary folder removed at exit).

    The export (4 s) writes a sibling folder renamed into place, so trainings that share the
    cache never see half of one.
    """
    from models.training.sentence_encoder import PACKAGE, export_sentence_encoder

    if encoder != "use3":
        raise ValueError(f"unknown sentence encoder {encoder!r}; use one of {SENTENCE_ENCODERS}")
    name = f"{encoder}-{metadata.version(PACKAGE)}"
    if cache_dir is None:
        if name not in _PROCESS_EXPORTS:
            scratch = tempfile.mkdtemp(prefix="sentence-")
            # 78 MB a training process: gone when the process ends (bundles hold their own copy).
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)
            _PROCESS_EXPORTS[name] = export_sentence_encoder(Path(scratch) / name)
        return _PROCESS_EXPORTS[name]
    folder = Path(cache_dir) / "encoders" / name
    if not (folder / ENCODER_FILE).is_file() or not (folder / SPEC_FILE).is_file():
        partial = folder.with_name(f".{name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        export_sentence_encoder(partial)
        try:
            partial.rename(folder)
        except OSError:  # another training exported it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def embed_texts(
    texts: list[str], *, encoder: str, max_tokens: int, cache_dir: Path | None
) -> SentenceEmbeddings:
    """Embed `texts` with `encoder` capped at `max_tokens`, through the content-keyed cache.

    Args:
        texts: The texts the model reads (`combine_text`); "" rows are left at zeros.
        encoder: One of `SENTENCE_ENCODERS` but "".
        max_tokens: The cap (the bundle's serving applies the same).
        cache_dir: The feature cache (None: compute everything; the encoder exported once per process).

    Returns:
        The embeddings and their provenance.
    """
    from models.training.features import cached_features

    folder = encoder_folder(encoder, cache_dir)
    model = SentenceEncoder.from_dir(folder, max_tokens=max_tokens)
    digest = model.spec.get("sha256", {}).get(ENCODER_FILE, "unknown")[:16]
    key = f"sentence-{encoder}-{digest}-{max_tokens}tok"
    rows = [i for i, text in enumerate(texts) if text]
    vectors = np.zeros((len(texts), model.spec.get("embedding_dim", 512)), dtype=np.float32)
    if rows:
        vectors[rows] = cached_features(
            lambda batch: model.encode([str(t) for t in batch]),
            np.array([texts[i] for i in rows], dtype=object),
            key=key,
            cache_dir=cache_dir,
            batch_size=256,
            progress=f"sentence embeddings ({encoder}, {max_tokens} tokens)",
        )
    return SentenceEmbeddings(encoder, folder, max_tokens, key, vectors)


def bundle_entry(embeddings: SentenceEmbeddings) -> dict[str, object]:
    """metadata.json's `sentence_encoder`: what the text model's second input is, and its files."""
    from models.bundle import SERVING_DIR

    spec = SentenceEncoder.read_spec(embeddings.folder)
    return {
        "name": embeddings.encoder,
        "input": SENTENCE_INPUT,
        "reads": "text",  # the text input itself (combine_text), capped at max_tokens
        "max_tokens": embeddings.max_tokens,
        "embedding_dim": int(embeddings.vectors.shape[1]),
        "files": {"encoder": f"{SERVING_DIR}/{ENCODER_FILE}", "tokenizer": f"{SERVING_DIR}/{TOKENIZER_FILE}"},
        "cache_key": embeddings.key,
        "source": spec.get("source", {}),
    }


def copy_encoder(embeddings: SentenceEmbeddings, serving_dir: Path) -> None:
    """Copy the exported encoder's files into a bundle's `serving/` folder."""

    serving_dir.mkdir(parents=True, exist_ok=True)
    for name in (ENCODER_FILE, TOKENIZER_FILE, SPEC_FILE):
        shutil.copyfile(embeddings.folder / name, serving_dir / name)
