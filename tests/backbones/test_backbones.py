"""Every backbone builds, gives maps of the declared stride and channels, and plugs into
Faster R-CNN; ImageNet weights that cannot be downloaded fail with a clear message."""

import numpy as np
import pytest

import keras
import rcnn_zoo
from rcnn_zoo.backbones import BACKBONES, build_backbone

SIZE = (64, 96)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_feature_maps_have_declared_strides_and_channels(name):
    spec = build_backbone(name)
    features = spec.model(np.zeros((1, *SIZE, 3), "float32"))
    for feature_name, stride, channels in zip(spec.feature_names, spec.strides, spec.channels):
        shape = features[feature_name].shape
        assert shape[-1] == channels
        # "same"-style padding rounds up; valid 7×7/3×3 stems round the same way
        assert shape[1] == -(-SIZE[0] // stride) and shape[2] == -(-SIZE[1] // stride), (feature_name, shape)


def test_resnet_c4_runs_conv5_on_rois():
    spec = build_backbone("resnet50")
    assert spec.roi_head == "res5"
    out = spec.res5(np.zeros((3, 14, 14, 1024), "float32"))
    assert out.shape == (3, 7, 7, 2048)


@pytest.mark.parametrize(
    "backbone,extra",
    [
        ("vgg16", {"roi_pooling": "pool"}),
        ("resnet50", {}),
        ("resnet50_fpn", {}),
        ("mobilenet_v3_large_fpn", {}),
        ("tiny", {"roi_pooling": "pool"}),
        ("tiny_fpn", {}),
    ],
)
def test_faster_rcnn_predicts_with_each_backbone(backbone, extra):
    keras.utils.set_random_seed(0)
    model = rcnn_zoo.FasterRCNN(
        num_classes=2, backbone=backbone, image_min_size=128, image_max_size=160,
        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50, score_threshold=0.0,
        max_detections=10, **extra,
    )
    images = np.random.default_rng(0).uniform(0, 255, (1, *SIZE, 3)).astype("float32")
    out = model.predict(images, verbose=0)
    assert out["boxes"].shape == (1, 10, 4)
    n = out["num_detections"][0]
    assert 0 < n <= 10
    boxes = out["boxes"][0][:n]
    assert boxes[:, 2].max() <= SIZE[1] + 1e-3 and boxes[:, 3].max() <= SIZE[0] + 1e-3


def test_fpn_uses_multi_level_roi_align_and_c4_uses_conv5():
    fpn = rcnn_zoo.FasterRCNN(num_classes=2, backbone="resnet50_fpn")
    assert type(fpn.roi_heads.pooler).__name__ == "MultiLevelRoIAlign"
    assert fpn.roi_heads.pooler.strides == (4, 8, 16, 32)
    c4 = rcnn_zoo.FasterRCNN(num_classes=2, backbone="resnet101")
    assert type(c4.roi_heads.box_head).__name__ == "Res5BoxHead"


def test_tiny_fpn_normalises_each_image_alone_unlike_tiny():
    """Group norm (Wu & He 2018) takes its statistics over each image's channel groups, so in
    training an image's features do not depend on the other images of its batch; tiny's batch
    norm mixes them (which is what makes batches of 2 noisy)."""
    rng = np.random.default_rng(0)
    first, other = rng.uniform(0, 1, (2, 1, *SIZE, 3)).astype("float32")
    for name, alone_equals_batched in (("tiny_fpn", True), ("tiny", False)):
        keras.utils.set_random_seed(0)
        model = build_backbone(name).model
        alone = model(first, training=True)
        batched = model(np.concatenate([first, other]), training=True)
        for level in alone:
            same = np.allclose(alone[level][0], batched[level][0], atol=1e-5)
            assert same == alone_equals_batched, (name, level)


def test_tiny_fpn_proposes_on_p3_and_pools_small_rois_from_p2():
    """The RPN reads P3 with every anchor size (the CLI's 32–256 px on one level, as tiny's);
    RoIs are pooled from P2–P4 by their size (FPN eq. 1: under 112 px from the stride-4 P2)."""
    from rcnn_zoo.heads import assign_fpn_levels
    from rcnn_zoo.training.detectors import build_detector

    model = build_detector(1, ["raccoon"], backbone="tiny_fpn")
    assert model.rpn_feature_names == ("P3",) and model.roi_feature_names == ("P2", "P3", "P4")
    assert model.roi_heads.pooler.strides == (4, 8, 16)
    assert [tuple(s) for s in model.rpn.anchor_generator.sizes] == [(32.0, 64.0, 128.0, 256.0)]
    assert (model.image_min_size, model.image_max_size) == (256, 416)
    sides = np.array([20.0, 111.0, 112.0, 223.0, 224.0, 400.0], "float32")
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], axis=1)
    assert assign_fpn_levels(boxes, 2, 4).numpy().tolist() == [2, 2, 3, 3, 4, 4]


def test_unknown_backbone_and_weights_are_refused():
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_backbone("resnet9000")
    with pytest.raises(ValueError, match="backbone_weights"):
        build_backbone("vgg16", weights="places365")


def test_imagenet_download_failure_explains_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("URL fetch failure on https://storage.googleapis.com/...: no network")

    monkeypatch.setattr(keras.applications, "VGG16", offline)
    with pytest.raises(RuntimeError, match="backbone_weights=None"):
        build_backbone("vgg16", weights="imagenet")


def test_mobilenet_has_torchvision_layout_and_refuses_keras_imagenet_weights():
    spec = build_backbone("mobilenet_v3_large_fpn")
    # torchvision's FPN inputs are features[13] and features[16]: both stride 32, plus the pool
    assert spec.feature_names == ("P5a", "P5b", "P6") and spec.strides == (32, 32, 64)
    assert spec.preprocessing == "torch"
    assert spec.defaults["anchor_sizes"] == ((32, 64, 128, 256, 512),) * 3
    assert spec.defaults["roi_levels"] == ("P5a",)
    assert not any(layer.name.startswith("rescaling") for layer in spec.model.layers)
    assert all(layer.trainable is False for layer in spec.model.layers if layer.name.endswith("_bn"))
    with pytest.raises(ValueError, match="torchvision"):
        build_backbone("mobilenet_v3_large_fpn", weights="imagenet")
