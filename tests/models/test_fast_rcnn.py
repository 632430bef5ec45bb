"""FastRCNN as a Keras model: outputs, proposal padding, RoI sampling, config and saving round
trips, truncated SVD of fc6/fc7.

Uses the small ``tiny`` backbone on 96×128 images (no resizing) so each test takes seconds.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras
import rcnn_zoo
from rcnn_zoo.data.synthetic import generate_shapes
from rcnn_zoo.heads import FCBoxHead
from rcnn_zoo.heads.svd import SVDFCBoxHead, TruncatedSVDDense, dense_parameter_count

H, W = 96, 128
R = 24  # proposal slots per image in these tests


def _model(**kwargs):
    keras.utils.set_random_seed(1)
    kwargs.setdefault("num_classes", 3)
    kwargs.setdefault("backbone", "tiny")
    return rcnn_zoo.FastRCNN(**kwargs)


def _random_boxes(rng, n, height=H, width=W, min_side=8):
    x1 = rng.uniform(0, width - min_side, n)
    y1 = rng.uniform(0, height - min_side, n)
    x2 = rng.uniform(x1 + min_side, width)
    y2 = rng.uniform(y1 + min_side, height)
    return np.stack([x1, y1, x2, y2], 1).astype(np.float32)


def _batch(n=2, seed=0, num_valid=16):
    """Images, ``[n, R, 4]`` proposals (``num_valid`` random boxes, then zero padding), targets."""
    images, boxes, labels = generate_shapes(n, image_size=(H, W), max_shapes=3, seed=seed)
    rng = np.random.default_rng(seed)
    proposals = np.zeros((n, R, 4), np.float32)
    proposals[:, :num_valid] = _random_boxes(rng, n * num_valid).reshape(n, num_valid, 4)
    return {"images": images, "proposals": proposals}, {"boxes": boxes, "labels": labels}


def _dataset(x, y, steps):
    x = {"images": x["images"].astype("float32"), "proposals": x["proposals"]}
    return tf.data.Dataset.from_tensors((x, y)).repeat(steps)


def _fit_steps(model, x, y, steps=2):
    return model.fit(_dataset(x, y, steps), epochs=1, verbose=0)


def _same_predictions(a, b, atol=1e-5):
    for key in ("boxes", "scores", "labels", "num_detections"):
        np.testing.assert_allclose(a[key], b[key], atol=atol, err_msg=key)


def test_predict_outputs_padded_detections_in_input_pixels():
    model = _model(score_threshold=0.0, max_detections=20)
    x, _ = _batch()
    out = model.predict(x, verbose=0)
    assert set(out) == {"boxes", "scores", "labels", "num_detections"}
    assert out["boxes"].shape == (2, 20, 4)
    assert out["scores"].shape == (2, 20) and out["labels"].shape == (2, 20)
    count = out["num_detections"]
    assert (count > 0).all() and (count <= 20).all()
    for i in range(2):
        valid = slice(0, count[i])
        boxes = out["boxes"][i][valid]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= W + 1e-3).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= H + 1e-3).all()
        assert ((out["labels"][i][valid] >= 0) & (out["labels"][i][valid] < 3)).all()
        assert (out["labels"][i][count[i]:] == -1).all()
        assert np.all(np.diff(out["scores"][i][valid]) <= 1e-6)  # sorted by score


def test_a_fresh_head_detects_on_its_proposals_through_resizing():
    """The predictor starts with N(0, 0.001) deltas, so every detection sits on its proposal —
    which must come back in the caller's pixels after the model resized 96×128 → 192×256."""
    model = _model(score_threshold=0.0, image_min_size=192, image_max_size=1000)
    x, _ = _batch(1)
    proposal = np.array([20.0, 10.0, 70.0, 60.0], np.float32)
    x["proposals"][:] = 0.0
    x["proposals"][0, 3] = proposal
    out = model.predict(x, verbose=0)
    n = out["num_detections"][0]
    assert 1 <= n <= 3  # one box per class at most: a single proposal
    np.testing.assert_allclose(out["boxes"][0][:n], np.tile(proposal, (n, 1)), atol=0.5)


