"""torchvision ``fasterrcnn_resnet50_fpn`` checkpoints → rcnn_zoo ``FasterRCNN(backbone="resnet50_fpn")``.

Key names (torchvision 0.3 … 0.2x): ``backbone.body.*`` (ResNet-50 with FrozenBatchNorm2d),
``backbone.fpn.inner_blocks.{0..3}.{weight,bias}`` and ``layer_blocks.*`` (0.13+ writes
``inner_blocks.{i}.0.weight`` — both are read), ``rpn.head.conv.*`` (0.13+:
``rpn.head.conv.0.0.*``), ``rpn.head.cls_logits.*``, ``rpn.head.bbox_pred.*``,
``roi_heads.box_head.fc6.*``, ``fc7.*``, ``roi_heads.box_predictor.cls_score.*`` (``[K+1, 1024]``,
row 0 background) and ``bbox_pred.*`` (``[(K+1)·4, 1024]``, class-major ``dx, dy, dw, dh``).
Background first, like rcnn_zoo, so the predictor maps one to one: torchvision's COCO model with
91 outputs is ``num_classes=90`` here (label ``c`` ↔ COCO category id ``c + 1``; ten of the ids
are unused "N/A" classes that never fire).

What matches without arguments (the ``resnet50_fpn`` defaults are torchvision's): anchors
(sizes 32…512 per level, ratios 0.5/1/2, torchvision rounding and order), box coder weights
(1,1,1,1) RPN / (10,10,5,5) RoI head, sigmoid RPN logits, RoIAlign 7×7 sampling ratio 2
``aligned=False`` with the FPN level rule, ImageNet ``torch`` normalisation, 800/1333 resize,
RPN top-n 1000/1000 and NMS 0.7, min size 1e-3, score 0.05, NMS 0.5, 100 detections.

Batch-norm epsilon: torchvision runs its 2019 COCO checkpoint (``COCO_V1``) with ε = 0
(``overwrite_eps(model, 0.0)``) and newer ones with 1e-5; pass ``bn_epsilon`` accordingly (the
registry entry does). Known differences in behaviour, not in weights: torchvision pads batches to
a multiple of 32 (changing border features and FPN upsampling for other sizes) and resizes to
``floor`` of the scaled size (rcnn_zoo rounds); rcnn_zoo's RPN drops tiny boxes before its top-n
(torchvision after) and measures ``rpn_min_size`` in original-image pixels (torchvision in
resized ones; immaterial at 1e-3).
"""

from rcnn_zoo.convert.common import ConversionError, KeyReader
from rcnn_zoo.convert import resnet_fpn

NAME = "torchvision_fasterrcnn_resnet50_fpn"
DEFAULT_BN_EPSILON = 1e-5
COCO_V1_BN_EPSILON = 0.0

# Constructor arguments that reproduce torchvision's inference settings (all equal to the
# resnet50_fpn backbone defaults; written out so that a change of defaults cannot go unnoticed).
MODEL_ARGUMENTS = {
    "backbone": "resnet50_fpn",
    "image_min_size": 800,
    "image_max_size": 1333,
    "resize_rounding": "floor",
    "size_divisible": 32,
    "anchor_sizes": [[32], [64], [128], [256], [512]],
    "anchor_aspect_ratios": [0.5, 1.0, 2.0],
    "anchor_style": "torchvision",
    "anchor_stride_rule": "image_over_grid",
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_nms_threshold": 0.7,
    "rpn_min_size": 0.001,
    "rpn_min_size_rule": "torchvision",
    "roi_sampling_ratio": 2,
    "roi_aligned": False,
    "roi_box_weights": [10.0, 10.0, 5.0, 5.0],
    "score_threshold": 0.05,
    "nms_threshold": 0.5,
    "max_detections": 100,
}


def model_arguments(num_classes):
    """``FasterRCNN`` keyword arguments matching torchvision's model with ``num_classes`` + 1 outputs."""
    return {"num_classes": int(num_classes), **MODEL_ARGUMENTS}


