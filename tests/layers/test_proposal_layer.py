"""ProposalLayer (and the batched NMS it runs on) on hand-made cases with known answers.

Zero deltas decode to the anchors themselves, so every expected box below is an anchor (clipped
by hand where it crosses the border) and every expected score is sigmoid(logit).
"""

import json

import keras
import numpy as np
import tensorflow as tf

from rcnn_zoo.layers import ProposalLayer
from rcnn_zoo.ops.nms import batched_nms, gather_padded


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


ANCHORS = np.array(
    [
        [0, 0, 100, 100],  # a0
        [10, 0, 110, 100],  # a1: IoU with a0 = 9000 / 11000 = 0.82 > 0.7
        [200, 200, 300, 300],  # a2
        [0, 0, 10, 10],  # a3: 10 px sides < min_size 16
        [250, 250, 400, 400],  # a4: crosses the border of a 300 x 350 (h x w) image
    ],
    np.float32,
)
LOGITS = np.array(
    [
        [2.0, 3.0, 1.0, 5.0, 0.0],  # image 0
        [4.0, -1.0, 2.0, -5.0, 1.0],  # image 1
    ],
    np.float32,
)
DELTAS = np.zeros([2, 5, 4], np.float32)
# Image 1: a3 grows 4x around its centre (5, 5) -> [-15, -15, 25, 25] -> clipped [0, 0, 25, 25].
DELTAS[1, 3] = [0.0, 0.0, np.log(4.0), np.log(4.0)]
IMAGE_SHAPE = np.array([[300, 350], [400, 400]], np.float32)


def make_layer(**kwargs):
    defaults = dict(
        pre_nms_top_n_train=10,
        post_nms_top_n_train=4,
        pre_nms_top_n_test=10,
        post_nms_top_n_test=6,
        nms_threshold=0.7,
        min_size=16.0,
    )
    defaults.update(kwargs)
    return ProposalLayer(**defaults)


def run(layer, image_shape=IMAGE_SHAPE, training=False, logits=LOGITS, deltas=DELTAS):
    out = layer(
        tf.constant(logits), tf.constant(deltas), tf.constant(ANCHORS), tf.constant(image_shape),
        training=training,
    )
    return {k: v.numpy() for k, v in out.items()}


def test_nms_min_size_clipping_padding_per_image():
    out = run(make_layer())
    assert out["boxes"].shape == (2, 6, 4) and out["scores"].shape == (2, 6)
    assert out["num_valid"].dtype == np.int32
    np.testing.assert_array_equal(out["num_valid"], [3, 4])
    # Image 0: a3 (best logit) is too small, a0 is suppressed by a1, a4 is clipped to 350 x 300.
    np.testing.assert_allclose(
        out["boxes"][0],
        [[10, 0, 110, 100], [200, 200, 300, 300], [250, 250, 350, 300], [0] * 4, [0] * 4, [0] * 4],
    )
    np.testing.assert_allclose(out["scores"][0], [*sigmoid([3.0, 1.0, 0.0]), 0, 0, 0], rtol=1e-6)
    # Image 1: a0 suppresses a1, a4 fits the 400 x 400 image, a3 grew to 25 px and survives.
    np.testing.assert_allclose(
        out["boxes"][1],
        [[0, 0, 100, 100], [200, 200, 300, 300], [250, 250, 400, 400], [0, 0, 25, 25], [0] * 4,
         [0] * 4],
        atol=1e-4,
    )
    np.testing.assert_allclose(out["scores"][1], [*sigmoid([4.0, 2.0, 1.0, -5.0]), 0, 0], rtol=1e-5)


def test_train_and_test_top_n():
    layer = make_layer(pre_nms_top_n_test=2, post_nms_top_n_test=6)
    # Test: only a1 and a0 (the two best valid) enter NMS, and a1 suppresses a0.
    test = run(layer, training=False)
    np.testing.assert_array_equal(test["num_valid"], [1, 2])
    np.testing.assert_allclose(test["boxes"][0, 0], [10, 0, 110, 100])
    np.testing.assert_allclose(test["boxes"][1, :2], [[0, 0, 100, 100], [200, 200, 300, 300]])
    # Train: pre-NMS 10 and post-NMS 4 -> three boxes for image 0, four (full) for image 1.
    train = run(layer, training=True)
    assert train["boxes"].shape == (2, 4, 4)
    np.testing.assert_array_equal(train["num_valid"], [3, 4])


def test_post_nms_top_n_truncates_by_score():
    out = run(make_layer(post_nms_top_n_test=2))
    np.testing.assert_array_equal(out["num_valid"], [2, 2])
    np.testing.assert_allclose(out["boxes"][0], [[10, 0, 110, 100], [200, 200, 300, 300]])


