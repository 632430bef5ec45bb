"""Read PyTorch ``.pth`` checkpoints into NumPy arrays without PyTorch.

Two on-disk formats exist (``torch.save``):

- **zip** (PyTorch ≥ 1.6): a zip archive with one top folder (``archive/`` or the file's stem)
  holding ``data.pkl`` — the pickled object, in which every tensor is a call
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and every storage a
  *persistent id* ``("storage", torch.FloatStorage, key, location, numel)`` — and one raw
  little-endian file ``data/<key>`` per storage (``byteorder`` says otherwise when present).
- **legacy** (PyTorch < 1.6, e.g. torchvision's 2019 detection checkpoints and MMDetection's
  2020 ones): consecutive pickles — a magic number, a protocol version, system info, the object
  (persistent ids ``("storage", type, key, location, numel, view)``), the list of storage keys —
  followed by each storage as an int64 element count and the raw bytes.

Unpickling runs arbitrary code if the pickle asks for it, so the unpickler here resolves only
an allow-list of globals (tensor and storage rebuilding, ``OrderedDict``, harmless builtins and
NumPy scalars) and refuses anything else (``os.system``, ``argparse.Namespace``, module
objects, …) with :class:`UnsafeCheckpointError` before anything is called. Tensors come back as
contiguous ``numpy.ndarray`` (bfloat16 as float32), wherever they sit in the object.
"""

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

__all__ = [
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "read_pth",
    "read_state_dict",
]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class name → NumPy dtype ("bfloat16" is widened to float32 after reading).
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "UntypedStorage": np.dtype("u1"),
}


class CheckpointFormatError(ValueError):
    """The file is not a checkpoint this reader understands (or is damaged)."""


class UnsafeCheckpointError(CheckpointFormatError):
    """The pickle asks for a global outside the allow-list; nothing was executed."""


class _StorageType:
    """Stands for ``torch.FloatStorage`` & co. inside the pickle."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    @property
    def itemsize(self):
        return 2 if self.dtype == "bfloat16" else self.dtype.itemsize

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A flat storage; ``array`` is filled when its bytes are read."""

    def __init__(self, storage_type, numel):
        self.type = storage_type
        self.numel = int(numel)
        self.array = None

    def set_bytes(self, raw, big_endian=False):
        expected = self.numel * self.type.itemsize
        if len(raw) < expected:
            raise CheckpointFormatError(
                f"storage of {self.numel} {self.type.name} elements needs {expected} bytes, "
                f"the file has {len(raw)} (truncated download?)"
            )
        raw = raw[:expected]
        if self.type.dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype=">u2" if big_endian else "<u2").astype(np.uint32)
            self.array = (bits << 16).view(np.float32)
        else:
            dtype = self.type.dtype.newbyteorder(">") if big_endian else self.type.dtype
            self.array = np.frombuffer(raw, dtype=dtype).astype(self.type.dtype.newbyteorder("="))


class _StorageView:
    """Legacy-format view ``(offset, size)`` into a root storage."""

    def __init__(self, root, offset, numel):
        self.root = root
        self.offset = int(offset)
        self.numel = int(numel)

    @property
    def array(self):
        if self.root.array is None:
            return None
        return self.root.array[self.offset : self.offset + self.numel]


class _PendingTensor:
    """A tensor whose storage bytes may not have been read yet (legacy files store them last)."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialise(self):
        flat = self.storage.array
        if flat is None:
            raise CheckpointFormatError("a tensor refers to a storage whose data is missing")
        if len(self.size) != len(self.stride):
            raise CheckpointFormatError(f"tensor size {self.size} and stride {self.stride} differ in rank")
        if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise CheckpointFormatError(f"negative tensor size/stride/offset {self.size} {self.stride}")
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype)
        # Bounds check before as_strided, which would otherwise read outside the buffer.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= flat.size:
            raise CheckpointFormatError(
                f"tensor (offset {self.offset}, size {self.size}, stride {self.stride}) reaches "
                f"element {last} of a storage of {flat.size}"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=[s * flat.itemsize for s in self.stride],
            writeable=False,
        )
        return np.array(view, order="C", copy=True)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


def _numpy_scalar(dtype, data=None):
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.kind == "V":
        raise UnsafeCheckpointError(f"refusing a NumPy scalar of dtype {dtype}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_reconstruct(cls, shape, dtype_code):
    if cls is not np.ndarray:
        raise UnsafeCheckpointError(f"refusing to rebuild an array of class {cls!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _encode(text, encoding="latin1"):
    # Protocol-2 pickles written by Python 3 store ``bytes`` as _codecs.encode(str, "latin1").
    return text.encode(encoding)


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("__builtin__", "set"): set,
    ("_codecs", "encode"): _encode,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; storages come from ``storage_for(pid)``."""

    def __init__(self, file, storage_for, source):
        super().__init__(file, encoding="utf-8")
        self._storage_for = storage_for
        self._source = source

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"{self._source}: the checkpoint's pickle refers to {module}.{name}, which rcnn_zoo "
            "does not load (only tensors, storages, OrderedDict and plain Python values are "
            "allowed; nothing was executed). If you trust the file, re-save only its weights "
            "with PyTorch: torch.save(checkpoint['model'] or checkpoint['state_dict'], 'weights.pth')"
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointFormatError(f"{self._source}: unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise UnsafeCheckpointError(
                f"{self._source}: persistent id of kind {kind!r} (a pickled module or object, not "
                "a state dict); save model.state_dict() instead of the model"
            )
        return self._storage_for(pid[1:])