def test_padding_rows_change_nothing():
    """Zero, inverted, non-finite and outside-the-image rows are padding: appending them (or
    shuffling them in) must give exactly the detections of the valid proposals alone."""
    model = _model(score_threshold=0.0, max_detections=30)
    x, _ = _batch(2, num_valid=10)
    plain = {"images": x["images"], "proposals": x["proposals"][:, :10]}
    junk = np.array(
        [[0, 0, 0, 0], [50, 40, 30, 60], [10, 10, 10, 40], [np.nan, 0, 20, 20],
         [W + 5, 10, W + 40, 50], [-30, -30, -1, -1]], np.float32)
    padded = np.concatenate([plain["proposals"], np.tile(junk, (2, 2, 1))], axis=1)
    order = np.random.default_rng(0).permutation(padded.shape[1])
    mixed = {"images": x["images"], "proposals": padded[:, order]}
    expected = model.predict(plain, verbose=0)
    got = model.predict(mixed, verbose=0)
    _same_predictions(expected, got)


def test_training_samples_the_papers_minibatch_from_valid_proposals_only():
    model = _model(roi_negative_iou_low=0.0)  # any valid proposal could be background
    x, y = _batch(2, num_valid=12)
    x["proposals"][:, 12:14] = [[60, 30, 20, 50], [-50, -50, -2, -2]]  # inverted, outside
    out = model(x, training=True, ground_truth=y)
    targets = {k: v.numpy() for k, v in out["roi_targets"].items()}
    assert targets["labels"].shape == (2, 64)  # roi_batch_size_per_image
    assert out["class_logits"].shape == (2, 64, 4) and out["box_deltas"].shape == (2, 64, 4, 4)
    for i in range(2):
        sampled = targets["rois"][i][targets["labels"][i] >= 0]
        allowed = np.concatenate([x["proposals"][i, :12], y["boxes"][i][y["labels"][i] >= 0]])
        distance = np.abs(sampled[:, None, :] - allowed[None, :, :]).max(-1).min(-1)
        assert (distance < 1e-4).all(), "a padding row was sampled"
        # Every valid candidate is sampled (there are fewer than 64); at most 25 % foreground.
        assert len(sampled) == len(allowed)
        assert np.sum(targets["labels"][i] > 0) <= 16


def test_background_rois_have_iou_at_least_0_1():
    model = _model()
    x, y = _batch(2, num_valid=20)
    out = model(x, training=True, ground_truth=y)
    rois = out["roi_targets"]["rois"]
    iou = rcnn_zoo.ops.boxes.pairwise_iou(rois, out["gt_boxes"]).numpy()
    valid_gt = out["gt_labels"].numpy() >= 0
    best = np.where(valid_gt[:, None, :], iou, 0.0).max(-1)
    labels = out["roi_targets"]["labels"].numpy()
    assert ((best >= 0.1) & (best < 0.5))[labels == 0].all()
    assert (best >= 0.5)[labels > 0].all()


def test_bounding_box_format_applies_to_proposals_targets_and_predictions():
    model_xyxy = _model(score_threshold=0.0)
    model_xywh = _model(score_threshold=0.0, bounding_box_format="xywh")
    x, y = _batch(1)
    p = x["proposals"]
    as_xywh = {"images": x["images"],
               "proposals": np.concatenate([p[..., :2], p[..., 2:] - p[..., :2]], -1)}
    a = model_xyxy.predict(x, verbose=0)
    b = model_xywh.predict(as_xywh, verbose=0)
    n = a["num_detections"][0]
    assert n == b["num_detections"][0] and n > 0
    xyxy = a["boxes"][0][:n]
    expected = np.stack([xyxy[:, 0], xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], 1)
    np.testing.assert_allclose(b["boxes"][0][:n], expected, atol=1e-4)


def test_fit_logs_each_loss_and_total():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = _batch(2)
    history = _fit_steps(model, x, y, steps=3)
    assert set(history.history) == {"loss", "cls", "box"}
    assert all(np.isfinite(history.history[name][0]) for name in ("loss", "cls", "box"))
    parts = history.history["cls"][0] + history.history["box"][0]
    np.testing.assert_allclose(history.history["loss"][0], parts, rtol=1e-4)


def test_evaluate_reports_losses():
    model = _model()
    model.compile()
    x, y = _batch(2)
    x["images"] = x["images"].astype("float32")
    result = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    assert set(result) == {"loss", "cls", "box"}
    assert all(np.isfinite(v) for v in result.values())


