"""RoIAlign (Mask R-CNN, He et al. 2017, §3) as a Keras layer.

Shapes: ``B`` images, ``R`` RoIs per image, ``H, W, C`` feature map, ``ph, pw`` pooled size.
RoIs are float32 ``xyxy`` in input-image pixels; ``spatial_scale`` maps them onto the feature
map.
"""

import keras
import tensorflow as tf

from rcnn_zoo import ops
from rcnn_zoo.layers.roi_pooling import _check_rank, rois_to_rows, rows_to_per_image
from rcnn_zoo.ops._validation import pair


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class RoIAlign(keras.layers.Layer):
    """Bilinearly samples each RoI on a ``pool_size`` grid and averages the samples of a bin.

    Calls :func:`rcnn_zoo.ops.roi_align` on ``[B·R, 5]`` rows it builds from per-image RoIs.

    Args:
        pool_size: ``(ph, pw)`` output grid, or one int for a square grid.
        spatial_scale: feature-map cells per input pixel (1/16 for a stride-16 map).
        sampling_ratio: samples per bin side; ``-1`` (or ``<= 0``) adapts it to the bin size,
            ``ceil(roi_size / pool_size)``, as in Detectron and torchvision.
        aligned: if ``True`` shift the RoI by −0.5 cell (pixel-centre model, torchvision
            ``aligned=True``, detectron2 ``ROIAlignV2``); ``False`` is the original RoIAlign.

    Call arguments:
        features: ``[B, H, W, C]`` feature map (float32 or float16; the op handles the casting).
        rois: ``[B, R, 4]`` RoIs ``(x1, y1, x2, y2)`` in input-image pixels; ``B`` and ``R`` may
            be unknown and ``R`` may be 0.

    Returns:
        ``[B, R, ph, pw, C]`` pooled features, in the dtype the op returns for ``features``.
    """

    def __init__(
        self, pool_size=(7, 7), spatial_scale=1.0 / 16, sampling_ratio=-1, aligned=False, **kwargs
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def call(self, features, rois):
        features = tf.convert_to_tensor(features)
        rois = tf.convert_to_tensor(rois)
        _check_rank(features, rois)
        ph, pw = pair(self.pool_size, "pool_size", "RoIAlign")
        pooled = ops.roi_align(
            features,
            rois_to_rows(rois),
            pool_size=(ph, pw),
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )
        return rows_to_per_image(pooled, rois, [ph, pw, features.shape[-1]])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pool_size": self.pool_size,
                "spatial_scale": self.spatial_scale,
                "sampling_ratio": self.sampling_ratio,
                "aligned": self.aligned,
            }
        )
        return config
