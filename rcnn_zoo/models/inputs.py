"""What goes in and out of a detector: image batches, ground truth, given proposals, and boxes
back in the user's format and pixels.

A detector works in *resized-image pixels*, xyxy; users give and get boxes in any
``keras.utils.bounding_boxes`` format in their images' own pixels. Each image of a padded batch
has its own size ``image_sizes [B,2]`` ``(height, width)`` (its top-left corner) and its own
resized size ``resized_sizes [B,2]``.

Shapes: B images, G ground-truth boxes per image (padded with label −1), R proposals per image,
D = ``max_detections``.
"""

import tensorflow as tf

from rcnn_zoo.models.preprocessing import full_image_sizes
from rcnn_zoo.ops import boxes as box_ops


def xyxy_factors(scale):
    """Per-image ``(sy, sx)`` ``[B, 2]`` → ``[B, 1, 4]`` ``[sx, sy, sx, sy]`` to scale xyxy boxes."""
    return tf.stack([scale[:, 1], scale[:, 0], scale[:, 1], scale[:, 0]], axis=-1)[:, None, :]


def columns(sizes):
    """int ``[B, 2]`` ``(height, width)`` → float32 ``([B, 1], [B, 1])``, to broadcast over boxes."""
    sizes = tf.cast(sizes, tf.float32)
    return sizes[:, 0:1], sizes[:, 1:2]


def ragged_to_padded(images):
    """Ragged ``[B, (H), (W), 3]`` → (dense batch padded with zeros, sizes ``[B, 2]`` int32)."""
    heights = images.row_lengths()
    widths = tf.reduce_max(images.row_lengths(axis=2), axis=1)
    return images.to_tensor(), tf.cast(tf.stack([heights, widths], axis=1), tf.int32)


def unpack_images(inputs):
    """The model input → ``(images [B, H, W, 3], image_sizes [B, 2] int32)``.

    Accepted: a tensor (every image fills it); a ``tf.RaggedTensor`` ``[B, (H), (W), 3]`` (padded
    here); a dict with ``"images"`` and optionally ``"image_sizes"`` (each image's ``(height,
    width)`` inside the padded batch, its top-left corner). Other dict keys are the caller's.
    """
    if isinstance(inputs, dict):
        if "images" not in inputs:
            raise ValueError(
                "A dict input needs 'images' [B, H, W, 3] (and optionally 'image_sizes' [B, 2]); "
                f"got keys {sorted(inputs)}"
            )
        images = inputs["images"]
        sizes = inputs.get("image_sizes")
        if isinstance(images, tf.RaggedTensor):
            images, ragged_sizes = ragged_to_padded(images)
            sizes = ragged_sizes if sizes is None else sizes
    elif isinstance(inputs, tf.RaggedTensor):
        images, sizes = ragged_to_padded(inputs)
    else:
        images, sizes = inputs, None
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or (images.shape[-1] is not None and images.shape[-1] != 3):
        raise ValueError(f"images must be [B, H, W, 3] RGB, got shape {images.shape}")
    if sizes is None:
        sizes = full_image_sizes(images)
    return images, tf.cast(sizes, tf.int32)


def unpack_images_and_proposals(inputs, detector_name):
    """``{"images", "proposals"[, "image_sizes"]}`` → images, image sizes, proposals ``[B,R,4]``."""
    if not isinstance(inputs, dict) or not {"images", "proposals"} <= set(inputs):
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(
            f"{detector_name} takes a dict {{'images': [B, H, W, 3], 'proposals': [B, R, 4]}} "
            "(optionally 'image_sizes': [B, 2] for a padded batch of different sizes) "
            f"(got {got}); compute proposals with rcnn_zoo.proposals.selective_search / "
            "compute_proposals and pad them with rcnn_zoo.proposals.pad_proposals"
        )
    images, image_sizes = unpack_images(inputs)
    return images, image_sizes, inputs["proposals"]


