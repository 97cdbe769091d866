"""Model-test fixtures; the quick bundle itself (`quick_bundle`) is shared from tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.synthetic import generate_catalogue
from models.data import Dataset, load_challenge_folder

TRAIN_PRODUCTS = 900
EVAL_PRODUCTS = 300


@pytest.fixture(scope="session")
def eval_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second synthetic catalogue, never trained on (seed 1)."""
    return generate_catalogue(tmp_path_factory.mktemp("eval") / "catalogue", n_products=EVAL_PRODUCTS, seed=1)


@pytest.fixture(scope="session")
def eval_dataset(eval_catalogue: Path) -> Dataset:
    return load_challenge_folder(eval_catalogue)


@pytest.fixture(scope="session")
def sentence_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The multilingual USE v3 exported once per session from its package (a training dependency)."""
    from models.training.sentence_encoder import export_sentence_encoder

    return export_sentence_encoder(tmp_path_factory.mktemp("sentence-encoder") / "encoder")
