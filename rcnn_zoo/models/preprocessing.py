"""Image resizing and normalisation done inside the models, so callers pass raw pixels.

Images ``[B, H, W, 3]`` (uint8 or float, RGB, 0..255, padded bottom/right) are resized with one
scale per batch — shorter side to ``min_size`` unless the longer would exceed ``max_size``, the
Fast R-CNN rule — and normalised as the backbone's pretraining did.
"""

import tensorflow as tf

# Per-channel RGB means/stds in 0..255 pixels.
_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PREPROCESSING_MODES = ("caffe", "torch", "raw", "unit")


def resize_scale(height, width, min_size, max_size):
    """Scale factor (float32 scalar tensor) for an image of ``height × width`` pixels."""
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    if min_size is None and max_size is None:
        return tf.constant(1.0)
    scale = tf.constant(float("inf"))
    if min_size is not None:
        scale = float(min_size) / tf.minimum(height, width)
    if max_size is not None:
        scale = tf.minimum(scale, float(max_size) / tf.maximum(height, width))
    return scale


def resize_images(images, min_size, max_size):
    """Resize a padded batch by one scale.

    Returns ``([B,H',W',3]`` float32, ``scale [2]`` = ``(H'/H, W'/W)``): the exact per-axis
    factors after rounding the new size to whole pixels, so boxes map back without drift.
    """
    images = tf.cast(images, tf.float32)
    if min_size is None and max_size is None:
        return images, tf.ones([2], tf.float32)
    shape = tf.shape(images)
    old_size = tf.cast(shape[1:3], tf.float32)
    scale = resize_scale(shape[1], shape[2], min_size, max_size)
    new_size = tf.maximum(tf.cast(tf.round(old_size * scale), tf.int32), 1)
    resized = tf.image.resize(images, new_size, method="bilinear")
    return resized, tf.cast(new_size, tf.float32) / old_size


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
