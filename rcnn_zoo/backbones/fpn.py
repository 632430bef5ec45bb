"""Feature Pyramid Network (Lin et al. 2017) on top of a multi-stage trunk.

Layout of torchvision's ``fasterrcnn_resnet50_fpn``: lateral 1×1 convs and 3×3 output convs with
256 channels, nearest-neighbour top-down upsampling, and P6 = max-pool(kernel 1, stride 2) of P5,
used only by the RPN.
"""

import keras
import tensorflow as tf
from keras import layers

from rcnn_zoo.backbones.resnet import _BN_EPSILON


class UpsampleLike(layers.Layer):
    """Nearest-neighbour resize of ``x [B,h,w,C]`` to the spatial size of ``like [B,H,W,C']``.

    Output pixel ``(i, j)`` copies input pixel ``(floor(i·h/H), floor(j·w/W))`` — PyTorch's
    ``F.interpolate(mode="nearest")``, which torchvision's FPN uses (no half-pixel centres), so
    converted weights see the same features on every size, padded to a multiple of 32 or not.
    The size is read from ``like`` at run time: any image size, any number of times.
    """

    def call(self, x, like):
        size = tf.shape(like)[1:3]
        resized = tf.raw_ops.ResizeNearestNeighbor(
            images=x, size=size, align_corners=False, half_pixel_centers=False
        )
        return tf.cast(resized, x.dtype)

    def compute_output_shape(self, x_shape, like_shape):
        return (x_shape[0], like_shape[1], like_shape[2], x_shape[3])


def add_fpn(trunk, input_names, out_channels=256, extra_pool=True, name="fpn", norm=False):
    """Wrap ``trunk`` (images → dict with ``input_names``, finest first) into an FPN model.

    Returns a functional model images → ``{"P2", …}`` (named after the input strides' levels,
    e.g. C2…C5 → P2…P5, plus P6 when ``extra_pool``).

    ``norm=True``: every lateral 1×1 and output 3×3 conv is conv (no bias) + batch norm
    (``{name}_inner{l}_bn``, ``{name}_layer{l}_bn``; no activation), torchvision's
    ``FeaturePyramidNetwork(norm_layer=nn.BatchNorm2d)`` of ``fasterrcnn_resnet50_fpn_v2``. The
    batch norms are ordinary (trainable) ones; their ε is rcnn_zoo's 1.001e-5.
    """
    def conv(x, kernel, layer_name):
        padding = "same" if kernel > 1 else "valid"
        x = layers.Conv2D(out_channels, kernel, padding=padding, use_bias=not norm, name=layer_name)(x)
        if norm:
            x = layers.BatchNormalization(axis=-1, epsilon=_BN_EPSILON, name=f"{layer_name}_bn")(x)
        return x

    features = trunk.output
    levels = [int(n[1:]) for n in input_names]
    laterals = [
        conv(features[n], 1, f"{name}_inner{level}") for n, level in zip(input_names, levels)
    ]
    merged = [None] * len(laterals)
    merged[-1] = laterals[-1]
    for i in range(len(laterals) - 2, -1, -1):
        up = UpsampleLike(name=f"{name}_up{levels[i]}")(merged[i + 1], laterals[i])
        merged[i] = layers.Add(name=f"{name}_merge{levels[i]}")([laterals[i], up])
    outputs = {
        f"P{level}": conv(m, 3, f"{name}_layer{level}") for m, level in zip(merged, levels)
    }
    if extra_pool:
        top = levels[-1]
        outputs[f"P{top + 1}"] = layers.MaxPooling2D(1, strides=2, name=f"{name}_pool")(
            outputs[f"P{top}"]
        )
    return keras.Model(trunk.input, outputs, name=f"{trunk.name}_{name}")
