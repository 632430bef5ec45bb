"""SVMHingeLoss against a NumPy evaluation of the weighted per-class hinge loss."""

import keras
import numpy as np
import tensorflow as tf

from rcnn_zoo.losses import SVMHingeLoss

TARGETS = np.array([[1, -1, 0], [-1, 0, 1], [0, 0, -1]], np.float32)
SCORES = np.array([[0.3, -2.0, 5.0], [0.5, -7.0, 1.5], [9.0, -9.0, -0.2]], np.float32)


def _expected(targets, scores, positive_weight):
    weight = np.where(targets > 0, positive_weight, np.where(targets < 0, 1.0, 0.0))
    return (weight * np.maximum(0.0, 1.0 - targets * scores)).sum(axis=1).mean()


def test_matches_numpy_and_ignores_unused_entries():
    loss = SVMHingeLoss(positive_weight=2.0)
    value = loss(tf.constant(TARGETS), tf.constant(SCORES))
    assert value.shape == () and value.dtype == tf.float32
    # row 0: 2·0.7 + 0 (outside the margin); row 1: 1.5 + 0 (beyond +1); row 2: 0.8
    np.testing.assert_allclose(value.numpy(), (1.4 + 1.5 + 0.8) / 3, rtol=1e-6)
    np.testing.assert_allclose(value.numpy(), _expected(TARGETS, SCORES, 2.0), rtol=1e-6)
    changed = SCORES.copy()
    changed[TARGETS == 0] = [-50.0, 50.0, 3.0, -3.0]  # unused entries: any score, same loss
    np.testing.assert_allclose(loss(TARGETS, changed).numpy(), value.numpy(), rtol=1e-6)


def test_per_region_values_and_config_round_trip():
    loss = SVMHingeLoss(positive_weight=3.0)
    per_region = loss.call(tf.constant(TARGETS), tf.constant(SCORES)).numpy()
    np.testing.assert_allclose(per_region, [2.1, 1.5, 0.8], rtol=1e-6)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, SVMHingeLoss) and clone.positive_weight == 3.0
