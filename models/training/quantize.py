"""The served image graph in int8: its backbone quantised by ONNX Runtime (static, QDQ).

An image request's CPU is mostly the backbone's convolutions (97% of the float graph's kernel
time at 280 px). After ONNX Runtime's own preparation (shapes inferred, batch norms folded into
the convolutions), its static quantisation rewrites the backbone in int8 from its fourth
convolution up to the global pooling (`backbone_nodes`): the convolutions with weights per
output channel, them and the activations between them (ReLU6, the residual additions) with
ranges measured on training photos (MinMax). The first `FLOAT_CONVS` convolutions, the pixels'
cast and resize, and the trained head (its MatMul and softmax) stay float, so what changes is
only how precisely the backbone's features are computed. `models.training.train` scores,
calibrates and fits the fusion on the answers of this very graph (`serve_int8_image`), and
ships it only when it does not lose accuracy against the float graph on the validation photos
(`Int8Check`); the export then puts it in `serving/` in place of the float one, after that
float one was checked against Keras (`models.training.export`).

Activations are unsigned 8-bit and weights signed (ONNX Runtime's U8S8, its fast path on x86).
`reduce_range` quantises the weights to 7 bits: on x86 processors without VNNI, U8S8 can
saturate its 16-bit intermediate sums; with 7-bit weights it cannot, at a small cost (1.2
points on 567 photos, docs/models.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# The operators quantised, inside the backbone up to its global pooling (`backbone_nodes`):
# quantising the convolutions alone measured worse (0.496 against 0.543 on 567 photos, 72%
# agreement) and barely faster, for the float activations between them cost a conversion each.
QUANTIZED_OPS = ("Conv", "Clip", "Add", "Mul", "Relu")
POOLING_OPS = ("GlobalAveragePool", "ReduceMean")
# The backbone's first convolutions stay float (EfficientNet-Lite0: the stem and the first
# block, at the highest resolution and with the fewest channels, so they cost little): with
# them in int8 the graph agreed with the float one on 90.5% of 567 photos, with these three in
# float on 96.5%, as fast (docs/models.md, *The image graph in int8*).
FLOAT_CONVS = 3
# Training photos whose activations set the ranges, spread evenly over the training rows.
CALIBRATION_PHOTOS = 200
# The int8 graph ships only if it is at most this much less accurate than the float graph on
# the validation photos (or two photos less, whichever is more), and agrees with it on at
# least MIN_AGREEMENT of them.
MAX_ACCURACY_DROP = 0.02
MIN_AGREEMENT = 0.8
BATCH = 16


def calibration_rows(train_rows: np.ndarray, n: int = CALIBRATION_PHOTOS) -> np.ndarray:
    """At most `n` of `train_rows`, evenly spread (deterministic: the same rows give the same graph)."""
    if len(train_rows) <= n:
        return np.asarray(train_rows)
    return np.asarray(train_rows)[np.linspace(0, len(train_rows) - 1, n).round().astype(int)]


class _Photos:
    """ONNX Runtime's calibration reader over uint8 photos, one at a time (bounded memory)."""

    def __init__(self, images: np.ndarray, input_name: str) -> None:
        self._iter: Iterator[np.ndarray] = iter(images)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._iter, None)
        return None if image is None else {self._name: image[None]}


def backbone_nodes(model: Any) -> tuple[list[str], list[str]]:
    """(names of the nodes quantised, names of the nodes that stay float).

    Quantised: the backbone from its first convolution up to the global pooling, but its
    first `FLOAT_CONVS` convolutions. What comes before (the cast and resize of the pixels) and
    after (the pooled features, the head's MatMul and softmax) stays float.
    """
    nodes = list(model.graph.node)
    first_conv = next((i for i, n in enumerate(nodes) if n.op_type == "Conv"), None)
    pool = next((i for i, n in enumerate(nodes) if n.op_type in POOLING_OPS), None)
    if first_conv is None or pool is None or pool < first_conv:
        raise ValueError("not a backbone image graph: no convolution followed by a global pooling")
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    float_convs = set(convs[:FLOAT_CONVS])
    inside = [n.name for n in nodes[first_conv:pool] if n.name not in float_convs]
    quantised = set(inside)
    outside = [n.name for n in nodes if n.name not in quantised]
    return inside, outside


