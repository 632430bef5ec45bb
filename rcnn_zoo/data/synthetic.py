"""Synthetic detection images: coloured shapes on textured backgrounds, with exact boxes.

Shapes: ``N`` images, ``H, W`` image height and width, ``G = max_shapes`` box slots per image.

Every image has a background texture (noise, a linear gradient or stripes, at a random angle and
with two random colours, plus mild pixel noise) and ``min_shapes … max_shapes`` solid shapes of
the classes :data:`CLASS_NAMES`: a circle (``size`` = diameter), an axis-aligned square
(``size`` = side) or a randomly rotated equilateral triangle (``size`` = diameter of its
circumscribed circle). Shapes are drawn without anti-aliasing, a pixel belonging to a shape when
its centre is inside it.

Boxes are xyxy in continuous pixel coordinates, tight around the drawn pixels: a shape whose
pixels span columns ``c0 … c1`` has ``x1 = c0``, ``x2 = c1 + 1``. Shapes never share or touch
pixels (a gap of at least ``_GAP`` pixels) and their boxes overlap by at most
``_MAX_BOX_IOU`` IoU, so every shape is fully visible and its box is also tight around its
visible pixels. Each shape's colour differs clearly from the background under it. If a shape
cannot be placed after ``_PLACEMENT_TRIES`` attempts (crowded small images) it is left out.

Image ``i`` depends only on ``(seed, i)`` and the generation arguments.
"""

import math

import numpy as np
import tensorflow as tf

CLASS_NAMES = ("circle", "square", "triangle")

_GAP = 2
_MAX_BOX_IOU = 0.3
_PLACEMENT_TRIES = 50
_COLOUR_TRIES = 20
_MIN_CONTRAST = 60  # largest channel difference, shape colour vs background under it


