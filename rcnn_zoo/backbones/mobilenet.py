"""MobileNetV3-Large (Howard et al. 2019) + FPN, torchvision ``fasterrcnn_mobilenet_v3_large_fpn``-like.

FPN on the last stride-16 block and the final stride-32 map, plus a pooled level; the RPN uses
five anchor sizes per level, three levels.
"""

import keras

from rcnn_zoo.backbones.base import Backbone, check_weights_argument, load_imagenet
from rcnn_zoo.backbones.fpn import add_fpn


def _last_at_stride(model, size):
    """Name of the last ``expanded_conv`` layer whose output has spatial size ``size``."""
    name = None
    for layer in model.layers:
        shape = layer.output.shape
        if layer.name.startswith("expanded_conv") and shape[1] == size:
            name = layer.name
    return name


def build_mobilenet_v3_large_fpn(weights=None):
    check_weights_argument("mobilenet_v3_large_fpn", weights)

    def factory(input_shape):
        return keras.applications.MobileNetV3Large(
            include_top=False,
            weights=weights,
            input_shape=input_shape,
            include_preprocessing=True,  # takes raw 0..255 pixels
        )

    # Layer names are found on a fixed-size copy; the detector uses a dynamic-size one.
    probe = factory((224, 224, 3)) if not weights else load_imagenet(
        "mobilenet_v3_large_fpn", lambda: factory((224, 224, 3))
    )
    c4_name = _last_at_stride(probe, 14)
    full = factory((None, None, 3)) if not weights else load_imagenet(
        "mobilenet_v3_large_fpn", lambda: factory((None, None, 3))
    )
    trunk = keras.Model(
        full.input,
        {"C4": full.get_layer(c4_name).output, "C5": full.output},
        name="mobilenet_v3_large",
    )
    model = add_fpn(trunk, ["C4", "C5"], 256, extra_pool=True)
    return Backbone(
        model=model,
        feature_names=("P4", "P5", "P6"),
        strides=(16, 32, 64),
        channels=(256, 256, 256),
        preprocessing="raw",
        roi_head="fc",
        defaults={
            "roi_pooling": "align",
            "roi_pool_size": 7,
            "roi_head_dim": 1024,
            "anchor_sizes": ((32, 64, 128, 256, 512),) * 3,
            "anchor_style": "torchvision",
            "rpn_pre_nms_top_n_test": 1000,
            "rpn_post_nms_top_n_test": 1000,
            "rpn_pre_nms_top_n_train": 2000,
            "rpn_post_nms_top_n_train": 2000,
        },
    )
