"""torchvision ``fasterrcnn_resnet50_fpn_v2`` checkpoints → rcnn_zoo ``FasterRCNN(backbone="resnet50_fpn_v2")``.

The "v2" model (torchvision 0.13+, ``FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1``, box AP 46.7)
follows Li et al. 2021 ("Benchmarking Detection Transfer Learning with Vision Transformers"). It
differs from ``fasterrcnn_resnet50_fpn`` (:mod:`rcnn_zoo.convert.torchvision_resnet50_fpn`) only
in these modules; anchors, box coding, RoIAlign, resizing and post-processing are the same:

- trunk: ``backbone.body.*`` as v1, but with ordinary ``BatchNorm2d`` (ε = 1e-5, and
  ``num_batches_tracked`` buffers) instead of ``FrozenBatchNorm2d``; at inference both compute
  ``γ·(x − mean)/√(var + ε) + β``, which our frozen Keras BN layers reproduce;
- FPN: ``backbone.fpn.inner_blocks.{i}.0.weight`` (1×1 conv, no bias) +
  ``inner_blocks.{i}.1.*`` (BatchNorm2d), same for ``layer_blocks`` (3×3) → our ``fpn_inner{l}``,
  ``fpn_inner{l}_bn``, ``fpn_layer{l}``, ``fpn_layer{l}_bn``;
- RPN: ``RPNHead(conv_depth=2)``, two 3×3 conv + bias + ReLU (no batch norm):
  ``rpn.head.conv.{0,1}.0.*`` → ``rpn_head/conv``, ``rpn_head/conv2``;
- box head ``FastRCNNConvFCHead((256, 7, 7), [256] * 4, [1024], norm_layer=BatchNorm2d)``:
  ``roi_heads.box_head.{0..3}.0.weight`` (3×3 conv, no bias) + ``.{0..3}.1.*`` (BN) → our
  ``box_head/conv{1..4}``, ``box_head/bn{1..4}``; ``roi_heads.box_head.5.*`` (index 4 is the
  ``Flatten``) → ``box_head/fc1`` with its input rows permuted from (C, 7, 7) to (7, 7, C);
- predictor as v1: 91 outputs, background first → ``num_classes=90``.

Batch-norm epsilon: every BN of this model uses 1e-5 (torchvision does not override it for the v2
weights); the converter folds the difference to rcnn_zoo's 1.001e-5 into γ exactly.
"""

from rcnn_zoo.convert import resnet_fpn
from rcnn_zoo.convert import torchvision_resnet50_fpn as v1
from rcnn_zoo.convert.common import KeyReader

NAME = "torchvision_fasterrcnn_resnet50_fpn_v2"
DEFAULT_BN_EPSILON = 1e-5
BOX_HEAD_CONVS = (256, 256, 256, 256)
RPN_CONV_DEPTH = 2

# v1's inference settings (identical in v2) plus the v2 structure.
MODEL_ARGUMENTS = {
    **v1.MODEL_ARGUMENTS,
    "backbone": "resnet50_fpn_v2",
    "rpn_conv_depth": RPN_CONV_DEPTH,
    "roi_head_type": "conv_fc",
    "roi_head_convs": list(BOX_HEAD_CONVS),
    "roi_head_dim": resnet_fpn.HEAD_DIM,
}

_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
checkpoint_num_classes = v1.checkpoint_num_classes


def model_arguments(num_classes):
    """``FasterRCNN`` keyword arguments matching torchvision's v2 model with ``num_classes`` + 1 outputs."""
    return {"num_classes": int(num_classes), **MODEL_ARGUMENTS}


def _bn_shapes(prefix, channels, buffers):
    shapes = {f"{prefix}.{n}": (channels,) for n in _BN_TENSORS}
    if buffers:
        shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


