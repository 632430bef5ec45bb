"""Finds and loads the compiled RoI ops, once, on first use.

The shared library ``_rcnn_zoo_ops*.so`` is built by ``pip install`` (see ``setup.py``) next to
this file. Loading is lazy so that importing rcnn_zoo never fails: if the library is missing, was
built for another TensorFlow, or ``RCNN_ZOO_FORCE_FALLBACK=1`` is set, every op uses its pure
TensorFlow implementation, and one warning says why.

``RCNN_ZOO_OPS_LIBRARY=/path/to/lib.so`` loads that library instead of the one next to this file
(``tools/asan_kernels.sh`` uses it to test an AddressSanitizer build of the kernels without
touching the installed one). If that file does not exist the fallback is used, with a warning
naming the path.
"""

import contextlib
import glob
import os
import threading
import warnings

import tensorflow as tf

FORCE_FALLBACK_ENV = "RCNN_ZOO_FORCE_FALLBACK"
LIBRARY_ENV = "RCNN_ZOO_OPS_LIBRARY"
_LIBRARY_GLOB = "_rcnn_zoo_ops*.so"

_lock = threading.Lock()
_state = {"loaded": False, "module": None, "reason": None, "warned": False}
_local = threading.local()


def _env_forces_fallback():
    return os.environ.get(FORCE_FALLBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")


def library_path():
    """Path of the compiled op library: ``$RCNN_ZOO_OPS_LIBRARY`` if set, else the one next to
    this file, or None if it was not built."""
    override = os.environ.get(LIBRARY_ENV, "").strip()
    if override:
        return override
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = sorted(glob.glob(os.path.join(here, _LIBRARY_GLOB)))
    return candidates[0] if candidates else None


def _load():
    with _lock:
        if _state["loaded"]:
            return
        _state["loaded"] = True
        if _env_forces_fallback():
            _state["reason"] = f"{FORCE_FALLBACK_ENV} is set"
            return
        path = library_path()
        if path is None:
            _state["reason"] = (
                "the compiled op library was not found (install with "
                "`pip install --no-build-isolation -e .` to build it)"
            )
            return
        if not os.path.isfile(path):
            _state["reason"] = f"{LIBRARY_ENV}={path} is not a file"
            return
        try:
            _state["module"] = tf.load_op_library(path)
        except Exception as error:  # wrong TF version, missing symbols, ...
            _state["reason"] = f"loading {path} failed: {error}"


def compiled_module():
    """The loaded op module, or None (after warning once) when the fallback is in use."""
    if getattr(_local, "force_fallback", 0):
        return None
    _load()
    if _state["module"] is None and not _state["warned"]:
        _state["warned"] = True
        warnings.warn(
            f"rcnn_zoo: using pure-TensorFlow RoI ops because {_state['reason']}.",
            RuntimeWarning,
            stacklevel=3,
        )
    return _state["module"]


def implementation():
    """``"compiled"`` or ``"fallback"``: which implementation the ops use right now."""
    if getattr(_local, "force_fallback", 0):
        return "fallback"
    _load()
    return "compiled" if _state["module"] is not None else "fallback"


def fallback_reason():
    """Why the fallback is in use (None when the compiled ops are active)."""
    _load()
    if getattr(_local, "force_fallback", 0):
        return "inside rcnn_zoo.ops.force_fallback()"
    return _state["reason"]


@contextlib.contextmanager
def force_fallback():
    """Within this block (in this thread) every op uses its pure-TF implementation.

    Used when tracing graphs for export: a SavedModel that stock TF Serving can load must not
    reference the custom ops.
    """
    _local.force_fallback = getattr(_local, "force_fallback", 0) + 1
    try:
        yield
    finally:
        _local.force_fallback -= 1
