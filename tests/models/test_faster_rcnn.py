"""FasterRCNN as a Keras model: outputs, config and saving round trips, robustness to bad targets.

Uses the small ``tiny`` backbone on 96×128 images so each test takes seconds on 2 cores.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras
import rcnn_zoo
from rcnn_zoo.data.synthetic import generate_shapes

H, W = 96, 128


def _model(**kwargs):
    keras.utils.set_random_seed(1)
    kwargs.setdefault("num_classes", 3)
    kwargs.setdefault("backbone", "tiny")
    return rcnn_zoo.FasterRCNN(**kwargs)


def _batch(n=2, seed=0):
    images, boxes, labels = generate_shapes(n, image_size=(H, W), max_shapes=3, seed=seed)
    return images, {"boxes": boxes, "labels": labels}


def _fit_steps(model, images, targets, steps=2):
    ds = tf.data.Dataset.from_tensors((images.astype("float32"), targets)).repeat(steps)
    return model.fit(ds, epochs=1, verbose=0)


def test_predict_outputs_padded_detections_in_original_pixels():
    model = _model(score_threshold=0.0, max_detections=20)
    images, _ = _batch()
    out = model.predict(images, verbose=0)
    assert set(out) == {"boxes", "scores", "labels", "num_detections"}
    assert out["boxes"].shape == (2, 20, 4)
    assert out["scores"].shape == (2, 20) and out["labels"].shape == (2, 20)
    count = out["num_detections"]
    assert (count > 0).all() and (count <= 20).all()
    for i in range(2):
        valid = slice(0, count[i])
        boxes = out["boxes"][i][valid]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= W + 1e-3).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= H + 1e-3).all()
        assert ((out["labels"][i][valid] >= 0) & (out["labels"][i][valid] < 3)).all()
        assert (out["labels"][i][count[i]:] == -1).all()
        assert np.all(np.diff(out["scores"][i][valid]) <= 1e-6)  # sorted by score


def test_resizing_maps_boxes_back_to_input_pixels():
    """A model resizing 96×128 → 192×256 must report boxes in the caller's 96×128 pixels."""
    model = _model(score_threshold=0.0, image_min_size=192, image_max_size=1000)
    images, _ = _batch(1)
    out = model.predict(images, verbose=0)
    boxes = out["boxes"][0][: out["num_detections"][0]]
    assert len(boxes) > 0
    assert boxes[:, 2].max() <= W + 1e-3 and boxes[:, 3].max() <= H + 1e-3


def test_bounding_box_format_applies_to_targets_and_predictions():
    model_xyxy = _model(score_threshold=0.0)
    model_xywh = _model(score_threshold=0.0, bounding_box_format="xywh")
    images, _ = _batch(1)
    a = model_xyxy.predict(images, verbose=0)
    b = model_xywh.predict(images, verbose=0)
    n = a["num_detections"][0]
    xyxy = a["boxes"][0][:n]
    expected = np.stack([xyxy[:, 0], xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], 1)
    np.testing.assert_allclose(b["boxes"][0][:n], expected, atol=1e-4)


def test_fit_logs_each_loss_and_total():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, targets = _batch(2)
    history = _fit_steps(model, images, targets, steps=3)
    for name in ("loss", "rpn_cls", "rpn_box", "cls", "box"):
        assert name in history.history, name
        assert np.isfinite(history.history[name][0])
    parts = sum(history.history[n][0] for n in ("rpn_cls", "rpn_box", "cls", "box"))
    np.testing.assert_allclose(history.history["loss"][0], parts, rtol=1e-4)


def test_evaluate_reports_losses():
    model = _model()
    model.compile()
    images, targets = _batch(2)
    result = model.evaluate(images.astype("float32"), targets, batch_size=2, verbose=0, return_dict=True)
    assert {"loss", "rpn_cls", "rpn_box", "cls", "box"} <= set(result)
    assert all(np.isfinite(v) for v in result.values())


def test_images_without_boxes_train_with_finite_loss():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, _ = _batch(2)
    empty = {"boxes": np.zeros((2, 3, 4), "float32"), "labels": -np.ones((2, 3), "int32")}
    history = _fit_steps(model, images, empty, steps=2)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["rpn_box"][0] == 0.0 and history.history["box"][0] == 0.0


