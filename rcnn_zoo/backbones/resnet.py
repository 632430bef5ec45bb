"""ResNet-50/101 (He et al. 2016) built to match ``keras.applications`` layer names.

Own builder rather than ``keras.applications.ResNet50`` because detection needs (a) the conv5
stage as a separate model applied to pooled RoIs (the C4 layout), (b) stride on the 3×3 conv with
symmetric padding to match torchvision checkpoints (``stride_in_1x1=False``), and (c) frozen
batch norm. ImageNet weights are copied by layer name from ``keras.applications``.
"""

import keras
from keras import layers

from rcnn_zoo.backbones.base import Backbone, check_weights_argument, load_imagenet
from rcnn_zoo.backbones.frozen_norm import BatchNormalization, Conv2D

BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
_BN_EPSILON = 1.001e-5  # keras.applications' value; torchvision uses 1e-5 (converters adjust)


def _norm(name, frozen):
    # A frozen BatchNormalization (trainable=False) always runs in inference mode in Keras 3,
    # which is what detection fine-tuning with 1-2 images per batch needs.
    bn = BatchNormalization(axis=-1, epsilon=_BN_EPSILON, name=name)
    bn.trainable = not frozen
    return bn


def _conv_norm(x, filters, kernel, stride, name, frozen, **conv_options):
    """``{name}_conv`` then ``{name}_bn``; a frozen norm is folded into the conv (frozen_norm.py)."""
    conv = Conv2D(filters, kernel, strides=stride, name=f"{name}_conv", **conv_options)
    norm = _norm(f"{name}_bn", frozen)
    if frozen:
        conv.fold(norm)
    return norm(conv(x))


