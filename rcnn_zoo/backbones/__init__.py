"""Backbones by name: ``build_backbone("resnet50_fpn", weights=None)`` → :class:`Backbone`."""

import dataclasses

import keras

from rcnn_zoo.backbones.base import Backbone, check_weights_argument
from rcnn_zoo.backbones.fpn import add_fpn
from rcnn_zoo.backbones.mobilenet import build_mobilenet_v3_large_fpn
from rcnn_zoo.backbones.resnet import build_resnet_c4, copy_imagenet_weights, resnet_trunk
from rcnn_zoo.backbones.tiny import build_tiny, build_tiny_fpn
from rcnn_zoo.backbones.vgg import build_vgg16


def build_resnet50_fpn(weights=None):
    """torchvision's ``fasterrcnn_resnet50_fpn`` layout: ResNet-50 (stride on 3×3, frozen BN,
    stem + conv2 frozen), FPN P2–P6 with 256 channels, multi-level RoIAlign, two-FC (1024) head."""
    check_weights_argument("resnet50_fpn", weights)
    trunk = resnet_trunk("resnet50", stride_in_1x1=False, frozen_bn=True)
    if weights == "imagenet":
        copy_imagenet_weights("resnet50", [trunk])
    model = add_fpn(trunk, ["C2", "C3", "C4", "C5"], 256, extra_pool=True)
    return Backbone(
        model=model,
        feature_names=("P2", "P3", "P4", "P5", "P6"),
        strides=(4, 8, 16, 32, 64),
        channels=(256,) * 5,
        preprocessing="torch",
        roi_head="fc",
        defaults={
            "roi_pooling": "align",
            "roi_pool_size": 7,
            "roi_sampling_ratio": 2,
            "roi_head_dim": 1024,
            "roi_levels": ("P2", "P3", "P4", "P5"),
            "anchor_sizes": ((32,), (64,), (128,), (256,), (512,)),
            "anchor_style": "torchvision",
            "rpn_pre_nms_top_n_train": 2000,
            "rpn_post_nms_top_n_train": 2000,
            "rpn_pre_nms_top_n_test": 1000,
            "rpn_post_nms_top_n_test": 1000,
            "rpn_min_size": 1e-3,
            "rpn_min_size_rule": "torchvision",
            "rpn_head_channels": 256,
            # torchvision's GeneralizedRCNNTransform and AnchorGenerator.
            "resize_rounding": "floor",
            "size_divisible": 32,
            "anchor_stride_rule": "image_over_grid",
        },
    )


def build_resnet50_fpn_v2(weights=None):
    """torchvision's ``fasterrcnn_resnet50_fpn_v2`` layout (Li et al. 2021): the ResNet-50 trunk
    and the defaults of ``resnet50_fpn`` (trunk batch norms run frozen, i.e. with their
    inference statistics), an FPN whose convs are conv + batch norm, a two-conv RPN head
    (``rpn_conv_depth=2``) and the 4conv1fc box head (four 3×3 conv + BN + ReLU with 256
    channels, one FC of 1024: ``roi_head_type="conv_fc"``)."""
    check_weights_argument("resnet50_fpn_v2", weights)
    # v1's trunk (and ImageNet copy) and defaults, so both stay in step; v1's plain FPN layers
    # are left unused and a normalised FPN is built on the same trunk layers.
    v1 = build_resnet50_fpn(weights=weights)
    stages = {"C2": "conv2_block3_out", "C3": "conv3_block4_out", "C4": "conv4_block6_out",
              "C5": "conv5_block3_out"}
    trunk = keras.Model(
        v1.model.input, {k: v1.model.get_layer(n).output for k, n in stages.items()}, name="resnet50"
    )
    model = add_fpn(trunk, list(stages), 256, extra_pool=True, norm=True)
    return dataclasses.replace(
        v1,
        model=model,
        defaults={
            **v1.defaults,
            "rpn_conv_depth": 2,
            "roi_head_type": "conv_fc",
            "roi_head_convs": (256, 256, 256, 256),
            "roi_head_dim": 1024,
        },
    )

BACKBONES = {
    "vgg16": build_vgg16,
    "resnet50": lambda weights=None: build_resnet_c4("resnet50", weights),
    "resnet101": lambda weights=None: build_resnet_c4("resnet101", weights),
    "resnet50_fpn": build_resnet50_fpn,
    "resnet50_fpn_v2": build_resnet50_fpn_v2,
    "mobilenet_v3_large_fpn": build_mobilenet_v3_large_fpn,
    "tiny": build_tiny,
    "tiny_fpn": build_tiny_fpn,
}


def build_backbone(name, weights=None):
    """Build a registered backbone; ``weights`` is ``None`` or ``"imagenet"``."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](weights=weights)


__all__ = ["Backbone", "BACKBONES", "build_backbone", "add_fpn"]
