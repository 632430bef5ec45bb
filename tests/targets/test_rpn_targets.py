"""RPN targets on hand-made anchors and boxes; labels and deltas computed by hand."""

import math

import numpy as np
import tensorflow as tf

from rcnn_zoo.targets.rpn_targets import rpn_targets

ANCHORS = np.array(
    [
        [0, 0, 10, 10],
        [0, 0, 20, 20],
        [30, 30, 40, 40],
        [100, 100, 110, 110],
    ],
    np.float32,
)


def _run(gt_boxes, gt_labels, **kwargs):
    out = rpn_targets(
        tf.constant(ANCHORS), tf.constant(gt_boxes, tf.float32), tf.constant(gt_labels, tf.int32),
        **kwargs,
    )
    assert set(out) == {"labels", "deltas"}
    assert out["labels"].dtype == tf.float32 and out["deltas"].dtype == tf.float32
    return out["labels"].numpy(), out["deltas"].numpy()


def test_two_differing_images():
    gt_boxes = [
        [[0, 0, 10, 11], [0, 0, 0, 0]],      # image 0: one box, one padding slot
        [[25, 25, 40, 40], [0, 0, 10, 10]],  # image 1: slot 1 is padding (would match anchor 0)
    ]
    gt_labels = [[2, -1], [0, -1]]
    labels, deltas = _run(gt_boxes, gt_labels)

    # Image 0: IoU(anchor 0) = 100/110 = 0.909 -> positive; IoU(anchor 1) = 110/400 = 0.275,
    # anchors 2, 3 do not overlap -> negative. Everything fits in the 256 samples.
    # Image 1: IoU(anchor 2) = 100/225 = 0.44 < 0.7, but it is the box's best anchor -> positive.
    np.testing.assert_array_equal(labels, [[1, 0, 0, 0], [0, 0, 1, 0]])

    expected = np.zeros((2, 4, 4), np.float32)
    # anchor 0: centre (5, 5), 10x10; box: centre (5, 5.5), 10x11.
    expected[0, 0] = [0.0, 0.5 / 10, 0.0, math.log(11 / 10)]
    # anchor 2: centre (35, 35), 10x10; box: centre (32.5, 32.5), 15x15.
    expected[1, 2] = [-2.5 / 10, -2.5 / 10, math.log(15 / 10), math.log(15 / 10)]
    np.testing.assert_allclose(deltas, expected, atol=1e-6)


def test_box_weights_scale_deltas():
    _, deltas = _run([[[0, 0, 10, 11]]], [[0]], box_weights=(10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(deltas[0, 0], [0.0, 0.5, 0.0, 5 * math.log(1.1)], atol=1e-5)


def test_image_without_ground_truth_is_all_negative():
    labels, deltas = _run([[[5, 5, 50, 50]]], [[-1]])  # padding only
    np.testing.assert_array_equal(labels, [[0, 0, 0, 0]])
    np.testing.assert_array_equal(deltas, np.zeros((1, 4, 4)))

    labels, deltas = _run(np.zeros((2, 0, 4)), np.zeros((2, 0)))  # no slot at all
    np.testing.assert_array_equal(labels, np.zeros((2, 4)))
    np.testing.assert_array_equal(deltas, np.zeros((2, 4, 4)))


def test_sampling_caps_positives_and_fills_with_negatives():
    positives = np.tile([[0, 0, 10, 10]], (300, 1))     # IoU 1 with the box
    negatives = np.tile([[200, 200, 210, 210]], (400, 1))  # IoU 0
    anchors = np.concatenate([positives, negatives]).astype(np.float32)
    fn = tf.function(rpn_targets)
    out = fn(tf.constant(anchors), tf.constant([[[0, 0, 10, 10]]], tf.float32),
             tf.constant([[1]], tf.int32))
    labels, deltas = out["labels"].numpy()[0], out["deltas"].numpy()[0]
    assert (labels[:300] == 1).sum() == 128 and (labels[:300] == 0).sum() == 0
    assert (labels[300:] == 0).sum() == 128 and (labels[300:] == 1).sum() == 0
    assert (labels == -1).sum() == 700 - 256
    np.testing.assert_array_equal(deltas, 0.0)  # identical boxes: zero deltas everywhere