def test_images_without_boxes_train_with_finite_loss():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, _ = _batch(2)
    empty = {"boxes": np.zeros((2, 3, 4), "float32"), "labels": -np.ones((2, 3), "int32")}
    history = _fit_steps(model, x, empty, steps=2)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["box"][0] == 0.0


def test_inputs_must_be_images_and_proposals():
    model = _model()
    x, _ = _batch(1)
    with pytest.raises(ValueError, match="proposals"):
        model.predict(x["images"], verbose=0)
    with pytest.raises(ValueError, match="proposals"):
        model({"images": x["images"]})
    with pytest.raises(ValueError, match=r"\[B, R, 4\]"):
        model({"images": x["images"], "proposals": x["proposals"][0]})


def test_paper_defaults():
    assert rcnn_zoo.FastRCNN.LOSS_NAMES == ("cls", "box")
    model = _model(backbone="tiny", roi_pooling="pool")
    hp = model.hyperparameters()
    assert hp["roi_pooling"] == "pool" and isinstance(model.roi_heads.pooler, rcnn_zoo.layers.RoIPooling)
    assert isinstance(_model(backbone="tiny").roi_heads.pooler, rcnn_zoo.layers.RoIAlign)  # tiny's choice
    assert (hp["roi_batch_size_per_image"], hp["roi_positive_fraction"]) == (64, 0.25)
    assert (hp["roi_positive_iou"], hp["roi_negative_iou_high"], hp["roi_negative_iou_low"]) == (0.5, 0.5, 0.1)
    assert model.nms_threshold == 0.3 and model.score_threshold == 0.05
    # The paper's values live in the signatures of the modules that use them.
    defaults = rcnn_zoo.FastRCNN.hyperparameter_defaults()
    assert (defaults["image_min_size"], defaults["image_max_size"], defaults["roi_pool_size"]) == (600, 1000, 7)
    assert defaults["roi_pooling"] == "pool" and defaults["roi_head_dim"] == 4096
    # The tiny backbone keeps the input size and a narrow head.
    assert hp["image_min_size"] is None and hp["roi_head_dim"] == 128


def test_config_round_trip_rebuilds_the_same_model():
    model = _model(class_names=["circle", "square", "triangle"], roi_negative_iou_low=0.0,
                   roi_pooling="align", image_min_size=None, score_threshold=0.2)
    config = model.get_config()
    clone = rcnn_zoo.FastRCNN.from_config(config)
    assert clone.get_config() == config
    assert clone.hyperparameters() == model.hyperparameters()
    assert clone.hyperparameters()["roi_negative_iou_low"] == 0.0 and clone.hyperparameters()["roi_pooling"] == "align"
    assert len(clone.weights) == len(model.weights)