def _check_storage_type(storage_type, source):
    if not isinstance(storage_type, _StorageType):
        raise CheckpointFormatError(f"{source}: storage type {storage_type!r} is not a torch storage")
    return storage_type


# ---------------------------------------------------------------------------- zip format
def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointFormatError(
                f"{path}: a zip file but not a PyTorch checkpoint (expected one '<folder>/data.pkl', "
                f"found {pickles or 'none'})"
            )
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = False
        if prefix + "byteorder" in names:
            big_endian = archive.read(prefix + "byteorder").decode("ascii").strip() == "big"
        storages = {}

        def storage_for(args):
            if len(args) < 4:
                raise CheckpointFormatError(f"{path}: storage id {args!r} is too short")
            storage_type, key, _location, numel = args[:4]
            key = str(key)
            if key not in storages:
                storage = _Storage(_check_storage_type(storage_type, path), numel)
                member = f"{prefix}data/{key}"
                try:
                    raw = archive.read(member)
                except KeyError:
                    raise CheckpointFormatError(f"{path}: storage file {member!r} is missing") from None
                storage.set_bytes(raw, big_endian)
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as data:
            payload = io.BytesIO(data.read())
        return _RestrictedUnpickler(payload, storage_for, path).load()


# ---------------------------------------------------------------------------- legacy format
def _read_legacy(path, handle):
    def plain_load():
        return _RestrictedUnpickler(handle, _no_storage, path).load()

    def _no_storage(args):
        raise CheckpointFormatError(f"{path}: storage reference outside the object pickle")

    try:
        magic = plain_load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        if isinstance(error, UnsafeCheckpointError):
            raise
        raise CheckpointFormatError(
            f"{path}: neither a zip nor a legacy PyTorch checkpoint ({error})"
        ) from error
    if magic != _LEGACY_MAGIC:
        raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    protocol = plain_load()
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointFormatError(f"{path}: unsupported legacy protocol version {protocol}")
    sys_info = plain_load()
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    roots = {}

    def storage_for(args):
        if len(args) < 5:
            raise CheckpointFormatError(f"{path}: storage id {args!r} is too short")
        storage_type, root_key, _location, numel, view = args[:5]
        root_key = str(root_key)
        if root_key not in roots:
            roots[root_key] = _Storage(_check_storage_type(storage_type, path), numel)
        root = roots[root_key]
        if view is not None:
            _view_key, offset, view_size = view
            return _StorageView(root, offset, view_size)
        return root

    result = _RestrictedUnpickler(handle, storage_for, path).load()
    keys = plain_load()
    for key in keys:
        key = str(key)
        if key not in roots:
            raise CheckpointFormatError(f"{path}: data for unknown storage {key!r}")
        header = handle.read(8)
        if len(header) != 8:
            raise CheckpointFormatError(f"{path}: file ends before storage {key!r} (truncated?)")
        (numel,) = struct.unpack(">q" if big_endian else "<q", header)
        storage = roots[key]
        storage.numel = numel
        storage.set_bytes(handle.read(numel * storage.type.itemsize), big_endian)
    return result


# ---------------------------------------------------------------------------- public API
def _materialise(obj, seen=None):
    """Replace pending tensors by arrays, through dicts, lists, tuples and sets."""
    if isinstance(obj, _PendingTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _materialise(obj[key])
        return obj
    if isinstance(obj, list):
        obj[:] = [_materialise(v) for v in obj]
        return obj
    if isinstance(obj, tuple):
        return tuple(_materialise(v) for v in obj)
    return obj


def read_pth(path):
    """Load a ``torch.save`` file (zip or legacy) safely; tensors become NumPy arrays.

    Args:
        path: a ``.pth`` / ``.pt`` / ``.bin`` file written by ``torch.save``.

    Returns:
        The saved object (usually an ``OrderedDict`` state dict, or a dict holding one under
        ``"state_dict"`` or ``"model"``) with every tensor as a ``numpy.ndarray``.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle refers to a global outside the allow-list.
        CheckpointFormatError: not a PyTorch checkpoint, truncated or damaged; the old
            (PyTorch < 0.4) tar format.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if zipfile.is_zipfile(path):
        return _materialise(_read_zip(path))
    with open(path, "rb") as handle:
        head = handle.read(262)
        if len(head) >= 262 and head[257:262] == b"ustar":
            raise CheckpointFormatError(
                f"{path}: PyTorch's old tar checkpoint format (before 0.4) is not supported; "
                "load and re-save it with a recent PyTorch"
            )
        if not head.startswith(b"\x80"):
            raise CheckpointFormatError(
                f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle); "
                "HTML error page or truncated download?"
            )
        handle.seek(0)
        return _materialise(_read_legacy(path, handle))


def read_state_dict(path):
    """``read_pth`` and return the flat ``{name: array}`` state dict inside it.

    Accepts a bare state dict, or a dict with the state dict under ``"state_dict"``
    (MMDetection), ``"model"`` (torchvision/detectron2 training checkpoints) or ``"model_state"``.
    Non-array entries are dropped.
    """
    obj = read_pth(path)
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not any(isinstance(v, np.ndarray) for v in obj.values()):
        raise CheckpointFormatError(
            f"{path}: holds {type(obj).__name__}, not a state dict of tensors "
            "(nor a dict with one under 'state_dict' or 'model')"
        )
    return collections.OrderedDict(
        (str(k), v) for k, v in obj.items() if isinstance(v, np.ndarray)
    )
