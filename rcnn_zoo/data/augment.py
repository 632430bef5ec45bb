"""Geometric augmentations of one training image and its boxes, as ``tf.data`` map functions.

Shape shorthand: ``H, W`` image height and width, ``n`` boxes of the image. Images are float32
``[H, W, 3]`` RGB in 0..255; boxes float32 ``[n, 4]`` xyxy in (continuous) pixels of that image
(``docs/conventions.md``). ``seed`` is a stateless seed, int ``[2]``
(``tf.random.experimental.stateless_split``), so the same seed gives the same augmentation.
"""

import tensorflow as tf

__all__ = ["random_crop", "zoom_out"]


def random_crop(image, boxes, labels, seed, min_scale):
    """Crop a random window of ``min_scale … 1`` of each side; keep boxes whose centre is in
    it (clipped). When no box would remain, the image is left as it is.

    Returns:
        ``(image [h, w, 3], boxes [m, 4] xyxy pixels of the crop, labels [m])``.
    """
    shape = tf.shape(image)
    size = tf.cast(shape[:2], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    fraction = tf.random.stateless_uniform([2], seeds[0], min_scale, 1.0)
    crop = tf.maximum(tf.cast(tf.round(size * fraction), tf.int32), 1)
    room = tf.cast(shape[:2] - crop, tf.float32)
    start = tf.cast(tf.floor(tf.random.stateless_uniform([2], seeds[1]) * (room + 1.0)), tf.int32)
    start = tf.minimum(start, shape[:2] - crop)
    y0, x0 = tf.cast(start[0], tf.float32), tf.cast(start[1], tf.float32)
    ch, cw = tf.cast(crop[0], tf.float32), tf.cast(crop[1], tf.float32)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    inside = (cx > x0) & (cx < x0 + cw) & (cy > y0) & (cy < y0 + ch)
    moved = boxes - tf.stack([x0, y0, x0, y0])
    moved = tf.minimum(tf.maximum(moved, 0.0), tf.stack([cw, ch, cw, ch]))

    def cropped():
        window = image[start[0] : start[0] + crop[0], start[1] : start[1] + crop[1]]
        return window, tf.boolean_mask(moved, inside), tf.boolean_mask(labels, inside)

    usable = tf.reduce_any(inside) | (tf.size(labels) == 0)
    return tf.cond(usable, cropped, lambda: (image, boxes, labels))


def zoom_out(image, boxes, seed, max_ratio):
    """Place the image at a random spot of a canvas ``1 … max_ratio`` times larger, filled
    with the image's mean colour (SSD's "expand").

    Returns:
        ``(image [H', W', 3], boxes [n, 4] xyxy pixels of the canvas)``.
    """
    shape = tf.shape(image)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    ratio = tf.random.stateless_uniform([], seeds[0], 1.0, max_ratio)
    canvas = tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * ratio), tf.int32)
    room = canvas - shape[:2]
    start = tf.cast(tf.floor(tf.random.stateless_uniform([2], seeds[1]) * tf.cast(room + 1, tf.float32)), tf.int32)
    start = tf.minimum(start, room)
    mean = tf.reduce_mean(image, axis=[0, 1])
    padded = tf.pad(image - mean, [[start[0], room[0] - start[0]], [start[1], room[1] - start[1]], [0, 0]])
    offset = tf.cast(tf.stack([start[1], start[0], start[1], start[0]]), tf.float32)
    return padded + mean, boxes + offset
