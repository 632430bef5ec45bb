"""Do weights fit a detector? Constructor arguments that change variable shapes cannot differ
(refused, naming the argument); those that change only what the weights compute at inference
are warned about.

A model is seen only through ``hyperparameters()`` (every resolved hyperparameter),
``anchors_per_location`` (``None`` without an RPN), ``backbone_name``, ``num_classes`` and its
class name; this package never imports the models.
"""

import json
import warnings

from rcnn_zoo.pretrained.contents import file_anchors_per_location
from rcnn_zoo.pretrained.errors import WeightsMismatchError

# Hyperparameters that change variable shapes: a mismatch cannot load at all.
STRUCTURAL_KEYS = (
    "rpn_head_channels", "roi_head_dim", "roi_pool_size", "rpn_conv_depth", "roi_head_type", "roi_head_convs",
)
# Hyperparameters that change what the weights compute at inference (warned about).
BEHAVIOUR_KEYS = (
    "image_min_size",
    "image_max_size",
    "anchor_sizes",
    "anchor_aspect_ratios",
    "anchor_style",
    "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_test",
    "rpn_nms_threshold",
    "rpn_min_size",
    "roi_pooling",
    "roi_sampling_ratio",
    "roi_levels",
    "roi_box_weights",
)


def normalised(value):
    """``value`` as JSON gives it back (tuples become lists), to compare with registry data."""
    return json.loads(json.dumps(value))


def _differing(hyperparameters, arguments, keys):
    """``{key: (model's value, weights' value)}`` of ``keys`` on which the two differ."""
    return {
        k: (hyperparameters[k], v) for k, v in arguments.items()
        if k in keys and k in hyperparameters and normalised(hyperparameters[k]) != normalised(v)
    }


def anchor_count(values):
    """Entries per level of an ``anchor_sizes`` / ``anchor_aspect_ratios`` argument (a flat
    sequence is one level that serves all)."""
    values = list(values)
    if values and isinstance(values[0], (list, tuple)):
        return [len(v) for v in values]
    return [len(values)]


def anchors_per_location(sizes, aspect_ratios):
    """Anchors per location of an RPN built with these arguments: every size paired with every
    ratio (in each of :class:`rcnn_zoo.layers.AnchorGenerator`'s conventions), or the per-level
    list when the levels disagree (no detector builds those)."""
    per_size, per_ratio = anchor_count(sizes), anchor_count(aspect_ratios)
    levels = max(len(per_size), len(per_ratio))
    # A flat argument (one entry) serves every level.
    per_size, per_ratio = (c * levels if len(c) == 1 else c for c in (per_size, per_ratio))
    counts = [s * r for s, r in zip(per_size, per_ratio)]
    return counts[0] if len(set(counts)) == 1 else counts


def refuse_architecture_changes(detector, name, preset, given):
    """Refuse caller arguments ``given`` that change the shapes of the weights of ``preset``
    (the arguments they were saved with). ``detector``: class name; ``name``: the weights."""
    # A layer width the preset does not list is the backbone's default, which the weights have.
    changed = [
        key for key in ("backbone",) + STRUCTURAL_KEYS
        if key in given and normalised(given[key]) != normalised(preset.get(key, "default"))
    ]
    for key in ("anchor_sizes", "anchor_aspect_ratios"):
        if key in given and key in preset and anchor_count(given[key]) != anchor_count(preset[key]):
            changed.append(key)
    if changed:
        details = ", ".join(
            f"{k}={given[k]!r} (the weights have {preset.get(k, 'the backbone default')!r})"
            for k in changed
        )
        raise WeightsMismatchError(
            f"{detector}(weights={name!r}): {details} changes the architecture, so the weights "
            "cannot load. Leave it out (the preset sets it), or build the model without "
            "weights=... to train it from scratch."
        )


def _anchor_change(model, arguments):
    """``{"anchors per location": (model's, weights')}`` when the entry's anchor arguments give
    the RPN another number of anchors per location than ``model`` has, else ``{}``."""
    have = getattr(model, "anchors_per_location", None)
    if have is None or "anchor_sizes" not in arguments:
        return {}
    ratios = arguments.get("anchor_aspect_ratios", model.hyperparameters().get("anchor_aspect_ratios"))
    if ratios is None:
        return {}
    wanted = anchors_per_location(arguments["anchor_sizes"], ratios)
    return {} if wanted == have else {"anchors per location": (have, wanted)}


def check_entry_fits(model, name, entry, strict):
    """Refuse structural mismatches between ``model`` and registry entry ``name`` before
    downloading; warn about behaviour differences."""
    arguments = entry["model"]
    backbone = arguments.get("backbone")
    if backbone != getattr(model, "backbone_name", backbone):
        raise WeightsMismatchError(
            f"The {name!r} weights are for backbone {backbone!r}; this model uses "
            f"{model.backbone_name!r}. Build it with {type(model).__name__}(weights={name!r}), "
            "which takes the backbone and every setting from the preset."
        )
    hyperparameters = model.hyperparameters()
    structural = {**_differing(hyperparameters, arguments, STRUCTURAL_KEYS), **_anchor_change(model, arguments)}
    if structural:
        details = "; ".join(f"{k}: model {m!r}, weights {w!r}" for k, (m, w) in structural.items())
        raise WeightsMismatchError(
            f"The {name!r} weights do not fit this model's layer sizes ({details}). Build it with "
            f"{type(model).__name__}(weights={name!r}) (the preset's arguments: {arguments})."
        )
    expected_classes = int(arguments["num_classes"])
    if strict and model.num_classes != expected_classes:
        raise WeightsMismatchError(
            f"The {name!r} weights have num_classes={expected_classes}, this model "
            f"{model.num_classes}; strict=True refuses to leave the predictor initialised."
        )
    _warn_about_behaviour(model, name, entry, _differing(hyperparameters, arguments, BEHAVIOUR_KEYS))


def _warn_about_behaviour(model, name, entry, differences):
    notes = []
    if differences:
        notes.append(
            "these settings differ from the ones its published metric was measured with: "
            + "; ".join(f"{k}={m!r} here, {w!r} there" for k, (m, w) in differences.items())
            + f" ({type(model).__name__}(weights={name!r}) without them builds the source model)"
        )
    if entry.get("not_expressible"):
        notes.append(
            f"the source model also uses {entry['not_expressible']}, which FasterRCNN cannot "
            "express yet (see the entry's 'differences')"
        )
    if notes:
        # Past this module, load_detector_weights and the detector's constructor: the user's line.
        warnings.warn(f"Weights {name!r}: " + "; ".join(notes) + ".", stacklevel=5)


def anchor_mismatch(model, path):
    """The message for a checkpoint whose RPN has another number of anchors per location than
    ``model`` (the usual reason a weights file does not fit), or None."""
    ours = getattr(model, "anchors_per_location", None)
    if ours is None or not str(path).endswith(".h5"):
        return None
    theirs = file_anchors_per_location(path)
    if theirs is None or theirs == ours:
        return None
    hyperparameters = model.hyperparameters()
    return (
        f"{path} has an RPN with {theirs} anchors per location, this {type(model).__name__} has "
        f"{ours} (anchor_sizes={hyperparameters.get('anchor_sizes')}, "
        f"anchor_aspect_ratios={hyperparameters.get('anchor_aspect_ratios')}): "
        "build the model with the anchor_sizes and anchor_aspect_ratios the checkpoint was "
        "trained with (rcnn-zoo train writes them into config.json; a .keras file carries them, "
        "so FasterRCNN(weights='best.keras') needs no other argument)"
    )
