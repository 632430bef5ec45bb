"""ps_roi_pool: hand-worked examples (rounding, +1 end, channel mapping, averaging, gradient)."""

import numpy as np
import pytest
import tensorflow as tf

import rcnn_zoo.ops as ops

from . import references as ref
from . import roi_testing as rt

# k = 2, D = 1: bin (i, j) reads channel (0·2 + i)·2 + j, i.e. channels 0, 1 / 2, 3.
# Channel c at (h, w) holds 10·(c + 1) + 4h + w.
_H, _W = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
FEATURES = np.stack([10 * (c + 1) + 4 * _H + _W for c in range(4)], -1)[None].astype(np.float32)
ROIS = np.array(
    [
        # x1' = 0, x2' = (3 + 1) = 4: roi 4×4, bin 2 → rows/cols {0,1}, {2,3}.
        # (0,0): ch 0 over {0,1,4,5} → 10 + 2.5; (0,1): ch 1 over {2,3,6,7} → 20 + 4.5;
        # (1,0): ch 2 over {8,9,12,13} → 30 + 10.5; (1,1): ch 3 over {10,11,14,15} → 40 + 12.5.
        [0, 0, 0, 3, 3],
        # round(0.5) = 1, round(1.5) = 2 → x1' = 1, x2' = 3: width 2, bins of 1 → cols 1, 2;
        # round(0.4) = 0, round(2.5) = 3 → y1' = 0, y2' = 4: rows {0,1}, {2,3}.
        # (0,0): ch 0 at {1,5} → 13; (0,1): ch 1 at {2,6} → 24; (1,0): ch 2 at {9,13} → 41;
        # (1,1): ch 3 at {10,14} → 52.
        [0, 0.5, 0.4, 1.5, 2.5],
        # Inverted: x1' = x2' = 2 → width max(0, 0.1) = 0.1; every bin is pixel (2, 2) = 10.
        [0, 2, 2, 1, 1],
        # Wholly outside: empty bins → 0.
        [0, 20, 20, 30, 30],
    ],
    np.float32,
)
EXPECTED = np.array(
    [[[12.5, 24.5], [40.5, 52.5]], [[13, 24], [41, 52]], [[20, 30], [40, 50]], [[0, 0], [0, 0]]],
    np.float32,
)[..., None]


@pytest.fixture(params=rt.IMPLEMENTATIONS)
def impl(request):
    rt.require(request.param)
    return request.param


def test_hand_computed(impl):
    out = ops.ps_roi_pool(FEATURES, ROIS, group_size=2, output_dim=1, spatial_scale=1.0,
                          impl=impl)
    np.testing.assert_allclose(out.numpy(), EXPECTED, rtol=1e-6)
    np.testing.assert_allclose(ref.ps_roi_pool(FEATURES, ROIS, 2, 1, 1.0), EXPECTED, rtol=1e-6)


def test_hand_computed_gradient(impl):
    x = tf.constant(FEATURES)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = ops.ps_roi_pool(x, ROIS[:1], 2, 1, 1.0, impl=impl)
    grad = tape.gradient(out, x, output_gradients=tf.constant([[[[4.0], [8.0]], [[12.0], [16.0]]]]))
    expected = np.zeros((4, 4, 4), np.float32)
    # dy / area (4 pixels) spread over each bin, in that bin's channel.
    expected[0:2, 0:2, 0], expected[0:2, 2:4, 1] = 1, 2
    expected[2:4, 0:2, 2], expected[2:4, 2:4, 3] = 3, 4
    np.testing.assert_allclose(grad.numpy()[0], expected)


def test_large_magnitude_float32_sums(impl):
    # Summed-area tables must not lose float32 precision on a big map of large values.
    rng = np.random.default_rng(0)
    features = (100 + 50 * rng.standard_normal((1, 64, 80, 2 * 2 * 3))).astype(np.float32)
    rois = rt.random_rois(rng, 1, 64 * 8, 80 * 8, np.float32, count=40)
    out = ops.ps_roi_pool(features, rois, 2, 3, 1 / 8, impl=impl)
    np.testing.assert_allclose(out.numpy(), ref.ps_roi_pool(features, rois, 2, 3, 1 / 8),
                               rtol=1e-5, atol=1e-4)