def quantize_image_graph(
    float_graph: Path, out: Path, photos: np.ndarray, *, reduce_range: bool = False
) -> Path:
    """Write `out`: `float_graph` with its convolutions in int8, ranges from `photos`.

    Args:
        float_graph: An exported image graph (`models.training.export.export_model`), whose
            input is named "image" (uint8, N x H x W x 3).
        out: Where the int8 graph goes.
        photos: uint8 training photos (N x S x S x 3) to measure the activations' ranges on.
        reduce_range: 7-bit weights (for x86 processors without VNNI; see the module).

    Returns:
        `out`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not len(photos):
        raise ValueError("no photo to calibrate the int8 image graph on")
    # ONNX Runtime's own preparation first: shapes inferred, batch norms folded into the
    # convolutions before them (the graph is topologically sorted, as `backbone_nodes` needs).
    prepared = out.with_name(f"{out.stem}.prepared.onnx")
    quant_pre_process(str(float_graph), str(prepared), skip_symbolic_shape=True)
    _, outside = backbone_nodes(onnx.load(str(prepared)))
    quantize_static(
        str(prepared),
        str(out),
        _Photos(np.asarray(photos, dtype=np.uint8), "image"),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS),
        nodes_to_exclude=outside,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    prepared.unlink(missing_ok=True)
    return out


def run_image_graph(
    graph: Path, images: np.ndarray, rows: np.ndarray | None = None, *, batch: int = BATCH
) -> np.ndarray:
    """The probabilities of `graph` (an exported image graph) on uint8 `images` (those of
    `rows` when given: the rest is never copied), in batches."""
    import onnxruntime as ort

    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: images[rows[i : i + batch]]})[0] for i in range(0, len(rows), batch)]
    n_labels = session.get_outputs()[0].shape[-1]
    return np.concatenate(out) if out else np.zeros((0, n_labels), dtype=np.float32)


@dataclass(frozen=True)
class Int8Check:
    """The int8 graph against the float one on the same held-out photos (metadata.json)."""

    photos: int
    float_accuracy: float | None
    int8_accuracy: float | None
    agreement: float | None
    calibration_photos: int
    quantized_ops: tuple[str, ...] = QUANTIZED_OPS
    reduce_range: bool = False

    @property
    def ships(self) -> bool:
        """Whether the int8 graph serves: no accuracy lost beyond the tolerance (or no photo to tell)."""
        if self.photos == 0 or self.float_accuracy is None or self.int8_accuracy is None:
            return True
        # Two photos at least: on a small validation split one photo is several points.
        allowed = max(MAX_ACCURACY_DROP, 2 / self.photos)
        return (
            self.int8_accuracy >= self.float_accuracy - allowed and (self.agreement or 0.0) >= MIN_AGREEMENT
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "quantized_ops": list(self.quantized_ops), "ships": self.ships}


def compare(
    float_probs: np.ndarray, int8_probs: np.ndarray, y: np.ndarray, calibration_photos: int
) -> Int8Check:
    """How the int8 graph's answers compare with the float graph's on photos labelled `y`."""
    if not len(y):
        return Int8Check(0, None, None, None, calibration_photos)
    f, q = float_probs.argmax(axis=1), int8_probs.argmax(axis=1)
    return Int8Check(
        photos=len(y),
        float_accuracy=float(np.mean(f == y)),
        int8_accuracy=float(np.mean(q == y)),
        agreement=float(np.mean(f == q)),
        calibration_photos=calibration_photos,
    )
