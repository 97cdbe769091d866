"""What shapes the models: the label set, the architectures and every hyperparameter."""

from __future__ import annotations

from dataclasses import dataclass, replace

# The 27 product types are a fact of the problem, seeded into the database by its first migration
# from this constant module (no database access here); training writes them into metadata.json.
from db.categories import CATEGORIES
from models.preprocessing import IMAGE_SIZE

LABELS: list[int] = sorted(CATEGORIES)
TEXT_ARCHS = ("tfidf", "lstm")
FUSION_ARCHS = ("late", "concat")
# "cnn": trained from scratch (the quick bundle's); "lite0".."lite2": EfficientNet-Lite with its
# ImageNet weights and a trained head, its last layers fine-tuned (models/training/efficientnet_lite.py).
IMAGE_ARCHS = ("cnn", "lite0", "lite1", "lite2")
# "": the backbone frozen; else where fine-tuning starts (efficientnet_lite.FINETUNE_DEPTHS).
IMAGE_FINETUNE = ("", "head", "block")
# "": no sentence encoder; "use3": Google's multilingual USE v3 (models.training.sentence_features).
SENTENCE_ENCODERS = ("", "use3")
# Above the 224 px Lite0 was trained at: 280 px measured 2 points better on the real photos
# (docs/models.md, the backbone's table), at 4 ms an image in ONNX Runtime.
PRETRAINED_IMAGE_SIZE = 280


