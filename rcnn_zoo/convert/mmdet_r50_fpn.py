"""MMDetection 2.x ``faster_rcnn_r50_fpn`` checkpoints → rcnn_zoo ``FasterRCNN(backbone="resnet50_fpn")``.

Key names: ``backbone.*`` (torchvision-style ResNet-50, ``style='pytorch'``, BatchNorm with
ε = 1e-5 in eval mode), ``neck.lateral_convs.{i}.conv.*`` / ``neck.fpn_convs.{i}.conv.*``,
``rpn_head.rpn_conv.*``, ``rpn_head.rpn_cls.*`` (sigmoid: one logit per anchor),
``rpn_head.rpn_reg.*``, ``roi_head.bbox_head.shared_fcs.{0,1}.*``, ``fc_cls.*`` and ``fc_reg.*``.
The checkpoint file is ``{"meta": …, "state_dict": …}``.

Class order: MMDetection 2.x puts the **background last** (``fc_cls`` row ``K``) and its
``fc_reg`` has ``4·K`` rows with no background row. Converted: cls rows ``[K, 0, …, K−1]``
(background first), and four zero rows are inserted in front of the deltas for our unused
background slot.

Settings that reproduce MMDetection 2.x test behaviour (``MODEL_ARGUMENTS``): anchors
``scales=[8]`` × strides 4…64 = sizes 32…512, ratios 0.5/1/2, centred on the grid point and
not rounded (``anchor_style="detectron2"``, same order with one size per level);
DeltaXYWHBBoxCoder stds (1,1,1,1) for the RPN and (0.1,0.1,0.2,0.2) ≙ weights (10,10,5,5) for the
RoI head, no ``+1`` (v2 coordinates) — both rcnn_zoo's; RoIAlign 7×7 with ``sampling_ratio=0``
(adaptive), finest_scale 56 level rule (the same as torchvision's k0 = 4, 224 rule); RPN test
top-n 1000 per level, NMS 0.7, 1000 kept, ``min_bbox_size=0``; RCNN score 0.05, NMS 0.5, 100
per image. The VOC config resizes to (1000, 600): shorter side 600, longer at most 1000.

MMCV's RoIAlign uses ``aligned=True`` (a half-pixel shift of every RoI): ``roi_aligned=True``.
Resize rounded half up (``resize_rounding="round"``), padding to a multiple of 32 after
normalisation (``size_divisible=32``), nominal anchor strides 4…64 (MMDetection's P6 anchors use
64 whatever the grid), and RPN boxes dropped after the top-n when a side is not above
``min_bbox_size`` (``rpn_min_size_rule="mmdetection"``). What is not reproduced is listed in the
registry entry's ``differences``.
"""

import numpy as np

from rcnn_zoo.convert.common import ConversionError, KeyReader
from rcnn_zoo.convert import resnet_fpn

NAME = "mmdet_faster_rcnn_r50_fpn"
DEFAULT_BN_EPSILON = 1e-5

MODEL_ARGUMENTS = {
    "backbone": "resnet50_fpn",
    "image_min_size": 600,
    "image_max_size": 1000,
    "resize_rounding": "round",
    "size_divisible": 32,
    "anchor_sizes": [[32], [64], [128], [256], [512]],
    "anchor_aspect_ratios": [0.5, 1.0, 2.0],
    "anchor_style": "detectron2",
    "anchor_stride_rule": "nominal",
    "rpn_pre_nms_top_n_train": 2000,
    "rpn_post_nms_top_n_train": 1000,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_nms_threshold": 0.7,
    "rpn_min_size": 0.0,
    "rpn_min_size_rule": "mmdetection",
    "roi_sampling_ratio": 0,
    "roi_aligned": True,
    "roi_box_weights": [10.0, 10.0, 5.0, 5.0],
    "score_threshold": 0.05,
    "nms_threshold": 0.5,
    "max_detections": 100,
}

def model_arguments(num_classes):
    """``FasterRCNN`` keyword arguments matching MMDetection's test settings."""
    return {"num_classes": int(num_classes), **MODEL_ARGUMENTS}


