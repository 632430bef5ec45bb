"""roi_align: hand-worked examples (sample positions, clamping, cut-off, aligned, gradient)."""

import numpy as np
import pytest
import tensorflow as tf

import rcnn_zoo.ops as ops

from . import references as ref
from . import roi_testing as rt

# 4×4 map, one channel, value 4y + x. Bilinear interpolation of a linear map returns the
# linear function at the (clamped) sample point.
FEATURES = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)


@pytest.fixture(params=rt.IMPLEMENTATIONS)
def impl(request):
    rt.require(request.param)
    return request.param


@pytest.mark.parametrize(
    "roi, pool, sampling_ratio, aligned, expected",
    [
        # roi 2×2, one bin, 2×2 samples at 0.5 and 1.5 → mean(4y + x) = 4·1 + 1.
        ((0, 0, 0, 2, 2), 1, 2, False, [[5.0]]),
        # Adaptive grid: ceil(2/1) = 2, the same samples.
        ((0, 0, 0, 2, 2), 1, -1, False, [[5.0]]),
        # 2×2 bins of size 1, one sample each at their centres 0.5 / 1.5.
        ((0, 0, 0, 2, 2), 2, 1, False, [[2.5, 3.5], [6.5, 7.5]]),
        # aligned: corners −0.5 → samples at 0 and 1 → 4·0.5 + 0.5.
        ((0, 0, 0, 2, 2), 1, 2, True, [[2.5]]),
        # Samples at −0.5 and 0.5; −0.5 clamps to 0 → y, x ∈ {0, 0.5} → 4·0.25 + 0.25.
        ((0, -1, -1, 1, 1), 1, 2, False, [[1.25]]),
        # Samples at 3.75 and 5.25: 3.75 ≥ H − 1 reads row/col 3; 5.25 > H contributes 0 but
        # still counts → (15 + 0 + 0 + 0) / 4.
        ((0, 3, 3, 6, 6), 1, 2, False, [[3.75]]),
        # Zero-size RoI without aligned is 1×1: samples at 1.25, 1.75 → 4·1.5 + 1.5.
        ((0, 1, 1, 1, 1), 1, 2, False, [[7.5]]),
        # Zero-size RoI with aligned and an adaptive grid has no samples → 0.
        ((0, 1, 1, 1, 1), 1, -1, True, [[0.0]]),
    ],
)
def test_hand_computed(impl, roi, pool, sampling_ratio, aligned, expected):
    rois = np.array([roi], np.float32)
    out = ops.roi_align(FEATURES, rois, pool, 1.0, sampling_ratio, aligned, impl=impl)
    np.testing.assert_allclose(out.numpy()[0, :, :, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(
        ref.roi_align(FEATURES, rois, (pool, pool), 1.0, sampling_ratio, aligned)[0, :, :, 0],
        expected, rtol=1e-6)


def test_hand_computed_gradient(impl):
    # One bin, samples at 0.5 / 1.5 on each axis, each weighing 1/2: rows 0, 1, 2 get
    # 1/4, 1/2, 1/4 (likewise columns), the gradient is their outer product.
    x = tf.constant(FEATURES)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = ops.roi_align(x, tf.constant([[0, 0, 0, 2, 2]], tf.float32), 1, 1.0, 2,
                            impl=impl)
    grad = tape.gradient(out, x).numpy()[0, :, :, 0]
    expected = np.zeros((4, 4))
    expected[:3, :3] = np.outer([0.25, 0.5, 0.25], [0.25, 0.5, 0.25])
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_adaptive_grid_of_a_roi_far_larger_than_the_map(impl):
    # ceil(1000 / 2) = 500 samples per bin side, almost all off the map (they still count).
    rng = np.random.default_rng(0)
    features = rng.standard_normal((1, 5, 6, 2))
    rois = np.array([[0, -1000, -1000, 1000, 1000], [0, -1000, 1.5, 3.2, 1000]])
    for aligned in (False, True):
        out = ops.roi_align(features, rois, 2, 0.5, -1, aligned, impl=impl)
        expected = ref.roi_align(features, rois, (2, 2), 0.5, -1, aligned)
        assert np.abs(expected).max() > 1e-6  # tiny: the off-map samples count as zeros
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-9, atol=1e-16)


def test_inverted_roi_with_fixed_grid(impl):
    # aligned keeps a negative size; with a fixed grid the samples run backwards.
    rng = np.random.default_rng(1)
    features = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
    rois = np.array([[0, 50, 60, 10, 20]], np.float32)
    out = ops.roi_align(features, rois, 2, 1 / 16, 2, True, impl=impl)
    np.testing.assert_allclose(out.numpy(), ref.roi_align(features, rois, (2, 2), 1 / 16, 2, True),
                               rtol=1e-5, atol=1e-6)
