"""MobileNetV3-Large (Howard et al. 2019, "Searching for MobileNetV3") + FPN in the layout of
torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` / ``fasterrcnn_mobilenet_v3_large_320_fpn``,
so that its COCO checkpoints convert exactly (``rcnn_zoo.convert.torchvision_mobilenet_v3_fpn``).

Trunk (torchvision ``mobilenet_v3_large().features``, indices 0…16):

- ``0`` stem: 3×3 conv stride 2 → 16 channels, BN, hard-swish;
- ``1…15`` inverted residual blocks (table :data:`INVERTED_RESIDUAL_SETTING`): optional 1×1
  expand conv + BN + activation, k×k depthwise conv + BN + activation, optional
  squeeze-excitation (global average → 1×1 conv to ``make_divisible(expanded // 4, 8)`` →
  ReLU → 1×1 conv → hard-sigmoid → multiply), 1×1 project conv + BN (linear), and a residual
  add when stride 1 and input channels = output channels;
- ``16``: 1×1 conv 160 → 960, BN, hard-swish.

Every conv is preceded by an explicit symmetric zero padding of ``(k − 1) // 2 · dilation`` and
runs ``padding="valid"``, as PyTorch's ``Conv2d(padding=(k-1)//2)``, so stride-2 layers see the
same pixels on every (odd or even) size. Convs before a BN have no bias. Hard-swish is
``x · relu6(x + 3) / 6`` and hard-sigmoid ``relu6(x + 3) / 6``, PyTorch's definitions.

FPN (torchvision ``_mobilenet_extractor(fpn=True)``): the "stages" start at the stem and at each
stride-2 block (indices 0, 2, 4, 7, 13) plus the last layer 16; the last two stages feed the
FPN, i.e. the outputs of block 13 (160 channels) and of layer 16 (960 channels). **Both have
stride 32**: block 13 is the block that downsamples to 1/32. Laterals 1×1 → 256 (with bias),
top-down nearest upsampling (an identity here, both maps have the same size), 3×3 output convs,
and ``LastLevelMaxPool`` (max-pool kernel 1, stride 2) on the top output: three maps
``P5a`` (stride 32, from block 13), ``P5b`` (stride 32, from layer 16) and ``P6`` (stride 64),
torchvision's ``"0"``, ``"1"``, ``"pool"``. The RPN reads all three with 5 sizes × 3 ratios =
15 anchors per location; RoIs are pooled from ``P5a`` only — torchvision's
``MultiScaleRoIAlign(["0", "1", "2", "3"])`` finds ``"0"`` and ``"1"`` at the same scale 1/32,
so its level mapper sends every RoI to ``"0"``.

Batch norm is frozen (inference statistics, not trained), as torchvision's
``FrozenBatchNorm2d`` with pretrained weights, with ε = 1e-5 — the ε of torchvision's detection
models (``norm_layer=FrozenBatchNorm2d`` replaces MobileNetV3's own ``BatchNorm2d(eps=0.001)``).
Layers 0…6 (stem and the first three stages) are not trained, as torchvision's default
``trainable_backbone_layers=3``.

``weights="imagenet"`` is refused: keras.applications' MobileNetV3Large is another network
(TF "same" padding on stride-2 convs, a built-in rescaling to [-1, 1], BN ε 1e-3, weights
trained with those), so copying its weights here would not reproduce it. Start from converted
torchvision weights instead (``weights="coco_mobilenet_v3_large_fpn"`` on the detector, or
``rcnn-zoo convert``).
"""

import keras
from keras import layers

from rcnn_zoo.backbones.base import Backbone

BN_EPSILON = 1e-5  # torchvision's detection models (FrozenBatchNorm2d / BatchNorm2d default)
FPN_CHANNELS = 256
STEM_CHANNELS = 16
LAST_CHANNELS = 960
# torchvision trainable_backbone_layers=3 of 6 stages: features[:7] are frozen.
FROZEN_LAYERS = 7

