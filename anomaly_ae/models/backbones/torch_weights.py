"""Read a PyTorch ``state_dict`` file into NumPy arrays without PyTorch and without running its pickle.

A ``.pth`` file is a pickle, and unpickling runs whatever the file names. :func:`read_state_dict` uses a
restricted unpickler that rebuilds only what a state dict holds: ordered dicts and tensors
(``torch._utils._rebuild_tensor_v2`` over typed storages). Any other global is refused with
:class:`UnsafeWeightsError`, so a tampered file cannot execute code. Both of PyTorch's layouts are read:
the legacy stream (magic number, protocol, system info, the pickle, then the raw storages) and the zip
archive of PyTorch >= 1.6 (``archive/data.pkl`` and one ``archive/data/<key>`` file per storage).
"""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

#: the legacy format's first pickled value
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: storage class name -> element type
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}


class UnsafeWeightsError(ValueError):
    """The weights file names something a state dict never holds (it could run code): refused."""


class _StorageType:
    """Stands for ``torch.FloatStorage`` etc. while unpickling."""

    def __init__(self, name: str) -> None:
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """A storage named by the pickle; its bytes are read afterwards (``data``: flat array)."""

    def __init__(self, dtype: np.dtype, key: str) -> None:
        self.dtype, self.key = dtype, key
        self.data: np.ndarray | None = None


class _Tensor:
    """A tensor view of a storage, materialised once the storages are read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise ValueError(f"storage {self.storage.key} has no data in the file")
        item = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(data[self.offset :], self.size, [s * item for s in self.stride])
        return np.array(view)  # a copy: independent of the file's buffer


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _Tensor:
    return _Tensor(storage, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds ordered dicts and tensors only; every storage it meets is collected in ``storages``."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeWeightsError(f"refused: the weights file names {module}.{name}, which a state dict never holds")

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage" or not isinstance(pid[1], _StorageType):
            raise UnsafeWeightsError(f"refused: unexpected persistent id {pid!r:.80}")
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = _Storage(pid[1].dtype, key)
        return self.storages[key]


def _arrays(obj: Any) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise UnsafeWeightsError(f"refused: the file holds a {type(obj).__name__}, not a state dict")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):  # a training checkpoint
        obj = obj["state_dict"]
    return {str(k): v.array() for k, v in obj.items() if isinstance(v, _Tensor)}


def _read_legacy(f: BinaryIO) -> dict[str, np.ndarray]:
    header = _PlainUnpickler(f)
    if header.load() != LEGACY_MAGIC:
        raise ValueError("not a PyTorch weights file (no magic number)")
    header.load()  # protocol version
    header.load()  # system info: endianness, type sizes
    unpickler = _RestrictedUnpickler(f)
    obj = unpickler.load()
    for key in _PlainUnpickler(f).load():
        storage = unpickler.storages[str(key)]
        (count,) = struct.unpack("<q", f.read(8))
        raw = f.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise ValueError("the weights file ends early")
        storage.data = np.frombuffer(raw, storage.dtype)
    return _arrays(obj)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ValueError(f"{path}: a zip file without data.pkl is not a PyTorch weights file")
        root = pkl[: -len("data.pkl")]
        with z.open(pkl) as f:
            unpickler = _RestrictedUnpickler(f)  # type: ignore[arg-type]
            obj = unpickler.load()
        for key, storage in unpickler.storages.items():
            storage.data = np.frombuffer(z.read(f"{root}data/{key}"), storage.dtype)
    return _arrays(obj)


class _PlainUnpickler(pickle.Unpickler):
    """The legacy header and storage-key list: plain values only, no global at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafeWeightsError(f"refused: the weights file's header names {module}.{name}")


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """``{parameter name: array}`` of a PyTorch ``state_dict`` file (legacy or zip layout), PyTorch's shapes.

    Raises:
        UnsafeWeightsError: the file names any global but ordered dicts, tensors and storages.
        ValueError: not a PyTorch weights file, or truncated.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as f:
        try:
            return _read_legacy(f)
        except (pickle.UnpicklingError, EOFError, struct.error) as e:
            raise ValueError(f"{path}: not a readable PyTorch weights file ({e})") from None