def test_min_size_inclusive_and_scaled_by_image_scale():
    # With an im_info scale of 0.5 the minimum side is 8 px: the 10 px a3 is kept, and first.
    info = np.array([[300, 350, 0.5], [400, 400, 0.5]], np.float32)
    out = run(make_layer(), image_shape=info)
    np.testing.assert_array_equal(out["num_valid"], [4, 4])
    np.testing.assert_allclose(out["boxes"][0, 0], [0, 0, 10, 10])
    # A side of exactly min_size is kept (>=).
    out = run(make_layer(min_size=10.0))
    np.testing.assert_allclose(out["boxes"][0, 0], [0, 0, 10, 10])
    out = run(make_layer(min_size=10.001))
    np.testing.assert_allclose(out["boxes"][0, 0], [10, 0, 110, 100])


def test_single_image_shape_for_the_batch_and_keyword_tuple():
    layer = make_layer()
    out = layer(
        tf.constant(LOGITS), tf.constant(DELTAS), tf.constant(ANCHORS), image_shape=(300, 350)
    )
    # Image 1 is now also clipped at 350 x 300.
    np.testing.assert_allclose(out["boxes"][1, 2].numpy(), [250, 250, 350, 300])


def test_nms_threshold_is_a_parameter():
    # At 0.85 the 0.82-IoU pair a0/a1 both survive.
    out = run(make_layer(nms_threshold=0.85))
    np.testing.assert_array_equal(out["num_valid"], [4, 5])
    np.testing.assert_allclose(out["boxes"][0, :2], [[10, 0, 110, 100], [0, 0, 100, 100]])


def test_box_weights_used_for_decoding():
    deltas = np.zeros([2, 5, 4], np.float32)
    deltas[:, 2, 0] = 10.0  # dx = 10 / wx = 1 with weights (10, 10, 5, 5): shift by one width
    out = run(make_layer(box_weights=(10.0, 10.0, 5.0, 5.0)), deltas=deltas)
    np.testing.assert_allclose(out["boxes"][0, 1], [300, 200, 350, 300])  # clipped at w = 350


def test_from_probabilities():
    out = run(make_layer(from_logits=False), logits=sigmoid(LOGITS).astype(np.float32))
    reference = run(make_layer())
    np.testing.assert_array_equal(out["num_valid"], reference["num_valid"])
    np.testing.assert_allclose(out["boxes"], reference["boxes"], atol=1e-4)
    np.testing.assert_allclose(out["scores"], reference["scores"], atol=1e-5)


def test_all_boxes_invalid_gives_zero_valid():
    out = run(make_layer(min_size=1000.0))
    np.testing.assert_array_equal(out["num_valid"], [0, 0])
    assert not out["boxes"].any() and not out["scores"].any()


def test_no_gradient_into_proposals():
    layer = make_layer()
    logits, deltas = tf.Variable(LOGITS), tf.Variable(DELTAS)
    with tf.GradientTape() as tape:
        out = layer(logits, deltas, tf.constant(ANCHORS), tf.constant(IMAGE_SHAPE))
        total = tf.reduce_sum(out["boxes"]) + tf.reduce_sum(out["scores"])
    grads = tape.gradient(total, [logits, deltas])
    assert all(g is None for g in grads)


def test_tf_function_unknown_batch_and_anchor_count():
    layer = make_layer()

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None]),
            tf.TensorSpec([None, None, 4]),
            tf.TensorSpec([None, 4]),
            tf.TensorSpec([None, 2]),
        ]
    )
    def fn(logits, deltas, anchors, image_shape):
        out = layer(logits, deltas, anchors, image_shape)
        assert out["boxes"].shape.as_list() == [None, 6, 4]
        assert out["scores"].shape.as_list() == [None, 6]
        return out

    out = fn(LOGITS, DELTAS, ANCHORS, IMAGE_SHAPE)
    eager = run(layer)
    for key in eager:
        np.testing.assert_allclose(out[key].numpy(), eager[key], atol=1e-5)
    # One image, fewer anchors than pre_nms_top_n, through the same graph.
    single = fn(LOGITS[:1], DELTAS[:1], ANCHORS, IMAGE_SHAPE[:1])
    np.testing.assert_array_equal(single["num_valid"].numpy(), [3])


def test_inside_a_keras_model_training_flag():
    class Proposals(keras.Model):
        def __init__(self):
            super().__init__()
            self.proposals = make_layer()

        def call(self, inputs, training=None):
            logits, deltas = inputs
            return self.proposals(
                logits, deltas, tf.constant(ANCHORS), tf.constant(IMAGE_SHAPE[:1]),
                training=training,
            )

    model = Proposals()
    inputs = (tf.constant(LOGITS), tf.constant(DELTAS))
    assert model(inputs, training=True)["boxes"].shape == (2, 4, 4)
    assert model(inputs, training=False)["boxes"].shape == (2, 6, 4)
    predicted = model.predict(inputs, verbose=0)
    assert predicted["boxes"].shape == (2, 6, 4)


# FPN: two levels. Level 1's D overlaps level 0's A (IoU 0.9) but lives on another level.
LEVEL_ANCHORS = [
    np.array([[0, 0, 100, 100], [200, 0, 300, 100], [0, 200, 100, 300]], np.float32),  # A B C
    np.array([[5, 0, 105, 100], [0, 0, 100, 100], [400, 400, 500, 500]], np.float32),  # D E F
]
LEVEL_LOGITS = [np.array([[1.0, 0.5, 0.2]], np.float32), np.array([[3.0, 2.0, -1.0]], np.float32)]


