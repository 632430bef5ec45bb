"""R-CNN: warping with context padding (hand-computed), SVM labels and hard negative mining, box
regression targets, the training stages' plumbing, predict output, config and saving.

Small and fast: the ``tiny`` backbone with 32–64 px warps on 96×128 generated images. Selective
search runs where the test is about the real pipeline (predict, save/load); elsewhere proposals
are hand-placed boxes and stage features are stubbed, so each check isolates one thing.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras
from rcnn_zoo.data.synthetic import generate_shapes
from rcnn_zoo.models.rcnn import RCNN
from rcnn_zoo.ops import boxes as box_ops
from rcnn_zoo.ops.warp import context_boxes, warp_regions
from rcnn_zoo.targets.regions import RegionSet, box_regression_targets, build_region_set
from rcnn_zoo.targets.svm_targets import mine_hard_negatives, svm_labels

H, W = 96, 128
FILL = (10.0, 20.0, 30.0)


def _model(**kwargs):
    keras.utils.set_random_seed(1)
    kwargs.setdefault("num_classes", 3)
    kwargs.setdefault("backbone", "tiny")
    kwargs.setdefault("warp_size", 32)
    kwargs.setdefault("context_padding", 4)
    return RCNN(**kwargs)


def _randomise_heads(model, seed=0):
    """Give the SVMs and box regressors (zero-initialised) random weights."""
    rng = np.random.default_rng(seed)
    for layer, std in ((model.svm, 0.1), (model.bbox_regressor, 0.002)):
        layer.kernel.assign(rng.normal(0, std, layer.kernel.shape).astype("float32"))
        layer.bias.assign(rng.normal(0, std, layer.bias.shape).astype("float32"))


def _coordinate_image(height, width):
    """Channel 0 = column index, channel 1 = row index, channel 2 = 7: pixel values say where
    they came from."""
    ys, xs = np.mgrid[0:height, 0:width].astype("float32")
    return np.stack([xs, ys, np.full_like(xs, 7.0)], axis=-1)[None]


# ---------------------------------------------------------------------------- warping
def test_context_boxes_leave_p_pixels_around_the_box_at_the_warped_size():
    # S = 227, p = 16: the box must fill the central 195 px, so it grows by 227/195.
    dilated = context_boxes(tf.constant([[100.0, 50.0, 139.0, 128.0]]), 227, 16).numpy()[0]
    w, h = 39.0, 78.0
    np.testing.assert_allclose(dilated[2] - dilated[0], w * 227 / 195, rtol=1e-6)
    np.testing.assert_allclose(dilated[3] - dilated[1], h * 227 / 195, rtol=1e-6)
    # One warped pixel is w'/227 source pixels; 16 of them lie left of the box.
    np.testing.assert_allclose(100.0 - dilated[0], 16 * (w * 227 / 195) / 227, rtol=1e-6)


def test_warp_with_the_papers_padding_at_unit_scale():
    """S = 227, p = 16 and a 195×195 box: one source pixel per warped pixel, so output pixel
    (i, j) is source pixel (y1 − 16 + i, x1 − 16 + j); the 6 columns left of x = 0 are mean."""
    image = _coordinate_image(260, 240)
    box = np.array([[10.0, 30.0, 205.0, 225.0]], "float32")  # dilated: (-6, 14, 221, 241)
    out = warp_regions(image, box, [0], 227, 16, FILL).numpy()[0]
    assert out.shape == (227, 227, 3)
    np.testing.assert_array_equal(out[:, :6], np.broadcast_to(FILL, (227, 6, 3)))
    columns = np.arange(6, 227)
    np.testing.assert_array_equal(out[:, 6:, 0], np.broadcast_to(columns - 6, (227, 221)))
    np.testing.assert_array_equal(out[:, 6:, 1], np.broadcast_to(14 + np.arange(227)[:, None], (227, 221)))
    np.testing.assert_array_equal(out[:, 6:, 2], 7.0)
    # The box's first column (x = 10) lands on output column 16, its last (204) on 210:
    # exactly 16 px of context on each side.
    assert out[0, 16, 0] == 10 and out[0, 15, 0] == 9
    assert out[0, 210, 0] == 204 and out[0, 211, 0] == 205
    assert out[16, 20, 1] == 30 and out[210, 20, 1] == 224


def test_warp_scales_each_axis_and_interpolates_bilinearly():
    """S = 8, p = 2 (dilation ×2): box (2, 3, 6, 5) in a 10×12 image becomes (0, 2, 8, 6).
    Columns: step 1, sample centres x = 0.5 … 7.5 → source columns 0 … 7.
    Rows: step 0.5, sample centres y = 2.25, 2.75, … → row coordinate y − ½ = 1.75 + 0.5·i."""
    image = _coordinate_image(10, 12)
    out = warp_regions(image, np.array([[2.0, 3.0, 6.0, 5.0]], "float32"), [0], 8, 2, FILL).numpy()[0]
    np.testing.assert_allclose(out[..., 0], np.broadcast_to(np.arange(8.0), (8, 8)), atol=1e-4)
    rows = 1.75 + 0.5 * np.arange(8.0)
    np.testing.assert_allclose(out[..., 1], np.broadcast_to(rows[:, None], (8, 8)), atol=1e-4)


def test_warp_fills_outside_the_image_and_repeats_the_edge_inside_it():
    image = _coordinate_image(10, 12)
    # Box (0, 0, 4, 4), S = 8, p = 2 → dilated (-2, -2, 6, 6): 2 rows and columns of mean.
    out = warp_regions(image, np.array([[0.0, 0.0, 4.0, 4.0]], "float32"), [0], 8, 2, FILL).numpy()[0]
    np.testing.assert_array_equal(out[:2, :], np.broadcast_to(FILL, (2, 8, 3)))
    np.testing.assert_array_equal(out[:, :2], np.broadcast_to(FILL, (8, 2, 3)))
    np.testing.assert_allclose(out[2:, 2:, 0], np.broadcast_to(np.arange(6.0), (6, 6)), atol=1e-4)
    # Box (0, 0, 1, 1), S = 4, p = 0: centres x = 0.125 … 0.875 are inside the image; the first
    # two lie left of pixel 0's centre (edge value 0), the others blend columns 0 and 1.
    out = warp_regions(image, np.array([[0.0, 0.0, 1.0, 1.0]], "float32"), [0], 4, 0, FILL).numpy()[0]
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.0, 0.125, 0.375], atol=1e-5)


def test_warp_treats_padding_beyond_image_sizes_as_outside():
    image = _coordinate_image(10, 12)
    box = np.array([[2.0, 3.0, 6.0, 5.0]], "float32")  # sample centres x = 0.5 … 7.5
    out = warp_regions(image, box, [0], 8, 2, FILL, image_sizes=[[10, 6]]).numpy()[0]
    np.testing.assert_array_equal(out[:, 6:], np.broadcast_to(FILL, (8, 2, 3)))  # x = 6.5, 7.5
    np.testing.assert_allclose(out[:, :6, 0], np.broadcast_to(np.arange(6.0), (8, 6)), atol=1e-4)


def test_warp_runs_in_a_graph_with_unknown_shapes():
    images = np.random.default_rng(0).uniform(0, 255, (2, 40, 50, 3)).astype("float32")
    boxes = np.array([[3, 4, 30, 20], [-5, 10, 60, 45], [10, 10, 11, 30]], "float32")
    indices = np.array([0, 1, 1], "int32")
    graph = tf.function(
        lambda i, b, k: warp_regions(i, b, k, 16, 2, FILL),
        input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, 4]),
                         tf.TensorSpec([None], tf.int32)],
    )
    eager = warp_regions(images, boxes, indices, 16, 2, FILL)
    np.testing.assert_allclose(graph(images, boxes, indices), eager, atol=1e-4)


def test_padding_value_is_the_backbones_mean_pixel():
    assert _model().fill_pixel == (127.5, 127.5, 127.5)  # tiny: x/255 − 0.5
    assert RCNN(2, backbone="vgg16").fill_pixel == pytest.approx((123.68, 116.779, 103.939))


# ---------------------------------------------------------------------------- training data
def _toy_regions():
    """One 100×100 image: G (class 2) and G2 (class 0); proposals P (IoU 0.687 with G), P2 (the
    top half of G: IoU 0.5), P3 (background), P4 (IoU 0.82 with G2), P5 (IoU 0.409 with G)."""
    gt = [[12, 18, 34, 62], [60, 60, 90, 90]]
    proposals = [[10, 20, 30, 60], [12, 18, 34, 40], [0, 70, 20, 95], [62, 60, 92, 88],
                 [12, 18, 34, 36]]
    return build_region_set([np.zeros((100, 100, 3), "uint8")], [np.array(gt, "float32")],
                            [np.array([2, 0])], [np.array(proposals, "float32")], num_classes=3)


def test_region_set_lists_ground_truth_then_proposals_with_overlaps():
    regions = _toy_regions()
    assert len(regions) == 7
    np.testing.assert_array_equal(regions.gt_label, [2, 0, -1, -1, -1, -1, -1])
    np.testing.assert_allclose(regions.max_iou, [1, 1, 720 / 1048, 0.5, 0, 784 / 956, 396 / 968],
                               atol=1e-6)
    np.testing.assert_array_equal(regions.matched_label[[0, 1, 2, 5, 6]], [2, 0, 2, 0, 2])
    assert regions.class_iou.shape == (7, 3)
    assert (regions.class_iou[:, 1] == 0).all()  # no box of class 1


def test_svm_labels_positives_are_ground_truth_only():
    labels = svm_labels(_toy_regions(), negative_iou=0.3)
    expected = np.array([
        [-1, -1, 1],   # G: positive for its class, negative where no overlap
        [1, -1, -1],   # G2
        [-1, -1, 0],   # P overlaps G 0.687: ignored for class 2 (not ground truth)
        [-1, -1, 0],   # P2: 0.5, ignored
        [-1, -1, -1],  # P3: background
        [0, -1, -1],   # P4: 0.82 with G2, ignored for class 0
        [-1, -1, 0],   # P5: 0.409 with G, grey zone [0.3, 1): ignored
    ])
    np.testing.assert_array_equal(labels, expected)


def test_box_regression_targets_pair_iou_0_6_regions_with_their_box():
    indices, targets, classes = box_regression_targets(_toy_regions(), min_iou=0.6)
    np.testing.assert_array_equal(indices, [0, 1, 2, 5])  # G, G2, P, P4 — not P2 (0.5), P5
    np.testing.assert_array_equal(classes, [2, 0, 2, 0])
    log11 = math.log(1.1)
    expected = [
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        # P (cx 20, cy 40, 20×40) → G (cx 23, cy 40, 22×44)
        [3 / 20, 0, log11, log11],
        # P4 (cx 77, cy 74, 30×28) → G2 (cx 75, cy 75, 30×30)
        [-2 / 30, 1 / 28, 0, math.log(30 / 28)],
    ]
    np.testing.assert_allclose(targets, expected, atol=1e-6)


def test_prepare_regions_reads_boxes_in_the_models_format_and_handles_no_ground_truth():
    model = _model(bounding_box_format="xywh")
    images = np.zeros((2, H, W, 3), "uint8")
    boxes = np.array([[[10, 20, 30, 40]], [[0, 0, 0, 0]]], "float32")  # xywh
    labels = np.array([[1], [-1]])
    proposals = [np.array([[10, 20, 40, 60]], "float32"), np.array([[5, 5, 50, 50]], "float32")]
    regions = model.prepare_regions(images, boxes, labels, proposals=proposals)
    np.testing.assert_allclose(regions.boxes[:2], [[10, 20, 40, 60], [10, 20, 40, 60]])
    np.testing.assert_allclose(regions.max_iou, [1, 1, 0])
    np.testing.assert_array_equal(regions.matched_label, [1, 1, -1])


def test_fine_tune_dataset_draws_32_foreground_and_96_background_regions():
    model = _model()
    images, _, _ = generate_shapes(1, image_size=(H, W), seed=0)
    gt = np.array([[20, 30, 60, 70]], "float32")
    background = np.array([[70, 0, 120, 40], [0, 60, 40, 96], [80, 50, 128, 96]], "float32")
    regions = model.prepare_regions(images, [gt], [np.array([1])], proposals=[background])
    batches = list(model.fine_tune_dataset(regions, num_batches=2, batch_size=128))
    assert len(batches) == 2
    crops, labels = batches[0]
    assert crops.shape == (128, 32, 32, 3) and labels.shape == (128,)
    labels = labels.numpy()
    assert (labels == 2).sum() == 32 and (labels == 0).sum() == 96  # class 1 is head index 2
    # The only foreground region is the ground-truth box: every foreground crop is its warp.
    expected = model.warp(images.astype("float32"), gt, [0]).numpy()[0]
    foreground = crops.numpy()[labels == 2]
    np.testing.assert_allclose(foreground, np.broadcast_to(expected, foreground.shape), atol=1e-3)
    # A new epoch draws new background regions.
    again = list(model.fine_tune_dataset(regions, num_batches=1, batch_size=128, seed=5))[0][0]
    assert not np.allclose(again.numpy()[labels == 0], crops.numpy()[labels == 0])


# ---------------------------------------------------------------------------- stages
def test_fine_tune_trains_cnn_and_softmax_only_and_recomputes_bn_statistics():
    model = _model()
    images, boxes, labels = generate_shapes(2, image_size=(H, W), seed=0)
    regions = model.prepare_regions(images, boxes, labels)
    dataset = model.fine_tune_dataset(regions, num_batches=2, batch_size=32)
    before = {name: layer.get_weights() for name, layer in
              (("cls", model.cls_score), ("svm", model.svm), ("box", model.bbox_regressor))}
    history = model.fine_tune(dataset, optimizer=keras.optimizers.Adam(1e-3), verbose=0,
                              bn_statistics_batches=0)
    assert {"loss", "accuracy"} <= set(history.history)
    assert not np.allclose(before["cls"][0], model.cls_score.get_weights()[0])
    for name, layer in (("svm", model.svm), ("box", model.bbox_regressor)):
        for a, b in zip(before[name], layer.get_weights()):
            np.testing.assert_array_equal(a, b)

    # Three copies of one batch: the moving mean becomes that batch's mean.
    crops = next(iter(dataset))[0]
    repeated = tf.data.Dataset.from_tensors((crops, tf.zeros([32], tf.int32))).repeat(3)
    assert model.recompute_batch_norm_statistics(repeated, 5) == 3
    conv = keras.Model(model.backbone.input, model.backbone.get_layer("tiny1_conv").output)
    activations = conv(crops / 255.0 - 0.5).numpy()
    bn = model.backbone.get_layer("tiny1_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), activations.mean(axis=(0, 1, 2)), atol=1e-4)
    assert bn.momentum == 0.99


def _stub_features(model, pool5, fc7):
    model.extract_features = lambda regions, indices=None, region_batch_size=None: (
        pool5 if indices is None else pool5[indices],
        fc7 if indices is None else fc7[indices],
    )


def _feature_regions(gt_label, class_iou):
    k = len(gt_label)
    return RegionSet(
        images=np.zeros((1, 8, 8, 3), "uint8"), image_sizes=np.array([[8, 8]]),
        boxes=np.tile([[0, 0, 4, 4]], (k, 1)).astype("float32"), image_index=np.zeros(k, "int32"),
        gt_label=np.asarray(gt_label, "int32"), max_iou=class_iou.max(axis=1),
        matched_label=np.where(class_iou.max(axis=1) > 0, class_iou.argmax(axis=1), -1).astype("int32"),
        matched_box=np.zeros((k, 4), "float32"), class_iou=class_iou.astype("float32"),
    )


def test_train_svms_mines_the_highest_scoring_negatives_and_separates_the_classes():
    """fc7 features are stubbed: class-0 boxes at 5·e0, class-1 at 5·e1, easy negatives near
    0, and three hard negatives at 4.5, 4 and 3.5 along e0. Mining (2 per round) must pick the
    two closest to the class-0 positives first."""
    model = _model(num_classes=2, fc_dim=4)
    rng = np.random.default_rng(0)
    positives0 = 5.0 * np.eye(4)[0] + rng.normal(0, 0.2, (6, 4))
    positives1 = 5.0 * np.eye(4)[1] + rng.normal(0, 0.2, (6, 4))
    easy = rng.normal(0, 0.2, (30, 4)) - [0, 0, 2, 0]
    hard = np.outer([4.5, 4.0, 3.5], np.eye(4)[0]) - [0, 0, 2, 0]
    fc7 = np.concatenate([positives0, positives1, easy, hard]).astype("float32")
    gt_label = [0] * 6 + [1] * 6 + [-1] * 33
    class_iou = np.zeros((45, 2))
    class_iou[:6, 0] = class_iou[6:12, 1] = 1.0
    regions = _feature_regions(gt_label, class_iou)
    _stub_features(model, np.zeros((45, 1), "float32"), fc7)
    log = model.train_svms(regions, rounds=1, svm_c=1.0, initial_negatives=10,
                           hard_negatives_per_round=2, epochs_per_round=60, batch_size=64,
                           optimizer=lambda: keras.optimizers.Adam(0.05), seed=3)
    # (seed 3: the 10 initial random negatives of class 0 do not include rows 42–44)
    np.testing.assert_array_equal(log["mined"][0][0][:2], [42, 43])
    assert log["negative_cache"][[42, 43], 0].all()
    scores = model.classify(tf.constant(fc7)).numpy()  # raw features: the scale is folded in
    # Trained to the margin: positives ≥ 1, negatives ≤ −1 (weak regularisation, svm_c = 1).
    assert (scores[:6, 0] >= 1).all() and (scores[12:, 0] <= -1).all()
    assert (scores[6:12, 1] >= 1).all() and (scores[12:, 1] <= -1).all()


def test_mine_hard_negatives_returns_the_highest_scoring_uncached_negatives():
    scores = np.array([-2.0, 0.5, -0.5, 3.0, -1.00005, 1.0, 2.0, -0.9])
    negative = np.array([1, 1, 1, 1, 1, 0, 1, 1], bool)  # row 5 is a positive
    cached = np.array([0, 0, 0, 0, 0, 0, 1, 0], bool)  # row 6 is already cached
    np.testing.assert_array_equal(mine_hard_negatives(scores, negative, cached), [3, 1, 2, 7, 4])
    np.testing.assert_array_equal(mine_hard_negatives(scores, negative, cached, max_new=3), [3, 1, 2])
    # Row 0 (−2) is outside the margin, so never hard; nothing left → empty.
    assert len(mine_hard_negatives(scores, negative, np.ones(8, bool))) == 0


def test_train_box_regressors_fits_class_specific_ridge_regression():
    """pool5 features are stubbed to contain the targets linearly: the fitted class-2 and
    class-0 regressors must recover them, the class-1 regressor (no pair) stays zero."""
    model = _model()
    regions = _toy_regions()
    indices, targets, _ = box_regression_targets(regions, 0.6)
    dims = int(np.prod(model.pool5_shape))
    pool5 = np.random.default_rng(0).normal(0, 0.01, (len(regions), dims)).astype("float32")
    pool5[indices, :4] += 10.0 * targets
    _stub_features(model, pool5, np.zeros((len(regions), model.fc_dim), "float32"))
    history = model.train_box_regressors(regions, ridge_lambda=1e-3, epochs=300,
                                         optimizer=lambda: keras.optimizers.Adam(1e-2))
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
    deltas = model.regress(tf.constant(pool5[indices])).numpy()  # [n, C, 4]
    np.testing.assert_allclose(deltas[[2, 3], [2, 0]], targets[[2, 3]], atol=0.01)
    np.testing.assert_array_equal(deltas[:, 1], 0.0)


# ---------------------------------------------------------------------------- predict
def test_predict_runs_selective_search_and_returns_padded_detections():
    model = _model(max_detections=20)
    _randomise_heads(model)
    images, _, _ = generate_shapes(2, image_size=(H, W), seed=0)
    out = model.predict(images, verbose=0)
    assert set(out) == {"boxes", "scores", "labels", "num_detections"}
    assert out["boxes"].shape == (2, 20, 4) and out["scores"].shape == (2, 20)
    assert out["labels"].shape == (2, 20) and out["num_detections"].shape == (2,)
    assert out["labels"].dtype == np.int32 and out["boxes"].dtype == np.float32
    for i in range(2):
        n = out["num_detections"][i]
        assert 0 < n <= 20
        boxes = out["boxes"][i][:n]
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
        assert ((out["labels"][i][:n] >= 0) & (out["labels"][i][:n] < 3)).all()
        assert (out["labels"][i][n:] == -1).all() and (out["scores"][i][n:] == 0).all()
        assert np.all(np.diff(out["scores"][i][:n]) <= 1e-6)
        assert (out["scores"][i][:n] > -1.0).all()  # the SVM default threshold


def test_graph_call_equals_chunked_predict_and_predict_image():
    model = _model()
    _randomise_heads(model)
    images, boxes, _ = generate_shapes(2, image_size=(H, W), seed=1)
    rng = np.random.default_rng(0)
    proposals = []
    for i in range(2):
        corners = rng.uniform(0, 60, (20, 2))
        random_boxes = np.concatenate([corners, corners + rng.uniform(8, 60, (20, 2))], axis=1)
        proposals.append(np.concatenate([boxes[i][boxes[i].sum(1) > 0], random_boxes]).astype("float32"))
    padded = np.zeros((2, 30, 4), "float32")
    for i, p in enumerate(proposals):
        padded[i, : len(p)] = p
    graph = model({"images": images.astype("float32"), "proposals": padded})
    chunked = model.predict(images, proposals=proposals, region_batch_size=7, verbose=0)
    for key in ("boxes", "scores", "labels", "num_detections"):
        np.testing.assert_allclose(graph[key].numpy(), chunked[key], atol=1e-4, err_msg=key)
    single = model.predict_image(images[1], proposals=proposals[1])
    for key in chunked:
        np.testing.assert_allclose(single[key], chunked[key][1], atol=1e-4, err_msg=key)


def test_predict_accepts_images_of_different_sizes_and_no_proposals():
    model = _model()
    _randomise_heads(model)
    small = generate_shapes(1, image_size=(64, 80), seed=2)[0][0]
    large = generate_shapes(1, image_size=(H, W), seed=3)[0][0]
    out = model.predict([small, large], proposals=[np.zeros((0, 4)), [[10, 10, 50, 40]]], verbose=0)
    assert out["num_detections"][0] == 0 and (out["labels"][0] == -1).all()
    assert out["num_detections"][1] >= 1


def test_bounding_box_format_applies_to_proposals_and_detections():
    images, _, _ = generate_shapes(1, image_size=(H, W), seed=0)
    xyxy = np.array([[10, 20, 60, 70], [50, 10, 120, 90]], "float32")
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
    a, b = _model(), _model(bounding_box_format="xywh")
    _randomise_heads(a)
    _randomise_heads(b)
    out_a = a.predict(images, proposals=[xyxy], verbose=0)
    out_b = b.predict(images, proposals=[xywh], verbose=0)
    n = out_a["num_detections"][0]
    assert n == out_b["num_detections"][0] and n > 0
    boxes = out_a["boxes"][0][:n]
    expected = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    np.testing.assert_allclose(out_b["boxes"][0][:n], expected, atol=1e-3)


def test_softmax_classifier_scores_are_probabilities():
    model = _model(classifier="softmax", score_threshold=0.0)
    images, boxes, _ = generate_shapes(1, image_size=(H, W), seed=0)
    out = model.predict(images, proposals=[boxes[0][boxes[0].sum(1) > 0]], verbose=0)
    n = out["num_detections"][0]
    assert n > 0 and ((out["scores"][0][:n] > 0) & (out["scores"][0][:n] < 1)).all()


def _greedy_classwise_nms(boxes, scores, score_threshold, iou_threshold, max_detections):
    """NumPy reference: per class, visit boxes by descending score, keep those above the score
    threshold that overlap no kept box of their class by more than the IoU threshold; then the
    ``max_detections`` best over all classes."""
    kept = []
    for c in range(scores.shape[1]):
        chosen = []
        for r in np.argsort(-scores[:, c], kind="stable"):
            if scores[r, c] <= score_threshold:
                break
            ious = [_iou(boxes[r, c], boxes[q, c]) for q in chosen]
            if all(iou <= iou_threshold for iou in ious):
                chosen.append(r)
        kept += [(scores[r, c], c, r) for r in chosen]
    return sorted(kept, reverse=True)[:max_detections]


def _iou(a, b):
    w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def test_postprocess_is_greedy_classwise_nms_on_svm_margins():
    """The shared post-processing (heads/postprocess.py) on SVM margins: negative scores above
    the −1 threshold are kept, a score exactly at it is not; distinct scores, so the order of
    ties (which the shared path leaves to TensorFlow's combined NMS) does not enter."""
    model = _model(max_detections=150)
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 80, (1, 40, 2))
    proposals = np.concatenate([corners, corners + rng.uniform(4, 40, (1, 40, 2))], -1).astype("float32")
    proposals[0, -3:] = 0.0  # padding rows
    scores = rng.permutation(np.linspace(-1.6, 0.6, 120)).reshape(1, 40, 3).astype("float32")
    scores[0, 0, 0] = -1.0
    deltas = rng.normal(0, 0.1, (1, 40, 3, 4)).astype("float32")
    out = model.postprocess(proposals, scores, deltas, tf.constant(float(H)), tf.constant(float(W)))
    boxes = box_ops.clip_to_image(box_ops.decode(deltas, proposals[:, :, None], model.box_weights), H, W)
    boxes = boxes.numpy()[0]
    expected = _greedy_classwise_nms(boxes[:-3], scores[0, :-3], -1.0, 0.3, 150)
    n = int(out["num_detections"][0])
    assert n == len(expected) and 12 < n < 150
    np.testing.assert_allclose(out["scores"][0][:n], [s for s, _, _ in expected], rtol=1e-6)
    np.testing.assert_array_equal(out["labels"][0][:n], [c for _, c, _ in expected])
    np.testing.assert_allclose(out["boxes"][0][:n], [boxes[r, c] for _, c, r in expected], atol=1e-4)
    kept = out["scores"].numpy()[0][:n]
    assert (kept > -1.0).all() and (kept < 0).any()