# torchvision _mobilenet_v3_conf("mobilenet_v3_large"), width 1.0, no reduced tail, no dilation:
# (input channels, kernel, expanded channels, output channels, squeeze-excitation,
#  activation "RE" = ReLU / "HS" = hard-swish, stride, dilation) of blocks 1…15.
INVERTED_RESIDUAL_SETTING = (
    (16, 3, 16, 16, False, "RE", 1, 1),
    (16, 3, 64, 24, False, "RE", 2, 1),
    (24, 3, 72, 24, False, "RE", 1, 1),
    (24, 5, 72, 40, True, "RE", 2, 1),
    (40, 5, 120, 40, True, "RE", 1, 1),
    (40, 5, 120, 40, True, "RE", 1, 1),
    (40, 3, 240, 80, False, "HS", 2, 1),
    (80, 3, 200, 80, False, "HS", 1, 1),
    (80, 3, 184, 80, False, "HS", 1, 1),
    (80, 3, 184, 80, False, "HS", 1, 1),
    (80, 3, 480, 112, True, "HS", 1, 1),
    (112, 3, 672, 112, True, "HS", 1, 1),
    (112, 5, 672, 160, True, "HS", 2, 1),
    (160, 5, 960, 160, True, "HS", 1, 1),
    (160, 5, 960, 160, True, "HS", 1, 1),
)
# Trunk layers whose outputs feed the FPN (torchvision returned_layers = [num_stages-2, -1]).
FPN_INPUT_LAYERS = (13, 16)


