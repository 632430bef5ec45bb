"""Box coding: every expected value below is worked out by hand from the formulas."""

import math

import numpy as np
import pytest
import tensorflow as tf

from rcnn_zoo.ops import boxes as box_ops


def test_area_and_inverted_box():
    got = box_ops.area(tf.constant([[0.0, 0.0, 4.0, 3.0], [5.0, 5.0, 2.0, 9.0]]))
    np.testing.assert_allclose(got.numpy(), [12.0, 0.0])


@pytest.mark.parametrize(
    "a, b, expected",
    [
        # disjoint
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        # touching edges only: zero intersection
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),
        # identical
        ([3, 4, 13, 24], [3, 4, 13, 24], 1.0),
        # contained: 4x4 inside 10x10 -> 16 / 100
        ([0, 0, 10, 10], [2, 2, 6, 6], 0.16),
        # half overlap: inter 5*10=50, union 100+100-50=150
        ([0, 0, 10, 10], [5, 0, 15, 10], 50.0 / 150.0),
        # corner overlap: inter 2*2=4, union 16+16-4=28
        ([0, 0, 4, 4], [2, 2, 6, 6], 4.0 / 28.0),
        # zero-area vs zero-area at the same place: union 0 -> 0, not NaN
        ([5, 5, 5, 5], [5, 5, 5, 5], 0.0),
        # zero-area inside a real box
        ([0, 0, 10, 10], [5, 5, 5, 8], 0.0),
    ],
)
def test_pairwise_iou_hand_cases(a, b, expected):
    got = box_ops.pairwise_iou(tf.constant([a], tf.float32), tf.constant([b], tf.float32))
    assert got.shape == (1, 1)
    assert not np.isnan(got.numpy()).any()
    np.testing.assert_allclose(got.numpy()[0, 0], expected, rtol=1e-6, atol=1e-7)


def test_pairwise_iou_shapes_and_batch():
    boxes1 = tf.constant([[[0, 0, 10, 10], [0, 0, 4, 4], [1, 1, 1, 1]]] * 2, tf.float32)
    boxes2 = tf.constant([[[0, 0, 10, 10], [2, 2, 6, 6]]] * 2, tf.float32)
    got = box_ops.pairwise_iou(boxes1, boxes2).numpy()
    assert got.shape == (2, 3, 2)
    expected = [[1.0, 16.0 / 100.0], [16.0 / 100.0, 4.0 / 28.0], [0.0, 0.0]]
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)
    np.testing.assert_allclose(got[1], expected, rtol=1e-6)
    # Empty sets give empty matrices.
    assert box_ops.pairwise_iou(tf.zeros([0, 4]), boxes2[0]).shape == (0, 2)


def test_clip_to_image():
    boxes = tf.constant([[-5.0, -3.0, 50.0, 20.0], [10.0, 10.0, 120.0, 90.0], [200, 200, 300, 300]])
    got = box_ops.clip_to_image(boxes, height=60, width=100).numpy()
    np.testing.assert_allclose(
        got, [[0, 0, 50, 20], [10, 10, 100, 60], [100, 60, 100, 60]]
    )


def test_clip_to_image_per_image_sizes():
    boxes = tf.constant([[[-1.0, -1.0, 500.0, 500.0]], [[-1.0, -1.0, 500.0, 500.0]]])
    height = tf.constant([[100.0], [300.0]])
    width = tf.constant([[200.0], [400.0]])
    got = box_ops.clip_to_image(boxes, height, width).numpy()
    np.testing.assert_allclose(got[:, 0], [[0, 0, 200, 100], [0, 0, 400, 300]])


def test_encode_hand_case():
    # Reference: centre (10, 20), size 20 x 40. Box: centre (15, 10), size 40 x 10.
    reference = tf.constant([[0.0, 0.0, 20.0, 40.0]])
    boxes = tf.constant([[-5.0, 5.0, 35.0, 15.0]])
    expected = [(15 - 10) / 20, (10 - 20) / 40, math.log(40 / 20), math.log(10 / 40)]
    np.testing.assert_allclose(box_ops.encode(boxes, reference).numpy()[0], expected, rtol=1e-6)
    weighted = box_ops.encode(boxes, reference, weights=(10.0, 10.0, 5.0, 5.0)).numpy()[0]
    np.testing.assert_allclose(
        weighted, [10 * expected[0], 10 * expected[1], 5 * expected[2], 5 * expected[3]], rtol=1e-6
    )


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip(weights):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (2, 50, 2))
    wh = rng.uniform(4, 300, (2, 50, 2))
    reference = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    xy = rng.uniform(0, 500, (2, 50, 2))
    wh = rng.uniform(4, 300, (2, 50, 2))
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    deltas = box_ops.encode(tf.constant(boxes), tf.constant(reference), weights)
    assert deltas.shape == (2, 50, 4)
    decoded = box_ops.decode(deltas, tf.constant(reference), weights).numpy()
    np.testing.assert_allclose(decoded, boxes, atol=2e-3)


