"""Registered PyTorch checkpoints (entries with ``"convert"``): converted once with
:mod:`rcnn_zoo.convert` into the detector class the caller gives, and the result cached next to
the download as ``<name>.rcnn_zoo-<tag>.weights.h5``.

The tag changes with the converter, its options, :data:`CONVERT_FORMAT_VERSION` and the
detector, so that a converter fix invalidates old conversions.
"""

import hashlib
import json
import os

from rcnn_zoo import convert
from rcnn_zoo.pretrained.errors import WeightsMismatchError
from rcnn_zoo.pretrained.registry import DEFAULT_DETECTOR, detector_of

CONVERT_FORMAT_VERSION = 1  # bump when converters change, to invalidate cached conversions
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin")


def converted_path(entry, source_path):
    """Where the conversion of checkpoint ``source_path`` of ``entry`` is cached."""
    # The detector is part of the tag: one checkpoint converts to a Faster R-CNN and to the
    # Fast R-CNN of its second stage, which must not share a cache file.
    detector = detector_of(entry)
    tag = json.dumps(
        [entry["convert"], entry.get("convert_options", {}), CONVERT_FORMAT_VERSION]
        + ([detector] if detector != DEFAULT_DETECTOR else []),
        sort_keys=True,
    )
    digest = hashlib.sha256(tag.encode()).hexdigest()[:8]
    stem = os.path.basename(source_path)
    for suffix in _CHECKPOINT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return os.path.join(os.path.dirname(source_path), f"{stem}.rcnn_zoo-{digest}.weights.h5")


def convert_registered(name, entry, source_path, output_path, detector):
    """Convert the checkpoint ``source_path`` of entry ``name`` into a ``detector`` (a class)
    built with the entry's arguments, and save its weights as ``output_path``.

    ``detector`` is given by the caller (the model being loaded knows its class): this package
    sits below the models and names none.
    """
    if detector is None:
        raise ValueError(f"the {name!r} weights are a PyTorch checkpoint that is not converted yet; "
                         f"load them through the detector: rcnn_zoo.{detector_of(entry)}(weights={name!r})")
    converter = convert.get_converter(entry["convert"])
    state_dict = convert.read_state_dict(source_path)
    expected = int(entry["model"]["num_classes"])
    found = converter.checkpoint_num_classes(state_dict)
    if found != expected:
        raise WeightsMismatchError(
            f"registry entry {name!r} says num_classes={expected} but {source_path} has {found}"
        )
    model = detector(**entry["model"])
    convert.convert_state_dict(converter, state_dict, model=model, **entry.get("convert_options", {}))
    del state_dict
    convert.save_detector(model, output_path)
    return output_path