def make_divisible(value, divisor=8, min_value=None):
    """Nearest multiple of ``divisor`` not below 90 % of ``value`` (the TF-slim rule)."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def squeeze_channels(expanded):
    """Channels of the squeeze-excitation bottleneck of a block with ``expanded`` channels."""
    return make_divisible(expanded // 4, 8)


def _activation(kind, name):
    if kind == "RE":
        return layers.ReLU(name=name)
    if kind == "HS":
        return layers.Activation("hard_silu", name=name)  # x·relu6(x+3)/6 = PyTorch Hardswish
    raise ValueError(f"unknown activation {kind!r}")


def _norm(name):
    bn = layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=0.99, name=name)
    bn.trainable = False  # frozen: always inference statistics (Keras 3)
    return bn


def _pad(x, kernel, dilation, name):
    pad = (kernel - 1) // 2 * dilation
    return layers.ZeroPadding2D(pad, name=name)(x) if pad else x


def conv_bn(x, filters, kernel, stride, activation, name, depthwise=False, dilation=1):
    """torchvision ``Conv2dNormActivation``: padded conv (no bias) → BN → optional activation.

    Layers ``{name}_pad``, ``{name}_conv``, ``{name}_bn``, ``{name}_act``.
    """
    x = _pad(x, kernel, dilation, f"{name}_pad")
    if depthwise:
        conv = layers.DepthwiseConv2D(
            kernel, strides=stride, dilation_rate=dilation, padding="valid", use_bias=False,
            name=f"{name}_conv",
        )
    else:
        conv = layers.Conv2D(
            filters, kernel, strides=stride, dilation_rate=dilation, padding="valid",
            use_bias=False, name=f"{name}_conv",
        )
    x = _norm(f"{name}_bn")(conv(x))
    if activation is not None:
        x = _activation(activation, f"{name}_act")(x)
    return x


def squeeze_excitation(x, channels, name):
    """torchvision ``SqueezeExcitation(scale_activation=Hardsigmoid)``: layers ``{name}_pool``,
    ``{name}_fc1`` (1×1 conv with bias), ``{name}_relu``, ``{name}_fc2``, ``{name}_gate``
    (hard-sigmoid), ``{name}_scale``."""
    scale = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    scale = layers.Conv2D(squeeze_channels(channels), 1, name=f"{name}_fc1")(scale)
    scale = layers.ReLU(name=f"{name}_relu")(scale)
    scale = layers.Conv2D(channels, 1, name=f"{name}_fc2")(scale)
    scale = layers.Activation("hard_sigmoid", name=f"{name}_gate")(scale)  # relu6(x+3)/6
    return layers.Multiply(name=f"{name}_scale")([x, scale])


def inverted_residual(x, setting, name):
    """One block of :data:`INVERTED_RESIDUAL_SETTING`; layers prefixed ``name``."""
    in_channels, kernel, expanded, out_channels, use_se, activation, stride, dilation = setting
    inputs = x
    if expanded != in_channels:
        x = conv_bn(x, expanded, 1, 1, activation, f"{name}_expand")
    x = conv_bn(
        x, expanded, kernel, 1 if dilation > 1 else stride, activation, f"{name}_dw",
        depthwise=True, dilation=dilation,
    )
    if use_se:
        x = squeeze_excitation(x, expanded, f"{name}_se")
    x = conv_bn(x, out_channels, 1, 1, None, f"{name}_project")
    if stride == 1 and in_channels == out_channels:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def mobilenet_v3_large_trunk(name="mobilenet_v3_large"):
    """Images (ImageNet-normalised, ``torch`` mode) → ``{"C13": [B,H/32,W/32,160],
    "C16": [B,H/32,W/32,960]}``: torchvision ``features`` up to layer 16. Layers are named
    ``stem_*``, ``block{i}_*`` (i = 1…15, torchvision's ``features[i]``) and ``last_*``."""
    images = keras.Input((None, None, 3), name="images")
    x = conv_bn(images, STEM_CHANNELS, 3, 2, "HS", "stem")
    outputs = {}
    for index, setting in enumerate(INVERTED_RESIDUAL_SETTING, start=1):
        x = inverted_residual(x, setting, f"block{index}")
        if index in FPN_INPUT_LAYERS:
            outputs[f"C{index}"] = x
    x = conv_bn(x, LAST_CHANNELS, 1, 1, "HS", "last")
    outputs["C16"] = x
    model = keras.Model(images, outputs, name=name)
    frozen = ("stem_",) + tuple(f"block{i}_" for i in range(1, FROZEN_LAYERS))
    for layer in model.layers:
        if layer.name.startswith(frozen):
            layer.trainable = False
    return model


def add_mobilenet_fpn(trunk, out_channels=FPN_CHANNELS, name="fpn"):
    """torchvision ``FeaturePyramidNetwork([160, 960], 256, LastLevelMaxPool())`` on the two
    stride-32 trunk outputs → ``{"P5a", "P5b", "P6"}``.

    The top-down step upsamples the top lateral to the size of the lower one; both have stride
    32 (the same size for every input), so it is the identity and the sum is taken directly.
    """
    features = trunk.output
    inner0 = layers.Conv2D(out_channels, 1, name=f"{name}_inner0")(features["C13"])
    inner1 = layers.Conv2D(out_channels, 1, name=f"{name}_inner1")(features["C16"])
    merged0 = layers.Add(name=f"{name}_merge0")([inner0, inner1])
    p5a = layers.Conv2D(out_channels, 3, padding="same", name=f"{name}_layer0")(merged0)
    p5b = layers.Conv2D(out_channels, 3, padding="same", name=f"{name}_layer1")(inner1)
    p6 = layers.MaxPooling2D(1, strides=2, name=f"{name}_pool")(p5b)
    return keras.Model(trunk.input, {"P5a": p5a, "P5b": p5b, "P6": p6}, name=f"{trunk.name}_{name}")


# torchvision FasterRCNN's defaults for this backbone (fasterrcnn_mobilenet_v3_large_fpn); the
# 320 variant changes only image_min_size=320, image_max_size=640 and the test top-n to 150.
DEFAULTS = {
    "image_min_size": 800,
    "image_max_size": 1333,
    # torchvision's GeneralizedRCNNTransform and AnchorGenerator.
    "resize_rounding": "floor",
    "size_divisible": 32,
    "anchor_stride_rule": "image_over_grid",
    "anchor_sizes": ((32, 64, 128, 256, 512),) * 3,
    "anchor_aspect_ratios": (0.5, 1.0, 2.0),
    "anchor_style": "torchvision",
    "rpn_head_channels": FPN_CHANNELS,
    "rpn_pre_nms_top_n_train": 2000,
    "rpn_post_nms_top_n_train": 2000,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_nms_threshold": 0.7,
    "rpn_min_size": 1e-3,
    "rpn_min_size_rule": "torchvision",
    # Both torchvision builders pass rpn_score_thresh=0.05 (objectness probability, before NMS).
    "rpn_score_threshold": 0.05,
    "roi_pooling": "align",
    "roi_pool_size": 7,
    "roi_sampling_ratio": 2,
    "roi_aligned": False,
    "roi_levels": ("P5a",),
    "roi_head_dim": 1024,
}


def build_mobilenet_v3_large_fpn(weights=None):
    """torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` backbone (see the module docstring).

    ``weights``: only ``None``; ImageNet weights of this layout do not come from
    keras.applications (a different network) — load converted torchvision weights into the
    detector instead.
    """
    if weights is not None:
        raise ValueError(
            f"backbone_weights={weights!r} is not available for 'mobilenet_v3_large_fpn': it has "
            "torchvision's layout (symmetric padding, ImageNet mean/std inputs), which "
            "keras.applications' MobileNetV3Large weights do not fit. Use backbone_weights=None "
            "and load converted torchvision weights into the detector, e.g. "
            "FasterRCNN(..., weights='coco_mobilenet_v3_large_fpn') or `rcnn-zoo convert --from "
            "torchvision_fasterrcnn_mobilenet_v3_large_fpn`."
        )
    model = add_mobilenet_fpn(mobilenet_v3_large_trunk())
    return Backbone(
        model=model,
        feature_names=("P5a", "P5b", "P6"),
        strides=(32, 32, 64),
        channels=(FPN_CHANNELS,) * 3,
        preprocessing="torch",
        roi_head="fc",
        defaults=dict(DEFAULTS),
    )
