"""Backbones by name: ``build_backbone("resnet50_fpn", weights=None)`` → :class:`Backbone`."""

from rcnn_zoo.backbones.base import Backbone
from rcnn_zoo.backbones.fpn import add_fpn
from rcnn_zoo.backbones.mobilenet import build_mobilenet_v3_large_fpn
from rcnn_zoo.backbones.resnet import build_resnet_c4, copy_imagenet_weights, resnet_trunk
from rcnn_zoo.backbones.tiny import build_tiny
from rcnn_zoo.backbones.vgg import build_vgg16


def build_resnet50_fpn(weights=None):
    """torchvision's ``fasterrcnn_resnet50_fpn`` layout: ResNet-50 (stride on 3×3, frozen BN,
    stem + conv2 frozen), FPN P2–P6 with 256 channels, multi-level RoIAlign, two-FC (1024) head."""
    from rcnn_zoo.backbones.base import check_weights_argument  # noqa: PLC0415

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
            "rpn_head_channels": 256,
        },
    )


BACKBONES = {
    "vgg16": build_vgg16,
    "resnet50": lambda weights=None: build_resnet_c4("resnet50", weights),
    "resnet101": lambda weights=None: build_resnet_c4("resnet101", weights),
    "resnet50_fpn": build_resnet50_fpn,
    "mobilenet_v3_large_fpn": build_mobilenet_v3_large_fpn,
    "tiny": build_tiny,
}


def build_backbone(name, weights=None):
    """Build a registered backbone; ``weights`` is ``None`` or ``"imagenet"``."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](weights=weights)


__all__ = ["Backbone", "BACKBONES", "build_backbone", "add_fpn"]
