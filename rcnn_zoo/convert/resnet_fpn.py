"""The ResNet-50-FPN Faster R-CNN layout that torchvision and MMDetection checkpoints share, mapped
onto rcnn_zoo's ``resnet50_fpn`` detector.

Both libraries name the trunk like torchvision's ResNet (``conv1``, ``bn1``,
``layer{1..4}.{j}.conv{1,2,3}/bn{1,2,3}/downsample.{0,1}``, stride on the 3×3 conv); they differ
in prefixes, FPN/RPN/box-head names and the class predictor (handled by each converter). Ours:
``conv1_conv/conv1_bn``, ``conv{2..5}_block{j+1}_{1,2,3}_{conv,bn}`` (``_0_`` = shortcut),
``fpn_inner{2..5}``, ``fpn_layer{2..5}``, ``rpn_head/{conv,objectness,deltas}``,
``box_head/{fc6,fc7}``, ``box_predictor/{cls_score,bbox_pred}``. PyTorch's ResNet convs have no
bias; ours do, and get zeros.

RPN channel orders agree: objectness channel ``a`` is anchor ``a``, delta channel ``4a + k`` is
coordinate ``k`` (dx, dy, dw, dh) of anchor ``a``, and both flatten ``(y, x, anchor)``.
"""

import numpy as np

from rcnn_zoo.convert.common import batch_norm, conv_kernel, dense_kernel, fc_after_pool_kernel

RESNET50_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))  # (blocks, bottleneck width) per stage
FPN_IN_CHANNELS = (256, 512, 1024, 2048)
FPN_CHANNELS = 256
NUM_ANCHORS = 3
POOL_SIZE = 7
HEAD_DIM = 1024
PREDICTOR_LAYERS = ("box_predictor/cls_score", "box_predictor/bbox_pred")


def _conv(read, key, shape, bias_key=None):
    kernel = conv_kernel(read(key, shape))
    bias = read(bias_key, (shape[0],)) if bias_key else np.zeros(shape[0], np.float32)
    return {"kernel": kernel, "bias": np.asarray(bias, np.float32)}


def _bn(read, prefix, channels, epsilon):
    return batch_norm(
        read(f"{prefix}.weight", (channels,)),
        read(f"{prefix}.bias", (channels,)),
        read(f"{prefix}.running_mean", (channels,)),
        read(f"{prefix}.running_var", (channels,)),
        source_epsilon=epsilon,
    )


def trunk_shapes(body):
    """``{key: shape}`` of the ResNet-50 trunk tensors under prefix ``body`` (e.g. ``backbone.``)."""
    shapes = {f"{body}conv1.weight": (64, 3, 7, 7)}
    shapes.update({f"{body}bn1.{n}": (64,) for n in ("weight", "bias", "running_mean", "running_var")})
    in_channels = 64
    for stage, (blocks, width) in enumerate(RESNET50_STAGES):
        for block in range(blocks):
            prefix = f"{body}layer{stage + 1}.{block}."
            convs = [
                ("conv1", "bn1", (width, in_channels, 1, 1)),
                ("conv2", "bn2", (width, width, 3, 3)),
                ("conv3", "bn3", (4 * width, width, 1, 1)),
            ]
            if block == 0:
                convs.append(("downsample.0", "downsample.1", (4 * width, in_channels, 1, 1)))
            for conv, bn, shape in convs:
                shapes[f"{prefix}{conv}.weight"] = shape
                for n in ("weight", "bias", "running_mean", "running_var"):
                    shapes[f"{prefix}{bn}.{n}"] = (shape[0],)
            in_channels = 4 * width
    return shapes


def convert_trunk(read, body, bn_epsilon):
    """ResNet-50 trunk tensors under ``body`` → our ``conv1_*`` / ``conv{2..5}_block*`` layers."""
    out = {
        "conv1_conv": _conv(read, f"{body}conv1.weight", (64, 3, 7, 7)),
        "conv1_bn": _bn(read, f"{body}bn1", 64, bn_epsilon),
    }
    in_channels = 64
    for stage, (blocks, width) in enumerate(RESNET50_STAGES):
        for block in range(blocks):
            src = f"{body}layer{stage + 1}.{block}."
            dst = f"conv{stage + 2}_block{block + 1}_"
            parts = [
                ("1", "conv1", "bn1", (width, in_channels, 1, 1)),
                ("2", "conv2", "bn2", (width, width, 3, 3)),
                ("3", "conv3", "bn3", (4 * width, width, 1, 1)),
            ]
            if block == 0:
                parts.append(("0", "downsample.0", "downsample.1", (4 * width, in_channels, 1, 1)))
            for index, conv, bn, shape in parts:
                out[f"{dst}{index}_conv"] = _conv(read, f"{src}{conv}.weight", shape)
                out[f"{dst}{index}_bn"] = _bn(read, f"{src}{bn}", shape[0], bn_epsilon)
            in_channels = 4 * width
    return out


def convert_fpn(read, inner_key, layer_key):
    """FPN convs; ``inner_key(i)`` / ``layer_key(i)`` give the source prefix of level ``i`` (0…3)."""
    out = {}
    for i, channels in enumerate(FPN_IN_CHANNELS):
        inner, layer = inner_key(i), layer_key(i)
        out[f"fpn_inner{i + 2}"] = _conv(
            read, f"{inner}.weight", (FPN_CHANNELS, channels, 1, 1), f"{inner}.bias"
        )
        out[f"fpn_layer{i + 2}"] = _conv(
            read, f"{layer}.weight", (FPN_CHANNELS, FPN_CHANNELS, 3, 3), f"{layer}.bias"
        )
    return out


