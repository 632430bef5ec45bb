"""torchvision ``fasterrcnn_mobilenet_v3_large_fpn`` and ``fasterrcnn_mobilenet_v3_large_320_fpn``
checkpoints → rcnn_zoo ``FasterRCNN(backbone="mobilenet_v3_large_fpn")``.

Both models have the same tensors (the 320 model differs only in its resize and RPN top-n), so
one converter serves both; build the detector with :data:`MODEL_ARGUMENTS` or
:data:`MODEL_ARGUMENTS_320`.

Key names (torchvision 0.10+): ``backbone.body.{i}`` is ``mobilenet_v3_large().features[i]``
(``IntermediateLayerGetter`` keeps the indices):

- ``backbone.body.0.{0,1}``: stem conv ``[16, 3, 3, 3]`` and BN → ``stem_conv``, ``stem_bn``;
- ``backbone.body.{i}.block.{j}`` for blocks ``i`` = 1…15, ``j`` counting the block's modules
  in order — expand (``.0`` conv, ``.1`` BN; absent when expanded = input channels), depthwise
  (``.0`` weight ``[C, 1, k, k]``, ``.1`` BN), squeeze-excitation (``.fc1``, ``.fc2`` 1×1 convs
  with bias), project (``.0``, ``.1``) → ``block{i}_{expand,dw,project}_{conv,bn}``,
  ``block{i}_se_fc{1,2}``;
- ``backbone.body.16.{0,1}``: 1×1 conv 160 → 960 and BN → ``last_conv``, ``last_bn``;
- ``backbone.fpn.inner_blocks.{0,1}.0``, ``layer_blocks.{0,1}.0`` → ``fpn_inner{0,1}``,
  ``fpn_layer{0,1}`` (0.12 and older write ``inner_blocks.{i}.weight`` — both are read);
- ``rpn.head.conv.0.0`` (older: ``rpn.head.conv``), ``rpn.head.cls_logits`` (15 anchors),
  ``rpn.head.bbox_pred`` (60) → ``rpn_head/{conv,objectness,deltas}``;
- ``roi_heads.box_head.fc6/fc7`` and ``roi_heads.box_predictor.*`` as for ResNet-50-FPN
  (:mod:`rcnn_zoo.convert.resnet_fpn`; background first, COCO's 91 outputs = ``num_classes=90``).

Layouts: conv ``[O, I, kh, kw]`` → ``[kh, kw, I, O]``; depthwise ``[C, 1, kh, kw]`` →
``[kh, kw, C, 1]`` (Keras ``DepthwiseConv2D``, depth multiplier 1); fc6's input rows from
``(C, 7, 7)`` to ``(7, 7, C)`` order. Trunk convs have no bias on either side.

Batch-norm epsilon: torchvision builds both detection models with
``norm_layer=FrozenBatchNorm2d`` (ε = 1e-5) when weights are loaded and ``BatchNorm2d``
(ε = 1e-5) otherwise — not MobileNetV3's classification ``BatchNorm2d(eps=0.001)``, which that
argument replaces. The published checkpoints therefore run with ε = 1e-5 (the default here);
rcnn_zoo's layers use ε = 1e-5 as well, so :func:`~rcnn_zoo.convert.common.batch_norm` folds
nothing for them (it does for any other ``bn_epsilon``).
"""

import numpy as np

from rcnn_zoo.backbones.mobilenet import (
    BN_EPSILON,
    FPN_CHANNELS,
    INVERTED_RESIDUAL_SETTING,
    LAST_CHANNELS,
    STEM_CHANNELS,
    squeeze_channels,
)
from rcnn_zoo.convert import resnet_fpn, torchvision_resnet50_fpn
from rcnn_zoo.convert.common import ConversionError, KeyReader, batch_norm, conv_kernel

NAME = "torchvision_fasterrcnn_mobilenet_v3_large_fpn"
DEFAULT_BN_EPSILON = 1e-5
NUM_ANCHORS = 15  # 5 sizes × 3 aspect ratios per location
FPN_IN_CHANNELS = (INVERTED_RESIDUAL_SETTING[12][3], LAST_CHANNELS)  # 160 (block 13), 960
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")

# Constructor arguments reproducing torchvision's fasterrcnn_mobilenet_v3_large_fpn at inference
# (equal to the backbone defaults; written out so that a change of defaults cannot go unnoticed).
MODEL_ARGUMENTS = {
    "backbone": "mobilenet_v3_large_fpn",
    "image_min_size": 800,
    "image_max_size": 1333,
    "resize_rounding": "floor",
    "size_divisible": 32,
    "anchor_sizes": [[32, 64, 128, 256, 512]] * 3,
    "anchor_aspect_ratios": [0.5, 1.0, 2.0],
    "anchor_style": "torchvision",
    "anchor_stride_rule": "image_over_grid",
    "rpn_head_channels": 256,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_nms_threshold": 0.7,
    "rpn_min_size": 0.001,
    "rpn_min_size_rule": "torchvision",
    "rpn_score_threshold": 0.05,
    "roi_pooling": "align",
    "roi_sampling_ratio": 2,
    "roi_levels": ["P5a"],
    "score_threshold": 0.05,
    "nms_threshold": 0.5,
    "max_detections": 100,
}
# fasterrcnn_mobilenet_v3_large_320_fpn: same weights layout, low-resolution inference.
MODEL_ARGUMENTS_320 = {
    **MODEL_ARGUMENTS,
    "image_min_size": 320,
    "image_max_size": 640,
    "rpn_pre_nms_top_n_test": 150,
    "rpn_post_nms_top_n_test": 150,
}