def state_dict_shapes(num_outputs=91, new_names=False):
    """``{key: shape}`` of a torchvision ``fasterrcnn_resnet50_fpn`` state dict whose predictor
    has ``num_outputs`` rows (background included). ``new_names``: torchvision ≥ 0.13 names."""
    shapes = resnet_fpn.trunk_shapes("backbone.body.")
    sub = ".0" if new_names else ""
    for i, channels in enumerate(resnet_fpn.FPN_IN_CHANNELS):
        shapes[f"backbone.fpn.inner_blocks.{i}{sub}.weight"] = (256, channels, 1, 1)
        shapes[f"backbone.fpn.inner_blocks.{i}{sub}.bias"] = (256,)
        shapes[f"backbone.fpn.layer_blocks.{i}{sub}.weight"] = (256, 256, 3, 3)
        shapes[f"backbone.fpn.layer_blocks.{i}{sub}.bias"] = (256,)
    conv = "rpn.head.conv.0.0" if new_names else "rpn.head.conv"
    shapes.update(
        {
            f"{conv}.weight": (256, 256, 3, 3),
            f"{conv}.bias": (256,),
            "rpn.head.cls_logits.weight": (3, 256, 1, 1),
            "rpn.head.cls_logits.bias": (3,),
            "rpn.head.bbox_pred.weight": (12, 256, 1, 1),
            "rpn.head.bbox_pred.bias": (12,),
            "roi_heads.box_head.fc6.weight": (1024, 256 * 7 * 7),
            "roi_heads.box_head.fc6.bias": (1024,),
            "roi_heads.box_head.fc7.weight": (1024, 1024),
            "roi_heads.box_head.fc7.bias": (1024,),
            "roi_heads.box_predictor.cls_score.weight": (num_outputs, 1024),
            "roi_heads.box_predictor.cls_score.bias": (num_outputs,),
            "roi_heads.box_predictor.bbox_pred.weight": (4 * num_outputs, 1024),
            "roi_heads.box_predictor.bbox_pred.bias": (4 * num_outputs,),
        }
    )
    return shapes


def checkpoint_num_classes(state_dict):
    """Foreground classes of the checkpoint (torchvision's ``num_classes`` − 1)."""
    key = "roi_heads.box_predictor.cls_score.weight"
    if key not in state_dict:
        raise ConversionError(
            f"not a torchvision Faster R-CNN state dict: no {key!r} "
            f"(first keys: {list(state_dict)[:4]})"
        )
    return int(state_dict[key].shape[0]) - 1


def layer_weights(state_dict, bn_epsilon=DEFAULT_BN_EPSILON):
    """torchvision state dict → ``{our layer path: {variable: array}}`` (all layers)."""
    read = KeyReader(state_dict, "torchvision")
    outputs = checkpoint_num_classes(state_dict) + 1
    new = "backbone.fpn.inner_blocks.0.0.weight" in state_dict
    sub = ".0" if new else ""
    out = resnet_fpn.convert_trunk(read, "backbone.body.", bn_epsilon)
    out.update(
        resnet_fpn.convert_fpn(
            read,
            lambda i: f"backbone.fpn.inner_blocks.{i}{sub}",
            lambda i: f"backbone.fpn.layer_blocks.{i}{sub}",
        )
    )
    conv = "rpn.head.conv.0.0" if "rpn.head.conv.0.0.weight" in state_dict else "rpn.head.conv"
    out.update(resnet_fpn.convert_rpn(read, conv, "rpn.head.cls_logits", "rpn.head.bbox_pred"))
    out.update(resnet_fpn.convert_box_head(read, "roi_heads.box_head.fc6", "roi_heads.box_head.fc7"))
    prefix = "roi_heads.box_predictor."
    out.update(
        resnet_fpn.predictor(
            read(prefix + "cls_score.weight", (outputs, 1024)),
            read(prefix + "cls_score.bias", (outputs,)),
            read(prefix + "bbox_pred.weight", (4 * outputs, 1024)),
            read(prefix + "bbox_pred.bias", (4 * outputs,)),
        )
    )
    read.warn_unused()
    return out
