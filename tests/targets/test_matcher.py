"""Matcher: exact labels on hand-made IoU matrices (Faster R-CNN §3.1.2 rules)."""

import numpy as np
import tensorflow as tf

from rcnn_zoo.targets.matcher import match


def _match(iou, gt_valid, low_quality, positive=0.7, negative=0.3):
    matched, labels = match(
        tf.constant(iou, tf.float32), tf.constant(gt_valid), positive, negative, low_quality
    )
    assert matched.dtype == tf.int32 and labels.dtype == tf.int32
    return matched.numpy(), labels.numpy()


def test_threshold_boundaries():
    iou = [[
        [0.8, 0.1],   # >= 0.7           -> positive, gt 0
        [0.2, 0.7],   # exactly 0.7      -> positive, gt 1
        [0.69, 0.0],  # in [0.3, 0.7)    -> ignored
        [0.3, 0.1],   # exactly 0.3      -> ignored (negative is strictly below)
        [0.29, 0.1],  # < 0.3            -> negative
        [0.0, 0.0],   # no overlap       -> negative
    ]]
    matched, labels = _match(iou, [[True, True]], low_quality=False)
    np.testing.assert_array_equal(labels, [[1, 1, -1, -1, 0, 0]])
    np.testing.assert_array_equal(matched, [[0, 1, 0, 0, 0, 0]])


def test_low_quality_matches_with_ties():
    iou = [[
        [0.5, 0.0, 0.0],  # best box of gt 0
        [0.4, 0.6, 0.0],  # best box of gt 1 (tied with the next row)
        [0.1, 0.6, 0.2],  # best box of gt 1 (tie) and of gt 2: gt 1 has the larger IoU
        [0.0, 0.1, 0.0],  # nobody's best
    ]]
    valid = [[True, True, True]]
    matched, labels = _match(iou, valid, low_quality=False)
    np.testing.assert_array_equal(labels, [[-1, -1, -1, 0]])
    np.testing.assert_array_equal(matched, [[0, 0, 0, 0]])

    matched, labels = _match(iou, valid, low_quality=True)
    np.testing.assert_array_equal(labels, [[1, 1, 1, 0]])
    np.testing.assert_array_equal(matched, [[0, 1, 1, 0]])


def test_low_quality_match_goes_to_the_gt_it_is_best_for():
    iou = [[
        [0.5, 0.0],   # best box of gt 0
        [0.45, 0.3],  # overlaps gt 0 more, but it is gt 1's best box -> matched to gt 1
        [0.0, 0.1],
    ]]
    matched, labels = _match(iou, [[True, True]], low_quality=True)
    np.testing.assert_array_equal(labels, [[1, 1, 0]])
    np.testing.assert_array_equal(matched, [[0, 1, 0]])


def test_gt_overlapping_nothing_claims_no_box():
    # py-faster-rcnn would turn every zero-IoU box positive here; the IoU > 0 rule prevents it.
    iou = [[[0.6, 0.0], [0.1, 0.0], [0.0, 0.0]]]
    matched, labels = _match(iou, [[True, True]], low_quality=True)
    np.testing.assert_array_equal(labels, [[1, 0, 0]])
    np.testing.assert_array_equal(matched, [[0, 0, 0]])


def test_padded_gt_never_matches():
    iou = [[[0.2, 0.9], [0.75, 0.95]]]  # column 1 is padding with large garbage IoUs
    matched, labels = _match(iou, [[True, False]], low_quality=True)
    np.testing.assert_array_equal(labels, [[0, 1]])
    np.testing.assert_array_equal(matched, [[0, 0]])


def test_no_ground_truth_at_all():
    matched, labels = _match(np.zeros((2, 3, 0)), np.zeros((2, 0), bool), low_quality=True)
    np.testing.assert_array_equal(labels, np.zeros((2, 3)))
    np.testing.assert_array_equal(matched, np.zeros((2, 3)))

    iou = [[[0.9, 0.8], [0.1, 0.0]]]  # only padded slots
    matched, labels = _match(iou, [[False, False]], low_quality=True)
    np.testing.assert_array_equal(labels, [[0, 0]])
    np.testing.assert_array_equal(matched, [[0, 0]])


def test_batch_images_are_independent_and_work_in_tf_function():
    iou = tf.constant([[[0.8], [0.5]], [[0.1], [0.2]]], tf.float32)
    valid = tf.constant([[True], [True]])
    fn = tf.function(lambda i, v: match(i, v, 0.7, 0.3, True))
    matched, labels = fn(iou, valid)
    # Image 0: box 0 positive (0.8, also the best), box 1 ignored. Image 1: box 1 is the gt's
    # best (0.2) -> positive; box 0 below 0.3 -> negative.
    np.testing.assert_array_equal(labels.numpy(), [[1, -1], [0, 1]])
    np.testing.assert_array_equal(matched.numpy(), [[0, 0], [0, 0]])
