"""Read MiniFASNet weights as numpy arrays, from the repacked .npz or the upstream .pth.

The upstream files are legacy (pre-1.6, non-zip) torch pickles. Reading them
must not need torch, and must not run arbitrary pickle code either: the
unpickler below resolves only the handful of globals a plain state_dict uses,
and anything else is refused. The file's pinned SHA-256 is checked before it
gets here; this allowlist is the second line of defence.

Legacy layout: five consecutive pickles/blocks
  magic number, protocol version, system info, the state_dict (tensors refer to
  storages by persistent id), the list of storage keys in file order; then, for
  each key, an int64 element count followed by the raw little-endian elements.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class name -> numpy dtype (little-endian, as torch writes it)
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class WeightFormatError(ValueError):
    """The file is neither a weights .npz nor a legacy torch state_dict we can read safely."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored):  # noqa: ANN001 (pickle callback)
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):  # noqa: ANN001 (pickle callback)
    return data


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise WeightFormatError(f"refusing pickle global {module}.{name}: not part of a plain state_dict")

    def persistent_load(self, pid):  # noqa: ANN001, ANN201
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise WeightFormatError(f"unexpected persistent id {pid!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise WeightFormatError("storage views are not supported")
        return _StorageRef(str(pid[2]), pid[1].dtype)


def _read_legacy_torch(data: bytes) -> dict[str, np.ndarray]:
    stream = io.BytesIO(data)
    plain = _StateDictUnpickler(stream)  # the three header pickles hold plain values only
    if plain.load() != _LEGACY_MAGIC:
        raise WeightFormatError("not a legacy torch file (bad magic number)")
    _StateDictUnpickler(stream).load()  # protocol version
    _StateDictUnpickler(stream).load()  # system info (endianness, type sizes)
    state = _StateDictUnpickler(stream).load()
    keys = _StateDictUnpickler(stream).load()
    if not isinstance(state, dict):
        raise WeightFormatError("the pickled object is not a state_dict")

    dtypes = {ref.storage.key: ref.storage.dtype for ref in state.values() if isinstance(ref, _TensorRef)}
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        (count,) = struct.unpack("<q", stream.read(8))
        dtype = dtypes.get(key, np.dtype("u1"))
        raw = stream.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise WeightFormatError("truncated storage data")
        storages[key] = np.frombuffer(raw, dtype=dtype)

    arrays: dict[str, np.ndarray] = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            continue
        flat = storages[ref.storage.key]
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset:],
            shape=ref.size,
            strides=tuple(s * itemsize for s in ref.stride),
            writeable=False,
        )
        arrays[name.removeprefix("module.")] = np.array(view, dtype=flat.dtype.newbyteorder("="))
    return arrays


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Tensor name -> array, for either weights format (sniffed from the content)."""
    data = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if not all(name.endswith(".npy") for name in archive.namelist()):
                raise WeightFormatError(f"{path.name}: zip archive that is not an .npz (zip-format .pth unsupported)")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name.removeprefix("module."): npz[name] for name in npz.files}
    try:
        return _read_legacy_torch(data)
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError) as exc:
        raise WeightFormatError(f"{path.name}: unreadable legacy torch state_dict: {exc}") from exc