def convert_rpn(read, conv, objectness, deltas):
    """RPN 3×3 conv and the two 1×1 sibling convs (one sigmoid logit and 4 deltas per anchor)."""
    return {
        "rpn_head/conv": _conv(
            read, f"{conv}.weight", (FPN_CHANNELS, FPN_CHANNELS, 3, 3), f"{conv}.bias"
        ),
        "rpn_head/objectness": _conv(
            read, f"{objectness}.weight", (NUM_ANCHORS, FPN_CHANNELS, 1, 1), f"{objectness}.bias"
        ),
        "rpn_head/deltas": _conv(
            read, f"{deltas}.weight", (4 * NUM_ANCHORS, FPN_CHANNELS, 1, 1), f"{deltas}.bias"
        ),
    }


def convert_box_head(read, fc6, fc7):
    """Two-FC box head; fc6's input rows are permuted from (C, ph, pw) to (ph, pw, C) order."""
    flat = FPN_CHANNELS * POOL_SIZE * POOL_SIZE
    return {
        "box_head/fc6": {
            "kernel": fc_after_pool_kernel(
                read(f"{fc6}.weight", (HEAD_DIM, flat)), FPN_CHANNELS, POOL_SIZE, POOL_SIZE
            ),
            "bias": np.asarray(read(f"{fc6}.bias", (HEAD_DIM,)), np.float32),
        },
        "box_head/fc7": {
            "kernel": dense_kernel(read(f"{fc7}.weight", (HEAD_DIM, HEAD_DIM))),
            "bias": np.asarray(read(f"{fc7}.bias", (HEAD_DIM,)), np.float32),
        },
    }


def predictor(cls_weight, cls_bias, reg_weight, reg_bias):
    """Background-first class-specific predictor tensors (PyTorch layout) → our two Dense layers."""
    return {
        "box_predictor/cls_score": {
            "kernel": dense_kernel(cls_weight),
            "bias": np.asarray(cls_bias, np.float32),
        },
        "box_predictor/bbox_pred": {
            "kernel": dense_kernel(reg_weight),
            "bias": np.asarray(reg_bias, np.float32),
        },
    }


# --------------------------------------------------------------------------- normalised layouts
# torchvision's fasterrcnn_resnet50_fpn_v2: FPN convs without bias, each followed by batch norm
# (our ``fpn_inner{l}_bn`` / ``fpn_layer{l}_bn``), RPN with several 3×3 convs (``rpn_head/conv``,
# ``conv2``, …) and the 4conv1fc box head (``box_head/conv{i}``, ``bn{i}``, ``fc{j}``).


def convert_fpn_norm(read, inner_key, layer_key, bn_epsilon):
    """FPN with conv (no bias) + BN: ``inner_key(i)`` / ``layer_key(i)`` give the source prefix of
    level ``i`` (0…3) whose ``.0`` is the conv and ``.1`` the batch norm."""
    out = {}
    for i, channels in enumerate(FPN_IN_CHANNELS):
        for ours, prefix, shape in (
            (f"fpn_inner{i + 2}", inner_key(i), (FPN_CHANNELS, channels, 1, 1)),
            (f"fpn_layer{i + 2}", layer_key(i), (FPN_CHANNELS, FPN_CHANNELS, 3, 3)),
        ):
            out[ours] = {"kernel": conv_kernel(read(f"{prefix}.0.weight", shape))}
            out[f"{ours}_bn"] = _bn(read, f"{prefix}.1", FPN_CHANNELS, bn_epsilon)
    return out


def convert_rpn_convs(read, convs, objectness, deltas):
    """RPN with ``len(convs)`` 3×3 conv + ReLU layers (source prefixes ``convs``, with bias) →
    ``rpn_head/conv``, ``rpn_head/conv2``, …, and the two sibling 1×1 convs."""
    out = convert_rpn(read, convs[0], objectness, deltas)
    for i, prefix in enumerate(convs[1:], start=2):
        out[f"rpn_head/conv{i}"] = _conv(
            read, f"{prefix}.weight", (FPN_CHANNELS, FPN_CHANNELS, 3, 3), f"{prefix}.bias"
        )
    return out


def convert_conv_fc_box_head(read, convs, fcs, bn_epsilon, conv_channels=(256,) * 4, fc_dims=(HEAD_DIM,)):
    """ConvFC box head: ``convs[i]`` the source prefix of conv ``i`` (``.0`` conv without bias,
    ``.1`` batch norm), ``fcs[j]`` that of FC ``j``. The first FC's input rows are permuted from
    PyTorch's (C, ph, pw) flatten to our (ph, pw, C)."""
    out = {}
    channels = FPN_CHANNELS
    for i, (prefix, width) in enumerate(zip(convs, conv_channels), start=1):
        out[f"box_head/conv{i}"] = {
            "kernel": conv_kernel(read(f"{prefix}.0.weight", (width, channels, 3, 3)))
        }
        out[f"box_head/bn{i}"] = _bn(read, f"{prefix}.1", width, bn_epsilon)
        channels = width
    flat = channels * POOL_SIZE * POOL_SIZE
    for j, (prefix, dim) in enumerate(zip(fcs, fc_dims), start=1):
        weight = read(f"{prefix}.weight", (dim, flat))
        kernel = (
            fc_after_pool_kernel(weight, channels, POOL_SIZE, POOL_SIZE) if j == 1 else dense_kernel(weight)
        )
        out[f"box_head/fc{j}"] = {
            "kernel": kernel,
            "bias": np.asarray(read(f"{prefix}.bias", (dim,)), np.float32),
        }
        flat = dim
    return out
