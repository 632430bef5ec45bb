"""Position-sensitive RoI pooling (R-FCN, Dai et al. 2016, §2) as a Keras layer.

Shapes: ``B`` images, ``R`` RoIs per image, ``k`` group size, ``D`` output channels (classes,
or ``4`` / ``4·classes`` for box regression). The score maps have ``C = k·k·D`` channels.
RoIs are float32 ``xyxy`` in input-image pixels.
"""

import keras
import tensorflow as tf

from rcnn_zoo import ops
from rcnn_zoo.layers.roi_pooling import _check_rank, rois_to_rows, rows_to_per_image


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class PSRoIPooling(keras.layers.Layer):
    """Average-pools bin ``(i, j)`` of each RoI from its own group of ``D`` score maps.

    Calls :func:`rcnn_zoo.ops.ps_roi_pool` (R-FCN's Caffe op semantics) on ``[B·R, 5]`` rows it
    builds from per-image RoIs. R-FCN votes by averaging the ``k×k`` output afterwards.

    Args:
        group_size: ``k``, the side of the position-sensitive grid (7 in R-FCN).
        output_dim: ``D``, channels per bin (``num_classes + 1`` for scores, 8 for
            class-agnostic box regression).
        spatial_scale: feature-map cells per input pixel (1/16 for ResNet-101 conv5 with
            dilation).

    Call arguments:
        features: ``[B, H, W, k·k·D]`` position-sensitive score maps (float32 or float16).
        rois: ``[B, R, 4]`` RoIs ``(x1, y1, x2, y2)`` in input-image pixels; ``B`` and ``R`` may
            be unknown and ``R`` may be 0.

    Returns:
        ``[B, R, k, k, D]`` pooled scores, in the dtype the op returns for ``features``.
    """

    def __init__(self, group_size=7, output_dim=21, spatial_scale=1.0 / 16, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.group_size = group_size
        self.output_dim = output_dim
        self.spatial_scale = spatial_scale

    def call(self, features, rois):
        features = tf.convert_to_tensor(features)
        rois = tf.convert_to_tensor(rois)
        _check_rank(features, rois)
        pooled = ops.ps_roi_pool(
            features,
            rois_to_rows(rois),
            group_size=self.group_size,
            output_dim=self.output_dim,
            spatial_scale=self.spatial_scale,
        )
        k = int(self.group_size)
        return rows_to_per_image(pooled, rois, [k, k, int(self.output_dim)])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "group_size": self.group_size,
                "output_dim": self.output_dim,
                "spatial_scale": self.spatial_scale,
            }
        )
        return config
