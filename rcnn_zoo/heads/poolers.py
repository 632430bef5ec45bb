"""RoI feature extraction from one or several feature maps.

Single level: the ``RoIPooling`` / ``RoIAlign`` layers. Several levels (FPN, Lin et al. 2017,
eq. 1): each RoI is pooled from level ``k = ⌊k0 + log2(√(wh)/224)⌋`` clamped to the available
levels, k0 = 4, as in torchvision's ``MultiScaleRoIAlign``.

Shapes: B images, R RoIs per image, K = B·R.
"""

import math

import keras
import tensorflow as tf

from rcnn_zoo.layers.roi_pooling import rois_to_rows
from rcnn_zoo.ops import roi_align


def assign_fpn_levels(boxes, min_level, max_level, canonical_size=224.0, canonical_level=4):
    """FPN level of each box. ``boxes [..., 4]`` xyxy pixels → ``[...]`` int32 in [min, max]."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    size = tf.sqrt(tf.maximum(w * h, 0.0))
    # eps as torchvision: a box of exactly 224 px goes to level 4, not 3 from rounding.
    level = tf.floor(canonical_level + tf.math.log(size / canonical_size + 1e-8) / tf.math.log(2.0) + 1e-6)
    return tf.cast(tf.clip_by_value(level, min_level, max_level), tf.int32)


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class MultiLevelRoIAlign(keras.layers.Layer):
    """RoIAlign over FPN levels: ``call([P_l [B,H_l,W_l,C]], rois [B,R,4])`` → ``[B,R,ph,pw,C]``.

    Each RoI is pooled only from its assigned level (partitioned, then stitched back in order),
    so the cost is that of one RoIAlign over all RoIs.
    """

    def __init__(self, strides, pool_size=7, sampling_ratio=2, aligned=False, **kwargs):
        super().__init__(**kwargs)
        self.strides = tuple(int(s) for s in strides)
        self.pool_size = pool_size
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def call(self, features, rois):
        levels = [int(round(math.log2(s))) for s in self.strides]
        shape = tf.shape(rois)
        rows = rois_to_rows(rois)  # float32
        level = assign_fpn_levels(rows[:, 1:], levels[0], levels[-1]) - levels[0]
        parts = tf.dynamic_partition(rows, level, len(levels))
        positions = tf.dynamic_partition(tf.range(tf.shape(rows)[0]), level, len(levels))
        pooled = [
            tf.cast(
                roi_align(
                    tf.cast(feature, tf.float32),
                    part,
                    pool_size=self.pool_size,
                    spatial_scale=1.0 / stride,
                    sampling_ratio=self.sampling_ratio,
                    aligned=self.aligned,
                ),
                self.compute_dtype,
            )
            for feature, part, stride in zip(features, parts, self.strides)
        ]
        merged = tf.dynamic_stitch(positions, pooled)
        channels = tf.shape(features[0])[-1]
        return tf.reshape(
            merged, (shape[0], shape[1], self.pool_size, self.pool_size, channels)
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "strides": self.strides,
                "pool_size": self.pool_size,
                "sampling_ratio": self.sampling_ratio,
                "aligned": self.aligned,
            }
        )
        return config
