"""roi_pool: hand-worked examples (C rounding, bins, clipping, argmax gradient)."""

import numpy as np
import pytest
import tensorflow as tf

import rcnn_zoo.ops as ops

from . import references as ref
from . import roi_testing as rt

# 4×4 map, one channel, value 4h + w + 1:
#    1  2  3  4
#    5  6  7  8
#    9 10 11 12
#   13 14 15 16
FEATURES = (np.arange(16, dtype=np.float32) + 1).reshape(1, 4, 4, 1)
ROIS = np.array(
    [
        # (0,0)-(3,3): roi 4×4, bin 2 → bins rows/cols {0,1} and {2,3}.
        [0, 0.0, 0.0, 3.0, 3.0],
        # round(0.5) = 1, round(1.4) = 1, round(2.5) = 3, round(2.6) = 3 (halves away from
        # zero; banker's rounding would start at column 0): roi 3×3 from (1,1), bin 1.5 →
        # bin 0 = floor(0)…ceil(1.5)−1 = +0…1 → rows/cols 1–2, bin 1 = +1…2 → rows/cols 2–3.
        [0, 0.5, 1.4, 2.5, 2.6],
        # round(−0.5) = −1, round(0.4) = 0: roi 2×2 from (−1,−1), bin 1 → bin 0 is row/col −1
        # (outside: empty → 0), bin 1 is row/col 0.
        [0, -0.5, -0.5, 0.4, 0.4],
        # Wholly outside: every bin empty.
        [0, 10.0, 10.0, 20.0, 20.0],
    ],
    np.float32,
)
EXPECTED = np.array(
    [
        [[6, 8], [14, 16]],
        [[11, 12], [15, 16]],
        [[0, 0], [0, 1]],
        [[0, 0], [0, 0]],
    ],
    np.float32,
)[..., None]


@pytest.fixture(params=rt.IMPLEMENTATIONS)
def impl(request):
    rt.require(request.param)
    return request.param


def test_hand_computed(impl):
    out = ops.roi_pool(FEATURES, ROIS, pool_size=2, spatial_scale=1.0, impl=impl)
    np.testing.assert_array_equal(out.numpy(), EXPECTED)
    np.testing.assert_array_equal(ref.roi_pool(FEATURES, ROIS, (2, 2), 1.0), EXPECTED)


def test_hand_computed_gradient(impl):
    x = tf.constant(FEATURES)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = ops.roi_pool(x, ROIS[:1], pool_size=2, spatial_scale=1.0, impl=impl)
    grad = tape.gradient(out, x, output_gradients=tf.constant([[[[1.0], [2.0]], [[3.0], [4.0]]]]))
    expected = np.zeros((4, 4), np.float32)
    expected[1, 1], expected[1, 3], expected[3, 1], expected[3, 3] = 1, 2, 3, 4  # the maxima
    np.testing.assert_array_equal(grad.numpy()[0, :, :, 0], expected)


def test_ties_send_gradient_to_first_maximum_in_row_major_order(impl):
    # A constant map: every element ties; each bin's gradient goes to its top-left element.
    x = tf.ones([1, 4, 4, 2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = ops.roi_pool(x, ROIS[:2], pool_size=2, spatial_scale=1.0, impl=impl)
    grad = tape.gradient(out, x).numpy()[0, :, :, 0]
    expected = np.zeros((4, 4), np.float32)
    for r, c in ((0, 0), (0, 2), (2, 0), (2, 2), (1, 1), (1, 2), (2, 1), (2, 2)):
        expected[r, c] += 1
    np.testing.assert_array_equal(grad, expected)
    # Random integer maps with many ties, against the reference's first-argmax rule.
    rng = np.random.default_rng(0)
    features = rng.integers(0, 3, (2, 9, 11, 3)).astype(np.float32)
    rois = rt.random_rois(rng, 2, 9 * 8, 11 * 8, np.float32)
    dy = rng.standard_normal((len(rois), 3, 2, 3)).astype(np.float32)
    spec = rt.roi_pool_spec((3, 2), 1 / 8)
    np.testing.assert_allclose(rt.vjp(spec, impl, features, rois, dy),
                               ref.roi_pool_grad(features, rois, (3, 2), 1 / 8, dy), atol=1e-6)


def test_float32_bin_edges_round_like_c(impl):
    # roi_h = 10 at 7 bins: 7 · float32(10/7) = 10.000001, so the last bin ends at
    # ceil(...) − 1 = 10, past the RoI (as in the C++ kernels); grappler's x/7 → x·(1/7) rewrite
    # must not change that inside tf.function.
    features = np.random.default_rng(1).standard_normal((1, 16, 16, 1)).astype(np.float32)
    rois = np.array([[0, 0, 0, 9, 9], [0, 2, 3, 11, 12]], np.float32)
    for call in (ops.roi_pool, tf.function(ops.roi_pool, autograph=False)):
        out = call(features, rois, 7, 1.0, impl=impl)
        np.testing.assert_array_equal(out.numpy(), ref.roi_pool(features, rois, (7, 7), 1.0))
