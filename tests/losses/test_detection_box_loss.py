"""DetectionBoxLoss: smooth L1 on the true class's deltas of foreground RoIs only."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rcnn_zoo.losses import DetectionBoxLoss

# Head labels: RoI 0 class 1 (head 2), RoI 1 class 0 (head 1), RoI 2 background, RoI 3 padding.
LABELS = np.array([[2, 1, 0, -1]], np.float32)
TRUE = np.array([[[0.5, -0.5, 0.2, 0.0], [1.0, 0.0, 0.0, 3.0], [9, 9, 9, 9], [9, 9, 9, 9]]],
                np.float32)
# The true class's predictions: RoI 0 differences (0.3, -0.5, 1.5, 0); RoI 1 (-2, 0, 0.25, 0).
RIGHT = np.array([[[0.8, -1.0, 1.7, 0.0], [-1.0, 0.0, 0.25, 3.0]]], np.float32)


def _class_specific(include_background):
    """[1, 4, K, 4] predictions: 50 everywhere except the true class's slot of RoIs 0 and 1."""
    num_slots = 3 if include_background else 2
    pred = np.full((1, 4, num_slots, 4), 50.0, np.float32)
    offset = 0 if include_background else 1
    pred[0, 0, 2 - offset] = RIGHT[0, 0]
    pred[0, 1, 1 - offset] = RIGHT[0, 1]
    return pred


def _smooth_l1(x):
    x = np.abs(x)
    return np.where(x < 1.0, 0.5 * x * x, x - 0.5)


# RoI 0: 0.5*0.09 + 0.5*0.25 + (1.5 - 0.5) + 0 = 1.17; RoI 1: (2 - 0.5) + 0 + 0.5*0.0625 + 0
# = 1.53125; over 3 sampled RoIs (background counts, padding does not).
EXPECTED = (1.17 + 1.53125) / 3


def test_hand_value():
    diffs = RIGHT[0] - TRUE[0, :2]
    assert abs(_smooth_l1(diffs).sum() / 3 - EXPECTED) < 1e-6


@pytest.mark.parametrize("include_background", [True, False])
def test_gathers_the_true_class(include_background):
    loss = DetectionBoxLoss(include_background=include_background)
    pred = _class_specific(include_background)
    value = loss({"deltas": TRUE, "labels": LABELS}, pred)
    assert value.shape == () and value.dtype == tf.float32
    np.testing.assert_allclose(value.numpy(), EXPECTED, rtol=1e-5)
    flat = pred.reshape(1, 4, -1)  # [B, S, K*4]
    np.testing.assert_allclose(loss({"deltas": TRUE, "labels": LABELS}, flat).numpy(),
                               EXPECTED, rtol=1e-5)


def test_class_agnostic_and_packed_targets():
    pred = np.concatenate([RIGHT, np.full((1, 2, 4), -50.0, np.float32)], axis=1)  # [1, 4, 4]
    packed = np.concatenate([TRUE, LABELS[..., None]], axis=-1)
    np.testing.assert_allclose(DetectionBoxLoss()(packed, pred).numpy(), EXPECTED, rtol=1e-5)


def test_tf_function_float16_and_gradient():
    loss = DetectionBoxLoss()
    pred = tf.Variable(tf.constant(_class_specific(True), tf.float16))
    targets = {"deltas": tf.constant(TRUE), "labels": tf.constant(LABELS, tf.int32)}

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = loss(targets, pred)
        return value, tape.gradient(value, pred)

    value, grad = step()
    assert value.dtype == tf.float32
    np.testing.assert_allclose(value.numpy(), EXPECTED, rtol=1e-3)
    grad = grad.numpy().astype(np.float32)
    mask = np.zeros_like(grad, bool)
    mask[0, 0, 2] = mask[0, 1, 1] = True
    np.testing.assert_array_equal(grad[~mask], 0.0)  # other classes, background, padding
    assert np.all(np.isfinite(grad))


def test_no_foreground_is_zero():
    loss = DetectionBoxLoss()
    for labels in ([[0, 0, -1, -1]], [[-1, -1, -1, -1]]):
        labels = np.array(labels, np.float32)
        assert loss({"deltas": TRUE, "labels": labels}, _class_specific(True)).numpy() == 0.0


def test_config_round_trip():
    loss = DetectionBoxLoss(beta=0.5, include_background=False, name="head_box")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, DetectionBoxLoss)
    assert (clone.beta, clone.include_background, clone.name) == (0.5, False, "head_box")
