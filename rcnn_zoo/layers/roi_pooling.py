"""RoI max pooling (Fast R-CNN, Girshick 2015, §2.1) as a Keras layer.

Shapes: ``B`` images, ``R`` RoIs per image, ``H, W, C`` feature map, ``ph, pw`` pooled size.
RoIs are float32 ``xyxy`` in input-image pixels; ``spatial_scale`` maps them onto the feature
map (1/16 for VGG16 conv5_3).
"""

import keras
import tensorflow as tf

from rcnn_zoo import ops
from rcnn_zoo.ops._validation import pair


def rois_to_rows(rois):
    """``[B, R, 4]`` per-image RoIs → ``[B·R, 5]`` rows ``(batch_index, x1, y1, x2, y2)``.

    Row ``b·R + r`` is RoI ``r`` of image ``b``; the result is float32 (pixel coordinates must
    not be rounded to float16 under a mixed-precision policy).
    """
    rois = tf.cast(rois, tf.float32)
    shape = tf.shape(rois)
    batch_index = tf.cast(tf.range(shape[0]), tf.float32)
    batch_index = tf.broadcast_to(batch_index[:, None, None], [shape[0], shape[1], 1])
    return tf.reshape(tf.concat([batch_index, rois], axis=-1), [-1, 5])


def rows_to_per_image(pooled, rois, inner_shape):
    """``[B·R, ...]`` pooled features → ``[B, R, *inner_shape]`` with every known dim static.

    ``inner_shape`` lists the per-RoI dims (ints, or ``None`` for one known only at run time);
    it is given by the layer because an op's output may have no static shape.
    """
    dynamic = tf.shape(pooled)
    shape = [
        rois.shape[0] if rois.shape[0] is not None else tf.shape(rois)[0],
        rois.shape[1] if rois.shape[1] is not None else tf.shape(rois)[1],
    ]
    shape += [d if d is not None else dynamic[i + 1] for i, d in enumerate(inner_shape)]
    return tf.reshape(pooled, shape)


def _check_rank(features, rois):
    if features.shape.rank != 4:
        raise ValueError(f"`features` must be [B, H, W, C]; got shape {features.shape}.")
    if rois.shape.rank != 3 or rois.shape[-1] != 4:
        raise ValueError(f"`rois` must be [B, R, 4] (x1, y1, x2, y2); got shape {rois.shape}.")


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class RoIPooling(keras.layers.Layer):
    """Max-pools each RoI into a fixed ``pool_size`` grid (Fast R-CNN's RoI pooling layer).

    Calls :func:`rcnn_zoo.ops.roi_pool` (the Caffe op's quantised bins, inclusive ``+1`` RoI
    size), on ``[B·R, 5]`` rows it builds from per-image RoIs.

    Args:
        pool_size: ``(ph, pw)`` output grid, or one int for a square grid (7×7 for VGG16).
        spatial_scale: feature-map cells per input pixel (1/16 for a stride-16 map).

    Call arguments:
        features: ``[B, H, W, C]`` feature map (float32 or float16; the op handles the casting).
        rois: ``[B, R, 4]`` RoIs ``(x1, y1, x2, y2)`` in input-image pixels; ``B`` and ``R`` may
            be unknown and ``R`` may be 0.

    Returns:
        ``[B, R, ph, pw, C]`` pooled features, in the dtype the op returns for ``features``.
    """

    def __init__(self, pool_size=(7, 7), spatial_scale=1.0 / 16, **kwargs):
        # RoIs are pixel coordinates: never autocast them to float16.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.spatial_scale = spatial_scale

    def call(self, features, rois):
        features = tf.convert_to_tensor(features)
        rois = tf.convert_to_tensor(rois)
        _check_rank(features, rois)
        ph, pw = pair(self.pool_size, "pool_size", "RoIPooling")
        pooled = ops.roi_pool(
            features, rois_to_rows(rois), pool_size=(ph, pw), spatial_scale=self.spatial_scale
        )
        return rows_to_per_image(pooled, rois, [ph, pw, features.shape[-1]])

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "spatial_scale": self.spatial_scale})
        return config
