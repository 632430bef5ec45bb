"""MeanAveragePrecisionCallback with a tiny fake detector that finds one bright rectangle."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from rcnn_zoo.data import DetectionDataset, DetectionRecord
from rcnn_zoo.evaluation import MeanAveragePrecisionCallback, predict_detections


class RectangleDetector(keras.Model):
    """Detects the one non-zero rectangle of channel 0: its tight box (plus ``shift`` pixels),
    label ``round(value / 50) − 1``, score 1. Predicts the ground truth when ``shift=0``."""

    def __init__(self, shift=0.0, num_classes=None, **kwargs):
        super().__init__(**kwargs)
        self.shift = shift
        self.num_classes = num_classes
        self.bias = self.add_weight(shape=(), initializer="zeros", name="bias")

    def call(self, images):
        if isinstance(images, dict):  # rcnn_zoo's pipelines: {"images", "image_sizes"}
            images = images["images"]
        channel = images[..., 0]
        mask = channel > 0

        def span(any_mask):  # [B, L] bool → first index, last index + 1
            index = tf.cast(tf.range(tf.shape(any_mask)[1]), tf.float32)[None]
            first = tf.reduce_min(tf.where(any_mask, index, 1e9), axis=1)
            last = tf.reduce_max(tf.where(any_mask, index, -1e9), axis=1)
            return first, last + 1.0

        y1, y2 = span(tf.reduce_any(mask, axis=2))
        x1, x2 = span(tf.reduce_any(mask, axis=1))
        boxes = tf.stack([x1, y1, x2, y2], axis=-1)[:, None, :] + self.shift + 0.0 * self.bias
        labels = tf.cast(tf.round(tf.reduce_max(channel, axis=[1, 2]) / 50.0), tf.int32) - 1
        batch = tf.shape(images)[0]
        return {
            # A second, padded slot checks that num_detections is honoured.
            "boxes": tf.concat([boxes, tf.zeros_like(boxes)], axis=1),
            "scores": tf.concat([tf.ones([batch, 1]), tf.ones([batch, 1])], axis=1),
            "labels": tf.stack([labels, labels], axis=1),
            "num_detections": tf.ones([batch], tf.int32),
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return tf.square(self.bias - 1.0)


def rectangles(num_images=6, size=32, with_scale=False):
    """Images with one rectangle each, labels cycling 0, 1, 2; batches of 2."""
    rng = np.random.default_rng(0)
    images = np.zeros((num_images, size, size, 3), np.float32)
    boxes = np.zeros((num_images, 2, 4), np.float32)
    labels = np.full((num_images, 2), -1, np.int32)
    for i in range(num_images):
        x1, y1 = rng.integers(0, size // 2, 2)
        x2, y2 = x1 + rng.integers(4, size // 2), y1 + rng.integers(4, size // 2)
        label = i % 3
        images[i, y1:y2, x1:x2, 0] = 50.0 * (label + 1)
        boxes[i, 0], labels[i, 0] = (x1, y1, x2, y2), label
    targets = {"boxes": boxes, "labels": labels}
    if with_scale:
        targets["scale"] = np.full((num_images, 2), 0.5, np.float32)
    return tf.data.Dataset.from_tensor_slices((images, targets)).batch(2)


@pytest.mark.parametrize("metric", ["voc", "voc07", "coco"])
def test_ground_truth_predictions_give_map_one(metric):
    callback = MeanAveragePrecisionCallback(rectangles(), metric=metric, num_classes=3)
    callback.set_model(RectangleDetector())
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["val_mAP"] == pytest.approx(1.0)
    if metric == "coco":
        assert logs["val_AP50"] == pytest.approx(1.0)


def test_shifted_predictions_and_per_class_keys():
    # A 10-pixel shift leaves every IoU below 0.5 for these small boxes (≤ 19 pixels): mAP 0.
    callback = MeanAveragePrecisionCallback(
        rectangles(), class_names=["a", "b", "c"], per_class=True
    )
    callback.set_model(RectangleDetector(shift=10.0))
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["val_mAP"] == 0.0
    assert {"val_AP_a", "val_AP_b", "val_AP_c"} <= set(logs)
    # Half a pixel keeps every IoU above 0.5.
    callback.set_model(RectangleDetector(shift=0.5, num_classes=3))
    callback.on_epoch_end(0, logs)
    assert logs["val_mAP"] == pytest.approx(1.0)


def test_scale_maps_boxes_back_to_original_pixels():
    detections, ground_truths, ids = predict_detections(
        RectangleDetector(), rectangles(num_images=2, with_scale=True)
    )
    assert ids == [0, 1] and len(detections) == 2
    np.testing.assert_allclose(detections[0][0], ground_truths[0][0])  # one box, padding gone
    first = next(iter(rectangles(num_images=2)))[1]["boxes"][0, :1].numpy()
    np.testing.assert_allclose(ground_truths[0][0], first * 2.0)


def test_detection_dataset_as_validation_data(tmp_path):
    images, targets = next(iter(rectangles(num_images=2)))
    records = []
    for i in range(2):
        path = str(tmp_path / f"{i}.png")
        Image.fromarray(images[i].numpy().astype(np.uint8)).save(path)
        boxes, labels = targets["boxes"][i, :1].numpy(), targets["labels"][i, :1].numpy()
        records.append(DetectionRecord(path, i, boxes, labels, [False], 32, 32))
    dataset = DetectionDataset(records, ["a", "b", "c"])
    callback = MeanAveragePrecisionCallback(dataset, per_class=True)
    callback.set_model(RectangleDetector())
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["val_mAP"] == 1.0 and logs["val_AP_a"] == 1.0 and np.isnan(logs["val_AP_c"])


# Epoch 1 has no val_mAP (every_n_epochs=2): ModelCheckpoint says so, as intended.
@pytest.mark.filterwarnings("ignore:Can save best model only with val_mAP available")
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras saving
def test_fit_logs_val_map_for_model_checkpoint(tmp_path):
    model = RectangleDetector(num_classes=3)
    model.compile(optimizer="sgd")
    path = str(tmp_path / "best.weights.h5")
    callbacks = [
        MeanAveragePrecisionCallback(rectangles(), every_n_epochs=2),
        keras.callbacks.ModelCheckpoint(
            path, monitor="val_mAP", mode="max", save_best_only=True, save_weights_only=True
        ),
    ]
    history = model.fit(rectangles(), epochs=2, callbacks=callbacks, verbose=0, shuffle=False)
    assert history.history["val_mAP"] == [pytest.approx(1.0)]  # epoch 2 only
    assert os.path.exists(path)
