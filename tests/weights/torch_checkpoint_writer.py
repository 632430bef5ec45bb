"""Write PyTorch-format checkpoints without PyTorch, for the reader and converter tests.

The pickle is emitted opcode by opcode (protocol 2, as ``torch.save`` writes it) so that it can
name ``torch._utils._rebuild_tensor_v2`` and ``torch.FloatStorage`` without importing torch:
a tensor is ``_rebuild_tensor_v2(<persistent storage id>, offset, size, stride, False,
OrderedDict())`` and a storage id is ``("storage", torch.<Type>Storage, key, "cpu", numel)``
(zip format) or the same plus a ``None`` view (legacy format).
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


class View:
    """A tensor over part of a shared flat storage (to test offsets and strides)."""

    def __init__(self, storage, offset, size, stride):
        self.storage = np.ascontiguousarray(storage)
        self.offset, self.size, self.stride = offset, tuple(size), tuple(stride)


class Raw:
    """Pre-built pickle bytes inserted verbatim (e.g. a forbidden GLOBAL)."""

    def __init__(self, data):
        self.data = data


class _Writer:
    def __init__(self, legacy):
        self.legacy = legacy
        self.out = io.BytesIO()
        self.storages = []  # (key, flat array)
        self.keys = {}  # id(flat array) -> key

    def w(self, data):
        self.out.write(data)

    def global_(self, module, name):
        self.w(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def str_(self, text):
        data = text.encode("utf-8")
        self.w(b"X" + struct.pack("<I", len(data)) + data)

    def int_(self, value):
        if -(2**31) <= value < 2**31:
            self.w(b"J" + struct.pack("<i", value))
        else:
            data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.w(b"\x8a" + bytes([len(data)]) + data)

    def storage(self, flat):
        key = self.keys.get(id(flat))
        if key is None:
            key = str(len(self.storages))
            self.keys[id(flat)] = key
            self.storages.append((key, flat))
        self.w(b"(")
        self.str_("storage")
        self.global_("torch", _STORAGE_NAMES[flat.dtype])
        self.str_(key)
        self.str_("cpu")
        self.int_(flat.size)
        if self.legacy:
            self.w(b"N")
        self.w(b"tQ")  # TUPLE, BINPERSID

    def tensor(self, flat, offset, size, stride):
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.w(b"(")
        self.storage(flat)
        self.int_(offset)
        self.value(tuple(size))
        self.value(tuple(stride))
        self.w(b"\x89")  # requires_grad False
        self.global_("collections", "OrderedDict")
        self.w(b")R")
        self.w(b"tR")

    def value(self, value):
        if isinstance(value, Raw):
            self.w(value.data)
        elif isinstance(value, View):
            self.tensor(value.storage, value.offset, value.size, value.stride)
        elif isinstance(value, np.ndarray):
            flat = np.ascontiguousarray(value).reshape(-1)
            strides = [int(np.prod(value.shape[i + 1 :])) for i in range(value.ndim)]
            self.tensor(flat, 0, value.shape, strides)
        elif isinstance(value, dict):
            if isinstance(value, collections.OrderedDict):
                self.global_("collections", "OrderedDict")
                self.w(b")R")
            else:
                self.w(b"}")
            for key, item in value.items():
                self.value(key)
                self.value(item)
                self.w(b"s")
        elif isinstance(value, list):
            self.w(b"]")
            for item in value:
                self.value(item)
                self.w(b"a")
        elif isinstance(value, tuple):
            self.w(b"(")
            for item in value:
                self.value(item)
            self.w(b"t")
        elif isinstance(value, str):
            self.str_(value)
        elif value is None:
            self.w(b"N")
        elif isinstance(value, bool):
            self.w(b"\x88" if value else b"\x89")
        elif isinstance(value, int):
            self.int_(value)
        elif isinstance(value, float):
            self.w(b"G" + struct.pack(">d", value))
        else:
            raise TypeError(f"cannot write {type(value)}")

    def pickle(self, obj):
        self.w(b"\x80\x02")
        self.value(obj)
        self.w(b".")
        return self.out.getvalue()


def write_zip_checkpoint(path, obj, prefix="archive"):
    """``torch.save(obj, path)`` in the zip format (PyTorch ≥ 1.6)."""
    writer = _Writer(legacy=False)
    data = writer.pickle(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/data.pkl", data)
        archive.writestr(f"{prefix}/byteorder", "little")
        for key, flat in writer.storages:
            archive.writestr(f"{prefix}/data/{key}", flat.astype(flat.dtype.newbyteorder("<")).tobytes())
        archive.writestr(f"{prefix}/version", "3\n")


def write_legacy_checkpoint(path, obj):
    """``torch.save(obj, path, _use_new_zipfile_serialization=False)`` (the pre-1.6 format)."""
    writer = _Writer(legacy=True)
    data = writer.pickle(obj)
    with open(path, "wb") as f:
        f.write(pickle.dumps(LEGACY_MAGIC, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
        f.write(data)
        f.write(pickle.dumps([key for key, _ in writer.storages], protocol=2))
        for _, flat in writer.storages:
            f.write(struct.pack("<q", flat.size))
            f.write(flat.astype(flat.dtype.newbyteorder("<")).tobytes())


def forbidden_global(module, name, argument):
    """Pickle bytes calling ``module.name(argument)`` (to be refused by the reader)."""
    writer = _Writer(legacy=False)
    writer.global_(module, name)
    writer.str_(argument)
    writer.w(b"\x85R")  # TUPLE1, REDUCE
    return Raw(writer.out.getvalue())
