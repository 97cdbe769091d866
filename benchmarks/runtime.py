"""The serving runtime alone, in process: load time, latency per model kind, resident memory.

    python -m benchmarks.runtime --bundle BUNDLE_DIR [--data ../shared/data/rakuten] [--calls 300]

Loads the bundle with `models.runtime.ModelRuntime` (ONNX engine: what the API runs), then
predicts one request at a time on real texts and photos of the challenge folder when it is
there (synthetic ones otherwise), and prints p50/p95 per model kind and the resident memory
the runtime adds to the process (the test inputs are loaded first, and not counted). When the
text model reads a sentence embedding, also the encoder's share of a text call (the same texts
through the bundle's encoder alone) and the memory it holds.
No HTTP, no database: `benchmarks.serve` measures the whole service.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.accuracy import DEFAULT_DATA
from benchmarks.serve import rss_mb


def _inputs(data_dir: Path, n: int) -> tuple[list[str], list[np.ndarray]]:
    from models.preprocessing import decode_image

    if (data_dir / "X_train_update.csv").is_file():
        from models.data import load_challenge_folder

        data = load_challenge_folder(data_dir)
        texts = [t for t in data.texts if t][:n]
        rows = np.flatnonzero(data.has_image)[:n]
        images = [decode_image(data.image_bytes(int(i))) for i in rows]
        return texts, images
    rng = np.random.default_rng(0)
    texts = [f"piscine hors sol {i}\tbâche et filtre à sable, {i} m3/h" for i in range(n)]
    return texts, [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    from models.runtime import ModelRuntime

    texts, images = _inputs(args.data, args.calls)
    before = rss_mb(os.getpid())
    started = time.perf_counter()
    runtime = ModelRuntime.from_bundle(args.bundle)
    print(f"bundle {runtime.version}: loaded and self-checked in {time.perf_counter() - started:.2f} s")
    calls = {
        "text": lambda i: runtime.predict_text(texts[i % len(texts)]),
        "image": lambda i: runtime.predict_image(images[i % len(images)]),
        "fusion": lambda i: runtime.predict_fusion(texts[i % len(texts)], images[i % len(images)]),
    }
    for kind, call in calls.items():
        timings = []
        for i in range(args.calls):
            tick = time.perf_counter()
            call(i)
            timings.append((time.perf_counter() - tick) * 1000)
        p95 = float(np.percentile(timings, 95))
        print(f"{kind:7s} p50 {statistics.median(timings):6.2f} ms   p95 {p95:6.2f} ms")
    after = rss_mb(os.getpid())
    _sentence_share(runtime, texts, args.calls)
    print(
        f"resident memory: {after:.0f} MB, of which the runtime and its predictions {after - before:.0f} MB"
    )
    return 0


def _sentence_share(runtime, texts: list[str], calls: int) -> None:
    """The text calls' sentence-encoder part: the same texts through the bundle's encoder alone."""
    from models.runtime import bundle_sentence_encoder

    before = rss_mb(os.getpid())
    encoder = bundle_sentence_encoder(runtime.path, runtime.metadata)
    if encoder is None:
        return
    loaded = rss_mb(os.getpid()) - before
    timings = []
    for i in range(calls):
        tick = time.perf_counter()
        encoder.encode([texts[i % len(texts)]])
        timings.append((time.perf_counter() - tick) * 1000)
    p95 = float(np.percentile(timings, 95))
    print(
        f"of a text call, the sentence encoder ({encoder.max_tokens} tokens): "
        f"p50 {statistics.median(timings):.2f} ms, p95 {p95:.2f} ms; a second copy of it holds {loaded:.0f} MB"
    )


if __name__ == "__main__":
    raise SystemExit(main())
