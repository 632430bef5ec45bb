"""R-FCN: fully convolutional head, voting over position-sensitive bins, OHEM, Keras protocol."""

import numpy as np
import pytest
import tensorflow as tf

import keras
import rcnn_zoo
from rcnn_zoo.data.synthetic import generate_shapes
from rcnn_zoo.ops import ps_roi_pool


def _model(**kwargs):
    keras.utils.set_random_seed(3)
    kwargs.setdefault("num_classes", 3)
    kwargs.setdefault("backbone", "tiny")
    kwargs.setdefault("k", 3)
    return rcnn_zoo.RFCN(**kwargs)


def _batch(n=2, seed=0):
    images, boxes, labels = generate_shapes(n, image_size=(96, 128), seed=seed)
    return images, {"boxes": boxes, "labels": labels}


def test_no_per_roi_learnable_layers():
    model = _model()
    ps_layers = {type(layer).__name__ for layer in model.roi_heads._flatten_layers(include_self=False)}
    assert ps_layers == {"Conv2D", "PSRoIPooling"}
    assert not any(isinstance(layer, keras.layers.Dense) for layer in model._flatten_layers())


def test_scores_are_the_average_vote_of_the_position_sensitive_bins():
    model = _model()
    features = tf.random.normal((1, 12, 16, 64), seed=1)
    rois = tf.constant([[[8.0, 8.0, 70.0, 60.0], [0.0, 0.0, 30.0, 90.0]]])
    logits, deltas = model.roi_heads([features], rois)
    head = model.roi_heads
    maps = head.score_maps(head.reduce(features))
    rows = tf.concat([tf.zeros((2, 1)), rois[0]], axis=1)
    pooled = ps_roi_pool(maps, rows, group_size=3, output_dim=4, spatial_scale=1 / 8)
    np.testing.assert_allclose(logits[0], tf.reduce_mean(pooled, axis=(1, 2)), atol=1e-5)
    assert deltas.shape == (1, 2, 4)  # class-agnostic boxes


def test_ohem_trains_on_exactly_the_hardest_rois():
    model = _model(roi_batch_size_per_image=16)
    model.compile()
    images, targets = _batch(2)
    y_pred = model(images.astype("float32"), training=True, ground_truth=targets)
    seen = {}

    class Spy(keras.losses.Loss):
        def call(self, y_true, y_pred):
            seen["labels"] = y_true["labels"]
            return tf.zeros(())

    model.loss_functions["classification_loss"] = Spy()
    model.compute_losses(y_pred)
    kept = seen["labels"].numpy()
    assert ((kept >= 0).sum(axis=1) == 16).all()
    candidates = y_pred["roi_targets"]["labels"].numpy()
    assert ((candidates >= 0).sum(axis=1) > 16).all()  # more candidates than kept


def test_without_ohem_samples_like_faster_rcnn():
    model = _model(ohem=False, roi_batch_size_per_image=32)
    images, targets = _batch(2)
    y_pred = model(images.astype("float32"), training=True, ground_truth=targets)
    assert y_pred["roi_targets"]["labels"].shape == (2, 32)


def test_fit_predict_and_keras_round_trip(tmp_path):
    model = _model(score_threshold=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, targets = _batch(2)
    ds = tf.data.Dataset.from_tensors((images.astype("float32"), targets)).repeat(2)
    history = model.fit(ds, verbose=0)
    assert all(np.isfinite(history.history[k][0]) for k in ("loss", "rpn_cls", "rpn_box", "cls", "box"))
    out = model.predict(images, verbose=0)
    assert out["boxes"].shape == (2, 100, 4) and (out["num_detections"] > 0).all()
    path = str(tmp_path / "rfcn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, rcnn_zoo.RFCN) and loaded.roi_heads.group_size == 3 and loaded.roi_heads.ohem
    again = loaded.predict(images, verbose=0)
    for key in out:
        np.testing.assert_allclose(out[key], again[key], atol=1e-5, err_msg=key)


def test_resnet_backbone_has_stride_16_conv5_and_rpn_on_conv4():
    model = rcnn_zoo.RFCN(num_classes=2, backbone="resnet50", image_min_size=96, image_max_size=128)
    assert model.rpn_feature_names == ("C4",) and model.roi_feature_names == ("C5",)
    features = model.backbone(np.zeros((1, 64, 96, 3), "float32"))
    assert features["C4"].shape[1:3] == features["C5"].shape[1:3] == (4, 6)
    assert model.roi_heads.reduced_channels == 1024


def test_unknown_backbone_refused():
    with pytest.raises(ValueError, match="R-FCN backbone"):
        rcnn_zoo.RFCN(num_classes=2, backbone="vgg16")
