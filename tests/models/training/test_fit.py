"""The training loop's batches over several views of the same rows (`models.training.fit.Views`)."""

from __future__ import annotations

import numpy as np
import pytest

from models.training.fit import Views


def test_views_visit_every_row_of_every_view_once_an_epoch_with_its_label() -> None:
    y = np.array([0, 1, 2, 3, 4, 5, 6])
    photos = np.arange(7, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    mirrors = photos + 100.0  # a mirror's features, told apart by their value
    batches = Views((photos, mirrors), seed=1).batches(y, batch_size=4)

    epochs = []
    for _ in range(2):
        seen = [batches[i] for i in range(len(batches))]
        batches.on_epoch_end()
        x = np.concatenate([b[0] for b in seen])
        labels = np.concatenate([b[1] for b in seen]).argmax(axis=1)
        assert len(batches) == 4 and x.dtype == np.float32
        assert sorted(x[:, 0].tolist()) == sorted(photos[:, 0].tolist() + mirrors[:, 0].tolist())
        np.testing.assert_array_equal(labels, x[:, 0].astype(int) % 100)  # each row keeps its label
        epochs.append(x[:, 0].tolist())
    assert epochs[0] != epochs[1]  # reshuffled between epochs


def test_views_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="every view"):
        Views((np.zeros((3, 2)), np.zeros((2, 2)))).batches(np.zeros(3, dtype=int), batch_size=2)
