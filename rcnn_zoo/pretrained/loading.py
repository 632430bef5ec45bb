"""Loading weights into a built detector: a ``.weights.h5`` / ``.keras`` file, or a registered
name (checked against the model, fetched, converted, then loaded as a file).

A file is loaded with ``model.load_weights``. When its detector has a different ``num_classes``
(fine-tuning), everything except the class-specific predictor is loaded and a warning names the
layers left initialised; ``strict=True`` refuses instead.
"""

import os
import warnings
import zipfile
import zlib
from pathlib import Path

from rcnn_zoo.pretrained.compatibility import anchor_mismatch, check_entry_fits
from rcnn_zoo.pretrained.contents import checkpoint_num_classes
from rcnn_zoo.pretrained.errors import WeightsFileError, WeightsMismatchError
from rcnn_zoo.pretrained.fetch import weights_file
from rcnn_zoo.pretrained.integrity import DAMAGED_ADVICE, check_weights_file
from rcnn_zoo.pretrained.layout import PREDICTOR_LAYERS, is_predictor_variable
from rcnn_zoo.pretrained.registry import (
    available_weights,
    find_preset,
    is_file_argument,
    local_file,
    unknown_preset_error,
)

# What h5py, zipfile and zlib raise for a file damaged past the parts check_weights_file reads.
_DAMAGED_FILE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _keras_load(model, path):
    try:
        model.load_weights(path)
    except _DAMAGED_FILE_ERRORS as error:
        raise WeightsFileError(
            f"cannot read weights file {path}: the file is damaged or truncated "
            f"({type(error).__name__}: {error}); {DAMAGED_ADVICE}", path,
        ) from error
    except (ValueError, KeyError, TypeError) as error:
        anchors = anchor_mismatch(model, path)
        if anchors:
            raise WeightsMismatchError(anchors) from error
        raise WeightsMismatchError(
            f"{path} does not fit this {type(model).__name__} ({error}). A weights file loads "
            "only into a detector built with the same backbone and layer hyperparameters as the "
            "one that saved it (a .keras file records them: keras.saving.load_model)."
        ) from error


def _checkpoint_twin(model, checkpoint_classes):
    """A detector configured like ``model`` but with the checkpoint's class count."""
    config = model.get_config()
    config.update(
        {
            "num_classes": checkpoint_classes,
            "class_names": None,
            "weights": None,
            "name": f"{model.name}_checkpoint",
        }
    )
    return type(model).from_config(config)


def _load_all_but_predictor(model, path, checkpoint_classes):
    """Load ``path`` into a twin with the checkpoint's classes, then copy all but the predictor."""
    twin = _checkpoint_twin(model, checkpoint_classes)
    _keras_load(twin, path)
    source = {v.path: v for v in twin.weights}
    if len(source) != len(twin.weights):
        raise WeightsMismatchError("variable paths are not unique; cannot match layers by name")
    skipped = set()
    for variable in model.weights:
        if is_predictor_variable(variable.path):
            skipped.add(variable.path.rpartition("/")[0])
            continue
        twin_variable = source.get(variable.path)
        if twin_variable is None or tuple(twin_variable.shape) != tuple(variable.shape):
            raise WeightsMismatchError(f"{path}: no matching variable for {variable.path}")
        variable.assign(twin_variable)
    del twin, source
    warnings.warn(
        f"{path} holds a detector with {checkpoint_classes} classes, this model has "
        f"{model.num_classes}: loaded every layer except {', '.join(sorted(skipped))}, which keep "
        "their initialisation (fine-tune the model before use).",
        stacklevel=3,
    )
    return sorted(skipped)


def _check_file_name(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No weights file at {path!r}. Pass a .weights.h5 / .keras file or a registered name "
            f"({', '.join(available_weights())})."
        )
    if path.endswith((".pth", ".pt", ".bin")):
        raise ValueError(
            f"{path} is a PyTorch checkpoint. Convert it first: rcnn-zoo convert --from "
            "torchvision|torchvision_v2|torchvision_mobilenet|mmdet --input <file.pth> "
            "--output <file.weights.h5> (or rcnn_zoo.models.from_checkpoint.convert_checkpoint), "
            "then pass the .weights.h5."
        )
    if not path.endswith((".weights.h5", ".keras")):
        raise ValueError(f"weights files must end in .weights.h5 or .keras, got {path!r}")


