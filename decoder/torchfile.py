"""Tensors from a file saved by `torch.save` in its legacy format (a sequence of pickles, then
the raw storages), read without torch: a restricted unpickler that builds nothing but ordered
dicts and numpy arrays, and refuses every other class the file names (a pickle can name any
callable: this one cannot run code).

The layout (torch/serialization.py, `_legacy_save`): a magic number, the protocol version, a
system-info dict, the object pickled with storages as persistent ids
`("storage", type, key, location, numel)`, the list of storage keys in the order they follow,
then each storage as a little-endian int64 element count and its bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from common.errors import ModelLoadError

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001
DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass
class _Storage:
    dtype: Any
    numel: int
    data: np.ndarray | None = None


@dataclass
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        assert self.storage.data is not None
        base = self.storage.data
        if not self.size:
            return base[self.offset : self.offset + 1].reshape(()).copy()
        end = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if end > len(base):
            raise ModelLoadError("a tensor reaches past its storage (%d > %d)" % (end, len(base)))
        strides = tuple(s * base.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(base[self.offset :], self.size, strides, writeable=False)
        return np.array(view)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in DTYPES:
            return _StorageType(name)
        raise ModelLoadError("the weights file names %s.%s, which a tensor file has no need of" % (module, name))

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ModelLoadError("unexpected persistent id in the weights file: %r" % (pid,))
        kind, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(kind, _StorageType):
            raise ModelLoadError("unexpected storage type in the weights file: %r" % (kind,))
        return self.storages.setdefault(key, _Storage(DTYPES[kind.name], numel))


def _arrays(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.array()
    if isinstance(obj, dict):
        return type(obj)((k, _arrays(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_arrays(v) for v in obj)
    return obj


def load(path: Path) -> Any:
    """The object saved at `path`, each tensor a numpy array (ModelLoadError when the file is
    not a legacy torch file, or names anything beyond tensors and dicts)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError("cannot read %s: %s" % (path, exc)) from exc
    f = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}
    try:
        magic = _Unpickler(f, {}).load()
        protocol = _Unpickler(f, {}).load()
        if magic != MAGIC or protocol != PROTOCOL:
            raise ModelLoadError("%s is not a torch file in the legacy format" % path)
        _Unpickler(f, {}).load()  # system info: plain values
        obj = _Unpickler(f, storages).load()
        keys = _Unpickler(f, {}).load()
        for key in keys:
            storage = storages[str(key)]
            (count,) = struct.unpack("<q", f.read(8))
            size = count * np.dtype(storage.dtype).itemsize
            data = f.read(size)
            if count != storage.numel or len(data) != size:
                raise ModelLoadError("storage %s of %s is truncated" % (key, path))
            storage.data = np.frombuffer(data, dtype=storage.dtype)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, struct.error) as exc:
        raise ModelLoadError("cannot read %s as torch weights: %s" % (path, exc)) from exc
    return _arrays(obj)
