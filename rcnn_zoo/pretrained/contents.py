"""What a weights file says about the detector that saved it, read without building one: its
class count and its RPN's anchors per location (from variable shapes, or a ``.keras`` file's
``config.json``)."""

import json
import os
import zipfile

import h5py  # a Keras dependency (Keras imports it too)

from rcnn_zoo.pretrained.layout import is_class_score_kernel, is_rpn_objectness_bias


def checkpoint_num_classes(path):
    """Foreground classes of the detector saved in a ``.weights.h5`` / ``.keras`` file, or
    ``None`` when the file does not say (e.g. not an rcnn_zoo detector)."""
    path = os.fspath(path)
    if path.endswith(".keras"):
        return _keras_config_num_classes(path)
    # The classifier's kernel is [D, num_classes + 1]: background is a class of its own.
    found = h5_shapes(path, is_class_score_kernel)
    if not found or len(found) != 1 or len(found[0]) != 2:
        return None
    return int(found[0][1]) - 1


def keras_config(path):
    """The saved model's ``config.json`` of a ``.keras`` file (``{"class_name", "config", …}``).

    Raises what zipfile and json do for a file without one: KeyError, ValueError,
    zipfile.BadZipFile, OSError.
    """
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


def _keras_config_num_classes(path):
    try:
        value = keras_config(path).get("config", {}).get("num_classes")
        return int(value) if value is not None else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def file_anchors_per_location(path):
    """Anchors per location of the RPN saved in a ``.weights.h5`` file (from its objectness
    layer's bias, one logit per anchor), or None."""
    found = h5_shapes(path, is_rpn_objectness_bias)
    return int(found[0][0]) if found and len(found) == 1 and len(found[0]) == 1 else None


def h5_shapes(path, wanted):
    """Shapes of the datasets of HDF5 file ``path`` whose key satisfies ``wanted``, or None when
    the file cannot be read."""
    found = []

    def visit(key, item):
        if isinstance(item, h5py.Dataset) and wanted(key):
            found.append(item.shape)

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError:
        return None
    return found
