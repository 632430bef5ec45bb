"""FPN level assignment (Lin et al. 2017, eq. 1) and multi-level RoIAlign."""

import numpy as np
import tensorflow as tf

from rcnn_zoo.heads import MultiLevelRoIAlign, assign_fpn_levels
from rcnn_zoo.ops import roi_align


def test_level_assignment_follows_the_fpn_equation():
    # k = floor(4 + log2(sqrt(w*h) / 224)), clamped to [2, 5]
    boxes = tf.constant([
        [0, 0, 224, 224],    # exactly canonical → 4
        [0, 0, 223, 223],    # just below → 3
        [0, 0, 112, 112],    # → 3
        [0, 0, 111, 112],    # → 2
        [0, 0, 10, 10],      # tiny → clamped to 2
        [0, 0, 448, 448],    # → 5
        [0, 0, 2000, 2000],  # huge → clamped to 5
        [5, 5, 5, 5],        # empty → lowest level, no NaN
    ], tf.float32)
    levels = assign_fpn_levels(boxes, 2, 5).numpy()
    np.testing.assert_array_equal(levels, [4, 3, 3, 2, 2, 5, 5, 2])


def test_each_roi_is_pooled_from_its_level_only():
    rng = np.random.default_rng(0)
    strides = (4, 8, 16, 32)
    image = 256
    features = [tf.constant(rng.normal(size=(2, image // s, image // s, 3)), tf.float32) for s in strides]
    rois = tf.constant([
        [[10, 10, 60, 60], [0, 0, 250, 250], [30, 40, 150, 160]],
        [[5, 5, 20, 30], [100, 100, 230, 240], [0, 0, 0, 0]],
    ], tf.float32)
    pooler = MultiLevelRoIAlign(strides, pool_size=3, sampling_ratio=2)
    out = pooler(features, rois).numpy()
    assert out.shape == (2, 3, 3, 3, 3)
    levels = assign_fpn_levels(rois, 2, 5).numpy()
    for b in range(2):
        for r in range(3):
            level = levels[b, r] - 2
            row = tf.constant([[b, *rois[b, r].numpy()]], tf.float32)
            expected = roi_align(features[level], row, (3, 3), 1.0 / strides[level], 2)
            np.testing.assert_allclose(out[b, r], expected[0], atol=1e-5)


def test_no_rois():
    features = [tf.zeros((1, 8, 8, 2)), tf.zeros((1, 4, 4, 2))]
    out = MultiLevelRoIAlign((4, 8), pool_size=2)(features, tf.zeros((1, 0, 4)))
    assert out.shape == (1, 0, 2, 2, 2)
