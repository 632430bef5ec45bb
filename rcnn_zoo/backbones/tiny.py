"""Small fast backbones for tests and CPU training from scratch.

``tiny``: six 3×3 conv + batch norm + ReLU blocks, stride 8, 64 output channels, about 60 M
multiply-adds for a 128×128 image (receptive field 55 px; the RPN's 3×3 conv takes it to 71 px).
Batch norm trains here (it is not frozen as for ImageNet trunks): from scratch it is what lets
such a net learn quickly.

``tiny_fpn``: the same six blocks with group norm (Wu & He 2018: its statistics are per image,
so they do not depend on the batch of 2–4 photos a CPU trains on) and a seventh block to stride
16, under a 64-channel FPN (Lin et al. 2017): P2 (stride 4), P3 and P4. The RPN reads P3 with
all of tiny's anchors (as tiny, one level: an RPN head on P2 would cost as much again as the
whole FPN); RoIs are pooled from P2–P4 by their size (FPN eq. 1), so a small object's RoIAlign
samples the stride-4 map. 1.5–1.8× tiny's training step (measured by ``--time-budget``'s recipe).
"""

import keras
from keras import layers

from rcnn_zoo.backbones.base import Backbone
from rcnn_zoo.backbones.fpn import add_fpn

# (filters, stride) per block: stride 2 early keeps the full-resolution cost low.
TINY_BLOCKS = ((16, 2), (32, 2), (32, 1), (64, 2), (64, 1), (64, 1))
# tiny_fpn: TINY_BLOCKS and one block to stride 16; the FPN reads the last block of each stride.
TINY_FPN_BLOCKS = TINY_BLOCKS + ((128, 2),)
TINY_FPN_CHANNELS = 64
# Group norm groups (Wu & He 2018 use 32 groups of ResNet's 64+ channels; 8 keeps at least
# two channels per group on the 16-channel first block).
GROUP_NORM_GROUPS = 8
# Detector defaults of both: tiny's anchors are for its 128-px test pictures (the CLI sets 32–256
# px and an image size for photos: rcnn_zoo.training.detectors).
TINY_DEFAULTS = {
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
}


def _block(x, filters, stride, name, norm="batch"):
    """3×3 conv (no bias) → batch or group norm → ReLU; layers ``{name}_conv``, ``{name}_bn`` or
    ``{name}_gn``, ``{name}_relu``."""
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    if norm == "group":
        x = layers.GroupNormalization(GROUP_NORM_GROUPS, epsilon=1e-5, name=f"{name}_gn")(x)
    else:
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
        defaults=dict(TINY_DEFAULTS),
    )


def tiny_fpn_trunk(blocks=TINY_FPN_BLOCKS, norm="group"):
    """Images ``[B,H,W,3]`` → ``{"C2": [B,H/4,W/4,32], "C3": [B,H/8,W/8,64],
    "C4": [B,H/16,W/16,128]}``: the output of the last block of each stride ≥ 4."""
    images = keras.Input((None, None, 3), name="images")
    x, stride, outputs = images, 1, {}
    for index, (filters, block_stride) in enumerate(blocks):
        x = _block(x, filters, block_stride, f"tiny{index + 1}", norm)
        stride *= block_stride
        if stride >= 4:
            outputs[f"C{stride.bit_length() - 1}"] = x  # later blocks of a stride overwrite
    return keras.Model(images, outputs, name="tiny_fpn_trunk")


def build_tiny_fpn(weights=None):
    """Images ``[B,H,W,3]`` → ``{"P2": [B,H/4,W/4,64], "P3": [B,H/8,W/8,64],
    "P4": [B,H/16,W/16,64]}``; the RPN reads P3 only."""
    if weights is not None:
        raise ValueError("backbone 'tiny_fpn' has no pretrained weights; use backbone_weights=None")
    trunk = tiny_fpn_trunk()
    model = add_fpn(trunk, ["C2", "C3", "C4"], TINY_FPN_CHANNELS, extra_pool=False)
    return Backbone(
        model=model,
        feature_names=("P2", "P3", "P4"),
        strides=(4, 8, 16),
        channels=(TINY_FPN_CHANNELS,) * 3,
        rpn_feature_names=("P3",),
        preprocessing="unit",
        roi_head="fc",
        # tiny's, the RoIs pooled from three levels: the RPN has tiny's one level and anchors.
        defaults={**TINY_DEFAULTS, "roi_levels": ("P2", "P3", "P4")},
    )
