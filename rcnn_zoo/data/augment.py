"""Random augmentations of one training image and its boxes, and the options that choose them.

Shape shorthand: ``H, W`` image height and width, ``n`` boxes of the image. Images are float32
``[H, W, 3]`` RGB in 0..255; boxes float32 ``[n, 4]`` xyxy in (continuous) pixels of that image
(``docs/conventions.md``). ``seed`` is a stateless seed, int ``[2]``
(``tf.random.experimental.stateless_split``), so the same seed gives the same augmentation.

:class:`Augmentation` holds every option and :meth:`Augmentation.apply` runs them in one fixed
order (flip → jitter → zoom out → crop); the input pipeline calls it once per image.
"""

import dataclasses

import tensorflow as tf

__all__ = [
    "DEFAULT_JITTER",
    "Jitter",
    "ZoomOut",
    "Crop",
    "Augmentation",
    "random_flip",
    "photometric_jitter",
    "random_crop",
    "zoom_out",
]

# Photometric jitter strengths used by ``jitter=True`` (SSD-style colour distortion, mild).
DEFAULT_JITTER = {"brightness": 32.0 / 255.0, "contrast": 0.5, "saturation": 0.5, "hue": 0.05}

# The zoom-out and crop draws are keyed ``(element random, 7)``, flip and jitter ``(element
# random, record index)``: as the two stages that this one pass replaced keyed them, so that a
# fixed seed gives the same batches as before. (Known and kept with the stream: for the record
# at index 7 the two keys are equal, so its flip and zoom-out decisions share one draw.)
_GEOMETRIC_KEY = 7


@dataclasses.dataclass(frozen=True)
class Jitter:
    """Photometric jitter strengths; 0 turns one off.

    Attributes:
        brightness: max delta added, on the 0..1 scale of the pixels.
        contrast, saturation: the factor is drawn from ``1 ± value``.
        hue: max delta of the hue, 0..0.5.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    @classmethod
    def parse(cls, jitter):
        """``True`` → :data:`DEFAULT_JITTER`; a dict with some of its keys → those strengths;
        ``None``/``False``/all zero → None (no jitter). Unknown keys raise ``ValueError``."""
        if jitter is None or jitter is False:
            return None
        if jitter is True:
            jitter = DEFAULT_JITTER
        unknown = set(jitter) - set(DEFAULT_JITTER)
        if unknown:
            raise ValueError(f"unknown jitter keys {sorted(unknown)}; use {sorted(DEFAULT_JITTER)}")
        parsed = cls(**{k: float(v) for k, v in jitter.items() if v})
        return parsed if parsed != cls() else None


@dataclasses.dataclass(frozen=True)
class ZoomOut:
    """Zoom-out (:func:`zoom_out`): with ``probability``, a canvas ``1 … max_ratio`` times the image."""

    max_ratio: float
    probability: float = 0.5


@dataclasses.dataclass(frozen=True)
class Crop:
    """Random crop (:func:`random_crop`): with ``probability``, ``min_scale … 1`` of each side."""

    probability: float
    min_scale: float = 0.5


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """What happens at random to each training image, in this order (default: nothing).

    Attributes:
        flip: probability 0..1 of a horizontal mirror.
        jitter: a :class:`Jitter`, or None.
        zoom_out: a :class:`ZoomOut`, or None.
        crop: a :class:`Crop`, or None.
    """

    flip: float = 0.0
    jitter: Jitter = None
    zoom_out: ZoomOut = None
    crop: Crop = None

    @property
    def mirror_or_colour(self):
        """Whether flip or jitter is on (they keep the image's size and its boxes' count)."""
        return self.flip > 0 or self.jitter is not None

    @property
    def reframes(self):
        """Whether zoom-out or crop is on: they change the image's size and may drop boxes."""
        return self.zoom_out is not None or self.crop is not None

    @property
    def random(self):
        return self.mirror_or_colour or self.reframes

    def apply(self, image, boxes, labels, element_random, index):
        """Augment one image.

        Args:
            image: float32 ``[H, W, 3]`` 0..255; boxes: float32 ``[n, 4]`` xyxy pixels of it;
                labels: int32 ``[n]``.
            element_random: int64 scalar, drawn anew for each element and epoch.
            index: int64 scalar, the record's index (part of the flip and jitter key).

        Returns:
            ``(image [H', W', 3], boxes [m, 4] xyxy pixels of it, labels [m], flipped bool)``.
        """
        flipped = tf.constant(False)
        if self.mirror_or_colour:
            seeds = tf.random.experimental.stateless_split(tf.stack([element_random, index]), 2)
            if self.flip > 0:
                image, boxes, flipped = random_flip(image, boxes, seeds[0], self.flip)
            if self.jitter is not None:
                image = photometric_jitter(image, self.jitter, seeds[1])
        if self.reframes:
            key = tf.stack([element_random, tf.constant(_GEOMETRIC_KEY, tf.int64)])
            image, boxes, labels = self._reframe(image, boxes, labels, tf.random.experimental.stateless_split(key, 4))
        return image, boxes, labels, flipped

    def _reframe(self, image, boxes, labels, seeds):
        """Zoom-out then crop, each taken with its probability (``seeds`` ``[4, 2]``)."""
        if self.zoom_out is not None:
            image, boxes = tf.cond(
                tf.random.stateless_uniform([], seeds[0]) < self.zoom_out.probability,
                lambda: zoom_out(image, boxes, seeds[1], self.zoom_out.max_ratio),
                lambda: (image, boxes),
            )
        if self.crop is not None:
            image, boxes, labels = tf.cond(
                tf.random.stateless_uniform([], seeds[2]) < self.crop.probability,
                lambda: random_crop(image, boxes, labels, seeds[3], self.crop.min_scale),
                lambda: (image, boxes, labels),
            )
        return image, boxes, labels


def random_flip(image, boxes, seed, probability):
    """Mirror the image horizontally with ``probability``; boxes become ``(W − x2, y1, W − x1, y2)``.

    Returns:
        ``(image [H, W, 3], boxes [n, 4], flipped bool scalar)``.
    """
    flipped = tf.random.stateless_uniform([], seed) < probability
    width = tf.cast(tf.shape(image)[1], tf.float32)
    image = tf.cond(flipped, lambda: tf.reverse(image, axis=[1]), lambda: image)
    mirrored = tf.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    return image, tf.where(flipped, mirrored, boxes), flipped


def photometric_jitter(image, jitter, seed):
    """Random brightness, contrast, saturation and hue (:class:`Jitter` strengths) of a float32
    0..255 image; the result stays in 0..255."""
    image = image / 255.0
    seeds = tf.random.experimental.stateless_split(seed, 4)
    if jitter.brightness:
        image = tf.image.stateless_random_brightness(image, jitter.brightness, seeds[0])
    if jitter.contrast:
        image = tf.image.stateless_random_contrast(image, 1.0 - jitter.contrast, 1.0 + jitter.contrast, seeds[1])
    if jitter.saturation or jitter.hue:
        image = tf.clip_by_value(image, 0.0, 1.0)  # HSV conversion needs 0..1
    if jitter.saturation:
        s = jitter.saturation
        image = tf.image.stateless_random_saturation(image, 1.0 - s, 1.0 + s, seeds[2])
    if jitter.hue:
        image = tf.image.stateless_random_hue(image, jitter.hue, seeds[3])
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


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
