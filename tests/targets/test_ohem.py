"""Online hard example mining keeps exactly the top-B losses of each image."""

import numpy as np
import tensorflow as tf

from rcnn_zoo.targets import per_roi_loss, select_hard_examples


def test_keeps_exactly_the_top_b_losses_per_image():
    losses = np.array(
        [[0.1, 5.0, 0.3, 2.0, -np.inf, 4.0],
         [1.0, 1.0, 0.2, -np.inf, -np.inf, 3.0]], np.float32)
    labels = np.array([[0, 1, 0, 2, -1, 0], [3, 0, 0, -1, -1, 1]], np.int32)
    kept = select_hard_examples(tf.constant(losses), tf.constant(labels), 3).numpy()
    # image 0: losses 5.0 (idx 1), 4.0 (idx 5), 2.0 (idx 3); image 1: 3.0 (idx 5), then the tie
    # 1.0/1.0 (idx 0, 1) — both fit in the 3 slots.
    np.testing.assert_array_equal(kept, [[-1, 1, -1, 2, -1, 0], [3, 0, -1, -1, -1, 1]])


def test_ignored_rois_are_never_selected_even_if_b_is_large():
    losses = np.array([[0.5, -np.inf, 0.7]], np.float32)
    labels = np.array([[0, -1, 2]], np.int32)
    kept = select_hard_examples(tf.constant(losses), tf.constant(labels), 10).numpy()
    np.testing.assert_array_equal(kept, [[0, -1, 2]])


def test_per_roi_loss_is_cross_entropy_plus_smooth_l1_on_foreground():
    labels = np.array([[0, 2, -1]], np.int32)
    logits = np.array([[[2.0, 0.0, 1.0], [0.5, 0.5, 3.0], [1.0, 1.0, 1.0]]], np.float32)
    target = np.array([[[0, 0, 0, 0], [0.5, -2.0, 0.0, 0.2], [0, 0, 0, 0]]], np.float32)
    pred = np.array([[[9, 9, 9, 9], [0.0, 0.0, 0.1, 0.2], [0, 0, 0, 0]]], np.float32)
    out = per_roi_loss(labels, logits, target, pred).numpy()

    def ce(row, label):
        return np.log(np.exp(row).sum()) - row[label]

    # RoI 0 is background: no box term even though its deltas are far off.
    assert np.isclose(out[0, 0], ce(logits[0, 0], 0))
    # RoI 1: |d| = 0.5 → 0.125, 2.0 → 1.5, 0.1 → 0.005, 0 → 0 (beta 1).
    assert np.isclose(out[0, 1], ce(logits[0, 1], 2) + 0.125 + 1.5 + 0.005, atol=1e-6)
    assert out[0, 2] == -np.inf