def test_decode_zero_deltas_is_identity():
    reference = tf.constant([[1.0, 2.0, 33.0, 18.0]])
    decoded = box_ops.decode(tf.zeros([1, 4]), reference).numpy()
    np.testing.assert_allclose(decoded, [[1, 2, 33, 18]])


def test_decode_clamps_log_size_deltas():
    # dw = dh = 100 would overflow exp(); the clamp is log(1000/16), so a 16x16 box becomes
    # 1000x1000 around the same centre (8, 8).
    reference = tf.constant([[0.0, 0.0, 16.0, 16.0]])
    got = box_ops.decode(tf.constant([[0.0, 0.0, 100.0, 100.0]]), reference).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, [[8 - 500, 8 - 500, 8 + 500, 8 + 500]], rtol=1e-5)
    # The clamp applies after dividing by the weights: 5 * log(1000/16) hits it exactly.
    weighted = box_ops.decode(
        tf.constant([[0.0, 0.0, 1000.0, 1000.0]]), reference, weights=(10.0, 10.0, 5.0, 5.0)
    ).numpy()
    np.testing.assert_allclose(weighted, [[8 - 500, 8 - 500, 8 + 500, 8 + 500]], rtol=1e-5)
    # Negative log-size deltas are not clamped: e^-1 of 16.
    small = box_ops.decode(tf.constant([[0.0, 0.0, -1.0, 0.0]]), reference).numpy()[0]
    np.testing.assert_allclose(small[2] - small[0], 16 * math.exp(-1), rtol=1e-5)


def test_decode_applies_weights():
    reference = tf.constant([[0.0, 0.0, 20.0, 40.0]])  # centre (10, 20), 20 x 40
    got = box_ops.decode(tf.constant([[10.0, -10.0, 0.0, 0.0]]), reference, (10.0, 10.0, 5.0, 5.0))
    # dx = 10 / 10 = 1 -> cx = 10 + 20; dy = -1 -> cy = 20 - 40.
    np.testing.assert_allclose(got.numpy(), [[20, -40, 40, 0]], rtol=1e-6)


BOX_XYXY = [10.0, 20.0, 30.0, 60.0]


@pytest.mark.parametrize(
    "target, expected",
    [
        ("yxyx", [20.0, 10.0, 60.0, 30.0]),
        ("xywh", [10.0, 20.0, 20.0, 40.0]),
        ("center_xywh", [20.0, 40.0, 20.0, 40.0]),
    ],
)
def test_convert_format(target, expected):
    boxes = tf.constant([BOX_XYXY, BOX_XYXY])
    got = box_ops.convert_format(boxes, "xyxy", target)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), [expected, expected])
    back = box_ops.convert_format(got, target, "xyxy")
    np.testing.assert_allclose(back.numpy(), [BOX_XYXY, BOX_XYXY], rtol=1e-6)


def test_convert_format_between_non_xyxy_formats_and_identity():
    got = box_ops.convert_format(tf.constant([[20.0, 10.0, 60.0, 30.0]]), "yxyx", "center_xywh")
    np.testing.assert_allclose(got.numpy(), [[20.0, 40.0, 20.0, 40.0]])
    same = box_ops.convert_format(tf.constant([BOX_XYXY]), "xyxy", "xyxy")
    np.testing.assert_allclose(same.numpy(), [BOX_XYXY])


def test_convert_format_relative():
    got = box_ops.convert_format(tf.constant([BOX_XYXY]), "xyxy", "rel_xyxy", height=100, width=200)
    np.testing.assert_allclose(got.numpy(), [[0.05, 0.2, 0.15, 0.6]], rtol=1e-6)
