"""The int8 image graph (models/training/quantize.py): what is quantised, and that the bundle's
figures and suggestion sets are those of the graph that serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.training import quantize

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _assert_backbone_int8_head_float(model: onnx.ModelProto) -> None:
    producers = _producers(model)
    ops = [node.op_type for node in model.graph.node]
    assert set(ops) >= QDQ_OPS, "no quantised operator in the graph"
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    # A quantised convolution reads dequantised weights; the first FLOAT_CONVS keep float ones.
    weights_int8 = [
        n.input[1] in producers and producers[n.input[1]].op_type == "DequantizeLinear" for n in convs
    ]
    float_convs = min(quantize.FLOAT_CONVS, len(convs))
    assert len(convs) > float_convs
    assert weights_int8 == [False] * float_convs + [True] * (len(convs) - float_convs)
    # The head reads float: neither its MatMul nor the softmax has a quantised input.
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Softmax", "Gemm"):
            assert all(producers.get(i) is None or producers[i].op_type not in QDQ_OPS for i in node.input)


def _tiny_image_graph(path: Path, rng: np.random.Generator) -> Path:
    """uint8 NHWC pixels -> cast, scale, transpose -> 5 convs + ReLU -> pooling -> MatMul -> softmax."""
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w0")]
    weights += [
        numpy_helper.from_array(rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), f"w{i}")
        for i in range(1, 5)
    ]
    dense = numpy_helper.from_array(rng.normal(0, 1.0, (8, 5)).astype(np.float32), "dense")
    scale = numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale")
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["f", "scale"], ["scaled"], name="to_float"),
        helper.make_node("Transpose", ["scaled"], ["r-1"], perm=[0, 3, 1, 2], name="transpose"),
    ]
    for i in range(5):
        nodes.append(
            helper.make_node("Conv", [f"r{i - 1}", f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}")
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
    nodes += [
        helper.make_node("GlobalAveragePool", ["r4"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["features"], name="flatten"),
        helper.make_node("MatMul", ["features", "dense"], ["logits"], name="head"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [None, 16, 16, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 5])],
        initializer=[*weights, dense, scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_the_backbone_is_quantised_and_the_head_left_in_float(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    float_graph = _tiny_image_graph(tmp_path / "float.onnx", rng)
    photos = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    int8 = quantize.quantize_image_graph(float_graph, tmp_path / "int8.onnx", photos[:30])
    _assert_backbone_int8_head_float(onnx.load(int8))
    assert not (tmp_path / "int8.prepared.onnx").exists()
    # Held-out photos: the same answers as the float graph, up to the int8 rounding.
    held_out = photos[30:]
    expected, got = quantize.run_image_graph(float_graph, held_out), quantize.run_image_graph(int8, held_out)
    assert got.shape == expected.shape == (10, 5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(got - expected).max() < 0.05
    assert float(np.mean(got.argmax(1) == expected.argmax(1))) >= 0.9
    # Only the rows asked for are run, in their order.
    np.testing.assert_allclose(
        quantize.run_image_graph(int8, photos, np.array([33, 30])), got[[3, 0]], atol=1e-6
    )


def test_a_graph_without_a_backbone_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], name="softmax")],
        "head-only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])],
    )
    with pytest.raises(ValueError, match="not a backbone image graph"):
        quantize.backbone_nodes(helper.make_model(graph))
    with pytest.raises(ValueError, match="no photo"):
        quantize.quantize_image_graph(tmp_path / "none.onnx", tmp_path / "out.onnx", np.zeros((0, 8, 8, 3)))


def test_calibration_photos_are_spread_evenly_and_the_same_each_time() -> None:
    rows = np.arange(100, 1100)
    chosen = quantize.calibration_rows(rows, n=10)
    assert len(chosen) == 10 and chosen[0] == 100 and chosen[-1] == 1099
    assert np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(chosen, quantize.calibration_rows(rows, n=10))
    np.testing.assert_array_equal(quantize.calibration_rows(rows[:7], n=10), rows[:7])


def test_the_int8_graph_ships_only_when_it_keeps_the_float_graphs_accuracy() -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    float_probs = np.eye(3)[y]  # all right
    int8_probs = float_probs.copy()
    assert quantize.compare(float_probs, int8_probs, y, 200).ships
    int8_probs[0] = np.eye(3)[1]  # one wrong in ten: 10 points, but only one photo
    check = quantize.compare(float_probs, int8_probs, y, 200)
    assert (check.float_accuracy, check.int8_accuracy, check.agreement) == (1.0, 0.9, 0.9)
    assert check.ships
    int8_probs[[3, 6]] = np.eye(3)[1]  # three wrong in ten
    check = quantize.compare(float_probs, int8_probs, y, 200)
    assert not check.ships and check.to_dict()["ships"] is False
    # On 1,000 photos, 3 points lost is more than the tolerance.
    big_y = np.tile(y, 100)
    big_int8 = np.eye(3)[big_y]
    big_int8[:30] = np.eye(3)[(big_y[:30] + 1) % 3]
    assert not quantize.compare(np.eye(3)[big_y], big_int8, big_y, 200).ships
    big_int8[20:30] = np.eye(3)[big_y[20:30]]  # 2 points lost: within it
    assert quantize.compare(np.eye(3)[big_y], big_int8, big_y, 200).ships
    # As accurate, but on other photos: agreement below the floor.
    shuffled = np.eye(3)[[1, 2, 0, 0, 1, 2, 0, 1, 2, 0]]
    y2 = np.array([1, 2, 0, 1, 2, 0, 0, 1, 2, 0])
    check = quantize.compare(np.eye(3)[[0, 1, 2, 1, 2, 0, 0, 1, 2, 0]], shuffled, y2, 200)
    assert check.float_accuracy == check.int8_accuracy and check.agreement < quantize.MIN_AGREEMENT
    assert not check.ships
    assert quantize.compare(float_probs[:0], int8_probs[:0], y[:0], 200).ships  # nothing to tell


@pytest.mark.slow
def test_the_quick_bundle_serves_the_int8_graph_its_sets_were_calibrated_on(
    quick_bundle: Path, quick_catalogue: Path
) -> None:
    from models.calibration import calibrate
    from models.data import load_challenge_folder
    from models.runtime import ModelRuntime
    from models.training.prepare import prepare_data

    metadata = json.loads((quick_bundle / "metadata.json").read_text())
    assert metadata["image_int8"]["ships"] is True
    assert metadata["image_int8"]["photos"] > 0
    _assert_backbone_int8_head_float(onnx.load(quick_bundle / "serving" / "image.onnx"))

    p = prepare_data([load_challenge_folder(quick_catalogue)], seed=0, image_size=metadata["image_size"])
    runtime = ModelRuntime.from_bundle(quick_bundle)
    rows = p.rows("calibration", p.has_image)
    served = runtime.predict_batch("image", images=list(p.images[rows]))
    entry = json.loads((quick_bundle / "calibration.json").read_text())["image"]
    again = calibrate(served, p.y[rows], alpha=entry["alpha"], method=entry["method"], delta=entry["delta"])
    assert again["n"] == entry["n"] == len(rows)
    assert again["threshold"] == pytest.approx(entry["threshold"], abs=1e-6)
    # The test split's figures are the served graph's too.
    test_rows = p.rows("test", p.has_image)
    accuracy = float(
        np.mean(runtime.predict_batch("image", images=list(p.images[test_rows])).argmax(1) == p.y[test_rows])
    )
    metrics = json.loads((quick_bundle / "metrics.json").read_text())["image"]
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-9)


def _small_bundle_and_data(tmp_path: Path, quick_catalogue: Path, **changes: object):
    from dataclasses import replace

    from models.data import load_challenge_folder
    from models.training.hyperparameters import Hyperparameters
    from models.training.prepare import prepare_data
    from models.training.train import train

    hp = replace(
        Hyperparameters.quick(),
        sentence_encoder="",
        word_vectors="",
        text_epochs=2,
        image_epochs=3,
        fusion_epochs=2,
        conformal_delta=None,
        **changes,
    )
    dataset = load_challenge_folder(quick_catalogue).subset(list(range(300)))
    bundle = train([dataset], tmp_path / "bundle", hyperparameters=hp, seed=0)
    return bundle, prepare_data([dataset], seed=0, image_size=hp.image_size)


@pytest.mark.slow
def test_a_refitted_bundle_serves_its_own_int8_graph_calibrated_on_its_answers(
    tmp_path: Path, quick_catalogue: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.calibration import calibrate
    from models.runtime import ModelRuntime

    # Whatever the 30 validation photos say: what is checked is the refit's own graph.
    monkeypatch.setattr(quantize, "MAX_ACCURACY_DROP", 1.0)
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.0)
    bundle, p = _small_bundle_and_data(tmp_path, quick_catalogue, refit=True)
    metadata = json.loads((bundle / "metadata.json").read_text())
    assert metadata["refit"] is not None and metadata["image_int8"]["ships"] is True
    _assert_backbone_int8_head_float(onnx.load(bundle / "serving" / "image.onnx"))
    rows = p.rows("calibration", p.has_image)
    served = ModelRuntime.from_bundle(bundle).predict_batch("image", images=list(p.images[rows]))
    entry = json.loads((bundle / "calibration.json").read_text())["image"]
    again = calibrate(served, p.y[rows], alpha=entry["alpha"], method=entry["method"], delta=entry["delta"])
    assert again["n"] == entry["n"] == len(rows) > 0
    assert again["threshold"] == pytest.approx(entry["threshold"], abs=1e-6)


@pytest.mark.slow
def test_without_int8_the_float_image_graph_serves_and_says_so(tmp_path: Path, quick_catalogue: Path) -> None:
    bundle, _ = _small_bundle_and_data(tmp_path, quick_catalogue, image_int8=False)
    metadata = json.loads((bundle / "metadata.json").read_text())
    assert metadata["image_int8"] is None and metadata["hyperparameters"]["image_int8"] is False
    graph = onnx.load(bundle / "serving" / "image.onnx")
    assert not QDQ_OPS & {node.op_type for node in graph.graph.node}
    assert "int8" not in json.loads((bundle / "serving" / "serving.json").read_text())["models"]["image"]