def load_weights_file(model, path, strict=False):
    """Load a ``.weights.h5`` or ``.keras`` file into a built detector.

    Args:
        model: the detector.
        path: file written by ``save_weights`` / ``save`` (or ``rcnn-zoo convert``).
        strict: refuse a file whose detector has a different ``num_classes``; by default the
            class-specific predictor is then left initialised (with a warning).

    Returns:
        Names of the layers left initialised (empty when everything was loaded).

    Raises:
        FileNotFoundError: no such file.
        WeightsFileError: the file is empty, truncated or damaged (not a valid HDF5 file / zip
            archive); the message names it.
        WeightsMismatchError: the file's detector does not fit ``model``.
    """
    path = os.fspath(path)
    _check_file_name(path)
    check_weights_file(path)
    found = checkpoint_num_classes(path)
    if found is None or found == model.num_classes:
        _keras_load(model, path)
        return []
    if strict:
        raise WeightsMismatchError(
            f"{path} holds a detector with num_classes={found}, this model has "
            f"num_classes={model.num_classes}. Build the model with num_classes={found}, or load "
            "non-strictly (strict=False, as FasterRCNN(weights=...) does) to take everything "
            f"except the class-specific predictor ({', '.join(PREDICTOR_LAYERS)}) for fine-tuning."
        )
    return _load_all_but_predictor(model, path, found)


def load_detector_weights(model, weights, strict=False, cache_dir=None):
    """Load registered or file weights into a built detector (``FasterRCNN(weights=...)``).

    Args:
        model: the detector (its layers built).
        weights: a registered name (``"voc"``, ``"coco"``, ``"shapes"``, see
            :func:`available_weights`) or a path to a ``.weights.h5`` / ``.keras`` file.
        strict: refuse weights with a different ``num_classes`` instead of loading everything
            but the class-specific predictor.
        cache_dir: download cache root (default ``$RCNN_ZOO_CACHE_DIR`` or Keras' ``~/.keras``);
            files go to its ``rcnn_zoo/`` folder.

    Returns:
        Names of the layers left initialised (empty when everything was loaded).

    Raises:
        ValueError: unknown name (the message lists the registered ones).
        FileNotFoundError: missing local file.
        WeightsMismatchError: wrong backbone or layer sizes; other classes with ``strict``.
        WeightsDownloadError: the download failed (the URL is named, with the offline way).
        WeightsIntegrityError: SHA-256 mismatch (expected, got and the file named).
        WeightsFileError: the file is empty, truncated or damaged (named in the message).
    """
    weights = os.fspath(weights)
    if is_file_argument(weights):
        return load_weights_file(model, weights, strict=strict)
    found = find_preset(type(model).__name__, weights)
    if found is None:
        raise unknown_preset_error(type(model).__name__, weights)
    key, entry = found
    check_entry_fits(model, weights, entry, strict)
    path = weights_file(key, cache_dir=cache_dir, detector=type(model))
    check_weights_file(path, advice=_damaged_registered_file_advice(key, entry, path))
    skipped = load_weights_file(model, path, strict=strict)
    if not skipped and model.class_names is None and entry.get("class_names"):
        if len(entry["class_names"]) == model.num_classes:
            model.class_names = list(entry["class_names"])
    return skipped


def _damaged_registered_file_advice(name, entry, path):
    """What to do about a damaged file of registered ``name`` (one without a SHA-256 to catch it
    earlier): a local file is the user's to save again; a download or conversion is rcnn_zoo's
    cached copy, fetched again once deleted."""
    if entry.get("file") and Path(path) == local_file(entry):
        return (
            f"it is the file registered as {name!r} in {entry.get('_registry', 'the registry')}: "
            "save it again and register it (rcnn_zoo.weights.register_local_file)"
        )
    return (
        f"it is rcnn_zoo's cached copy of the {name!r} weights: delete it (rm {path}) and load them "
        "again to download it anew"
    )
