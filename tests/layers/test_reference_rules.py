"""The pre/post-processing rules that presets select, against the references' semantics written
out in Python: resize rounding (torchvision floors, MMDetection rounds half up, both in Python
floats), per-image resize and zero padding after normalisation, torchvision's anchor spacing
``image_size // grid_size``, and where each reference drops small RPN boxes."""

import math

import numpy as np
import pytest
import tensorflow as tf

from rcnn_zoo.layers import AnchorGenerator, ProposalLayer
from rcnn_zoo.models.preprocessing import normalize, preprocess_batch, resized_sizes


def _torchvision_size(h, w, min_size, max_size):
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return math.floor(h * scale), math.floor(w * scale)


def _mmdet_size(h, w, min_size, max_size):
    scale = min(max_size / max(h, w), min_size / min(h, w))
    return int(h * scale + 0.5), int(w * scale + 0.5)


@pytest.mark.parametrize("size", [(480, 640), (640, 426), (233, 301), (30, 40), (1333, 2000), (427, 640), (599, 1000)])
def test_resize_rounding_matches_both_references(size):
    h, w = size
    floor = resized_sizes(tf.constant([size]), 800, 1333, "floor").numpy()[0]
    assert tuple(floor) == _torchvision_size(h, w, 800.0, 1333.0)
    rounded = resized_sizes(tf.constant([size]), 600, 1000, "round").numpy()[0]
    assert tuple(rounded) == _mmdet_size(h, w, 600.0, 1000.0)
    small = resized_sizes(tf.constant([size]), 320, 640, "floor").numpy()[0]
    assert tuple(small) == _torchvision_size(h, w, 320.0, 640.0)


def test_640x480_floors_to_1066_where_rounding_gives_1067():
    assert resized_sizes(tf.constant([[480, 640]]), 800, 1333, "floor").numpy().tolist() == [[800, 1066]]
    assert resized_sizes(tf.constant([[480, 640]]), 800, 1333, "round").numpy().tolist() == [[800, 1067]]


def test_each_image_of_a_padded_batch_is_resized_alone_and_padded_with_zeros_after_normalising():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (30, 50, 3)).astype(np.float32)
    b = rng.uniform(0, 255, (45, 20, 3)).astype(np.float32)  # portrait
    batch = np.zeros((2, 45, 50, 3), np.float32)
    batch[0, :30, :50], batch[1, :45, :20] = a, b
    out, sizes = preprocess_batch(batch, [[30, 50], [45, 20]], 60, 100, "torch", "floor", 32)
    assert sizes.numpy().tolist() == [[60, 100], [100, 44]]
    assert out.shape == (2, 128, 128, 3)  # max (100, 100) rounded up to 32
    for i, (image, (h, w)) in enumerate(((a, (60, 100)), (b, (100, 44)))):
        alone = normalize(tf.image.resize(image, (h, w), method="bilinear"), "torch").numpy()
        np.testing.assert_allclose(out[i, :h, :w].numpy(), alone, atol=1e-5)
        assert not out[i, h:].numpy().any() and not out[i, :, w:].numpy().any()


def test_torchvision_anchor_spacing_is_image_size_over_grid_size():
    generator = AnchorGenerator(sizes=((512,),), aspect_ratios=(1.0,), strides=(64,),
                                convention="torchvision", stride_rule="image_over_grid")
    grid_h, grid_w = 13, 17  # P6 of an 800×1088 padded batch: ceil(25 / 2), ceil(34 / 2)
    anchors = generator.anchors_for_shapes((grid_h, grid_w), image_shape=(800, 1088)).numpy()
    stride_y, stride_x = 800 // grid_h, 1088 // grid_w  # 61, 64
    expected = [[x * stride_x - 256, y * stride_y - 256, x * stride_x + 256, y * stride_y + 256]
                for y in range(grid_h) for x in range(grid_w)]
    np.testing.assert_array_equal(anchors, np.asarray(expected, np.float32))
    nominal = AnchorGenerator(sizes=((512,),), aspect_ratios=(1.0,), strides=(64,), convention="torchvision")
    assert nominal.anchors_for_shapes((grid_h, grid_w))[grid_w].numpy()[1] == 64 - 256


def _proposals(rule, min_size, pre_n):
    """Four anchors at one level: best score a box that clipping leaves 0 px wide, then a
    0.5 px box, then two normal boxes far apart."""
    anchors = tf.constant([[-30.0, 0, -10, 20], [0, 0, 0.5, 20], [0, 30, 20, 50], [40, 40, 60, 60]])
    logits = tf.constant([[4.0, 3.0, 2.0, 1.0]])
    layer = ProposalLayer(pre_nms_top_n_test=pre_n, post_nms_top_n_test=4, min_size=min_size,
                          min_size_rule=rule)
    out = layer(logits, tf.zeros([1, 4, 4]), anchors, image_shape=tf.constant([[100.0, 100.0, 1.0]]))
    return out["boxes"][0, : int(out["num_valid"][0])].numpy()


def test_where_small_boxes_are_dropped():
    # py-faster-rcnn drops them before the top-n: the 2 best *valid* boxes survive.
    assert len(_proposals("py-faster-rcnn", 1.0, pre_n=2)) == 2
    # torchvision takes the top-n first, then drops: of the 2 best, both are too small.
    assert len(_proposals("torchvision", 1.0, pre_n=2)) == 0
    assert len(_proposals("torchvision", 1.0, pre_n=4)) == 2
    # At min size 0 torchvision keeps the zero-width box (>=), MMDetection drops it (>).
    assert len(_proposals("torchvision", 0.0, pre_n=4)) == 4
    assert len(_proposals("mmdetection", 0.0, pre_n=4)) == 3
