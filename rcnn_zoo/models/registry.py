"""The detector registry: architecture names (``"faster_rcnn"``, ``"rfcn"``, ``"fast_rcnn"``,
``"rcnn"``) → detector classes, so that the CLI, the weights registry and export resolve a model
by name and nothing outside ``rcnn_zoo.models`` names a model class."""

from rcnn_zoo.models.fast_rcnn import FastRCNN
from rcnn_zoo.models.faster_rcnn import FasterRCNN
from rcnn_zoo.models.rcnn import RCNN
from rcnn_zoo.models.rfcn import RFCN
from rcnn_zoo.weights import get_weights_entry, load_detector_weights, preset_arguments

__all__ = ["DETECTORS", "build_pretrained", "detector_name", "get_detector"]

# Paper order is not alphabetical: the name a user types → the class.
DETECTORS = {
    "faster_rcnn": FasterRCNN,
    "rfcn": RFCN,
    "fast_rcnn": FastRCNN,
    "rcnn": RCNN,
}


def get_detector(name):
    """The detector class of ``name``: a registry name (``"rfcn"``) or a class name (``"RFCN"``,
    as the weights registry's ``"detector"`` field spells it). Raises ValueError listing the
    names otherwise."""
    if name in DETECTORS:
        return DETECTORS[name]
    for cls in DETECTORS.values():
        if name == cls.__name__:
            return cls
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


def detector_name(model):
    """The registry name of a detector instance or class (``FasterRCNN`` → ``"faster_rcnn"``);
    subclasses resolve to their nearest registered base."""
    cls = model if isinstance(model, type) else type(model)
    for base in cls.__mro__:
        for name, registered in DETECTORS.items():
            if base is registered:
                return name
    raise ValueError(f"{cls.__name__} is not a registered detector ({', '.join(DETECTORS)})")


def build_pretrained(name, strict=False, cache_dir=None, **overrides):
    """The detector of weights-registry entry ``name`` (its ``"detector"`` field, default Faster
    R-CNN) with its weights: ``Detector(weights=name, **overrides)``. For code that knows the
    weight name but not the detector (``rcnn-zoo predict --weights NAME``)."""
    entry = get_weights_entry(name)
    detector = get_detector(entry.get("detector", "FasterRCNN"))
    model = detector(weights=None, **preset_arguments(detector.__name__, entry.get("preset", name), overrides))
    load_detector_weights(model, entry.get("preset", name), strict=strict, cache_dir=cache_dir)
    return model