@dataclass
class Hyperparameters:
    """Everything that shapes the models; written to metadata.json."""

    text_arch: str = "tfidf"
    fusion_arch: str = "late"
    image_arch: str = "lite0"
    image_size: int = PRETRAINED_IMAGE_SIZE
    batch_size: int = 32
    label_smoothing: float = 0.1
    # text
    text_epochs: int = 40
    text_patience: int = 8
    text_learning_rate: float = 3e-3
    text_weight_decay: float = 1e-4
    text_dropout: float = 0.5
    text_hidden: int = 0
    # pretrained French word vectors (models.training.word_vectors); "" for n-grams only
    word_vectors: str = "fr_core_news_md"
    word_vector_words: int = 200_000
    word_vector_length: int = 256
    word_vector_dimensions: int | None = None  # None: all 300; fewer: principal components
    title_tokens: int = 30_000
    # a sentence encoder's embedding as a second input of the tfidf text model
    # (models.training.sentence_features): "use3" or "" for none. USE v3 measured +1.8 points of
    # accuracy and 95% sets of 5.5 instead of 7.4 over three splits (docs/models.md). It reads
    # the first 128 tokens (<s>, </s> included): as accurate as all of them in cross-validation,
    # and a long description then costs at most a few ms (12 ms worst, loaded machine).
    sentence_encoder: str = "use3"
    sentence_max_tokens: int = 128
    text_balanced: bool = True  # class weights n / (classes x count) in the text loss
    word_tokens: int = 50_000
    char_tokens: int = 50_000
    lstm_vocab: int = 20_000
    lstm_length: int = 80
    # image
    image_epochs: int = 30
    image_patience: int = 10
    image_learning_rate: float = 2e-3
    image_weight_decay: float = 5e-4
    image_filters: tuple[int, ...] = (32, 64, 128)
    image_top_filters: int = 256
    histogram_bins: int = 16
    image_dropout: float = 0.4
    flip_average: bool = True
    image_members: int = 2  # an ensemble of this many CNNs, logits averaged
    # Fine-tuning of a pretrained backbone's last layers after its head is fitted on the frozen
    # features (models.training.efficientnet_lite.finetune_split): "" keeps it frozen, "head"
    # trains the 1x1 head convolution, "block" the last MBConv block too. Trained on the cached
    # activations where it starts, of each photo and of its mirror (the served graph reads the
    # photo alone), at a small learning rate, early-stopped on validation (docs/models.md,
    # "Frozen or fine-tuned").
    image_finetune: str = "head"
    image_finetune_flip: bool = True
    image_finetune_epochs: int = 12
    image_finetune_patience: int = 3
    image_finetune_learning_rate: float = 1e-4
    # Serve a pretrained backbone's convolutions in int8 (models/training/quantize.py): about
    # half the image graph's time; scored, calibrated and fused on the int8 graph's answers, and
    # kept in float when it loses accuracy on the validation photos.
    image_int8: bool = True
    # fusion
    fusion_epochs: int = 60
    pseudo_pairs_per_text: int = 5
    # calibration
    alpha: float = 0.05
    conformal_method: str = "lac"
    conformal_delta: float | None = 0.1
    # Class-conditional (Mondrian) thresholds instead of one for all classes (models/calibration.py);
    # both are always computed and reported in metrics.json, this picks what the sets use.
    conformal_mondrian: bool = False
    # Ship models refitted on train + validation + test with the selection run's epochs (the
    # figures stay the selection run's, scored on a test split it did not train on).
    refit: bool = True

    @classmethod
    def quick(cls) -> Hyperparameters:
        """Small models and few epochs: demos and tests (about a minute on 1,500 products)."""
        return cls(
            # The shipped encoders at reduced cost: the same ImageNet backbone at 128 px and the
            # same sentence encoder, so a demo trained on the synthetic catalogue reads real
            # listings with what those encoders know (docs/models.md, "The quick bundle").
            image_size=128,
            text_epochs=15,
            text_patience=4,
            word_tokens=8_000,
            char_tokens=8_000,
            word_vector_words=50_000,
            word_vector_length=96,
            word_vector_dimensions=48,
            title_tokens=4_000,
            lstm_vocab=5_000,
            lstm_length=40,
            fusion_epochs=40,
            refit=False,  # a second training would double the tests' and the demo's time
        )

    def check(self) -> Hyperparameters:
        """Return self, or raise ValueError naming an unknown architecture."""
        if self.text_arch not in TEXT_ARCHS:
            raise ValueError(f"text_arch must be one of {TEXT_ARCHS}, got {self.text_arch!r}")
        if self.fusion_arch not in FUSION_ARCHS:
            raise ValueError(f"fusion_arch must be one of {FUSION_ARCHS}, got {self.fusion_arch!r}")
        if self.sentence_encoder not in SENTENCE_ENCODERS:
            raise ValueError(
                f"sentence_encoder must be one of {SENTENCE_ENCODERS}, got {self.sentence_encoder!r}"
            )
        if self.image_arch not in IMAGE_ARCHS:
            raise ValueError(f"image_arch must be one of {IMAGE_ARCHS}, got {self.image_arch!r}")
        if self.image_finetune not in IMAGE_FINETUNE:
            raise ValueError(f"image_finetune must be one of {IMAGE_FINETUNE}, got {self.image_finetune!r}")
        return self


def resolve_hyperparameters(
    hyperparameters: Hyperparameters | None = None,
    *,
    quick: bool = False,
    epochs: int | None = None,
    text_arch: str | None = None,
    fusion_arch: str | None = None,
    image_size: int | None = None,
    image_arch: str | None = None,
) -> Hyperparameters:
    """`hyperparameters` (default: the shipped ones, or `Hyperparameters.quick()`), with the
    shorthands that were given applied on top; a shorthand left at None changes nothing.

    Raises:
        ValueError: an unknown architecture.
    """
    hp = hyperparameters or (Hyperparameters.quick() if quick else Hyperparameters())
    changes: dict[str, object] = {}
    if text_arch is not None:
        changes["text_arch"] = text_arch
    if fusion_arch is not None:
        changes["fusion_arch"] = fusion_arch
    if image_arch is not None:
        changes["image_arch"] = image_arch
        if image_size is None:  # each family at the size it is built for
            changes["image_size"] = IMAGE_SIZE if image_arch == "cnn" else PRETRAINED_IMAGE_SIZE
    if image_size is not None:
        changes["image_size"] = image_size
    if epochs is not None:
        changes["text_epochs"] = changes["image_epochs"] = changes["image_finetune_epochs"] = epochs
    return replace(hp, **changes).check()