def state_dict_shapes(num_outputs=91, buffers=True):
    """``{key: shape}`` of a torchvision ``fasterrcnn_resnet50_fpn_v2`` state dict whose predictor
    has ``num_outputs`` rows (background included). ``buffers``: list the BatchNorm2d
    ``num_batches_tracked`` counters too (shape ``()``, ignored by the converter), so the listing
    is exactly ``model.state_dict()``'s keys."""
    trunk = resnet_fpn.trunk_shapes("backbone.body.")
    shapes = {}
    for key, shape in trunk.items():
        shapes[key] = shape
        if buffers and key.endswith(".running_var"):
            shapes[key[: -len("running_var")] + "num_batches_tracked"] = ()
    channels = resnet_fpn.FPN_CHANNELS
    for i, in_channels in enumerate(resnet_fpn.FPN_IN_CHANNELS):
        shapes[f"backbone.fpn.inner_blocks.{i}.0.weight"] = (channels, in_channels, 1, 1)
        shapes.update(_bn_shapes(f"backbone.fpn.inner_blocks.{i}.1", channels, buffers))
    for i in range(len(resnet_fpn.FPN_IN_CHANNELS)):
        shapes[f"backbone.fpn.layer_blocks.{i}.0.weight"] = (channels, channels, 3, 3)
        shapes.update(_bn_shapes(f"backbone.fpn.layer_blocks.{i}.1", channels, buffers))
    for i in range(RPN_CONV_DEPTH):
        shapes[f"rpn.head.conv.{i}.0.weight"] = (channels, channels, 3, 3)
        shapes[f"rpn.head.conv.{i}.0.bias"] = (channels,)
    anchors = resnet_fpn.NUM_ANCHORS
    shapes.update(
        {
            "rpn.head.cls_logits.weight": (anchors, channels, 1, 1),
            "rpn.head.cls_logits.bias": (anchors,),
            "rpn.head.bbox_pred.weight": (4 * anchors, channels, 1, 1),
            "rpn.head.bbox_pred.bias": (4 * anchors,),
        }
    )
    previous = channels
    for i, width in enumerate(BOX_HEAD_CONVS):
        shapes[f"roi_heads.box_head.{i}.0.weight"] = (width, previous, 3, 3)
        shapes.update(_bn_shapes(f"roi_heads.box_head.{i}.1", width, buffers))
        previous = width
    fc = f"roi_heads.box_head.{len(BOX_HEAD_CONVS) + 1}"
    dim, pool = resnet_fpn.HEAD_DIM, resnet_fpn.POOL_SIZE
    shapes.update(
        {
            f"{fc}.weight": (dim, previous * pool * pool),
            f"{fc}.bias": (dim,),
            "roi_heads.box_predictor.cls_score.weight": (num_outputs, dim),
            "roi_heads.box_predictor.cls_score.bias": (num_outputs,),
            "roi_heads.box_predictor.bbox_pred.weight": (4 * num_outputs, dim),
            "roi_heads.box_predictor.bbox_pred.bias": (4 * num_outputs,),
        }
    )
    return shapes


def layer_weights(state_dict, bn_epsilon=DEFAULT_BN_EPSILON):
    """torchvision v2 state dict → ``{our layer path: {variable: array}}`` (all layers)."""
    read = KeyReader(state_dict, "torchvision")
    outputs = checkpoint_num_classes(state_dict) + 1
    out = resnet_fpn.convert_trunk(read, "backbone.body.", bn_epsilon)
    out.update(
        resnet_fpn.convert_fpn_norm(
            read,
            lambda i: f"backbone.fpn.inner_blocks.{i}",
            lambda i: f"backbone.fpn.layer_blocks.{i}",
            bn_epsilon,
        )
    )
    out.update(
        resnet_fpn.convert_rpn_convs(
            read,
            [f"rpn.head.conv.{i}.0" for i in range(RPN_CONV_DEPTH)],
            "rpn.head.cls_logits",
            "rpn.head.bbox_pred",
        )
    )
    out.update(
        resnet_fpn.convert_conv_fc_box_head(
            read,
            [f"roi_heads.box_head.{i}" for i in range(len(BOX_HEAD_CONVS))],
            [f"roi_heads.box_head.{len(BOX_HEAD_CONVS) + 1}"],
            bn_epsilon,
            conv_channels=BOX_HEAD_CONVS,
            fc_dims=(resnet_fpn.HEAD_DIM,),
        )
    )
    prefix = "roi_heads.box_predictor."
    dim = resnet_fpn.HEAD_DIM
    out.update(
        resnet_fpn.predictor(
            read(prefix + "cls_score.weight", (outputs, dim)),
            read(prefix + "cls_score.bias", (outputs,)),
            read(prefix + "bbox_pred.weight", (4 * outputs, dim)),
            read(prefix + "bbox_pred.bias", (4 * outputs,)),
        )
    )
    read.warn_unused()
    return out
