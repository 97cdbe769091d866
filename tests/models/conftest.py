"""One quick bundle trained once per test session, shared by the model tests that need one."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.data import Dataset, load_challenge_folder
from models.synthetic import generate_catalogue

TRAIN_PRODUCTS = 900
EVAL_PRODUCTS = 300


@pytest.fixture(scope="session")
def quick_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic catalogue to train on (seed 0)."""
    return generate_catalogue(
        tmp_path_factory.mktemp("train") / "catalogue", n_products=TRAIN_PRODUCTS, seed=0
    )


@pytest.fixture(scope="session")
def eval_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second synthetic catalogue, never trained on (seed 1)."""
    return generate_catalogue(tmp_path_factory.mktemp("eval") / "catalogue", n_products=EVAL_PRODUCTS, seed=1)


@pytest.fixture(scope="session")
def eval_dataset(eval_catalogue: Path) -> Dataset:
    return load_challenge_folder(eval_catalogue)


@pytest.fixture(scope="session")
def quick_bundle(quick_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete bundle from `models.train.train(..., quick=True)` (about a minute)."""
    from models.train import train

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    return train([load_challenge_folder(quick_catalogue)], out, seed=0, quick=True)