def run_levels(layer):
    out = layer(
        [tf.constant(x) for x in LEVEL_LOGITS],
        [tf.zeros([1, 3, 4]), tf.zeros([1, 3, 4])],
        [tf.constant(x) for x in LEVEL_ANCHORS],
        tf.constant([600.0, 600.0]),
    )
    return {k: v.numpy() for k, v in out.items()}


def test_per_level_top_n_and_nms():
    layer = make_layer(per_level=True, pre_nms_top_n_test=2, post_nms_top_n_test=4)
    out = run_levels(layer)
    # Per level top-2: {A, B} and {D, E}; E is suppressed by D (same level), A is not (other
    # level); C and F never enter NMS.
    np.testing.assert_array_equal(out["num_valid"], [3])
    np.testing.assert_allclose(
        out["boxes"][0], [[5, 0, 105, 100], [0, 0, 100, 100], [200, 0, 300, 100], [0, 0, 0, 0]]
    )
    np.testing.assert_allclose(out["scores"][0, :3], sigmoid([3.0, 1.0, 0.5]), rtol=1e-6)
    # post_nms_top_n is over all levels, by score.
    out = run_levels(make_layer(per_level=True, pre_nms_top_n_test=2, post_nms_top_n_test=2))
    np.testing.assert_allclose(out["boxes"][0], [[5, 0, 105, 100], [0, 0, 100, 100]])


def test_list_inputs_without_per_level_are_joined():
    # One top-2 over all anchors: D and E, then E is suppressed by D.
    out = run_levels(make_layer(pre_nms_top_n_test=2, post_nms_top_n_test=4))
    np.testing.assert_array_equal(out["num_valid"], [1])
    np.testing.assert_allclose(out["boxes"][0, 0], [5, 0, 105, 100])


def test_mixed_precision_inputs():
    layer = make_layer(dtype="mixed_float16")
    out = layer(
        tf.constant(LOGITS, tf.float16), tf.constant(DELTAS, tf.float16), tf.constant(ANCHORS),
        tf.constant(IMAGE_SHAPE),
    )
    assert out["boxes"].dtype == tf.float32 and out["scores"].dtype == tf.float32
    np.testing.assert_array_equal(out["num_valid"].numpy(), [3, 4])


def test_config_round_trip():
    layer = make_layer(min_size=1e-3, box_weights=(2.0, 2.0, 1.0, 1.0), nms_threshold=0.6,
                       from_logits=True, per_level=False)
    config = json.loads(json.dumps(layer.get_config()))
    clone = ProposalLayer.from_config(config)
    for key in ("pre_nms_top_n_train", "post_nms_top_n_test", "nms_threshold", "min_size"):
        assert getattr(clone, key) == getattr(layer, key)
    a, b = run(layer), run(clone)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


# batched_nms, the helper under the layer (and the detector's class-wise NMS).


def test_batched_nms_padding_and_counts():
    boxes = tf.constant(
        [
            [[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]],  # IoU(0, 1) = 90 / 110
            [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 5]],  # IoU(0, 2) = 0.5 (not > 0.5)
        ],
        tf.float32,
    )
    scores = tf.constant([[0.9, 0.8, 0.7], [0.1, 0.2, 0.3]])
    indices, num_valid = batched_nms(boxes, scores, max_output_size=4, iou_threshold=0.5)
    np.testing.assert_array_equal(num_valid.numpy(), [2, 3])
    np.testing.assert_array_equal(indices.numpy(), [[0, 2, 0, 0], [2, 1, 0, 0]])
    kept = gather_padded(boxes, indices, num_valid).numpy()
    np.testing.assert_array_equal(kept[0], [[0, 0, 10, 10], [20, 20, 30, 30], [0] * 4, [0] * 4])
    np.testing.assert_array_equal(kept[1, :3], [[0, 0, 10, 5], [50, 50, 60, 60], [0, 0, 10, 10]])
    # score_threshold is strict: 0.2 and 0.1 do not pass 0.2.
    _, num_valid = batched_nms(boxes, scores, 4, 0.5, score_threshold=0.2)
    np.testing.assert_array_equal(num_valid.numpy(), [2, 1])


def test_batched_nms_groups_do_not_suppress_each_other():
    boxes = tf.constant([[[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]], tf.float32)
    scores = tf.constant([[0.9, 0.8, 0.7]])
    groups = tf.constant([[0, 1, 0]])
    indices, num_valid = batched_nms(boxes, scores, 3, 0.5, groups=groups)
    np.testing.assert_array_equal(num_valid.numpy(), [2])
    np.testing.assert_array_equal(indices.numpy()[0, :2], [0, 1])


def test_batched_nms_empty_input():
    indices, num_valid = batched_nms(tf.zeros([2, 0, 4]), tf.zeros([2, 0]), 5, 0.5)
    assert indices.shape == (2, 5)
    np.testing.assert_array_equal(num_valid.numpy(), [0, 0])
