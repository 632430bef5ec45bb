"""Is a weights file the one it should be? SHA-256 against the registry, and a readability check
of ``.weights.h5`` / ``.keras`` files, with messages that say what to do.

A hash mismatch of a download says to delete the download and try again; of a registered local
file (``"file"``, the user's own), that it is not the file registered, and how to register it
again (:func:`rcnn_zoo.weights.register_local_file`).
"""

import hashlib
import os
import warnings
import zipfile
from pathlib import Path

import h5py  # a Keras dependency (Keras imports it too)

from rcnn_zoo.pretrained.errors import WeightsFileError, WeightsIntegrityError
from rcnn_zoo.pretrained.registry import builtin_registry_path

DAMAGED_ADVICE = "download or save it again"


def file_sha256(path, chunk_size=1 << 20):
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ellipsis(expected):
    """``…`` after a published hash prefix, so that it does not read as a whole hash."""
    return "…" if len(expected) < 64 else ""


def hash_error(name, path, expected, got, url=None):
    """A download (or rcnn_zoo's cached copy of one) whose SHA-256 is not the registered one."""
    source = f" from {url}" if url else ""
    return WeightsIntegrityError(
        f"The {name!r} weights file {path}{source} has SHA-256 {got}, expected "
        f"{expected}{_ellipsis(expected)}. The download is damaged or incomplete, or "
        f"the published file changed. Delete it (rm {path!s}) and try again; if it keeps failing, "
        "get the file by hand, check it, convert it if needed (rcnn-zoo convert), and pass the "
        "file instead: weights='/path/to/file.weights.h5' (or .keras)."
    )


def _local_hash_error(name, path, expected, got, entry, field):
    """A registered *local* file (the user's own, not a download) that is not the registered one:
    never advise deleting it."""
    registry = entry.get("_registry", "the registry")
    arguments = f"{name!r}, {str(path)!r}"
    try:
        if Path(registry).resolve() != builtin_registry_path().resolve():
            arguments += f", registry={str(registry)!r}"
    except OSError:
        arguments += f", registry={str(registry)!r}"
    return WeightsIntegrityError(
        f"The {name!r} weights file {path} differs from the one registered in {registry}: its "
        f"SHA-256 is {got}, expected {expected}{_ellipsis(expected)} (the entry's "
        f"{field!r}). If this file is the one you want (retrained or saved again, say), register "
        f"it again: rcnn_zoo.weights.register_local_file({arguments}), which records its SHA-256; "
        f"if the registry's {field!r} is wrong, correct it; otherwise put the registered file back."
    )


def verify(name, path, entry, url=None, known_good=False, local=False):
    """Check ``path`` against the entry's SHA-256 (full, or the published prefix).

    ``known_good``: the full hash was checked already (by ``keras.utils.get_file``). ``local``:
    ``path`` is the entry's own local file (``"file"``), not a download.
    """
    full, prefix = entry.get("sha256"), entry.get("sha256_prefix")
    if not full and not prefix:
        warnings.warn(
            f"No SHA-256 is recorded for the {name!r} weights ({path}); the file is not verified. "
            "Record it with rcnn_zoo.weights.register_local_file.",
            stacklevel=3,
        )
        return
    if known_good and full:
        return
    got = file_sha256(path)
    for field, expected, matches in (
        ("sha256", full, lambda e: got == e),
        ("sha256_prefix", prefix, lambda e: got.startswith(e)),
    ):
        if expected and not matches(expected.lower()):
            if local:
                raise _local_hash_error(name, path, expected.lower(), got, entry, field)
            raise hash_error(name, path, expected.lower(), got, url)


def check_weights_file(path, what="weights file", advice=DAMAGED_ADVICE):
    """Refuse a ``.weights.h5`` / ``.keras`` file that cannot be what its name says: empty,
    truncated or damaged (``.weights.h5``: not a valid HDF5 file; ``.keras``: not a valid zip
    archive), or not readable.

    Args:
        path: the file (its name decides the format; other names are not checked).
        what: how the message calls it (``"weights file"``, ``"model file"``).
        advice: what to do about a damaged file, ending the message.
    Raises:
        WeightsFileError: the message names the file and what is wrong with it, e.g.
            ``cannot read weights file /x/y.weights.h5: the file is damaged or truncated (not a
            valid HDF5 file); download or save it again``.
    """
    path = os.fspath(path)
    start = f"cannot read {what} {path}"
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except OSError as error:
        raise WeightsFileError(f"{start}: {error.strerror or error}", path) from error
    if empty:
        raise WeightsFileError(f"{start}: the file is empty (0 bytes); {advice}", path)
    if path.endswith(".keras"):
        _check_zip(path, start, advice)
    elif path.endswith(".h5"):
        _check_hdf5(path, start, advice)


def _check_zip(path, start, advice):
    try:
        with zipfile.ZipFile(path):
            return
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise WeightsFileError(
            f"{start}: the file is damaged or truncated (not a valid zip archive, which .keras "
            f"files are); {advice}", path,
        ) from error


def _check_hdf5(path, start, advice):
    try:
        with h5py.File(path, "r"):
            return
    except OSError as error:  # "file signature not found", "truncated file: eof = ...", ...
        raise WeightsFileError(
            f"{start}: the file is damaged or truncated (not a valid HDF5 file); {advice}", path,
        ) from error
