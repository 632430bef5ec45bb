"""Box coding in one place: areas, IoU, clipping, delta encode/decode, format conversion.

Boxes are ``xyxy`` in pixels with continuous coordinates (``x2 - x1`` is the width), any number
of leading batch dimensions. Deltas follow R-CNN (Girshick et al. 2014, appendix C) and Faster
R-CNN: ``(dx, dy, dw, dh)`` relative to a reference box (anchor or proposal), each multiplied by
a weight (``(1, 1, 1, 1)`` for the RPN, ``(10, 10, 5, 5)`` for the RoI head).
"""

import math

import keras
import tensorflow as tf

# Decoded log-scale deltas are clamped here so exp() cannot overflow (detectron2, torchvision).
DELTA_CLAMP = math.log(1000.0 / 16)


def _relative_factors(absolute_format, height, width, dtype):
    """``[..., 4]`` multipliers turning ``rel_<absolute_format>`` boxes into pixels.

    ``height``/``width`` are scalars or tensors broadcastable to ``boxes[..., 0]`` (per-image
    sizes ``[B, 1]`` for boxes ``[B, N, 4]``), which Keras' converter does not broadcast.
    """
    if height is None or width is None:
        raise ValueError(f"relative box format rel_{absolute_format} needs height and width")
    height = tf.cast(height, dtype)
    width = tf.cast(width, dtype)
    height, width = height + tf.zeros_like(width), width + tf.zeros_like(height)
    x_first = absolute_format.replace("center_", "").startswith("x")
    order = [width, height, width, height] if x_first else [height, width, height, width]
    return tf.stack(order, axis=-1)


def convert_format(boxes, source, target, height=None, width=None):
    """Convert boxes between any formats ``keras.utils.bounding_boxes`` knows.

    Args:
        boxes: ``[..., 4]`` float tensor.
        source, target: format names such as ``"xyxy"``, ``"yxyx"``, ``"xywh"``,
            ``"center_xywh"``, ``"rel_xyxy"`` (relative formats need ``height``/``width``:
            scalars, or per image, e.g. ``[B, 1]`` for boxes ``[B, N, 4]``).
    """
    boxes = tf.convert_to_tensor(boxes)
    if source == target:
        return boxes
    if source.startswith("rel_"):
        source = source[len("rel_"):]
        boxes = boxes * _relative_factors(source, height, width, boxes.dtype)
    relative_target = target.startswith("rel_")
    absolute_target = target[len("rel_"):] if relative_target else target
    if source != absolute_target:
        boxes = tf.cast(
            keras.utils.bounding_boxes.convert_format(
                boxes, source=source, target=absolute_target, dtype=boxes.dtype
            ),
            boxes.dtype,
        )
    if relative_target:
        boxes = boxes / _relative_factors(absolute_target, height, width, boxes.dtype)
    return boxes


def area(boxes):
    """``[..., 4]`` xyxy → ``[...]`` area in pixels², 0 for inverted boxes."""
    w = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return w * h


def pairwise_iou(boxes1, boxes2):
    """IoU of every box in ``boxes1 [..., M, 4]`` with every box in ``boxes2 [..., N, 4]``.

    Returns ``[..., M, N]``; a pair whose union is empty has IoU 0 (never NaN).
    """
    b1 = boxes1[..., :, None, :]
    b2 = boxes2[..., None, :, :]
    iw = tf.maximum(tf.minimum(b1[..., 2], b2[..., 2]) - tf.maximum(b1[..., 0], b2[..., 0]), 0.0)
    ih = tf.maximum(tf.minimum(b1[..., 3], b2[..., 3]) - tf.maximum(b1[..., 1], b2[..., 1]), 0.0)
    inter = iw * ih
    union = area(boxes1)[..., :, None] + area(boxes2)[..., None, :] - inter
    return tf.math.divide_no_nan(inter, union)


def clip_to_image(boxes, height, width):
    """Clip ``[..., 4]`` xyxy boxes into ``[0, width] × [0, height]``.

    ``height``/``width`` may be scalars or tensors broadcastable to ``boxes[..., 0]``.
    """
    height = tf.cast(height, boxes.dtype)
    width = tf.cast(width, boxes.dtype)
    x1 = tf.clip_by_value(boxes[..., 0], 0.0, width)
    y1 = tf.clip_by_value(boxes[..., 1], 0.0, height)
    x2 = tf.clip_by_value(boxes[..., 2], 0.0, width)
    y2 = tf.clip_by_value(boxes[..., 3], 0.0, height)
    return tf.stack([x1, y1, x2, y2], axis=-1)


def _centers_and_sizes(boxes):
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(boxes, reference, weights=(1.0, 1.0, 1.0, 1.0)):
    """Deltas that turn ``reference [..., 4]`` into ``boxes [..., 4]`` (both xyxy).

    Returns ``[..., 4]`` deltas ``(dx, dy, dw, dh)`` times ``weights``. Reference boxes must have
    positive size; callers only encode against anchors/proposals, which do.
    """
    wx, wy, ww, wh = weights
    cx, cy, w, h = _centers_and_sizes(boxes)
    rcx, rcy, rw, rh = _centers_and_sizes(reference)
    eps = tf.constant(1e-6, boxes.dtype)
    rw = tf.maximum(rw, eps)
    rh = tf.maximum(rh, eps)
    dx = wx * (cx - rcx) / rw
    dy = wy * (cy - rcy) / rh
    dw = ww * tf.math.log(tf.maximum(w, eps) / rw)
    dh = wh * tf.math.log(tf.maximum(h, eps) / rh)
    return tf.stack([dx, dy, dw, dh], axis=-1)


def decode(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0)):
    """Inverse of :func:`encode`: apply ``deltas [..., 4]`` to ``reference [..., 4]`` → xyxy."""
    wx, wy, ww, wh = weights
    deltas = tf.cast(deltas, reference.dtype)
    rcx, rcy, rw, rh = _centers_and_sizes(reference)
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = tf.minimum(deltas[..., 2] / ww, DELTA_CLAMP)
    dh = tf.minimum(deltas[..., 3] / wh, DELTA_CLAMP)
    cx = dx * rw + rcx
    cy = dy * rh + rcy
    w = tf.exp(dw) * rw
    h = tf.exp(dh) * rh
    return tf.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
