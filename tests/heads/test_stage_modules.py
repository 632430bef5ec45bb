"""The detectors' stages as modules: RegionProposalNetwork, BoxRoIHead, PositionSensitiveRoIHead.

Each owns its arguments (the paper's defaults in its signature), its sampling and its losses,
and serialises as a Keras layer; detectors route their prefixed keywords to them.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import rcnn_zoo
from rcnn_zoo.heads import BoxRoIHead, PositionSensitiveRoIHead, RegionProposalNetwork
from rcnn_zoo.losses import DetectionBoxLoss, DetectionClassificationLoss, RPNObjectnessLoss, SmoothL1BoxLoss

GT_BOXES = tf.constant([[[8.0, 8.0, 40.0, 44.0], [0.0, 0.0, 0.0, 0.0]]])
GT_LABELS = tf.constant([[1, -1]])


def _rpn(**kwargs):
    return RegionProposalNetwork(strides=(8,), in_channels=16, anchor_sizes=((16, 32),), head_channels=8,
                                 pre_nms_top_n_test=50, post_nms_top_n_test=20, min_size=0.0, **kwargs)


def test_rpn_signature_holds_the_faster_rcnn_paper_defaults():
    rpn = RegionProposalNetwork()
    config = rpn.get_config()
    # Ren et al. §3.1.2–3.1.3: IoU ≥ 0.7 positive, < 0.3 negative, 256 anchors per image, 1:1;
    # 3 scales × 3 ratios; NMS 0.7.
    assert (config["positive_iou"], config["negative_iou"]) == (0.7, 0.3)
    assert (config["batch_size_per_image"], config["positive_fraction"]) == (256, 0.5)
    assert config["anchor_sizes"] == (128, 256, 512) and config["nms_threshold"] == 0.7
    assert rpn.anchors_per_location == 9


def test_rpn_outputs_and_named_losses():
    rpn = _rpn()
    features = tf.random.normal((1, 6, 8, 16), seed=3)
    info = tf.constant([[48.0, 64.0, 1.0]])
    out = rpn([features], batch_shape=tf.constant([48, 64]), image_info=info)
    anchors = 6 * 8 * 6  # H·W·A, A = 2 sizes × 3 aspect ratios
    assert out["anchors"].shape == (anchors, 4) and out["rpn_logits"].shape == (1, anchors)
    assert out["rpn_deltas"].shape == (1, anchors, 4)
    assert out["proposals"].shape == (1, 20, 4) and out["proposal_valid"].shape == (1, 20)
    losses = rpn.losses_for(out, GT_BOXES, GT_LABELS, RPNObjectnessLoss(), SmoothL1BoxLoss(beta=1 / 9))
    assert set(losses) == {"rpn_cls", "rpn_box"}
    assert all(np.isfinite(float(v)) for v in losses.values())
    # With random weights every anchor's logit is near 0: BCE of a near-0.5 prediction ≈ ln 2.
    assert float(losses["rpn_cls"]) == pytest.approx(np.log(2), abs=0.05)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: _rpn(conv_depth=2),
        lambda: BoxRoIHead(3, strides=(8,), in_channels=16, pooling="align", pool_size=4, head_dim=12),
        lambda: PositionSensitiveRoIHead(3, stride=8, in_channels=16, group_size=3, reduced_channels=8),
    ],
)
def test_modules_round_trip_their_config(layer):
    first = layer()
    config = first.get_config()
    again = type(first).from_config(config)
    assert again.get_config() == config
    assert [w.shape for w in again.weights] == [w.shape for w in first.weights]


def test_box_roi_head_samples_the_configured_count_and_computes_cls_and_box():
    head = BoxRoIHead(3, strides=(8,), in_channels=16, pooling="align", pool_size=4, head_dim=12,
                      batch_size_per_image=16)
    features = tf.random.normal((1, 6, 8, 16), seed=4)
    proposals = tf.constant([[[6.0, 6.0, 42.0, 40.0], [20.0, 20.0, 60.0, 46.0], [0.0, 0.0, 0.0, 0.0]]])
    valid = tf.constant([[True, True, False]])
    out = head.forward([features], proposals, valid, (GT_BOXES, GT_LABELS), training=True)
    assert out["roi_targets"]["rois"].shape == (1, 16, 4)
    assert out["class_logits"].shape == (1, 16, 4) and out["box_deltas"].shape == (1, 16, 4, 4)
    losses = head.losses_for(out, DetectionClassificationLoss(), DetectionBoxLoss())
    assert set(losses) == {"cls", "box"} and all(np.isfinite(float(v)) for v in losses.values())
    test = head.forward([features], proposals, valid, None)
    detections = head.detect(test, tf.constant([[48, 64]]), 0.0, 0.5, 5)
    assert detections["boxes"].shape == (1, 5, 4)
    # Only the two valid proposals × 3 classes can be detected.
    assert int(detections["num_detections"][0]) <= 6


def test_ohem_head_takes_every_proposal_as_a_candidate():
    head = PositionSensitiveRoIHead(2, stride=8, in_channels=16, group_size=3, reduced_channels=8,
                                    batch_size_per_image=4)
    proposals = tf.random.uniform((1, 10, 2), 0, 30, seed=5)
    proposals = tf.concat([proposals, proposals + 12.0], axis=-1)
    targets = head.sample(proposals, tf.ones((1, 10), bool), GT_BOXES, GT_LABELS)
    assert targets["rois"].shape == (1, 10, 4)


def test_detectors_route_prefixed_keywords_to_their_modules():
    model = rcnn_zoo.FasterRCNN(2, backbone="tiny", rpn_nms_threshold=0.6, anchor_sizes=((8, 16, 32),),
                                roi_head_dim=32, roi_batch_size_per_image=48)
    assert model.rpn.proposal_layer.nms_threshold == 0.6
    assert model.rpn.anchor_generator.sizes == ((8, 16, 32),)
    assert model.roi_heads.batch_size_per_image == 48
    assert model.roi_heads.box_head.dim == 32


def test_precedence_module_paper_backbone_caller():
    hp = rcnn_zoo.FasterRCNN(2, backbone="tiny").hyperparameters()
    assert hp["rpn_positive_iou"] == 0.7  # the RPN's signature (Faster R-CNN paper)
    assert hp["roi_negative_iou_low"] == 0.0  # FasterRCNN.PAPER_DEFAULTS over Fast R-CNN's 0.1
    assert hp["roi_head_dim"] == 128  # the tiny backbone's default over the paper's 1024
    fast = rcnn_zoo.FastRCNN(2, backbone="tiny").hyperparameters()
    assert fast["roi_negative_iou_low"] == 0.1 and fast["roi_batch_size_per_image"] == 64
    # R-FCN §4.1: 300 proposals hold over the tiny backbone's 100.
    assert rcnn_zoo.RFCN(2, backbone="tiny").hyperparameters()["rpn_post_nms_top_n_test"] == 300


@pytest.mark.parametrize("keyword", ["roi_head_dim", "roi_pool_size", "roi_pooling"])
def test_rfcn_refuses_the_box_head_keywords_it_has_no_use_for(keyword):
    with pytest.raises(TypeError, match=keyword):
        rcnn_zoo.RFCN(2, backbone="tiny", **{keyword: "align" if keyword == "roi_pooling" else 7})


def test_fast_rcnn_has_no_rpn_keywords():
    assert not [k for k in rcnn_zoo.FastRCNN.accepted_hyperparameters() if k.startswith(("rpn_", "anchor_"))]
    with pytest.raises(TypeError, match="rpn_nms_threshold"):
        rcnn_zoo.FastRCNN(2, backbone="tiny", rpn_nms_threshold=0.5)


def test_weights_file_of_a_keras_file_builds_its_own_architecture(tmp_path):
    # RFCN's signature once defaulted backbone="resnet101", which overrode the file's "tiny".
    model = rcnn_zoo.RFCN(2, backbone="tiny", k=3, reduced_channels=8)
    path = str(tmp_path / "rfcn.keras")
    model.save(path)
    loaded = rcnn_zoo.RFCN(weights=path)
    assert loaded.backbone_name == "tiny" and loaded.roi_heads.group_size == 3
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert isinstance(keras.saving.load_model(path), rcnn_zoo.RFCN)
