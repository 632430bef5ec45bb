"""The detector a training run builds, from CLI-style arguments.

``rcnn-zoo train --detector NAME`` names an entry of the detector registry
(:data:`rcnn_zoo.models.registry.DETECTORS`); :func:`build_detector` turns the command's options
(backbone, image sizes in pixels, anchor sizes in pixels of the resized image, ``--model-arg``)
into that class's keyword arguments. The tables here say, per detector, what ``rcnn-zoo train``
calls it in messages and how it trains it (its ``--help``).
"""

import json

from rcnn_zoo.backbones import BACKBONES
from rcnn_zoo.data.anchor_fit import AUTO, fit_anchors
from rcnn_zoo.errors import UsageError
from rcnn_zoo.models.registry import detector_name, get_detector

__all__ = [
    "CLI_ANCHOR_SIZES",
    "CLI_IMAGE_SIZES",
    "DETECTOR_TITLES",
    "DETECTOR_TRAINING",
    "build_detector",
    "detector_class",
    "image_sizes",
    "parse_model_args",
]

# Backbones whose own default is "keep the input size" (tiny: made for 128-px test pictures) get
# these image sizes and anchors from the CLI instead: photos need resizing, and anchors that match
# the objects of photos resized so.
CLI_IMAGE_SIZES = {"tiny": (256, 416), "tiny_fpn": (256, 416)}
CLI_ANCHOR_SIZES = {"tiny": (32, 64, 128, 256), "tiny_fpn": (32, 64, 128, 256)}

# Backbones whose RPN reads several feature maps: --anchor-sizes gives one size per map.
MULTI_LEVEL_RPN = ("resnet50_fpn", "resnet50_fpn_v2", "mobilenet_v3_large_fpn")

# The name of each detector in messages, and how `rcnn-zoo train` trains it (its --help).
DETECTOR_TITLES = {"faster_rcnn": "Faster R-CNN", "rfcn": "R-FCN", "fast_rcnn": "Fast R-CNN", "rcnn": "R-CNN"}
DETECTOR_TRAINING = {
    "faster_rcnn": "RPN and RoI head in one fit (approximate joint training)",
    "rfcn": "the same fit, position-sensitive score maps, OHEM",
    "fast_rcnn": "the same fit on selective search proposals, computed once per image and cached in "
                 "<output-dir>/proposals/ (no --random-crop, --zoom-out)",
    "rcnn": "the paper's three stages: --epochs epochs of fine-tuning the CNN on warped regions "
            "(an epoch draws about as many regions as there are, in batches of 32 x --batch-size, "
            "25% foreground), then per-class SVMs (3 rounds of hard negative mining) and box "
            "regressors; last.keras is written after the last stage, an interrupted run starts "
            "again (proposals stay cached); no augmentation (--flip is ignored), no image sizes "
            "or anchors",
}

# Detectors whose proposals come from selective search, not from anchors.
PROPOSAL_DETECTORS = ("fast_rcnn", "rcnn")

# R-CNN warps every region to its own size; what it is told when given image sizes.
RCNN_IMAGE_SIZES_MESSAGE = ("--image-min-size/--image-max-size do not apply to R-CNN: it warps each region "
                            "to warp_size pixels (--model-arg warp_size=N)")


def parse_model_args(items):
    """``["key=value", …]`` → dict, values parsed as JSON when they are JSON (numbers, lists,
    null, true), else kept as strings."""
    parsed = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--model-arg expects KEY=VALUE, got {item!r}")
        try:
            parsed[key.strip()] = json.loads(value)
        except ValueError:
            parsed[key.strip()] = value
    return parsed


def image_sizes(backbone, image_min_size=None, image_max_size=None):
    """The resize rule the CLI uses: what was asked, else the backbone's default, else (for
    backbones that keep the input size, like ``tiny``) :data:`CLI_IMAGE_SIZES`."""
    if image_min_size is None and image_max_size is None and backbone in CLI_IMAGE_SIZES:
        return CLI_IMAGE_SIZES[backbone]
    return image_min_size, image_max_size


def detector_class(detector):
    """The registry's class of ``detector``, or a UsageError listing the names."""
    try:
        return get_detector(detector)
    except ValueError as error:
        raise UsageError(f"--detector: {error}") from error


def no_anchors_message(name):
    """What ``--anchor-sizes`` or ``--aspect-ratios`` with a selective search detector ``name`` is told."""
    return f"--anchor-sizes/--aspect-ratios: {DETECTOR_TITLES[name]} has no anchors (its proposals come from selective search)"


