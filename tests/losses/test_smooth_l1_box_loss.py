"""SmoothL1BoxLoss against a NumPy evaluation of Fast R-CNN's smooth L1."""

import keras
import numpy as np
import tensorflow as tf

from rcnn_zoo.losses import SmoothL1BoxLoss

BETA = 1.0 / 9.0
LABELS = np.array([[1, 0, -1], [1, -1, 0]], np.float32)
TRUE = np.array(
    [
        [[0.1, -0.2, 0.3, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]],
        [[0.5, 0.5, -0.5, 0.05], [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]],
    ],
    np.float32,
)
PRED = np.array(
    [
        # differences 0.05 and -0.05 (quadratic part), 0.7 and 0.0 (linear part / zero)
        [[0.15, -0.25, 1.0, 0.0], [9.0, 9.0, 9.0, 9.0], [100.0, -100.0, 5.0, 5.0]],
        [[0.0, 0.5, 0.5, 0.1], [7.0, 7.0, 7.0, 7.0], [-3.0, 3.0, 3.0, 3.0]],
    ],
    np.float32,
)


def _smooth_l1(x, beta):
    x = np.abs(x.astype(np.float64))
    return np.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)


def _expected(true, pred, labels, beta):
    per_box = _smooth_l1(pred - true, beta).sum(axis=-1)
    return per_box[labels >= 1].sum() / max((labels >= 0).sum(), 1)


def test_matches_numpy_positives_over_sampled():
    loss = SmoothL1BoxLoss(beta=BETA)
    value = loss({"deltas": TRUE, "labels": LABELS}, PRED)
    assert value.shape == () and value.dtype == tf.float32
    # Hand check of image 0, anchor 0: |d| = 0.05, 0.05 < 1/9 -> 0.5*0.0025*9 each = 0.01125;
    # |d| = 0.7 -> 0.7 - 1/18; sum over both images' positives divided by 4 sampled anchors.
    first = 2 * 0.5 * 0.05**2 * 9 + (0.7 - 0.5 / 9)
    second = (0.5 - 0.5 / 9) + 0.0 + (1.0 - 0.5 / 9) + 0.5 * 0.05**2 * 9
    np.testing.assert_allclose(value.numpy(), (first + second) / 4, rtol=1e-5)
    np.testing.assert_allclose(value.numpy(), _expected(TRUE, PRED, LABELS, BETA), rtol=1e-5)


def test_head_beta_and_packed_targets():
    loss = SmoothL1BoxLoss(beta=1.0, name="head_box")
    packed = np.concatenate([TRUE, LABELS[..., None]], axis=-1)  # [B, N, 5]
    value = loss(packed, PRED)
    np.testing.assert_allclose(value.numpy(), _expected(TRUE, PRED, LABELS, 1.0), rtol=1e-5)


def test_nested_targets_under_tf_function_and_float16():
    loss = SmoothL1BoxLoss(beta=BETA)
    fn = tf.function(lambda t, p: loss(t, p))
    targets = {"deltas": tf.constant(TRUE), "labels": tf.constant(LABELS)}
    value = fn(targets, tf.constant(PRED, tf.float16))
    assert value.dtype == tf.float32
    np.testing.assert_allclose(value.numpy(), _expected(TRUE, PRED, LABELS, BETA), rtol=1e-3)


def test_no_positive_or_no_sample_is_zero():
    loss = SmoothL1BoxLoss(beta=BETA)
    negatives = np.array([[0, 0, -1], [-1, 0, 0]], np.float32)
    assert loss({"deltas": TRUE, "labels": negatives}, PRED).numpy() == 0.0
    nothing = -np.ones((2, 3), np.float32)
    assert loss({"deltas": TRUE, "labels": nothing}, PRED).numpy() == 0.0


def test_gradient_only_reaches_positives():
    loss = SmoothL1BoxLoss(beta=BETA)
    pred = tf.Variable(PRED)
    with tf.GradientTape() as tape:
        value = loss({"deltas": TRUE, "labels": LABELS}, pred)
    grad = tape.gradient(value, pred).numpy()
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[LABELS < 1], 0.0)
    assert np.any(grad[LABELS >= 1] != 0.0)


def test_config_round_trip():
    loss = SmoothL1BoxLoss(beta=BETA, name="rpn_box")
    assert loss.get_config()["beta"] == BETA
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, SmoothL1BoxLoss)
    assert clone.beta == BETA and clone.name == "rpn_box"
