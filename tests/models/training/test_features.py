"""The feature cache: computed once per input content and key, reused, never stale."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.training.features import cached_features, content_key


class Counting:
    """A stand-in backbone that counts the inputs it sees: the mean and the max of each row."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.seen += len(batch)
        flat = batch.reshape(len(batch), -1).astype(np.float32)
        return np.stack([flat.mean(axis=1), flat.max(axis=1)], axis=1)


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)


def test_a_second_run_reads_every_feature_from_the_cache(tmp_path: Path) -> None:
    batch = images(10, 0)
    first, second = Counting(), Counting()

    a = cached_features(first, batch, key="k", cache_dir=tmp_path, batch_size=4)
    b = cached_features(second, batch, key="k", cache_dir=tmp_path, batch_size=4)

    assert first.seen == 10 and second.seen == 0
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, Counting()(batch))


def test_only_new_inputs_are_computed_and_the_order_is_kept(tmp_path: Path) -> None:
    old, new = images(6, 1), images(3, 2)
    cached_features(Counting(), old, key="k", cache_dir=tmp_path)
    later = Counting()
    mixed = np.concatenate([new[:1], old, new[1:]])

    out = cached_features(later, mixed, key="k", cache_dir=tmp_path)

    assert later.seen == 3  # the weekly retraining pays only for the new products
    np.testing.assert_allclose(out, Counting()(mixed))


def test_another_key_or_another_content_is_computed_again(tmp_path: Path) -> None:
    batch = images(4, 3)
    cached_features(Counting(), batch, key="lite0-224", cache_dir=tmp_path)
    other_key, changed = Counting(), Counting()

    cached_features(other_key, batch, key="lite0-260", cache_dir=tmp_path)
    edited = batch.copy()
    edited[0, 0, 0, 0] ^= 1
    cached_features(changed, edited, key="lite0-224", cache_dir=tmp_path)

    assert other_key.seen == 4 and changed.seen == 1
    assert content_key(batch[0]) != content_key(edited[0])


def test_an_unreadable_cache_file_is_computed_again_and_no_temporary_file_stays(tmp_path: Path) -> None:
    batch = images(3, 4)
    cached_features(Counting(), batch, key="k", cache_dir=tmp_path)
    name = content_key(batch[1])
    (tmp_path / "k" / name[:2] / f"{name}.npy").write_bytes(b"half a file")
    again = Counting()

    out = cached_features(again, batch, key="k", cache_dir=tmp_path)

    assert again.seen == 1
    np.testing.assert_allclose(out, Counting()(batch))
    assert not list(tmp_path.rglob("*.tmp.npy"))


def test_without_a_cache_everything_is_computed(tmp_path: Path) -> None:
    counting = Counting()
    cached_features(counting, images(5, 5), key="k", cache_dir=None)
    cached_features(counting, images(5, 5), key="k", cache_dir=None)
    assert counting.seen == 10


def test_texts_are_cached_by_their_exact_content(tmp_path: Path) -> None:
    seen: list[str] = []

    def lengths(batch: np.ndarray) -> np.ndarray:
        seen.extend(batch)
        return np.array([[len(t), t.count("e")] for t in batch], dtype=np.float32)

    texts = np.array(["bâche", "Bâche", "roman policier"], dtype=object)
    first = cached_features(lengths, texts, key="use3-128tok", cache_dir=tmp_path)
    again = cached_features(
        lengths, np.array(["roman policier", "bâche"], dtype=object), key="use3-128tok", cache_dir=tmp_path
    )

    assert seen == ["bâche", "Bâche", "roman policier"]  # case is content: two entries
    np.testing.assert_array_equal(again, first[[2, 0]])
    assert content_key("bâche") != content_key("Bâche") != content_key(np.frombuffer(b"Bache", np.uint8))