# ---------------------------------------------------------------------------- construction, saving
def test_constructor_validates_and_refuses_fit():
    with pytest.raises(ValueError, match="num_classes"):
        _model(num_classes=0)
    with pytest.raises(ValueError, match="class_names"):
        _model(class_names=["a"])
    with pytest.raises(ValueError, match="classifier"):
        _model(classifier="boosting")
    with pytest.raises(ValueError, match="context_padding"):
        _model(warp_size=32, context_padding=16)
    with pytest.raises(TypeError, match="fine_tune"):
        _model().fit(np.zeros((1, H, W, 3)))


def test_vgg16_warps_to_224_with_vggs_pool5_and_fc6():
    model = RCNN(20, backbone="vgg16")
    assert model.warp_size == 224 and model.context_padding == 16
    assert model.pool5_shape == (7, 7, 512)
    assert model.fc_head.fc6.kernel.shape == (25088, 4096)
    assert model.svm.kernel.shape == (4096, 20) and model.bbox_regressor.kernel.shape == (25088, 80)
    assert model.cls_score.units == 21 and model.nms_threshold == 0.3


def test_config_round_trip():
    model = _model(class_names=["circle", "square", "triangle"], classifier="softmax",
                   score_threshold=0.2, max_proposals=500, box_weights=(10, 10, 5, 5))
    config = model.get_config()
    clone = RCNN.from_config(config)
    assert clone.get_config() == config
    assert len(clone.weights) == len(model.weights)
    assert clone.box_weights == (10.0, 10.0, 5.0, 5.0) and clone.warp_size == 32


def test_keras_file_round_trip_gives_identical_predictions(tmp_path):
    model = _model(score_threshold=-10.0)
    _randomise_heads(model, seed=4)
    model.cls_score.kernel.assign(model.cls_score.kernel * 3.0)
    images, _, _ = generate_shapes(2, image_size=(H, W), seed=5)
    path = str(tmp_path / "rcnn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, RCNN)
    expected, actual = model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], atol=1e-5, err_msg=key)
    loaded.classifier = model.classifier = "softmax"
    region = np.array([[10, 10, 60, 60]], "float32")
    np.testing.assert_allclose(
        loaded.score_regions(images[:1].astype("float32"), region, [0])[0],
        model.score_regions(images[:1].astype("float32"), region, [0])[0], atol=1e-6,
    )


def test_resnet_c4_pool5_is_conv5_then_average_and_fpn_is_refused():
    model = RCNN(2, backbone="resnet50")
    assert model.warp_size == 224 and model.pool5_shape == (1, 1, 2048)
    with pytest.raises(ValueError, match="use 224"):
        RCNN(2, backbone="resnet50", warp_size=227)
    with pytest.raises(ValueError, match="single-level"):
        RCNN(2, backbone="resnet50_fpn")
