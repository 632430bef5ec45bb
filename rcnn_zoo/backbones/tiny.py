"""A small fast backbone for tests and CPU training from scratch.

Six 3×3 conv + batch norm + ReLU blocks, stride 8, 64 output channels, about 60 M multiply-adds
for a 128×128 image (receptive field 55 px; the RPN's 3×3 conv takes it to 71 px). Batch norm
trains here (it is not frozen as for ImageNet trunks): from scratch it is what lets such a net
learn quickly.
"""

import keras
from keras import layers

from rcnn_zoo.backbones.base import Backbone

# (filters, stride) per block: stride 2 early keeps the full-resolution cost low.
TINY_BLOCKS = ((16, 2), (32, 2), (32, 1), (64, 2), (64, 1), (64, 1))


def _block(x, filters, stride, name):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def build_tiny(weights=None, blocks=TINY_BLOCKS):
    """Images ``[B,H,W,3]`` → ``{"C": [B,H/8,W/8,64]}``."""
    if weights is not None:
        raise ValueError("backbone 'tiny' has no pretrained weights; use backbone_weights=None")
    images = keras.Input((None, None, 3), name="images")
    x, stride = images, 1
    for index, (filters, block_stride) in enumerate(blocks):
        x = _block(x, filters, block_stride, f"tiny{index + 1}")
        stride *= block_stride
    model = keras.Model(images, {"C": x}, name="tiny")
    return Backbone(
        model=model,
        feature_names=("C",),
        strides=(stride,),
        channels=(blocks[-1][0],),
        preprocessing="unit",
        roi_head="fc",
        defaults={
            "roi_pooling": "align",
            "roi_pool_size": 7,
            "roi_sampling_ratio": 2,
            "roi_head_dim": 128,
            "rpn_head_channels": 64,
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
            "roi_batch_size_per_image": 64,
        },
    )
