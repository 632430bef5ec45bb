"""AnchorGenerator against py-faster-rcnn's generate_anchors and torchvision's AnchorGenerator.

Expected anchors are written out by hand from the reference algorithms, or computed by the small
NumPy re-implementation of ``generate_anchors`` below (written from its description, not from
the code under test).
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from rcnn_zoo.layers import AnchorGenerator, concat_levels

# py-faster-rcnn generate_anchors(base_size=16, ratios=[0.5, 1, 2], scales=[8, 16, 32]) in its
# inclusive convention, worked out by hand: ratio 0.5 -> ws = round(sqrt(512)) = 23,
# hs = round(11.5) = 12; ratio 1 -> 16 x 16; ratio 2 -> ws = round(sqrt(128)) = 11, hs = 22;
# times the scales, centred at 7.5.
PY_FASTER_RCNN_INCLUSIVE = np.array(
    [
        [-84, -40, 99, 55],
        [-176, -88, 191, 103],
        [-360, -184, 375, 199],
        [-56, -56, 71, 71],
        [-120, -120, 135, 135],
        [-248, -248, 263, 263],
        [-36, -80, 51, 95],
        [-80, -168, 95, 183],
        [-168, -344, 183, 359],
    ],
    np.float32,
)
# Continuous coordinates: x2 + 1, y2 + 1.
PY_FASTER_RCNN_ANCHORS = PY_FASTER_RCNN_INCLUSIVE + np.array([0, 0, 1, 1], np.float32)


def reference_generate_anchors(base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)):
    """generate_anchors() as described in py-faster-rcnn: inclusive-coordinate boxes."""

    def box(ws, hs, cx, cy):
        return [cx - 0.5 * (ws - 1), cy - 0.5 * (hs - 1), cx + 0.5 * (ws - 1), cy + 0.5 * (hs - 1)]

    w = h = float(base_size)
    cx = cy = 0.5 * (w - 1)
    out = []
    for ratio in ratios:
        ws = np.round(np.sqrt(w * h / ratio))
        hs = np.round(ws * ratio)
        for scale in scales:
            out.append(box(ws * scale, hs * scale, cx, cy))
    return np.array(out, np.float32)


def test_reference_reimplementation_matches_the_hand_values():
    np.testing.assert_array_equal(reference_generate_anchors(), PY_FASTER_RCNN_INCLUSIVE)


def test_py_faster_rcnn_cell_anchors_exact():
    gen = AnchorGenerator(sizes=(128, 256, 512), aspect_ratios=(0.5, 1, 2), strides=(16,))
    np.testing.assert_array_equal(gen.cell_anchors(), PY_FASTER_RCNN_ANCHORS)
    anchors = gen.anchors_for_shapes((1, 1)).numpy()
    np.testing.assert_array_equal(anchors, PY_FASTER_RCNN_ANCHORS)
    assert gen.num_anchors_per_location == [9]


def test_py_faster_rcnn_other_base_size_matches_reference():
    # Detectron's generalisation: base size = stride, scales = sizes / stride.
    gen = AnchorGenerator(sizes=(32, 64), aspect_ratios=(0.5, 1.0, 2.0), strides=(8,))
    expected = reference_generate_anchors(8, (0.5, 1.0, 2.0), (4, 8)) + np.array([0, 0, 1, 1])
    np.testing.assert_allclose(gen.cell_anchors(), expected)


def test_shifts_row_major_y_then_x_then_anchor():
    height, width, stride = 2, 3, 16
    gen = AnchorGenerator(strides=(stride,))
    anchors = gen(tf.zeros([1, height, width, 8])).numpy()
    assert anchors.shape == (height * width * 9, 4)
    for y in range(height):
        for x in range(width):
            for a in range(9):
                shift = np.array([x, y, x, y], np.float32) * stride
                np.testing.assert_array_equal(
                    anchors[(y * width + x) * 9 + a], PY_FASTER_RCNN_ANCHORS[a] + shift
                )
    # The last anchor: cell (x=2, y=1), ratio 2 scale 32 -> [-168+32, -344+16, 184+32, 360+16].
    np.testing.assert_array_equal(anchors[-1], [-136, -328, 216, 376])


def test_order_matches_rpn_head_reshape():
    # An RPN head writes the deltas of anchor a at (y, x) into channels a*4 .. a*4+3. Put the
    # anchors themselves there: reshaping [1, H, W, A*4] -> [H*W*A, 4] must give the same list.
    height, width = 4, 5
    gen = AnchorGenerator(strides=(16,))
    grid = np.zeros([1, height, width, 9 * 4], np.float32)
    for y in range(height):
        for x in range(width):
            for a in range(9):
                grid[0, y, x, a * 4 : a * 4 + 4] = PY_FASTER_RCNN_ANCHORS[a] + 16 * np.array(
                    [x, y, x, y]
                )
    np.testing.assert_array_equal(grid.reshape(-1, 4), gen(tf.constant(grid)).numpy())


def test_torchvision_convention_known_cases():
    # torchvision: w = size / sqrt(r), h = size * sqrt(r), half sizes rounded (float32).
    # size 32: r=0.5 -> 45.25/2 = 22.63 -> 23, 22.63/2 = 11.31 -> 11.
    gen = AnchorGenerator(sizes=(32,), aspect_ratios=(0.5, 1.0, 2.0), strides=(4,),
                          convention="torchvision")
    np.testing.assert_array_equal(
        gen.cell_anchors(), [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]]
    )
    # sizes 128/256/512, ratios outer: r=0.5, size 128 -> 181.02/2 = 90.51 -> 91, 45.25 -> 45.
    gen = AnchorGenerator(sizes=(128, 256, 512), strides=(16,), convention="torchvision")
    cell = gen.cell_anchors()
    np.testing.assert_array_equal(cell[0], [-91, -45, 91, 45])
    np.testing.assert_array_equal(cell[1], [-181, -91, 181, 91])  # 362.04/2, 181.02/2
    np.testing.assert_array_equal(cell[3], [-64, -64, 64, 64])
    np.testing.assert_array_equal(cell[8], [-181, -362, 181, 362])  # 724.08/2 = 362.04
    # Shifts are x*stride with no half-cell offset.
    anchors = gen.anchors_for_shapes((2, 2)).numpy()
    np.testing.assert_array_equal(anchors[9 * 3 + 3], [-64 + 16, -64 + 16, 64 + 16, 64 + 16])


def test_torchvision_rounds_half_to_even():
    # size 33, ratio 1: half size 16.5 -> torch.round gives 16.
    gen = AnchorGenerator(sizes=(33,), aspect_ratios=(1.0,), strides=(8,), convention="torchvision")
    np.testing.assert_array_equal(gen.cell_anchors(), [[-16, -16, 16, 16]])


def test_detectron2_convention_sizes_outer_unrounded():
    gen = AnchorGenerator(sizes=(32, 64), aspect_ratios=(0.5, 1.0), strides=(4,),
                          convention="detectron2", offset=0.5)
    w = np.sqrt(32 * 32 / 0.5)  # 45.2548
    expected = [
        [-w / 2, -w / 4, w / 2, w / 4],
        [-16, -16, 16, 16],
        [-w, -w / 2, w, w / 2],
        [-32, -32, 32, 32],
    ]
    np.testing.assert_allclose(gen.cell_anchors(), expected, rtol=1e-6)
    # offset 0.5: cell (0, 0) anchors centred at (2, 2).
    np.testing.assert_allclose(gen.anchors_for_shapes((1, 1)).numpy()[1], [-14, -14, 18, 18])


def test_fpn_levels_shapes_and_values():
    strides = (4, 8, 16, 32, 64)
    gen = AnchorGenerator(
        sizes=((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios=(0.5, 1.0, 2.0),
        strides=strides,
        convention="torchvision",
    )
    features = [tf.zeros([2, 64 // (s // 4), 96 // (s // 4), 4]) for s in strides]
    levels = gen(features)
    assert isinstance(levels, list) and len(levels) == 5
    for feature, anchors in zip(features, levels):
        assert anchors.shape == (feature.shape[1] * feature.shape[2] * 3, 4)
        assert anchors.dtype == tf.float32
    # Level P4 (stride 16, size 128), cell (x=1, y=0), ratio 1 anchor.
    np.testing.assert_array_equal(levels[2][1 * 3 + 1].numpy(), [-64 + 16, -64, 64 + 16, 64])
    # Level P6 (stride 64, size 512), last cell (x=5, y=3), ratio 2:
    # half w 362.04 / 2 -> 181, half h 724.08 / 2 -> 362.
    np.testing.assert_array_equal(
        levels[4][-1].numpy(), [-181 + 320, -362 + 192, 181 + 320, 362 + 192]
    )
    flat = concat_levels(levels)
    assert flat.shape == (3 * sum(f.shape[1] * f.shape[2] for f in features), 4)
    np.testing.assert_array_equal(flat[-1].numpy(), levels[4][-1].numpy())
    assert gen.num_anchors_per_location == [3] * 5


def test_per_level_length_mismatch_raises():
    with pytest.raises(ValueError):
        AnchorGenerator(sizes=((32,), (64,)), strides=(4, 8, 16))
    with pytest.raises(ValueError):
        AnchorGenerator(convention="caffe")


def test_dynamic_shapes_in_tf_function():
    gen = AnchorGenerator(sizes=((32,), (64,)), strides=(8, 16), convention="torchvision")

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, 3]),
            tf.TensorSpec([None, None, None, 3]),
        ]
    )
    def run(p3, p4):
        return concat_levels(gen([p3, p4]))

    out = run(tf.zeros([1, 6, 5, 3]), tf.zeros([1, 3, 3, 3]))
    assert out.shape == (6 * 5 * 3 + 3 * 3 * 3, 4)
    eager = concat_levels(gen.anchors_for_shapes([(6, 5), (3, 3)]))
    np.testing.assert_array_equal(out.numpy(), eager.numpy())
    # A different size through the same trace.
    assert run(tf.zeros([2, 2, 7, 3]), tf.zeros([2, 1, 4, 3])).shape == (2 * 7 * 3 + 4 * 3, 4)


def test_shape_vector_inputs():
    gen = AnchorGenerator()
    by_hw = gen(tf.constant([3, 4]))
    by_full = gen(tf.constant([2, 3, 4, 512]))
    by_map = gen(tf.zeros([2, 3, 4, 1]))
    np.testing.assert_array_equal(by_hw.numpy(), by_map.numpy())
    np.testing.assert_array_equal(by_full.numpy(), by_map.numpy())


def test_mixed_precision_features_give_float32_anchors():
    gen = AnchorGenerator(dtype="mixed_float16")
    anchors = gen(tf.zeros([1, 2, 2, 4], tf.float16))
    assert anchors.dtype == tf.float32
    np.testing.assert_array_equal(anchors.numpy()[:9], PY_FASTER_RCNN_ANCHORS)


def test_functional_model_with_symbolic_input():
    inputs = keras.Input([None, None, 8])
    anchors = AnchorGenerator()(inputs)
    assert tuple(anchors.shape) == (None, 4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        dict(sizes=((32,), (64,)), aspect_ratios=((1.0,), (0.5, 2.0)), strides=(8, 16),
             convention="torchvision"),
        dict(sizes=(32, 64), strides=(4,), convention="detectron2", offset=0.5),
    ],
)
def test_config_round_trip(kwargs):
    gen = AnchorGenerator(**kwargs)
    shapes = [(3, 2)] * gen.num_levels
    expected = concat_levels(gen.anchors_for_shapes(shapes)).numpy()
    config = json.loads(json.dumps(gen.get_config()))
    clone = AnchorGenerator.from_config(config)
    np.testing.assert_array_equal(concat_levels(clone.anchors_for_shapes(shapes)).numpy(), expected)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(gen))
    assert isinstance(rebuilt, AnchorGenerator)
    np.testing.assert_array_equal(
        concat_levels(rebuilt.anchors_for_shapes(shapes)).numpy(), expected
    )