def test_keras_file_round_trip_gives_identical_predictions(tmp_path):
    model = _model(score_threshold=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = _batch(2)
    _fit_steps(model, x, y, steps=2)
    path = str(tmp_path / "fast_rcnn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, rcnn_zoo.FastRCNN)
    _same_predictions(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    _fit_steps(loaded, x, y, steps=1)  # the optimizer state travels too


def test_weights_argument_loads_a_weights_file(tmp_path):
    model = _model(score_threshold=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = _batch(2)
    _fit_steps(model, x, y, steps=2)
    path = str(tmp_path / "fast_rcnn.weights.h5")
    model.save_weights(path)
    other = _model(score_threshold=0.0, weights=path)
    _same_predictions(model.predict(x, verbose=0), other.predict(x, verbose=0))


def test_mixed_float16_trains_and_keeps_proposal_pixels_exact():
    """Under a float16 policy the proposals must not be autocast: 90.9 would become 90.875."""
    x, y = _batch(2)
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = _model(score_threshold=0.0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = _fit_steps(model, x, y, steps=2)
        assert np.isfinite(history.history["loss"]).all()
        fresh = _model(score_threshold=0.0)
        proposal = np.array([100.3, 20.1, 127.7, 90.9], np.float32)  # not float16 numbers
        x["proposals"][:] = 0.0
        x["proposals"][:, 0] = proposal
        out = fresh.predict(x, verbose=0)
        assert out["boxes"].dtype == np.float32
        n = out["num_detections"][0]
        # A fresh head moves boxes by < 0.002 px here; float16 rounding would move them 0.025.
        np.testing.assert_allclose(out["boxes"][0][:n], np.tile(proposal, (n, 1)), atol=0.005)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


# ---------------------------------------------------------------------------- truncated SVD
def _trained_model():
    model = _model(score_threshold=0.0, max_detections=50)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = _batch(2)
    _fit_steps(model, x, y, steps=3)
    return model, x


def test_full_rank_svd_gives_the_same_predictions():
    model, x = _trained_model()
    full = model.compress_fc_layers(fc6_rank=128, fc7_rank=128)  # min(in, out) = 128 for both
    assert isinstance(full.roi_heads.box_head, SVDFCBoxHead)
    assert isinstance(full.roi_heads.box_head.fc6, TruncatedSVDDense) and full.roi_heads.box_head.fc6.rank == 128
    assert isinstance(model.roi_heads.box_head, FCBoxHead)  # the original is left alone
    _same_predictions(model.predict(x, verbose=0), full.predict(x, verbose=0), atol=1e-4)


def test_svd_parameter_count_matches_the_hand_count():
    model, _ = _trained_model()
    fc6_in = 7 * 7 * 64  # RoI pooled 7×7 on the tiny backbone's 64 channels
    compressed = model.compress_fc_layers(fc6_rank=32, fc7_rank=8)
    saved = (dense_parameter_count(fc6_in, 128) - (32 * fc6_in + 32 * 128 + 128)) + (
        dense_parameter_count(128, 128) - (8 * 128 + 8 * 128 + 128)
    )
    assert model.count_params() - compressed.count_params() == saved == 311_296
    only_fc6 = model.compress_fc_layers(fc6_rank=32, fc7_rank=None)
    assert isinstance(only_fc6.roi_heads.box_head.fc7, keras.layers.Dense)
    assert model.count_params() - only_fc6.count_params() == dense_parameter_count(fc6_in, 128) - (
        32 * fc6_in + 32 * 128 + 128
    )


def test_low_rank_svd_is_the_best_approximation_of_each_layer():
    """fc6 through the compressed head equals the rank-r reconstruction of its kernel."""
    model, _ = _trained_model()
    compressed = model.compress_fc_layers(fc6_rank=16, fc7_rank=8)
    kernel = model.roi_heads.box_head.fc6.kernel.numpy()
    u, s, vt = np.linalg.svd(kernel.astype(np.float64), full_matrices=False)
    best = (u[:, :16] * s[:16]) @ vt[:16]
    fc6 = compressed.roi_heads.box_head.fc6
    np.testing.assert_allclose(fc6.first.kernel.numpy() @ fc6.second.kernel.numpy(), best, atol=1e-5)
    np.testing.assert_array_equal(fc6.second.bias.numpy(), model.roi_heads.box_head.fc6.bias.numpy())
    assert fc6.first.bias is None


def test_compressed_model_saves_and_loads(tmp_path):
    model, x = _trained_model()
    compressed = model.compress_fc_layers(fc6_rank=32, fc7_rank=16)
    config = compressed.get_config()
    assert (config["roi_fc6_rank"], config["roi_fc7_rank"]) == (32, 16)
    path = str(tmp_path / "compressed.keras")
    compressed.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.roi_heads.box_head.fc7.rank == 16
    _same_predictions(compressed.predict(x, verbose=0), loaded.predict(x, verbose=0))
    # Fine-tuning after compression: compile the new model and fit.
    loaded.compile(optimizer=keras.optimizers.Adam(1e-4))
    _, y = _batch(2)
    assert np.isfinite(_fit_steps(loaded, x, y, steps=1).history["loss"]).all()


def test_svd_ranks_are_checked():
    model, _ = _trained_model()
    with pytest.raises(ValueError, match="rank"):
        model.compress_fc_layers(fc6_rank=129, fc7_rank=8)
    compressed = model.compress_fc_layers(fc6_rank=32, fc7_rank=8)
    again = compressed.compress_fc_layers(fc6_rank=32, fc7_rank=8)  # same ranks: a copy
    assert again.count_params() == compressed.count_params()
    with pytest.raises(ValueError, match="already compressed"):
        compressed.compress_fc_layers(fc6_rank=16, fc7_rank=8)
    with pytest.raises(ValueError, match="fully connected"):
        _model(backbone="resnet50").compress_fc_layers()
