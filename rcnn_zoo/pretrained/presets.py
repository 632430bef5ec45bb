"""Constructor arguments of a detector built with ``weights=``: a registered name is a *preset*
(its entry's ``model`` arguments and class names), and so is a ``.keras`` file (the
configuration saved in it); the caller's arguments override them, except those that would change
the architecture the weights were saved with."""

import os
import zipfile

from rcnn_zoo.pretrained.compatibility import refuse_architecture_changes
from rcnn_zoo.pretrained.contents import keras_config
from rcnn_zoo.pretrained.errors import WeightsFileError, WeightsMismatchError
from rcnn_zoo.pretrained.integrity import DAMAGED_ADVICE, check_weights_file
from rcnn_zoo.pretrained.registry import find_preset, is_file_argument, unknown_preset_error

# Saved configuration not carried over as arguments: Keras' own settings of the saved model,
# the weights arguments (the file itself holds the weights), and roi_pooling.
_NOT_PRESET_KEYS = ("name", "trainable", "dtype", "weights", "backbone_weights", "roi_pooling")


def preset_arguments(detector, weights, given):
    """Constructor arguments of a detector built with ``weights=weights``.

    Args:
        detector: the detector's class name (``"FasterRCNN"``, ``"FastRCNN"``, …).
        weights: ``None``, a file path or a preset name.
        given: ``{argument: value}`` the caller passed (``None`` values already removed where
            ``None`` means "not given").
    Returns:
        ``given`` on top of the preset's arguments and class names (those only when the class
        count is the preset's); ``given`` itself when ``weights`` is no preset.
    Raises:
        ValueError: ``weights`` names no preset of ``detector`` (the message lists them).
        WeightsMismatchError: an override changes the architecture (named in the message).
    """
    if weights is not None and os.fspath(weights).endswith(".keras") and os.path.isfile(weights):
        return _keras_file_arguments(detector, os.fspath(weights), given)
    if weights is None or is_file_argument(weights):
        return dict(given)
    found = find_preset(detector, os.fspath(weights))
    if found is None:
        raise unknown_preset_error(detector, weights)
    _, entry = found
    preset = dict(entry["model"])
    refuse_architecture_changes(detector, weights, preset, given)
    arguments = dict(preset)
    same_classes = given.get("num_classes", preset["num_classes"]) == preset["num_classes"]
    if entry.get("class_names") and same_classes:
        arguments["class_names"] = list(entry["class_names"])
    arguments.update(given)
    return arguments


def _keras_file_arguments(detector, path, given):
    """Constructor arguments of ``detector(weights=path)`` for a ``.keras`` file: the file's own
    configuration (a model saved with ``model.save`` is its own preset: backbone, anchors,
    image sizes, class names), then ``given``."""
    check_weights_file(path)
    try:
        saved = keras_config(path)
    except (KeyError, ValueError, zipfile.BadZipFile, OSError) as error:
        raise WeightsFileError(f"cannot read weights file {path}: no readable config.json inside "
                               f"({type(error).__name__}: {error}); {DAMAGED_ADVICE}", path) from error
    kind = saved.get("class_name")
    if kind != detector:
        raise WeightsMismatchError(f"{path} holds a {kind}, not a {detector}: load it with "
                                   f"rcnn_zoo.{kind}(weights=...) or rcnn_zoo.inference.load_model")
    preset = {k: v for k, v in saved.get("config", {}).items() if k not in _NOT_PRESET_KEYS and v is not None}
    refuse_architecture_changes(detector, path, preset, given)
    if given.get("num_classes", preset.get("num_classes")) != preset.get("num_classes"):
        preset.pop("class_names", None)  # a fine-tuning start: other classes
    return {**preset, **given}
