"""DetectionClassificationLoss against a NumPy evaluation of softmax cross-entropy."""

import keras
import numpy as np
import tensorflow as tf

from rcnn_zoo.losses import DetectionClassificationLoss

LABELS = np.array([[2, 0, -1], [1, -1, 0]], np.int32)
LOGITS = np.array(
    [
        [[0.1, 0.2, 3.0], [2.0, -1.0, 0.5], [90.0, -90.0, 0.0]],
        [[-0.5, 0.5, 0.0], [1e4, 0.0, -1e4], [0.0, 0.0, 0.0]],
    ],
    np.float32,
)


def _expected(labels, logits):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    sampled = labels >= 0
    picked = np.take_along_axis(log_softmax, np.maximum(labels, 0)[..., None], axis=-1)[..., 0]
    return -picked[sampled].sum() / max(sampled.sum(), 1)


def test_matches_numpy_and_ignores_padding():
    loss = DetectionClassificationLoss()
    value = loss(LABELS, LOGITS)
    assert value.shape == () and value.dtype == tf.float32
    # Hand value of the last RoI: uniform logits over 3 classes -> log(3).
    assert abs(_expected(LABELS[1:, 2:], LOGITS[1:, 2:]) - np.log(3)) < 1e-12
    np.testing.assert_allclose(value.numpy(), _expected(LABELS, LOGITS), rtol=1e-6)
    changed = LOGITS.copy()
    changed[LABELS < 0] = 7.0
    np.testing.assert_allclose(loss(LABELS, changed).numpy(), value.numpy(), rtol=1e-6)


def test_target_dict_under_tf_function_and_float16():
    loss = DetectionClassificationLoss()
    targets = {"labels": tf.constant(LABELS), "deltas": tf.zeros((2, 3, 4)),
               "rois": tf.zeros((2, 3, 4)), "matched_gt": tf.zeros((2, 3), tf.int32)}
    logits = np.clip(LOGITS, -60, 60)  # float16 range
    value = tf.function(lambda t, p: loss(t, p))(targets, tf.constant(logits, tf.float16))
    assert value.dtype == tf.float32
    np.testing.assert_allclose(value.numpy(), _expected(LABELS, logits), rtol=1e-3)


def test_no_sample_is_zero():
    loss = DetectionClassificationLoss()
    assert loss(-np.ones((2, 3), np.int32), LOGITS).numpy() == 0.0


def test_serialization_round_trip():
    clone = keras.losses.deserialize(keras.losses.serialize(DetectionClassificationLoss()))
    assert isinstance(clone, DetectionClassificationLoss)
