"""Checkpoint → detector: build the detector a converter describes and fill it with a PyTorch
checkpoint's weights (``rcnn-zoo convert`` and scripts).

    from rcnn_zoo.models.from_checkpoint import convert_checkpoint
    model = convert_checkpoint("torchvision", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
                               "coco.weights.h5", bn_epsilon=0.0)

Here because it builds a model: :mod:`rcnn_zoo.convert` below only maps arrays onto a detector it
is given (:func:`rcnn_zoo.convert.convert_state_dict`).
"""

from rcnn_zoo.convert import convert_state_dict, get_converter, read_state_dict, save_detector
from rcnn_zoo.models.registry import get_detector

__all__ = ["convert_checkpoint", "convert_to_detector"]


def convert_to_detector(converter, state_dict, num_classes=None, detector="faster_rcnn", **options):
    """A new detector built with ``converter.model_arguments(num_classes)`` holding the state
    dict's weights. ``num_classes``: default the checkpoint's (another count: the fine-tuning
    start, see :func:`rcnn_zoo.convert.convert_state_dict`). ``detector``: registry name."""
    if isinstance(converter, str):
        converter = get_converter(converter)
    if num_classes is None:
        num_classes = converter.checkpoint_num_classes(state_dict)
    model = get_detector(detector)(**converter.model_arguments(num_classes))
    return convert_state_dict(converter, state_dict, model=model, **options)


def convert_checkpoint(source, input_path, output_path=None, num_classes=None, **options):
    """Read a ``.pth``, convert it and optionally save the result.

    Args:
        source: converter name or alias (``"torchvision"``, ``"mmdet"``).
        input_path: the ``.pth`` file.
        output_path: ``*.weights.h5`` (``save_weights``) or ``*.keras`` (whole model), or
            ``None`` to only return the model. Written atomically (temporary file, then rename).
        num_classes, **options: as :func:`convert_to_detector`.

    Returns:
        The converted detector.
    """
    state_dict = read_state_dict(input_path)
    model = convert_to_detector(source, state_dict, num_classes=num_classes, **options)
    if output_path is not None:
        save_detector(model, output_path)
    return model
