"""The shorthands of `train()` apply on top of the hyperparameters, never silently instead of them."""

from __future__ import annotations

import pytest

from models.training.hyperparameters import Hyperparameters, resolve_hyperparameters


def test_the_architecture_of_the_hyperparameters_is_kept_when_no_shorthand_is_given() -> None:
    hp = resolve_hyperparameters(Hyperparameters(text_arch="lstm", fusion_arch="concat", image_size=40))

    assert (hp.text_arch, hp.fusion_arch, hp.image_size) == ("lstm", "concat", 40)


def test_a_given_shorthand_applies_on_top_of_the_hyperparameters() -> None:
    hp = resolve_hyperparameters(Hyperparameters(text_arch="lstm"), epochs=3, image_size=32)

    assert hp.text_arch == "lstm"
    assert hp.text_epochs == hp.image_epochs == 3 and hp.image_size == 32


def test_quick_is_the_default_only_without_hyperparameters() -> None:
    assert resolve_hyperparameters(quick=True) == Hyperparameters.quick()
    assert resolve_hyperparameters(Hyperparameters(), quick=True) == Hyperparameters()


def test_an_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="text_arch"):
        resolve_hyperparameters(Hyperparameters(text_arch="bert"))
    with pytest.raises(ValueError, match="fusion_arch"):
        resolve_hyperparameters(fusion_arch="sum")


def test_an_unknown_sentence_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="sentence_encoder"):
        resolve_hyperparameters(Hyperparameters(sentence_encoder="e5"))
