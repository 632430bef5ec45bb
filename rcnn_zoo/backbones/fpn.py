"""Feature Pyramid Network (Lin et al. 2017) on top of a multi-stage trunk.

Layout of torchvision's ``fasterrcnn_resnet50_fpn``: lateral 1×1 convs and 3×3 output convs with
256 channels, nearest-neighbour top-down upsampling, and P6 = max-pool(kernel 1, stride 2) of P5,
used only by the RPN.
"""

import keras
from keras import layers


class UpsampleLike(layers.Layer):
    """Nearest-neighbour resize of ``x [B,h,w,C]`` to the spatial size of ``like [B,H,W,C']``.

    Resizing to the lateral's shape (instead of ×2) handles odd sizes, so images need not be
    padded to a multiple of 32.
    """

    def call(self, x, like):
        size = keras.ops.shape(like)[1:3]
        return keras.ops.cast(
            keras.ops.image.resize(x, size, interpolation="nearest"), x.dtype
        )

    def compute_output_shape(self, x_shape, like_shape):
        return (x_shape[0], like_shape[1], like_shape[2], x_shape[3])


def add_fpn(trunk, input_names, out_channels=256, extra_pool=True, name="fpn"):
    """Wrap ``trunk`` (images → dict with ``input_names``, finest first) into an FPN model.

    Returns a functional model images → ``{"P2", …}`` (named after the input strides' levels,
    e.g. C2…C5 → P2…P5, plus P6 when ``extra_pool``).
    """
    features = trunk.output
    levels = [int(n[1:]) for n in input_names]
    laterals = [
        layers.Conv2D(out_channels, 1, name=f"{name}_inner{level}")(features[n])
        for n, level in zip(input_names, levels)
    ]
    merged = [None] * len(laterals)
    merged[-1] = laterals[-1]
    for i in range(len(laterals) - 2, -1, -1):
        up = UpsampleLike(name=f"{name}_up{levels[i]}")(merged[i + 1], laterals[i])
        merged[i] = layers.Add(name=f"{name}_merge{levels[i]}")([laterals[i], up])
    outputs = {
        f"P{level}": layers.Conv2D(out_channels, 3, padding="same", name=f"{name}_layer{level}")(m)
        for m, level in zip(merged, levels)
    }
    if extra_pool:
        top = levels[-1]
        outputs[f"P{top + 1}"] = layers.MaxPooling2D(1, strides=2, name=f"{name}_pool")(
            outputs[f"P{top}"]
        )
    return keras.Model(trunk.input, outputs, name=f"{trunk.name}_{name}")