def test_degenerate_boxes_are_dropped_and_counted(capfd):
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, targets = _batch(2)
    boxes = targets["boxes"].copy()
    labels = targets["labels"].copy()
    boxes[0, 0] = [50, 50, 50, 80]  # zero width
    boxes[1, 0] = [90, 60, 20, 10]  # inverted
    labels[0, 0] = labels[1, 0] = 1
    boxes[1, 1] = [np.nan, 0, 10, 10]
    labels[1, 1] = 0
    history = _fit_steps(model, images, {"boxes": boxes, "labels": labels}, steps=1)
    assert np.isfinite(history.history["loss"]).all()
    assert "dropped 3 ground-truth boxes" in capfd.readouterr().err


def test_targets_must_be_a_dict():
    model = _model()
    model.compile()
    images, targets = _batch(2)
    ds = tf.data.Dataset.from_tensors((images.astype("float32"), targets["boxes"]))
    with pytest.raises(ValueError, match="boxes"):
        model.fit(ds, verbose=0)


def test_compile_refuses_a_plain_loss():
    model = _model()
    with pytest.raises(ValueError, match="rpn_objectness_loss"):
        model.compile(loss="mse")


def test_num_classes_counts_foreground_only():
    with pytest.raises(ValueError, match="num_classes"):
        _model(num_classes=0)
    with pytest.raises(ValueError, match="class_names"):
        _model(num_classes=3, class_names=["a", "b"])
    model = _model(num_classes=4)
    assert model.roi_heads.box_predictor.cls_score.units == 5  # + internal background


def test_config_round_trip_rebuilds_the_same_model():
    model = _model(class_names=["circle", "square", "triangle"], rpn_nms_threshold=0.6,
                   image_min_size=None, score_threshold=0.2)
    config = model.get_config()
    clone = rcnn_zoo.FasterRCNN.from_config(config)
    assert clone.get_config() == config
    assert clone.hyperparameters() == model.hyperparameters()
    assert clone.hyperparameters()["image_min_size"] is None and clone.hyperparameters()["rpn_nms_threshold"] == 0.6
    assert len(clone.weights) == len(model.weights)


def _same_predictions(a, b):
    for key in ("boxes", "scores", "labels", "num_detections"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)


def test_keras_file_round_trip_gives_identical_predictions(tmp_path):
    model = _model(score_threshold=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, targets = _batch(2)
    _fit_steps(model, images, targets, steps=2)
    path = str(tmp_path / "detector.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, rcnn_zoo.FasterRCNN)
    _same_predictions(model.predict(images, verbose=0), loaded.predict(images, verbose=0))
    # The optimizer state travels too: training can continue.
    _fit_steps(loaded, images, targets, steps=1)


def test_weights_file_round_trip_gives_identical_predictions(tmp_path):
    model = _model(score_threshold=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, targets = _batch(2)
    _fit_steps(model, images, targets, steps=2)
    path = str(tmp_path / "detector.weights.h5")
    model.save_weights(path)
    other = _model(score_threshold=0.0)
    other.load_weights(path)
    _same_predictions(model.predict(images, verbose=0), other.predict(images, verbose=0))


def test_mixed_float16_training_step():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = _model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        images, targets = _batch(2)
        history = _fit_steps(model, images, targets, steps=2)
        assert np.isfinite(history.history["loss"]).all()
        out = model.predict(images, verbose=0)
        assert out["boxes"].dtype == np.float32
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


class _StopAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_an_interrupted_fit(tmp_path):
    images, targets = _batch(2)
    ds = tf.data.Dataset.from_tensors((images.astype("float32"), targets)).repeat(2)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(ds, epochs=4, verbose=0, callbacks=[backup, _StopAt(2)])
    saved = [w.numpy().copy() for w in model.weights]

    fresh = _model()
    fresh.compile(optimizer=keras.optimizers.Adam(1e-3))
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    # Before resuming, the restored weights must be the interrupted run's (checked in the callback).
    restored = []
    check = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: restored.append(
            all(np.allclose(a, w.numpy()) for a, w in zip(saved, fresh.weights))
        )
    )
    fresh.fit(ds, epochs=4, verbose=0, callbacks=[backup, record, check])
    assert seen == [2, 3]
    assert restored == [True]
