"""Test-time post-processing shared by every detector: class-wise NMS over per-class boxes.

R-CNN (SVM margins), Fast R-CNN, Faster R-CNN and R-FCN (softmax probabilities) all end the same
way: each RoI has a box and a score per foreground class; boxes of one class suppress each other
(greedy NMS, IoU strictly above the threshold), boxes of different classes never do, and the
``D`` best survivors of an image are kept.

Shapes: B images, R RoIs per image, C foreground classes (or 1 for class-agnostic boxes),
D = ``max_detections``.
"""

import tensorflow as tf

from rcnn_zoo.ops import boxes as box_ops

# torchvision drops boxes with a side under 1e-2 px before NMS (``remove_small_boxes``).
MIN_BOX_SIDE = 1e-2


def decode_class_boxes(rois, deltas, box_weights, resized_sizes):
    """RoIs and deltas → per-class boxes clipped to each image, and which are big enough.

    Args:
        rois: ``[B,R,4]`` xyxy pixels; deltas: ``[B,R,C,4]`` (one row per foreground class) or
            ``[B,R,4]`` (class-agnostic); box_weights: ``(wx, wy, ww, wh)``.
        resized_sizes: int ``[B,2]`` ``(height, width)`` each image's size; boxes are clipped to it.
    Returns:
        ``(boxes [B,R,C',4] float32 xyxy, big_enough [B,R,C'] bool)``, ``C'`` = C or 1.
    """
    deltas = tf.cast(deltas, tf.float32)
    rois = tf.cast(rois, tf.float32)
    if deltas.shape.rank == 3:
        boxes = box_ops.decode(deltas, rois, box_weights)[:, :, None, :]
    else:
        boxes = box_ops.decode(deltas, rois[:, :, None, :], box_weights)
    sizes = tf.cast(resized_sizes, tf.float32)
    height, width = sizes[:, 0:1, None], sizes[:, 1:2, None]
    boxes = box_ops.clip_to_image(boxes, height, width)
    big_enough = (boxes[..., 2] - boxes[..., 0] >= MIN_BOX_SIDE) & (boxes[..., 3] - boxes[..., 1] >= MIN_BOX_SIDE)
    return boxes, big_enough


def classwise_nms(boxes, scores, keep, score_threshold, nms_threshold, max_detections):
    """Class-wise greedy NMS → the ``D`` best detections of each image, padded.

    Args:
        boxes: ``[B,R,C',4]`` xyxy (``C'`` = C, or 1 to share one box among the classes).
        scores: ``[B,R,C]`` any real scores (probabilities or SVM margins).
        keep: ``[B,R,C']`` or ``[B,R,C]`` bool, False for padded RoIs and boxes to drop.
        score_threshold: a detection needs a score strictly above it.
        nms_threshold: a box is suppressed by a kept box of its class with IoU above it.
        max_detections: ``D``.
    Returns:
        dict ``boxes [B,D,4]``, ``scores [B,D]`` float32, ``labels [B,D]`` int32 (0…C−1, −1
        padding), ``num_detections [B]`` int32, best first.
    """
    scores = tf.cast(scores, tf.float32)
    scores = tf.where(keep, scores, tf.constant(float("-inf")))
    nmsed = tf.image.combined_non_max_suppression(
        boxes,
        scores,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=nms_threshold,
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=False,
    )
    count = tf.cast(nmsed.valid_detections, tf.int32)
    valid = tf.range(max_detections)[None, :] < count[:, None]
    return {
        "boxes": tf.where(valid[..., None], nmsed.nmsed_boxes, 0.0),
        "scores": tf.where(valid, nmsed.nmsed_scores, 0.0),
        "labels": tf.where(valid, tf.cast(nmsed.nmsed_classes, tf.int32), -1),
        "num_detections": count,
    }
