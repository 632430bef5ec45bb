"""R-CNN's region warping (Girshick et al. 2014, section 2.1 and appendix A): every proposal,
dilated to give ``p`` pixels of context, is warped anisotropically to ``S × S``.

Pure TensorFlow and graph-safe (any number of boxes, any image size). Shapes: ``B`` images,
``K`` boxes in a flat list (of any images), ``S`` = ``warp_size``. Boxes are float xyxy in
continuous pixels: pixel ``c`` covers ``[c, c + 1)`` and has its centre at ``c + ½``.
"""

import tensorflow as tf


def context_boxes(boxes, warp_size, context_padding):
    """Dilate ``[..., 4]`` xyxy boxes about their centres by ``S / (S − 2p)`` per axis.

    Warped to ``S × S``, a dilated box shows the original box in the central ``(S − 2p)²``
    pixels and exactly ``p`` pixels of context on every side (appendix A, "warp" with
    ``p = 16``). Width and height scale independently (the paper's anisotropic warp).
    """
    factor = float(warp_size) / (float(warp_size) - 2.0 * float(context_padding))
    cx = 0.5 * (boxes[..., 0] + boxes[..., 2])
    cy = 0.5 * (boxes[..., 1] + boxes[..., 3])
    half_w = 0.5 * factor * (boxes[..., 2] - boxes[..., 0])
    half_h = 0.5 * factor * (boxes[..., 3] - boxes[..., 1])
    return tf.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def warp_regions(images, boxes, box_indices, warp_size, context_padding=16, fill_value=0.0,
                 image_sizes=None):
    """Crop every box with context padding and warp it to ``S × S``.

    Args:
        images: ``[B, H, W, 3]`` raw pixels (any real dtype), padded bottom/right.
        boxes: ``[K, 4]`` float xyxy continuous pixels.
        box_indices: ``[K]`` int32, the image of each box.
        warp_size: ``S``, Python int.
        context_padding: ``p`` pixels of context at the warped size, ``0 ≤ p < S/2``.
        fill_value: scalar or ``[3]`` pixel used where a dilated box leaves its image (the mean
            pixel, see :func:`rcnn_zoo.models.preprocessing.mean_pixel`).
        image_sizes: optional ``[B, 2]`` (height, width) of each image inside the padded batch;
            default the batch's ``H, W``.

    Returns:
        ``[K, S, S, 3]`` float32. Output pixel ``(i, j)`` holds the bilinear value of the image
        at the source point of its centre, ``x = X1 + (j + ½)·W'/S``, ``y = Y1 + (i + ½)·H'/S``
        for the dilated box ``(X1, Y1, X1 + W', Y1 + H')`` of :func:`context_boxes` (inside the
        image but beyond the outermost pixel centres the edge pixel is repeated), or
        ``fill_value`` when that point lies outside ``[0, width] × [0, height]``.
    """
    return warp_padded(pad_for_warp(images, fill_value, image_sizes), boxes, box_indices, warp_size,
                       context_padding, fill_value, image_sizes)


def _fill_pixel(fill_value):
    """A scalar or ``[3]`` fill value → float32 ``[1, 1, 1, 3]``."""
    return tf.reshape(tf.cast(tf.broadcast_to(fill_value, [3]), tf.float32), [1, 1, 1, 3])


def pad_for_warp(images, fill_value=0.0, image_sizes=None):
    """``images − fill_value`` with every image's edge pixels repeated one pixel beyond its own
    size, float32 ``[B, H+2, W+2, 3]``: what :func:`warp_padded` samples. Computing it once per
    image set saves redoing it for every batch of regions.

    ``image_sizes`` (optional ``[B, 2]`` (height, width), default the batch's ``H, W``) marks
    where each image ends inside a batch padded bottom/right: sample points in the last half
    pixel before that edge blend with the repeated edge, not with the batch's padding.
    """
    shifted = tf.cast(images, tf.float32) - _fill_pixel(fill_value)
    shape = tf.shape(shifted)
    if image_sizes is None:
        image_sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
    sizes = tf.cast(image_sizes, tf.int32)
    # Row r of the copy is image row r − 1, clamped into the image's own rows; columns alike.
    rows = tf.minimum(tf.maximum(tf.range(shape[1] + 2)[None, :] - 1, 0), sizes[:, 0:1] - 1)
    columns = tf.minimum(tf.maximum(tf.range(shape[2] + 2)[None, :] - 1, 0), sizes[:, 1:2] - 1)
    shifted = tf.gather(shifted, rows, axis=1, batch_dims=1)
    return tf.gather(shifted, columns, axis=2, batch_dims=1)


def _sample_centres(boxes, warp_size, context_padding):
    """Source points of the output pixel centres: ``(xs [K, S], ys [K, S])`` pixels."""
    dilated = context_boxes(boxes, warp_size, context_padding)
    step_x = (dilated[:, 2] - dilated[:, 0]) / warp_size
    step_y = (dilated[:, 3] - dilated[:, 1]) / warp_size
    centres = tf.range(warp_size, dtype=tf.float32) + 0.5
    xs = dilated[:, 0:1] + centres[None, :] * step_x[:, None]
    ys = dilated[:, 1:2] + centres[None, :] * step_y[:, None]
    return xs, ys


def warp_padded(padded, boxes, box_indices, warp_size, context_padding=16, fill_value=0.0,
                image_sizes=None):
    """:func:`warp_regions` on images already prepared by :func:`pad_for_warp` (with the same
    ``image_sizes``).

    ``tf.image.crop_and_resize`` does the sampling: it places the first and last samples on
    the box corners it is given, so the normalised corners are those of the first and last
    sample centres, in the copy of the image with one replicated edge pixel on every side.
    """
    warp_size = int(warp_size)
    if not 0 <= context_padding < warp_size / 2:
        raise ValueError(f"context_padding must be in [0, warp_size/2), got {context_padding}")
    boxes = tf.cast(boxes, tf.float32)
    box_indices = tf.cast(box_indices, tf.int32)
    shape = tf.shape(padded)
    height, width = tf.cast(shape[1] - 2, tf.float32), tf.cast(shape[2] - 2, tf.float32)
    if image_sizes is None:
        limits_h = tf.fill(tf.shape(box_indices), height)
        limits_w = tf.fill(tf.shape(box_indices), width)
    else:
        sizes = tf.gather(tf.cast(image_sizes, tf.float32), box_indices)
        limits_h, limits_w = sizes[:, 0], sizes[:, 1]
    xs, ys = _sample_centres(boxes, warp_size, context_padding)

    # Continuous x lies at index x − ½ of the image, x + ½ of the edge-padded copy, whose
    # index range [0, W + 1] crop_and_resize normalises by W + 1.
    normalised = tf.stack(
        [
            (ys[:, 0] + 0.5) / (height + 1.0),
            (xs[:, 0] + 0.5) / (width + 1.0),
            (ys[:, -1] + 0.5) / (height + 1.0),
            (xs[:, -1] + 0.5) / (width + 1.0),
        ],
        axis=-1,
    )
    crops = tf.image.crop_and_resize(
        padded, normalised, box_indices, [warp_size, warp_size], method="bilinear",
        extrapolation_value=0.0,
    )
    inside_x = (xs >= 0.0) & (xs <= limits_w[:, None])
    inside_y = (ys >= 0.0) & (ys <= limits_h[:, None])
    inside = inside_y[:, :, None, None] & inside_x[:, None, :, None]
    # The padded copy holds image − fill, so zeroing outside points and adding fill back puts
    # exactly fill_value there and the image's own pixels everywhere else.
    return tf.where(inside, crops, 0.0) + _fill_pixel(fill_value)