def _per_level(backbone, anchor_sizes):
    """A flat list of anchor sizes (pixels) as the detectors take them, one tuple per feature
    level: one per level when the backbone's RPN reads several (:data:`MULTI_LEVEL_RPN`), else
    all on its one level (tiny_fpn's RPN reads P3 only)."""
    sizes = [float(s) for s in anchor_sizes]
    return tuple((s,) for s in sizes) if backbone in MULTI_LEVEL_RPN else (tuple(sizes),)


def build_detector(num_classes, class_names, backbone="tiny", image_min_size=None,
                   image_max_size=None, anchor_sizes=None, model_args=None, detector="faster_rcnn",
                   aspect_ratios=None):
    """The detector named ``detector`` (see :data:`rcnn_zoo.models.registry.DETECTORS`; default
    a Faster R-CNN) from CLI-style arguments.

    ``anchor_sizes`` (``faster_rcnn``, ``rfcn``): a flat list of pixel sizes: all on the one
    level of a single-level backbone, one per level of an FPN; ``aspect_ratios``: their h/w
    ratios (every level). The image sizes apply to every
    detector but ``rcnn``, which warps each region to its ``warp_size`` instead.
    ``model_args``: further keyword arguments of the detector's class.
    """
    cls = detector_class(detector)
    detector = detector_name(cls)  # "FastRCNN" → "fast_rcnn"
    if backbone not in BACKBONES:
        raise UsageError(f"unknown backbone {backbone!r}; choose one of {', '.join(sorted(BACKBONES))}")
    kwargs = dict(model_args or {})
    if detector in PROPOSAL_DETECTORS and (anchor_sizes or aspect_ratios or "anchor_sizes" in kwargs):
        raise UsageError(no_anchors_message(detector))
    if detector == "rcnn":
        if image_min_size is not None or image_max_size is not None:
            raise UsageError(RCNN_IMAGE_SIZES_MESSAGE)
    else:
        image_min_size, image_max_size = image_sizes(backbone, image_min_size, image_max_size)
    # Only sizes actually chosen are passed: None must not override a backbone's default.
    if image_min_size is not None:
        kwargs.setdefault("image_min_size", image_min_size)
    if image_max_size is not None:
        kwargs.setdefault("image_max_size", image_max_size)
    if detector not in PROPOSAL_DETECTORS:
        if not anchor_sizes and "anchor_sizes" not in kwargs:
            anchor_sizes = CLI_ANCHOR_SIZES.get(backbone)
        if anchor_sizes:  # the option wins over a --model-arg anchor_sizes
            kwargs["anchor_sizes"] = _per_level(backbone, anchor_sizes)
        if aspect_ratios:
            kwargs["anchor_aspect_ratios"] = tuple(float(r) for r in aspect_ratios)
    try:
        return cls(num_classes=num_classes, class_names=list(class_names), backbone=backbone, **kwargs)
    except (TypeError, ValueError, OSError) as error:  # unknown or bad --model-arg, weights that do not fit
        raise UsageError(str(error).splitlines()[0]) from error


def build_fitted_detector(dataset, backbone="tiny", image_min_size=None, image_max_size=None,
                          anchor_sizes=None, aspect_ratios=None, model_args=None, detector="faster_rcnn"):
    """:func:`build_detector` for ``dataset``, where ``anchor_sizes`` and/or ``aspect_ratios``
    may be ``"auto"``: those are fitted to the dataset's boxes
    (:func:`rcnn_zoo.data.anchor_fit.fit_anchors`, same anchor count per location).

    Returns:
        ``(model, fit)``: ``fit`` is the fit's report (None when nothing was ``"auto"``).
    """
    fit_sizes, fit_ratios = anchor_sizes == AUTO, aspect_ratios == AUTO
    model = build_detector(dataset.num_classes, dataset.class_names, backbone, image_min_size, image_max_size,
                           None if fit_sizes else anchor_sizes, model_args, detector,
                           None if fit_ratios else aspect_ratios)
    if not (fit_sizes or fit_ratios):
        return model, None
    if not hasattr(model, "rpn"):
        raise UsageError(no_anchors_message(detector_name(model)))
    fit = fit_anchors(dataset, model, fit_sizes, fit_ratios)
    sizes = [s for level in fit["sizes"] for s in level]
    model = build_detector(dataset.num_classes, dataset.class_names, backbone, image_min_size, image_max_size,
                           sizes, model_args, detector, list(fit["aspect_ratios"]))
    return model, fit
