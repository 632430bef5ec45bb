"""Convert published PyTorch detection checkpoints into rcnn_zoo detectors, without PyTorch.

    from rcnn_zoo.models.from_checkpoint import convert_checkpoint
    model = convert_checkpoint("torchvision", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
                               "coco.weights.h5", bn_epsilon=0.0)

or ``rcnn-zoo convert --from torchvision --input x.pth --output y.weights.h5``. The ``.pth`` is
read by :mod:`rcnn_zoo.convert.pth` (zip and legacy formats, restricted unpickling), mapped by a
converter in :data:`CONVERTERS` onto a ``FasterRCNN`` built with the converter's
``model_arguments`` and written with ``model.save_weights`` (``.weights.h5``) or ``model.save``
(``.keras``). Load a ``.weights.h5`` into a detector built with the same arguments (printed by
the command); a ``.keras`` file carries them.

This package maps arrays onto a detector it is given and never imports :mod:`rcnn_zoo.models`
(the weights registry below the models uses it to convert downloads); building a detector for a
checkpoint is :mod:`rcnn_zoo.models.from_checkpoint`, in the models.
"""

import dataclasses
import os
import warnings
from typing import Callable

from rcnn_zoo.convert import (
    mmdet_r50_fpn,
    torchvision_mobilenet_v3_fpn,
    torchvision_resnet50_fpn,
    torchvision_resnet50_fpn_v2,
)
from rcnn_zoo.convert.common import ConversionError, assign_layer_weights
from rcnn_zoo.convert.pth import CheckpointFormatError, UnsafeCheckpointError, read_pth, read_state_dict
from rcnn_zoo.convert.resnet_fpn import PREDICTOR_LAYERS

__all__ = [
    "CONVERTERS",
    "CheckpointFormatError",
    "ConversionError",
    "Converter",
    "UnsafeCheckpointError",
    "convert_state_dict",
    "get_converter",
    "read_pth",
    "read_state_dict",
    "save_detector",
]


@dataclasses.dataclass(frozen=True)
class Converter:
    """How to turn one family of state dicts into an rcnn_zoo detector.

    Attributes:
        name: registry name (``weights/registry.json`` ``"convert"`` field).
        checkpoint_num_classes: state dict → foreground classes it was trained for.
        model_arguments: foreground classes → ``FasterRCNN`` keyword arguments reproducing the
            source model.
        layer_weights: ``(state_dict, **options)`` → ``{layer path: {variable: array}}``.
        predictor_layers: class-specific layers, left initialised when the class count changes.
        options: default keyword options of ``layer_weights`` (e.g. ``bn_epsilon``).
    """

    name: str
    checkpoint_num_classes: Callable
    model_arguments: Callable
    layer_weights: Callable
    predictor_layers: tuple = PREDICTOR_LAYERS
    options: dict = dataclasses.field(default_factory=dict)


CONVERTERS = {
    torchvision_resnet50_fpn.NAME: Converter(
        torchvision_resnet50_fpn.NAME,
        torchvision_resnet50_fpn.checkpoint_num_classes,
        torchvision_resnet50_fpn.model_arguments,
        torchvision_resnet50_fpn.layer_weights,
        options={"bn_epsilon": torchvision_resnet50_fpn.DEFAULT_BN_EPSILON},
    ),
    torchvision_resnet50_fpn_v2.NAME: Converter(
        torchvision_resnet50_fpn_v2.NAME,
        torchvision_resnet50_fpn_v2.checkpoint_num_classes,
        torchvision_resnet50_fpn_v2.model_arguments,
        torchvision_resnet50_fpn_v2.layer_weights,
        options={"bn_epsilon": torchvision_resnet50_fpn_v2.DEFAULT_BN_EPSILON},
    ),
    # Serves fasterrcnn_mobilenet_v3_large_fpn and _320_fpn (same tensors; for the 320 model
    # build the detector with torchvision_mobilenet_v3_fpn.MODEL_ARGUMENTS_320).
    torchvision_mobilenet_v3_fpn.NAME: Converter(
        torchvision_mobilenet_v3_fpn.NAME,
        torchvision_mobilenet_v3_fpn.checkpoint_num_classes,
        torchvision_mobilenet_v3_fpn.model_arguments,
        torchvision_mobilenet_v3_fpn.layer_weights,
        options={"bn_epsilon": torchvision_mobilenet_v3_fpn.DEFAULT_BN_EPSILON},
    ),
    mmdet_r50_fpn.NAME: Converter(
        mmdet_r50_fpn.NAME,
        mmdet_r50_fpn.checkpoint_num_classes,
        mmdet_r50_fpn.model_arguments,
        mmdet_r50_fpn.layer_weights,
        options={"bn_epsilon": mmdet_r50_fpn.DEFAULT_BN_EPSILON},
    ),
}

