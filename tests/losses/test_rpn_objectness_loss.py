"""RPNObjectnessLoss against a NumPy evaluation of the binary cross-entropy."""

import keras
import numpy as np
import tensorflow as tf

from rcnn_zoo.losses import RPNObjectnessLoss

LABELS = np.array([[1, 0, -1, 1], [0, -1, -1, 0]], np.float32)
LOGITS = np.array([[2.0, -1.0, 50.0, -0.5], [0.3, -80.0, 7.0, 1.5]], np.float32)


def _expected(labels, logits):
    sampled = labels >= 0
    z, x = labels[sampled], logits[sampled].astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    bce = -(z * np.log(p) + (1 - z) * np.log(1 - p))
    return bce.sum() / max(sampled.sum(), 1)


def test_matches_numpy_and_ignores_unsampled_anchors():
    loss = RPNObjectnessLoss()
    value = loss(tf.constant(LABELS), tf.constant(LOGITS))
    assert value.shape == () and value.dtype == tf.float32
    np.testing.assert_allclose(value.numpy(), _expected(LABELS, LOGITS), rtol=1e-6)

    changed = LOGITS.copy()
    changed[LABELS < 0] = [-1e4, 1e4, -3.0]  # ignored anchors: any logit, same loss
    np.testing.assert_allclose(loss(LABELS, changed).numpy(), value.numpy(), rtol=1e-6)


def test_accepts_target_dict_and_trailing_unit_axis_in_tf_function():
    loss = RPNObjectnessLoss()
    targets = {"labels": tf.constant(LABELS), "deltas": tf.zeros((2, 4, 4))}
    value = tf.function(lambda t, p: loss(t, p))(targets, tf.constant(LOGITS[..., None]))
    np.testing.assert_allclose(value.numpy(), _expected(LABELS, LOGITS), rtol=1e-6)


def test_no_positive_or_no_sample_is_finite():
    loss = RPNObjectnessLoss()
    negatives = np.array([[0, 0, -1, -1]], np.float32)
    logits = LOGITS[:1]
    np.testing.assert_allclose(loss(negatives, logits).numpy(), _expected(negatives, logits),
                               rtol=1e-6)
    nothing = -np.ones((1, 4), np.float32)
    assert loss(nothing, logits).numpy() == 0.0


def test_float16_predictions():
    loss = RPNObjectnessLoss()
    value = loss(tf.constant(LABELS), tf.constant(LOGITS, tf.float16))
    assert value.dtype == tf.float32
    np.testing.assert_allclose(value.numpy(), _expected(LABELS, LOGITS), rtol=1e-3)


def test_serialization_round_trip():
    loss = RPNObjectnessLoss(name="rpn_cls")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, RPNObjectnessLoss) and clone.name == "rpn_cls"