def model_arguments(num_classes, low_resolution=False):
    """``FasterRCNN`` keyword arguments matching torchvision's model with ``num_classes`` + 1
    outputs; ``low_resolution``: the ``_320_fpn`` variant."""
    base = MODEL_ARGUMENTS_320 if low_resolution else MODEL_ARGUMENTS
    return {"num_classes": int(num_classes), **base}


def _trunk_layers():
    """``[(source prefix, our layer prefix, kind, conv weight shape)]`` of the trunk, in order;
    kind is ``"conv"`` (conv + BN), ``"se1"`` / ``"se2"`` (SE 1×1 convs with bias)."""
    out = [("0", "stem", "conv", (STEM_CHANNELS, 3, 3, 3))]
    for i, setting in enumerate(INVERTED_RESIDUAL_SETTING, start=1):
        in_channels, kernel, expanded, out_channels, use_se = setting[:5]
        j = 0
        if expanded != in_channels:
            out.append((f"{i}.block.{j}", f"block{i}_expand", "conv", (expanded, in_channels, 1, 1)))
            j += 1
        out.append((f"{i}.block.{j}", f"block{i}_dw", "conv", (expanded, 1, kernel, kernel)))
        j += 1
        if use_se:
            squeeze = squeeze_channels(expanded)
            out.append((f"{i}.block.{j}.fc1", f"block{i}_se_fc1", "se", (squeeze, expanded, 1, 1)))
            out.append((f"{i}.block.{j}.fc2", f"block{i}_se_fc2", "se", (expanded, squeeze, 1, 1)))
            j += 1
        out.append((f"{i}.block.{j}", f"block{i}_project", "conv", (out_channels, expanded, 1, 1)))
    last_in = INVERTED_RESIDUAL_SETTING[-1][3]
    out.append(("16", "last", "conv", (LAST_CHANNELS, last_in, 1, 1)))
    return out


def state_dict_shapes(num_outputs=91, old_names=False):
    """``{key: shape}`` of a torchvision ``fasterrcnn_mobilenet_v3_large_fpn`` state dict (also
    the ``_320_fpn`` one) whose predictor has ``num_outputs`` rows (background included).
    ``old_names``: torchvision ≤ 0.12 FPN / RPN names. ``num_batches_tracked`` is not listed."""
    shapes = {}
    for source, _, kind, shape in _trunk_layers():
        prefix = f"backbone.body.{source}"
        if kind == "se":
            shapes[f"{prefix}.weight"] = shape
            shapes[f"{prefix}.bias"] = (shape[0],)
        else:
            shapes[f"{prefix}.0.weight"] = shape
            shapes.update({f"{prefix}.1.{n}": (shape[0],) for n in BN_TENSORS})
    sub = "" if old_names else ".0"
    for i, channels in enumerate(FPN_IN_CHANNELS):
        shapes[f"backbone.fpn.inner_blocks.{i}{sub}.weight"] = (FPN_CHANNELS, channels, 1, 1)
        shapes[f"backbone.fpn.inner_blocks.{i}{sub}.bias"] = (FPN_CHANNELS,)
    for i in range(len(FPN_IN_CHANNELS)):
        shapes[f"backbone.fpn.layer_blocks.{i}{sub}.weight"] = (FPN_CHANNELS, FPN_CHANNELS, 3, 3)
        shapes[f"backbone.fpn.layer_blocks.{i}{sub}.bias"] = (FPN_CHANNELS,)
    conv = "rpn.head.conv" if old_names else "rpn.head.conv.0.0"
    head = resnet_fpn.HEAD_DIM
    shapes.update(
        {
            f"{conv}.weight": (FPN_CHANNELS, FPN_CHANNELS, 3, 3),
            f"{conv}.bias": (FPN_CHANNELS,),
            "rpn.head.cls_logits.weight": (NUM_ANCHORS, FPN_CHANNELS, 1, 1),
            "rpn.head.cls_logits.bias": (NUM_ANCHORS,),
            "rpn.head.bbox_pred.weight": (4 * NUM_ANCHORS, FPN_CHANNELS, 1, 1),
            "rpn.head.bbox_pred.bias": (4 * NUM_ANCHORS,),
            "roi_heads.box_head.fc6.weight": (head, FPN_CHANNELS * resnet_fpn.POOL_SIZE**2),
            "roi_heads.box_head.fc6.bias": (head,),
            "roi_heads.box_head.fc7.weight": (head, head),
            "roi_heads.box_head.fc7.bias": (head,),
            "roi_heads.box_predictor.cls_score.weight": (num_outputs, head),
            "roi_heads.box_predictor.cls_score.bias": (num_outputs,),
            "roi_heads.box_predictor.bbox_pred.weight": (4 * num_outputs, head),
            "roi_heads.box_predictor.bbox_pred.bias": (4 * num_outputs,),
        }
    )
    return shapes


