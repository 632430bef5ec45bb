"""A small fast backbone for tests and CPU training from scratch.

Five conv blocks (3×3 conv + batch norm + ReLU), stride 8, 128 channels. Batch norm trains here
(it is not frozen as for ImageNet trunks): from scratch it is what lets such a net learn quickly.
"""

import keras
from keras import layers

from rcnn_zoo.backbones.base import Backbone


def _block(x, filters, stride, name):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def build_tiny(weights=None, width=32, stride=8):
    """Trunk with ``log2(stride)`` stride-2 blocks; channels double per stride-2 block up to 4×width."""
    if weights is not None:
        raise ValueError("backbone 'tiny' has no pretrained weights; use backbone_weights=None")
    images = keras.Input((None, None, 3), name="images")
    x = _block(images, width, 1, "tiny1")
    level, filters, index = 1, width, 2
    while level < stride:
        filters = min(filters * 2, 4 * width)
        x = _block(x, filters, 2, f"tiny{index}")
        x = _block(x, filters, 1, f"tiny{index + 1}")
        level, index = level * 2, index + 2
    model = keras.Model(images, {"C": x}, name="tiny")
    return Backbone(
        model=model,
        feature_names=("C",),
        strides=(stride,),
        channels=(filters,),
        preprocessing="unit",
        roi_head="fc",
        defaults={
            "roi_pooling": "align",
            "roi_pool_size": 7,
            "roi_head_dim": 256,
            "anchor_sizes": ((16, 32, 64),),
            "anchor_aspect_ratios": (0.5, 1.0, 2.0),
            "anchor_style": "torchvision",
            "image_min_size": None,
            "image_max_size": None,
            "rpn_pre_nms_top_n_train": 600,
            "rpn_post_nms_top_n_train": 300,
            "rpn_pre_nms_top_n_test": 300,
            "rpn_post_nms_top_n_test": 100,
            "rpn_min_size": 0.0,
            "roi_batch_size_per_image": 128,
        },
    )
