"""Image resizing, normalisation and batching done inside the models, so callers pass raw pixels.

A batch is ``images [B, H, W, 3]`` (uint8 or float, RGB, 0..255) with each image's own size
``image_sizes [B, 2]`` ``(height, width)``: image ``i`` occupies ``images[i, :h_i, :w_i]`` and
the rest is padding (a plain tensor means every image fills the batch). Each image is resized
by its own scale — shorter side to ``min_size`` unless the longer would exceed ``max_size``, the
Fast R-CNN rule — normalised as the backbone's pretraining did, then the batch is zero-padded
(after normalisation, as torchvision and MMDetection do) at the bottom/right to a multiple of
``size_divisible``. So a portrait photo next to a landscape one is resized exactly as it is alone.

Resize rounding (``rounding``), the one place implementations disagree by a pixel:

- ``"round"``: ``new = ⌊size · scale + 0.5⌋`` with the scale in float64 — MMDetection
  (mmcv ``rescale_size``) and py-faster-rcnn; rcnn_zoo's default.
- ``"floor"``: ``new = ⌊size · scale⌋`` in float64 — torchvision's eager
  ``GeneralizedRCNNTransform`` (640×480 → 1066×800 where rounding gives 1067).
"""

import tensorflow as tf

# Per-channel RGB means/stds in 0..255 pixels.
_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PREPROCESSING_MODES = ("caffe", "torch", "raw", "unit")
RESIZE_ROUNDINGS = ("round", "floor")


def check_resize_rounding(rounding):
    if rounding not in RESIZE_ROUNDINGS:
        raise ValueError(f"resize rounding must be one of {RESIZE_ROUNDINGS}, got {rounding!r}")
    return rounding


def resized_sizes(sizes, min_size, max_size, rounding="round"):
    """New ``(height, width)`` of images of ``sizes`` (int ``[..., 2]``) → int32 ``[..., 2]``.

    ``min_size``/``max_size`` ``None`` disable that side's rule (both ``None``: unchanged).
    """
    check_resize_rounding(rounding)
    sizes = tf.cast(sizes, tf.int32)
    if min_size is None and max_size is None:
        return sizes
    dtype = tf.float64  # both references compute the scale in Python floats
    real = tf.cast(sizes, dtype)
    scale = tf.fill(tf.shape(real)[:-1], tf.constant(float("inf"), dtype))
    if min_size is not None:
        scale = tf.constant(float(min_size), dtype) / tf.reduce_min(real, axis=-1)
    if max_size is not None:
        scale = tf.minimum(scale, tf.constant(float(max_size), dtype) / tf.reduce_max(real, axis=-1))
    exact = real * scale[..., None]
    new = tf.floor(exact) if rounding == "floor" else tf.floor(exact + 0.5)
    return tf.maximum(tf.cast(new, tf.int32), 1)


def padded_size(sizes, size_divisible=1):
    """The batch size ``[2]`` int32 holding every ``sizes [B, 2]``, rounded up to the divisor."""
    size = tf.reduce_max(tf.cast(sizes, tf.int32), axis=0)
    if size_divisible and int(size_divisible) > 1:
        d = int(size_divisible)
        size = (size + d - 1) // d * d
    return size


def full_image_sizes(images):
    """``[B, 2]`` int32 sizes of a batch in which every image fills ``images [B, H, W, 3]``."""
    shape = tf.shape(images)
    return tf.tile(shape[None, 1:3], [shape[0], 1])


def preprocess_batch(images, image_sizes, min_size, max_size, mode, rounding="round", size_divisible=1):
    """Raw padded batch → the backbone's input (see the module docstring).

    Args:
        images: ``[B, H, W, 3]`` uint8 or float RGB 0..255.
        image_sizes: int ``[B, 2]`` each image's ``(height, width)`` inside ``images``.
        min_size, max_size, rounding: the resize rule; mode: normalisation; size_divisible:
            pad the batch to a multiple of it (FPN: 32).
    Returns:
        ``(normalised [B, H', W', 3] float32, resized_sizes [B, 2] int32)``: image ``i`` is
        ``normalised[i, :h'_i, :w'_i]``, zeros after it.
    """
    images = tf.cast(images, tf.float32)
    image_sizes = tf.cast(image_sizes, tf.int32)
    new_sizes = resized_sizes(image_sizes, min_size, max_size, rounding)
    target = padded_size(new_sizes, size_divisible)
    resize = min_size is not None or max_size is not None

    def one(args):
        image, size, new = args
        image = image[: size[0], : size[1]]
        if resize:
            image = tf.image.resize(image, new, method="bilinear")
        image = normalize(image, mode)
        return tf.pad(image, [[0, target[0] - new[0]], [0, target[1] - new[1]], [0, 0]])

    normalised = tf.map_fn(
        one,
        (images, image_sizes, new_sizes),
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32),
    )
    return normalised, new_sizes


def resize_images(images, min_size, max_size, rounding="round"):
    """Resize a batch of equal-size images by one scale (input pipelines).

    Returns ``([B,H',W',3]`` float32, ``scale [2]`` = ``(H'/H, W'/W)``): the exact per-axis
    factors after rounding the new size to whole pixels, so boxes map back without drift.
    """
    images = tf.cast(images, tf.float32)
    if min_size is None and max_size is None:
        return images, tf.ones([2], tf.float32)
    old_size = tf.shape(images)[1:3]
    new_size = resized_sizes(old_size, min_size, max_size, rounding)
    resized = tf.image.resize(images, new_size, method="bilinear")
    return resized, tf.cast(new_size, tf.float32) / tf.cast(old_size, tf.float32)


def normalize(images, mode):
    """Normalise float RGB 0..255 images ``[B,H,W,3]`` the way the backbone was trained.

    ``caffe``: BGR minus ImageNet mean (keras.applications VGG16/ResNet, py-faster-rcnn);
    ``torch``: RGB, (x/255 − mean)/std (torchvision); ``raw``: unchanged (the backbone rescales
    itself, e.g. MobileNetV3); ``unit``: x/255 − 0.5 (small backbones trained from scratch).
    """
    if mode == "caffe":
        return images[..., ::-1] - tf.constant(_CAFFE_MEAN_BGR, images.dtype)
    if mode == "torch":
        return (images - tf.constant(_IMAGENET_MEAN, images.dtype)) / tf.constant(
            _IMAGENET_STD, images.dtype
        )
    if mode == "raw":
        return images
    if mode == "unit":
        return images / 255.0 - 0.5
    raise ValueError(f"Unknown preprocessing mode {mode!r}; expected one of {PREPROCESSING_MODES}")


def mean_pixel(mode):
    """Raw RGB pixel (0..255) that the backbone's normalisation ``mode`` maps to zero.

    R-CNN pads warped regions with it where they leave the image, as the paper pads with the
    mean image that is then subtracted.
    """
    if mode == "caffe":
        return tuple(reversed(_CAFFE_MEAN_BGR))
    if mode == "torch":
        return tuple(_IMAGENET_MEAN)
    if mode in ("unit", "raw"):  # unit: x/255 − 0.5; raw (MobileNet) rescales 127.5 to 0
        return (127.5, 127.5, 127.5)
    raise ValueError(f"Unknown preprocessing mode {mode!r}")
