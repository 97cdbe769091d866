"""The text-encoder benchmark's own logic: its skip without the real data and its embedding cache."""

from __future__ import annotations

import numpy as np

from benchmarks import text_encoders


class CountingEncoder:
    """Stands in for `SentenceEncoder`: a vector from each text's length, and a count of texts encoded."""

    def __init__(self) -> None:
        self.spec = {"sha256": {"sentence_encoder.onnx": "ab" * 32}}
        self.encoded: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.encoded += texts
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_the_benchmark_skips_with_a_message_without_the_real_data(tmp_path, capsys) -> None:
    assert text_encoders.main(["--data", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out


def test_embeddings_are_cached_by_text_and_each_new_text_is_encoded_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(text_encoders, "CACHE_DIR", tmp_path)
    encoder = CountingEncoder()
    first = text_encoders.cached_embeddings(encoder, ["bâche", "roman policier", "bâche"])
    assert first[:, 0].tolist() == [5, 14, 5]
    assert sorted(encoder.encoded) == ["bâche", "roman policier"]
    again = text_encoders.cached_embeddings(encoder, ["roman policier", "piscine", "bâche"])
    assert again[:, 0].tolist() == [14, 7, 5]
    assert sorted(encoder.encoded) == ["bâche", "piscine", "roman policier"]  # only "piscine" was new
    assert [p.name for p in tmp_path.iterdir()] == ["use-abababababababab.npz"]