# Short names for the command line.
ALIASES = {
    "torchvision": torchvision_resnet50_fpn.NAME,
    "torchvision_v2": torchvision_resnet50_fpn_v2.NAME,
    "torchvision_mobilenet": torchvision_mobilenet_v3_fpn.NAME,
    "mmdet": mmdet_r50_fpn.NAME,
    "mmdetection": mmdet_r50_fpn.NAME,
}


def get_converter(name):
    """A :class:`Converter` by name or alias (``"torchvision"``, ``"mmdet"``)."""
    key = ALIASES.get(name, name)
    if key not in CONVERTERS:
        raise ValueError(
            f"Unknown converter {name!r}; choose one of {sorted(set(ALIASES) | set(CONVERTERS))}"
        )
    return CONVERTERS[key]


def convert_state_dict(converter, state_dict, model, **options):
    """Write a source state dict into the rcnn_zoo detector ``model``.

    Args:
        converter: a :class:`Converter` or its name.
        state_dict: ``{name: numpy array}`` (see :func:`read_state_dict`).
        model: a built detector to write into. When its ``num_classes`` differs from the
            checkpoint's, everything except the class-specific predictor is converted and the
            predictor keeps its initialisation (a warning names it) — the fine-tuning start.
            (:func:`rcnn_zoo.models.from_checkpoint.convert_to_detector` builds one for you.)
        **options: converter options (``bn_epsilon=`` the source's batch-norm epsilon).

    Returns:
        ``model``, holding the converted weights.
    """
    if isinstance(converter, str):
        converter = get_converter(converter)
    checkpoint_classes = converter.checkpoint_num_classes(state_dict)
    num_classes = model.num_classes
    merged = {**converter.options, **options}
    weights = converter.layer_weights(state_dict, **merged)
    leave = ()
    if int(num_classes) != checkpoint_classes:
        leave = converter.predictor_layers
        warnings.warn(
            f"The checkpoint has {checkpoint_classes} classes, the model {num_classes}: "
            f"{', '.join(leave)} were not converted and keep their initialisation "
            "(fine-tune before use).",
            stacklevel=2,
        )
    if getattr(model, "takes_proposals", False):
        # Fast R-CNN takes external proposals: the checkpoint's RPN has no place in it.
        weights = {layer: arrays for layer, arrays in weights.items() if not layer.startswith("rpn_head")}
    assign_layer_weights(model, weights, leave_initialised=leave)
    return model


def save_detector(model, output_path):
    """``save_weights`` for ``.weights.h5``, ``save`` for ``.keras``, via a temporary file."""
    output_path = os.fspath(output_path)
    if output_path.endswith(".keras"):
        temporary, save = output_path[: -len(".keras")] + ".partial.keras", model.save
    elif output_path.endswith(".weights.h5"):
        temporary = output_path[: -len(".weights.h5")] + ".partial.weights.h5"
        save = model.save_weights
    else:
        raise ValueError(f"output must end in .weights.h5 or .keras, got {output_path!r}")
    directory = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(directory, exist_ok=True)
    try:
        save(temporary)
        os.replace(temporary, output_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return output_path
