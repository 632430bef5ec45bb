"""VGG16 trunk (Simonyan & Zisserman 2015) as used by Fast and Faster R-CNN: conv5_3, stride 16."""

import keras

from rcnn_zoo.backbones.base import Backbone, check_weights_argument, load_imagenet


def build_vgg16(weights=None, frozen_stages=2):
    """conv1_1 … conv5_3 (no pool5), RPN and RoI pooling on conv5_3 (512 ch, stride 16).

    The Fast R-CNN paper does not train conv1 and conv2 (``frozen_stages=2``) when fine-tuning.
    """
    check_weights_argument("vgg16", weights)

    def factory():
        return keras.applications.VGG16(
            include_top=False, weights=weights, input_shape=(None, None, 3)
        )

    full = load_imagenet("vgg16", factory) if weights else factory()
    model = keras.Model(full.input, {"C5": full.get_layer("block5_conv3").output}, name="vgg16")
    if weights:
        for layer in model.layers:
            if any(layer.name.startswith(f"block{i + 1}_") for i in range(frozen_stages)):
                layer.trainable = False
    return Backbone(
        model=model,
        feature_names=("C5",),
        strides=(16,),
        channels=(512,),
        preprocessing="caffe",
        roi_head="fc",
        defaults={
            "roi_pooling": "pool",
            "roi_pool_size": 7,
            "roi_head_dim": 4096,
            "roi_head_dropout": 0.5,
            "anchor_style": "py-faster-rcnn",
        },
    )