def _to_resized_xyxy(boxes, bounding_box_format, image_sizes, resized_sizes):
    """Boxes ``[B,N,4]`` in ``bounding_box_format``, image pixels → xyxy resized pixels, clipped
    to each resized image, non-finite rows zeroed; and which rows were finite ``[B,N]``."""
    height, width = columns(image_sizes)
    boxes = box_ops.convert_format(tf.cast(boxes, tf.float32), bounding_box_format, "xyxy",
                                   height=height, width=width)
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    boxes = tf.where(finite[..., None], boxes, 0.0)
    scale = tf.cast(resized_sizes, tf.float32) / tf.cast(image_sizes, tf.float32)
    resized_height, resized_width = columns(resized_sizes)
    return box_ops.clip_to_image(boxes * xyxy_factors(scale), resized_height, resized_width), finite


def _has_area(boxes):
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


def prepare_ground_truth(y, num_classes, bounding_box_format, image_sizes, resized_sizes):
    """User targets → ``(gt_boxes [B,G,4] xyxy resized pixels, gt_labels [B,G])``, −1 = dropped.

    ``y = {"boxes": [B,G,4] in bounding_box_format, "labels": [B,G]}`` in each image's own
    pixels. Boxes are scaled by each image's factors and clipped to its resized size; boxes left
    with zero or negative area (degenerate, inverted or wholly outside), non-finite ones and
    labels outside ``[0, num_classes)`` are dropped, and the count is printed so bad data never
    trains silently.
    """
    if not isinstance(y, dict) or "boxes" not in y or "labels" not in y:
        raise ValueError(
            "Targets must be a dict {'boxes': [B, G, 4], 'labels': [B, G]} "
            f"(labels padded with -1); got {type(y).__name__}"
        )
    labels = tf.cast(y["labels"], tf.int32)
    boxes, finite = _to_resized_xyxy(y["boxes"], bounding_box_format, image_sizes, resized_sizes)
    padded = labels < 0
    good = finite & _has_area(boxes) & (labels < num_classes)
    dropped = tf.reduce_sum(tf.cast(~padded & ~good, tf.int32))
    tf.cond(
        dropped > 0,
        lambda: tf.print(
            "rcnn_zoo: dropped", dropped,
            "ground-truth boxes in this batch (zero area, inverted, outside the image, "
            "non-finite, or label >= num_classes)",
        ),
        lambda: tf.no_op(),
    )
    return boxes, tf.where(good & ~padded, labels, -1)


def prepare_proposals(proposals, bounding_box_format, image_sizes, resized_sizes):
    """Given proposals ``[B,R,4]`` (``bounding_box_format``, image pixels) → ``(boxes [B,R,4]
    float32 xyxy resized pixels, zeros where invalid; valid [B,R] bool)``.

    Valid rows are finite with positive width and height after clipping: clipping is monotone,
    so empty or inverted rows stay so and rows wholly outside the image become empty — one test
    after clipping covers them all.
    """
    boxes = tf.cast(proposals, tf.float32)
    if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"proposals must be [B, R, 4], got shape {boxes.shape}")
    boxes, finite = _to_resized_xyxy(boxes, bounding_box_format, image_sizes, resized_sizes)
    valid = finite & _has_area(boxes)
    return tf.where(valid[..., None], boxes, 0.0), valid


def boxes_to_user_format(boxes, bounding_box_format, image_sizes, resized_sizes):
    """xyxy boxes ``[B,D,4]`` in resized pixels → ``bounding_box_format`` in each image's own
    pixels, clipped to it (multiplied by ``original / resized`` per axis in float32, as
    torchvision's ``resize_boxes``)."""
    ratio = tf.cast(image_sizes, tf.float32) / tf.cast(resized_sizes, tf.float32)
    height, width = columns(image_sizes)
    boxes = box_ops.clip_to_image(boxes * xyxy_factors(ratio), height, width)
    return box_ops.convert_format(boxes, "xyxy", bounding_box_format, height=height, width=width)