def checkpoint_num_classes(state_dict):
    """Foreground classes of the checkpoint (torchvision's ``num_classes`` − 1)."""
    classes = torchvision_resnet50_fpn.checkpoint_num_classes(state_dict)  # any torchvision model
    if "backbone.body.1.block.0.0.weight" not in state_dict:
        raise ConversionError(
            "not a torchvision fasterrcnn_mobilenet_v3_large_fpn state dict: no "
            "'backbone.body.1.block.0.0.weight' (a ResNet checkpoint? use "
            "torchvision_fasterrcnn_resnet50_fpn)"
        )
    return classes


def _depthwise_kernel(weight):
    """PyTorch depthwise weight ``[C, 1, kh, kw]`` → Keras ``DepthwiseConv2D`` ``[kh, kw, C, 1]``."""
    weight = np.asarray(weight)
    if weight.ndim != 4 or weight.shape[1] != 1:
        raise ConversionError(f"expected a depthwise weight [C, 1, kh, kw], got {weight.shape}")
    return np.ascontiguousarray(weight.transpose(2, 3, 0, 1), dtype=np.float32)


def convert_trunk(read, body, bn_epsilon):
    """MobileNetV3-Large tensors under ``body`` (``backbone.body.``) → our trunk layers."""
    out = {}
    for source, target, kind, shape in _trunk_layers():
        prefix = f"{body}{source}"
        if kind == "se":
            out[target] = {
                "kernel": conv_kernel(read(f"{prefix}.weight", shape)),
                "bias": np.asarray(read(f"{prefix}.bias", (shape[0],)), np.float32),
            }
            continue
        weight = read(f"{prefix}.0.weight", shape)
        depthwise = target.endswith("_dw")
        out[f"{target}_conv"] = {"kernel": _depthwise_kernel(weight) if depthwise else conv_kernel(weight)}
        channels = shape[0]
        out[f"{target}_bn"] = batch_norm(
            *(read(f"{prefix}.1.{n}", (channels,)) for n in BN_TENSORS),
            source_epsilon=bn_epsilon,
            target_epsilon=BN_EPSILON,
        )
    return out


def _with_bias(read, prefix, shape):
    return {
        "kernel": conv_kernel(read(f"{prefix}.weight", shape)),
        "bias": np.asarray(read(f"{prefix}.bias", (shape[0],)), np.float32),
    }


def layer_weights(state_dict, bn_epsilon=DEFAULT_BN_EPSILON):
    """torchvision state dict → ``{our layer path: {variable: array}}`` (all layers)."""
    read = KeyReader(state_dict, "torchvision")
    outputs = checkpoint_num_classes(state_dict) + 1
    sub = ".0" if "backbone.fpn.inner_blocks.0.0.weight" in state_dict else ""
    out = convert_trunk(read, "backbone.body.", bn_epsilon)
    for i, channels in enumerate(FPN_IN_CHANNELS):
        out[f"fpn_inner{i}"] = _with_bias(
            read, f"backbone.fpn.inner_blocks.{i}{sub}", (FPN_CHANNELS, channels, 1, 1)
        )
        out[f"fpn_layer{i}"] = _with_bias(
            read, f"backbone.fpn.layer_blocks.{i}{sub}", (FPN_CHANNELS, FPN_CHANNELS, 3, 3)
        )
    conv = "rpn.head.conv.0.0" if "rpn.head.conv.0.0.weight" in state_dict else "rpn.head.conv"
    out.update(
        {
            "rpn_head/conv": _with_bias(read, conv, (FPN_CHANNELS, FPN_CHANNELS, 3, 3)),
            "rpn_head/objectness": _with_bias(
                read, "rpn.head.cls_logits", (NUM_ANCHORS, FPN_CHANNELS, 1, 1)
            ),
            "rpn_head/deltas": _with_bias(
                read, "rpn.head.bbox_pred", (4 * NUM_ANCHORS, FPN_CHANNELS, 1, 1)
            ),
        }
    )
    out.update(resnet_fpn.convert_box_head(read, "roi_heads.box_head.fc6", "roi_heads.box_head.fc7"))
    prefix = "roi_heads.box_predictor."
    head = resnet_fpn.HEAD_DIM
    out.update(
        resnet_fpn.predictor(
            read(prefix + "cls_score.weight", (outputs, head)),
            read(prefix + "cls_score.bias", (outputs,)),
            read(prefix + "bbox_pred.weight", (4 * outputs, head)),
            read(prefix + "bbox_pred.bias", (4 * outputs,)),
        )
    )
    read.warn_unused()
    return out
