"""RoI sampling on hand-made proposals and boxes; labels and deltas computed by hand."""

import math

import numpy as np
import tensorflow as tf

from rcnn_zoo.targets.roi_targets import sample_rois

PROPOSALS = np.array(
    [
        [[0, 0, 10, 10], [0, 0, 20, 20], [50, 50, 60, 60]],
        [[20, 20, 40, 40], [0, 0, 5, 5], [20, 20, 40, 44]],
    ],
    np.float32,
)
VALID = np.array([[True, True, True], [True, True, False]])
GT_BOXES = np.array(
    [
        [[0, 0, 0, 0], [0, 0, 10, 11]],      # image 0: slot 0 padding, slot 1 class 1
        [[20, 20, 40, 44], [0, 0, 0, 0]],    # image 1: slot 0 class 0, slot 1 padding
    ],
    np.float32,
)
GT_LABELS = np.array([[-1, 1], [0, -1]], np.int32)


def _run(proposals=PROPOSALS, valid=VALID, gt_boxes=GT_BOXES, gt_labels=GT_LABELS, **kwargs):
    out = sample_rois(
        tf.constant(proposals), tf.constant(valid), tf.constant(gt_boxes, tf.float32),
        tf.constant(gt_labels, tf.int32), **kwargs,
    )
    assert set(out) == {"rois", "labels", "deltas", "matched_gt"}
    assert out["labels"].dtype == tf.int32 and out["matched_gt"].dtype == tf.int32
    return {k: v.numpy() for k, v in out.items()}


def test_two_differing_images():
    out = _run(num_samples=8, positive_fraction=0.5)
    # Candidates = 3 proposals + 2 gt slots (padding slots are invalid).
    # Image 0: p0 IoU 100/110 = 0.91 fg, gt slot 1 itself fg; p1 IoU 110/400 = 0.275 bg,
    #   p2 IoU 0 bg. Foreground first, then background, then padding.
    # Image 1: p0 IoU 400/480 = 0.83 fg, gt slot 0 fg, p1 IoU 0 bg; p2 is an invalid proposal
    #   (it equals the gt box, it would be foreground) and must not be drawn.
    np.testing.assert_array_equal(
        out["labels"], [[2, 2, 0, 0, -1, -1, -1, -1], [1, 1, 0, -1, -1, -1, -1, -1]]
    )
    np.testing.assert_array_equal(out["matched_gt"], [[1, 1, 0, 0, 0, 0, 0, 0], np.zeros(8)])
    expected_rois = np.zeros((2, 8, 4), np.float32)
    expected_rois[0, :4] = [[0, 0, 10, 10], [0, 0, 10, 11], [0, 0, 20, 20], [50, 50, 60, 60]]
    expected_rois[1, :3] = [[20, 20, 40, 40], [20, 20, 40, 44], [0, 0, 5, 5]]
    np.testing.assert_array_equal(out["rois"], expected_rois)

    expected = np.zeros((2, 8, 4), np.float32)
    # p0 -> box: centre (5, 5) -> (5, 5.5), 10x10 -> 10x11, weights (10, 10, 5, 5).
    expected[0, 0] = [0.0, 10 * 0.5 / 10, 0.0, 5 * math.log(11 / 10)]
    # p0 -> box: centre (30, 30) -> (30, 32), 20x20 -> 20x24.
    expected[1, 0] = [0.0, 10 * 2 / 20, 0.0, 5 * math.log(24 / 20)]
    np.testing.assert_allclose(out["deltas"], expected, atol=1e-5)


def test_background_lower_bound_and_no_ground_truth_append():
    out = _run(num_samples=8, positive_fraction=0.5, background_iou_low=0.1,
               append_ground_truth=False)
    # Image 0: p0 fg; p1 (0.275) bg; p2 (IoU 0) below the lower bound -> never drawn.
    np.testing.assert_array_equal(out["labels"][0], [2, 0, -1, -1, -1, -1, -1, -1])
    # Image 1: p0 fg; p1 (IoU 0) not background either.
    np.testing.assert_array_equal(out["labels"][1], [1, -1, -1, -1, -1, -1, -1, -1])


def test_foreground_cap_and_padding():
    proposals = np.concatenate(
        [np.tile([[0, 0, 10, 10]], (40, 1)), np.tile([[50, 50, 60, 60]], (10, 1))]
    ).astype(np.float32)[None]
    fn = tf.function(sample_rois)
    out = fn(tf.constant(proposals), tf.ones((1, 50), tf.bool),
             tf.constant([[[0, 0, 10, 10]]], tf.float32), tf.constant([[2]], tf.int32),
             num_samples=16, positive_fraction=0.25)
    labels = out["labels"].numpy()[0]
    # 41 foreground candidates (40 + the gt), at most 16 * 0.25 = 4 drawn; all 10 background;
    # 2 padding slots.
    np.testing.assert_array_equal(labels, [3] * 4 + [0] * 10 + [-1] * 2)
    np.testing.assert_array_equal(out["rois"].numpy()[0, 14:], 0.0)


def test_image_without_ground_truth_is_all_background():
    out = _run(gt_boxes=np.zeros((2, 2, 4)), gt_labels=-np.ones((2, 2)), num_samples=4)
    np.testing.assert_array_equal(out["labels"], [[0, 0, 0, -1], [0, 0, -1, -1]])
    np.testing.assert_array_equal(out["deltas"], 0.0)

    out = _run(gt_boxes=np.zeros((2, 0, 4)), gt_labels=np.zeros((2, 0)), num_samples=4)
    np.testing.assert_array_equal(out["labels"], [[0, 0, 0, -1], [0, 0, -1, -1]])
    np.testing.assert_array_equal(out["rois"][0, :3], PROPOSALS[0])