def state_dict_shapes(num_classes=20):
    """``{key: shape}`` of an MMDetection 2.x ``faster_rcnn_r50_fpn`` state dict (``num_classes``
    foreground classes), without the ``num_batches_tracked`` counters."""
    shapes = resnet_fpn.trunk_shapes("backbone.")
    for i, channels in enumerate(resnet_fpn.FPN_IN_CHANNELS):
        shapes[f"neck.lateral_convs.{i}.conv.weight"] = (256, channels, 1, 1)
        shapes[f"neck.lateral_convs.{i}.conv.bias"] = (256,)
        shapes[f"neck.fpn_convs.{i}.conv.weight"] = (256, 256, 3, 3)
        shapes[f"neck.fpn_convs.{i}.conv.bias"] = (256,)
    shapes.update(
        {
            "rpn_head.rpn_conv.weight": (256, 256, 3, 3),
            "rpn_head.rpn_conv.bias": (256,),
            "rpn_head.rpn_cls.weight": (3, 256, 1, 1),
            "rpn_head.rpn_cls.bias": (3,),
            "rpn_head.rpn_reg.weight": (12, 256, 1, 1),
            "rpn_head.rpn_reg.bias": (12,),
            "roi_head.bbox_head.shared_fcs.0.weight": (1024, 256 * 7 * 7),
            "roi_head.bbox_head.shared_fcs.0.bias": (1024,),
            "roi_head.bbox_head.shared_fcs.1.weight": (1024, 1024),
            "roi_head.bbox_head.shared_fcs.1.bias": (1024,),
            "roi_head.bbox_head.fc_cls.weight": (num_classes + 1, 1024),
            "roi_head.bbox_head.fc_cls.bias": (num_classes + 1,),
            "roi_head.bbox_head.fc_reg.weight": (4 * num_classes, 1024),
            "roi_head.bbox_head.fc_reg.bias": (4 * num_classes,),
        }
    )
    return shapes


def checkpoint_num_classes(state_dict):
    """Foreground classes of the checkpoint (``fc_cls`` rows − 1)."""
    key = "roi_head.bbox_head.fc_cls.weight"
    if key not in state_dict:
        raise ConversionError(
            f"not an MMDetection 2.x Faster R-CNN state dict: no {key!r} "
            f"(first keys: {list(state_dict)[:4]})"
        )
    return int(state_dict[key].shape[0]) - 1


def background_first(cls_weight, cls_bias, reg_weight, reg_bias):
    """MMDetection's background-last predictor → background-first, with zero background deltas.

    Args: ``fc_cls`` ``[K+1, D]``, ``[K+1]``; ``fc_reg`` ``[4K, D]``, ``[4K]``.
    Returns: the same four with shapes ``[K+1, D]``, ``[K+1]``, ``[4(K+1), D]``, ``[4(K+1)]``.
    """
    k = cls_weight.shape[0] - 1
    if reg_weight.shape[0] == 4:
        raise ConversionError("class-agnostic box regression (reg_class_agnostic=True) is not supported")
    if reg_weight.shape[0] != 4 * k:
        raise ConversionError(
            f"fc_reg has {reg_weight.shape[0]} rows, expected 4·{k} for {k} classes"
        )
    order = np.concatenate([[k], np.arange(k)])
    zeros_w = np.zeros((4, reg_weight.shape[1]), reg_weight.dtype)
    return (
        cls_weight[order],
        cls_bias[order],
        np.concatenate([zeros_w, reg_weight], axis=0),
        np.concatenate([np.zeros(4, reg_bias.dtype), reg_bias], axis=0),
    )


def layer_weights(state_dict, bn_epsilon=DEFAULT_BN_EPSILON):
    """MMDetection state dict → ``{our layer path: {variable: array}}`` (all layers)."""
    read = KeyReader(state_dict, "MMDetection")
    k = checkpoint_num_classes(state_dict)
    if "rpn_head.rpn_cls.weight" in state_dict and state_dict["rpn_head.rpn_cls.weight"].shape[0] == 6:
        raise ConversionError(
            "this RPN has a 2-way softmax per anchor (use_sigmoid=False); rcnn_zoo's RPN uses one "
            "sigmoid logit per anchor"
        )
    out = resnet_fpn.convert_trunk(read, "backbone.", bn_epsilon)
    out.update(
        resnet_fpn.convert_fpn(
            read, lambda i: f"neck.lateral_convs.{i}.conv", lambda i: f"neck.fpn_convs.{i}.conv"
        )
    )
    out.update(
        resnet_fpn.convert_rpn(read, "rpn_head.rpn_conv", "rpn_head.rpn_cls", "rpn_head.rpn_reg")
    )
    out.update(
        resnet_fpn.convert_box_head(
            read, "roi_head.bbox_head.shared_fcs.0", "roi_head.bbox_head.shared_fcs.1"
        )
    )
    head = "roi_head.bbox_head."
    out.update(
        resnet_fpn.predictor(
            *background_first(
                read(head + "fc_cls.weight", (k + 1, 1024)),
                read(head + "fc_cls.bias", (k + 1,)),
                read(head + "fc_reg.weight"),
                read(head + "fc_reg.bias"),
            )
        )
    )
    read.warn_unused()
    return out