def _background(rng, height, width):
    """``[H, W, 3]`` float32 texture in ``[0, 255]``."""
    colours = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    kind = rng.integers(3)
    angle = rng.uniform(0, math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = xs * math.cos(angle) + ys * math.sin(angle)  # coordinate along the texture axis
    if kind == 0:  # blocky noise around one colour
        cell = int(rng.integers(1, 5))
        coarse = rng.normal(0, rng.uniform(15, 45), size=(-(-height // cell), -(-width // cell), 3))
        noise = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:height, :width]
        image = colours[0] + noise.astype(np.float32)
    elif kind == 1:  # linear gradient between the two colours
        t = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
        image = colours[0] + t[..., None] * (colours[1] - colours[0])
    else:  # hard stripes of the two colours
        period = rng.uniform(6, 24)
        stripe = (np.floor(along / (0.5 * period)) % 2).astype(np.float32)
        image = colours[0] + stripe[..., None] * (colours[1] - colours[0])
    image = image + rng.normal(0, 4, size=(height, width, 3)).astype(np.float32)
    return np.clip(image, 0, 255)


def _shape_mask(class_id, size, rng):
    """Tight ``[h, w]`` bool mask of one shape drawn at scale ``size`` (pixels)."""
    centres = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    px, py = np.meshgrid(centres, centres)
    c = 0.5 * size
    if CLASS_NAMES[class_id] == "circle":
        mask = (px - c) ** 2 + (py - c) ** 2 <= c * c
    elif CLASS_NAMES[class_id] == "square":
        mask = np.ones((size, size), dtype=bool)
    else:  # triangle: inside all three edges of a rotated equilateral triangle
        theta = rng.uniform(0, 2 * math.pi) + np.array([0.0, 2.0, 4.0]) * math.pi / 3
        vx, vy = c + c * np.cos(theta), c + c * np.sin(theta)
        mask = np.ones((size, size), dtype=bool)
        for i in range(3):  # three half-plane tests on the whole grid
            j = (i + 1) % 3
            cross = (vx[j] - vx[i]) * (py - vy[i]) - (vy[j] - vy[i]) * (px - vx[i])
            mask &= cross >= 0  # vertices are counter-clockwise in image coordinates
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _dilate(mask, radius):
    """Binary dilation by a ``(2r+1)²`` square, returned padded by ``radius`` on every side."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    out = padded.copy()
    for d in range(1, radius + 1):  # separable: rows, then columns
        out[:, d:] |= padded[:, :-d]
        out[:, :-d] |= padded[:, d:]
    rows = out.copy()
    for d in range(1, radius + 1):
        out[d:, :] |= rows[:-d, :]
        out[:-d, :] |= rows[d:, :]
    return out


def _box_iou(box, boxes):
    if not boxes:
        return np.zeros(0)
    boxes = np.asarray(boxes, dtype=np.float64)
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter)


def _pick_colour(rng, under):
    """A colour whose largest channel difference to ``under [K, 3]`` exceeds the contrast."""
    best, best_score = None, -1.0
    for _ in range(_COLOUR_TRIES):
        colour = rng.integers(0, 256, size=3)
        score = float(np.mean(np.abs(under - colour).max(axis=-1) >= _MIN_CONTRAST))
        if score > best_score:
            best, best_score = colour, score
        if score >= 0.98:
            break
    return best


def _one_image(rng, height, width, min_shapes, max_shapes, min_size, max_size):
    image = _background(rng, height, width)
    occupied = np.zeros((height, width), dtype=bool)
    boxes, labels = [], []
    num_shapes = int(rng.integers(min_shapes, max_shapes + 1))
    largest = min(max_size, height, width)
    for _ in range(num_shapes):
        for _ in range(_PLACEMENT_TRIES):
            class_id = int(rng.integers(len(CLASS_NAMES)))
            size = int(rng.integers(min(min_size, largest), largest + 1))
            mask = _shape_mask(class_id, size, rng)
            h, w = mask.shape
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            box = (x0, y0, x0 + w, y0 + h)
            if np.any(_box_iou(box, boxes) > _MAX_BOX_IOU):
                continue
            grown = _dilate(mask, _GAP)  # [h + 2g, w + 2g], top-left at (y0 - g, x0 - g)
            gy0, gx0 = y0 - _GAP, x0 - _GAP
            cy0, cx0 = max(gy0, 0), max(gx0, 0)
            cy1, cx1 = min(gy0 + h + 2 * _GAP, height), min(gx0 + w + 2 * _GAP, width)
            near = grown[cy0 - gy0:cy1 - gy0, cx0 - gx0:cx1 - gx0]
            if np.any(near & occupied[cy0:cy1, cx0:cx1]):
                continue
            region = image[y0:y0 + h, x0:x0 + w]
            colour = _pick_colour(rng, region[mask])
            region[mask] = colour
            occupied[y0:y0 + h, x0:x0 + w] |= mask
            boxes.append(box)
            labels.append(class_id)
            break
    return image, boxes, labels


def generate_shapes(
    num_images,
    image_size=(128, 128),
    min_shapes=1,
    max_shapes=3,
    min_size=16,
    max_size=64,
    seed=0,
):
    """Generate synthetic detection images as NumPy arrays.

    Args:
        num_images: ``N``.
        image_size: ``(H, W)`` in pixels.
        min_shapes, max_shapes: number of shapes drawn per image (uniform, inclusive); also
            ``G = max_shapes`` box slots per image.
        min_size, max_size: shape scale in pixels (uniform, inclusive; clipped to the image).
        seed: Python int; image ``i`` depends only on ``(seed, i)`` and the other arguments.

    Returns:
        ``(images, boxes, labels)``: ``[N, H, W, 3]`` uint8; ``[N, G, 4]`` float32 xyxy tight
        boxes in pixels (zeros in padding slots); ``[N, G]`` int32 classes indexing
        :data:`CLASS_NAMES`, ``-1`` in padding slots.
    """
    height, width = (int(v) for v in image_size)
    if not 0 <= min_shapes <= max_shapes or max_shapes < 1:
        raise ValueError(
            f"need 0 <= min_shapes <= max_shapes and max_shapes >= 1, got {min_shapes}, {max_shapes}"
        )
    if not 3 <= min_size <= max_size:
        raise ValueError(f"need 3 <= min_size <= max_size, got {min_size}, {max_size}")
    images = np.zeros((num_images, height, width, 3), dtype=np.uint8)
    boxes = np.zeros((num_images, max_shapes, 4), dtype=np.float32)
    labels = np.full((num_images, max_shapes), -1, dtype=np.int32)
    for i in range(num_images):
        rng = np.random.default_rng([int(seed), i])
        image, image_boxes, image_labels = _one_image(
            rng, height, width, min_shapes, max_shapes, min_size, max_size
        )
        images[i] = np.round(image).astype(np.uint8)
        if image_boxes:
            boxes[i, : len(image_boxes)] = image_boxes
            labels[i, : len(image_labels)] = image_labels
    return images, boxes, labels


def shapes_dataset(
    num_images,
    batch_size,
    image_size=(128, 128),
    min_shapes=1,
    max_shapes=3,
    min_size=16,
    max_size=64,
    seed=0,
    shuffle=True,
    drop_remainder=True,
):
    """A ``tf.data.Dataset`` of synthetic shapes, ready for ``model.fit``.

    The ``num_images`` images are generated once (:func:`generate_shapes`) and kept in memory.

    Args:
        num_images, image_size, min_shapes, max_shapes, min_size, max_size, seed: as
            :func:`generate_shapes`.
        batch_size: images per batch ``B``.
        shuffle: reshuffle the images every epoch (seeded by ``seed``).
        drop_remainder: drop a last, smaller batch so every batch has static shape ``B``.

    Returns:
        Dataset of ``(images, {"boxes": boxes, "labels": labels})``: ``[B, H, W, 3]`` float32 in
        ``0 … 255``, ``[B, G, 4]`` float32 xyxy pixels, ``[B, G]`` int32 (``-1`` padding).
    """
    images, boxes, labels = generate_shapes(
        num_images, image_size, min_shapes, max_shapes, min_size, max_size, seed
    )
    dataset = tf.data.Dataset.from_tensor_slices((images, {"boxes": boxes, "labels": labels}))
    if shuffle:
        dataset = dataset.shuffle(num_images, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(
        lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