def bottleneck(x, filters, stride, name, shortcut, stride_in_1x1, frozen_bn, dilation=1):
    """One bottleneck block: 1×1 → 3×3 → 1×1 (×4 channels) plus the shortcut.

    Args:
        x: ``[B, H, W, C]``.
        stride: 1 or 2; applied on the first 1×1 conv (Caffe / keras.applications) or on the
            3×3 conv with symmetric padding (torchvision, ``stride_in_1x1=False``).
        dilation: of the 3×3 conv (R-FCN's à trous conv5 keeps stride 16 with dilation 2).
    """
    s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
    skip = _conv_norm(x, 4 * filters, 1, stride, f"{name}_0", frozen_bn) if shortcut else x
    y = _conv_norm(x, filters, 1, s1, f"{name}_1", frozen_bn)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    if s3 == 1:
        y = _conv_norm(y, filters, 3, 1, f"{name}_2", frozen_bn, padding="same", dilation_rate=dilation)
    else:
        y = layers.ZeroPadding2D(1, name=f"{name}_2_pad")(y)
        y = _conv_norm(y, filters, 3, s3, f"{name}_2", frozen_bn)
    y = layers.Activation("relu", name=f"{name}_2_relu")(y)
    y = _conv_norm(y, 4 * filters, 1, 1, f"{name}_3", frozen_bn)
    y = layers.Add(name=f"{name}_add")([skip, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def stage(x, filters, blocks, stride, name, stride_in_1x1, frozen_bn, dilation=1):
    """``blocks`` bottlenecks; the first one changes resolution/channels."""
    x = bottleneck(x, filters, stride, f"{name}_block1", True, stride_in_1x1, frozen_bn, dilation)
    for i in range(2, blocks + 1):
        x = bottleneck(x, filters, 1, f"{name}_block{i}", False, stride_in_1x1, frozen_bn, dilation)
    return x


def stem(x, frozen_bn):
    """conv1 7×7/2 + max-pool 3×3/2: stride 4, 64 channels."""
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = _conv_norm(x, 64, 7, 2, "conv1", frozen_bn)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)  # zeros == -inf padding after ReLU
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def resnet_trunk(depth_name, stride_in_1x1=True, frozen_bn=True, frozen_stages=1):
    """conv1…conv5 as one functional model returning ``{"C2", "C3", "C4", "C5"}``.

    ``frozen_stages``: stem and this many following stages are not trained (detectron2's
    FREEZE_AT=2 ≙ 1 here: stem + conv2), as is usual when fine-tuning from ImageNet.
    """
    counts = BLOCKS[depth_name]
    images = keras.Input((None, None, 3), name="images")
    x = stem(images, frozen_bn)
    outputs = {}
    for index, (filters, blocks) in enumerate(zip((64, 128, 256, 512), counts)):
        stride = 1 if index == 0 else 2
        x = stage(x, filters, blocks, stride, f"conv{index + 2}", stride_in_1x1, frozen_bn)
        outputs[f"C{index + 2}"] = x
    model = keras.Model(images, outputs, name=depth_name)
    _freeze_prefixes(model, ["conv1"] + [f"conv{i + 2}_" for i in range(frozen_stages)])
    return model


def _freeze_prefixes(model, prefixes):
    for layer in model.layers:
        if any(layer.name.startswith(p) for p in prefixes):
            layer.trainable = False


def res5_head(blocks=3, in_channels=1024, stride_in_1x1=True, frozen_bn=True, pool_size=14):
    """conv5 stage for the C4 layout: pooled RoIs ``[K, 14, 14, 1024]`` → ``[K, 7, 7, 2048]``."""
    rois = keras.Input((pool_size, pool_size, in_channels), name="roi_features")
    x = stage(rois, 512, blocks, 2, "conv5", stride_in_1x1, frozen_bn)
    return keras.Model(rois, x, name="res5")


def copy_imagenet_weights(depth_name, targets):
    """Copy keras.applications ImageNet weights into our layers by (identical) layer name."""
    factory = {"resnet50": keras.applications.ResNet50, "resnet101": keras.applications.ResNet101}
    source = load_imagenet(
        depth_name, lambda: factory[depth_name](include_top=False, weights="imagenet")
    )
    by_name = {layer.name: layer for layer in source.layers if layer.weights}
    copied = 0
    for target in targets:
        for layer in target.layers:
            if layer.name in by_name:
                layer.set_weights(by_name[layer.name].get_weights())
                copied += 1
    return copied


def build_resnet_c4(depth_name, weights=None, frozen_bn=True):
    """ResNet C4 layout: RPN and RoI pooling on conv4 (stride 16), conv5 run per RoI."""
    check_weights_argument(depth_name, weights)
    full = resnet_trunk(depth_name, stride_in_1x1=True, frozen_bn=frozen_bn)
    trunk = keras.Model(full.input, {"C4": full.get_layer(f"conv4_block{BLOCKS[depth_name][2]}_out").output},
                        name=f"{depth_name}_c4")
    res5 = res5_head(BLOCKS[depth_name][3], 1024, True, frozen_bn)
    if weights == "imagenet":
        copy_imagenet_weights(depth_name, [trunk, res5])
    return Backbone(
        model=trunk,
        feature_names=("C4",),
        strides=(16,),
        channels=(1024,),
        preprocessing="caffe",
        roi_head="res5",
        res5=res5,
        defaults={"roi_pooling": "align", "roi_pool_size": 14, "anchor_style": "py-faster-rcnn"},
    )


def build_resnet_dilated_c5(depth_name, weights=None, frozen_bn=True):
    """R-FCN layout (Dai et al. 2016, section 3.2): conv4 (stride 16) for the RPN, and conv5 run
    on the whole image with stride 1 and dilation 2 (à trous), so C5 is also stride 16."""
    check_weights_argument(depth_name, weights)
    counts = BLOCKS[depth_name]
    images = keras.Input((None, None, 3), name="images")
    x = stem(images, frozen_bn)
    for index, (filters, blocks) in enumerate(zip((64, 128, 256), counts[:3])):
        x = stage(x, filters, blocks, 1 if index == 0 else 2, f"conv{index + 2}", True, frozen_bn)
    c4 = x
    c5 = stage(c4, 512, counts[3], 1, "conv5", True, frozen_bn, dilation=2)
    model = keras.Model(images, {"C4": c4, "C5": c5}, name=f"{depth_name}_dilated_c5")
    _freeze_prefixes(model, ["conv1", "conv2_"])
    if weights == "imagenet":
        copy_imagenet_weights(depth_name, [model])
    return Backbone(
        model=model,
        feature_names=("C4", "C5"),
        strides=(16, 16),
        channels=(1024, 2048),
        preprocessing="caffe",
        roi_head="ps",
        rpn_feature_names=("C4",),
        defaults={"anchor_style": "py-faster-rcnn", "roi_levels": ("C5",)},
    )
