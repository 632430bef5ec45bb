"""Hostile inputs at the layer level: RoIPooling, RoIAlign, PSRoIPooling, AnchorGenerator and
ProposalLayer, with the compiled kernels and with the pure-TF fallback.

tests/ops/test_roi_ops.py already checks the ops on bad RoI rows (batch indices, NaN / inf
coordinates, ranks) and on K = 0. This file feeds the layers what a broken backbone, RPN head or
data pipeline can hand them — NaN / ±inf feature values, RPN logits and deltas, NaN / huge RoI
coordinates, zero / negative / huge image sizes, no anchors, zero-area anchors, empty feature
maps — and asserts what a user should get: finite outputs with the documented shapes (proposals
inside the image, no NaN box, finite scores, a NaN candidate dropped), non-finite feature values
reaching only the outputs that read them, or an error naming the bad argument.

Expected values come from the NumPy loops of tests/ops/references.py or are worked out by hand
in the comments, never from the code under test.
"""

import contextlib
import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf

import rcnn_zoo.ops as ops
from rcnn_zoo.layers import AnchorGenerator, ProposalLayer, PSRoIPooling, RoIAlign, RoIPooling
from rcnn_zoo.layers.proposal_layer import MIN_SIZE_RULES


def _load_references():
    # tests/layers is not a package: load the NumPy references of tests/ops by path.
    path = os.path.join(os.path.dirname(__file__), os.pardir, "ops", "references.py")
    spec = importlib.util.spec_from_file_location("rcnn_zoo_test_references", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load_references()

IMPLEMENTATIONS = ("compiled", "fallback")
BAD_VALUES = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}


@contextlib.contextmanager
def using(impl):
    """Run the RoI layers on the compiled kernels or on the pure-TF fallback."""
    if impl == "fallback":
        with ops.force_fallback():
            yield
        return
    if ops.implementation() != "compiled":
        pytest.skip(f"compiled RoI ops are not loaded: {ops.fallback_reason()}")
    yield


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request):
    with using(request.param):
        yield request.param


# ---------------------------------------------------------------------------------------------
# RoI layers.

SCALE = 0.5  # 6 x 7 feature maps of 12 x 14 pixel images
# (name, layer factory, channels, reference(features, rows) -> [K, ph, pw, C])
ROI_LAYERS = {
    "RoIPooling": (
        lambda: RoIPooling(pool_size=2, spatial_scale=SCALE), 3,
        lambda f, r: ref.roi_pool(f, r, (2, 2), SCALE),
    ),
    "RoIAlign": (
        lambda: RoIAlign(pool_size=2, spatial_scale=SCALE, sampling_ratio=2, aligned=False), 3,
        lambda f, r: ref.roi_align(f, r, (2, 2), SCALE, 2, False),
    ),
    "RoIAlign-adaptive-aligned": (
        lambda: RoIAlign(pool_size=2, spatial_scale=SCALE, sampling_ratio=-1, aligned=True), 3,
        lambda f, r: ref.roi_align(f, r, (2, 2), SCALE, -1, True),
    ),
    "PSRoIPooling": (
        lambda: PSRoIPooling(group_size=2, output_dim=2, spatial_scale=SCALE), 8,
        lambda f, r: ref.ps_roi_pool(f, r, 2, 2, SCALE),
    ),
}
ROI_LAYER_NAMES = tuple(ROI_LAYERS)
_ALIGN_ARGS = {"RoIAlign": (2, False), "RoIAlign-adaptive-aligned": (-1, True)}

# [B = 2, R = 3, 4] pixel RoIs: a corner, the bottom right, the whole image, sizes in between,
# and a point on cell (0, 6) of image 1 (so that even a -inf there fills whole bins).
ROIS = np.array(
    [
        [[0, 0, 5, 5], [7, 6, 13, 11], [0, 0, 13, 11]],
        [[2, 2, 8, 8], [6, 0, 13, 6], [12, 0, 12, 0]],
    ],
    np.float32,
)


def rows_of(rois):
    """``[B, R, 4]`` → ``[B·R, 5]`` op rows ``(b, x1, y1, x2, y2)``, built independently."""
    b, r = rois.shape[:2]
    index = np.repeat(np.arange(b, dtype=rois.dtype), r)[:, None]
    return np.concatenate([index, rois.reshape(-1, 4)], axis=1)


def make_features(channels, bad=None, batch=2):
    """Random ``[B, 6, 7, C]`` maps; ``bad`` is put at cell (1, 1) of image 0 (all channels:
    read by its first and third RoI, up and left of the second, which is where a summed-area
    table spreads it) and at cell (0, 6), channel 1 of image 1."""
    rng = np.random.default_rng(0)
    features = rng.standard_normal((batch, 6, 7, channels)).astype(np.float32)
    if bad is not None:
        features[0, 1, 1, :] = bad
        if batch > 1:
            features[1, 0, 6, 1] = bad
    return features


def roi_align_positive_weights(features, rows, sampling_ratio, aligned):
    """RoIAlign where a bin reads only the cells it gives a positive bilinear weight (what the
    layers promise for non-finite features). ``references.roi_align`` multiplies every cell of
    the map by its weight, so one inf anywhere would be NaN everywhere: sum ``w · f`` over
    ``w > 0`` only (for finite maps the two are equal)."""
    out = np.zeros((len(rows), 2, 2, features.shape[3]), np.float64)
    for k, b, i, j, weights in ref._roi_align_bins(features, rows, (2, 2), SCALE,
                                                   sampling_ratio, aligned):
        read = weights > 0
        out[k, i, j] = (weights[read].astype(np.float64)[:, None]
                        * features[b][read].astype(np.float64)).sum(axis=0)
    return out


def expected_output(name, features, rois):
    rows = rows_of(rois)
    if name in _ALIGN_ARGS:
        out = roi_align_positive_weights(features, rows, *_ALIGN_ARGS[name])
    else:
        out = ROI_LAYERS[name][2](features, rows)
    return out.reshape(rois.shape[0], rois.shape[1], *out.shape[1:])


def expected_gradient(name, features, rois, dy):
    """Feature gradient of ``sum(layer · dy)`` from the NumPy references (they do not read the
    feature values, except roi_pool's argmax: the first NaN of a bin, as ``np.argmax``)."""
    rows = rows_of(rois)
    dy = dy.reshape(-1, *dy.shape[2:])
    if name == "RoIPooling":
        return ref.roi_pool_grad(features, rows, (2, 2), SCALE, dy)
    if name == "PSRoIPooling":
        return ref.ps_roi_pool_grad(features, rows, 2, 2, SCALE, dy)
    sampling_ratio, aligned = _ALIGN_ARGS[name]
    return ref.roi_align_grad(features, rows, (2, 2), SCALE, sampling_ratio, aligned, dy)


def call_with_gradient(layer, features, rois, dy=None):
    x = tf.constant(features)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, tf.constant(rois))
    grad = tape.gradient(out, x, output_gradients=None if dy is None else tf.constant(dy))
    return out.numpy(), (np.zeros_like(features) if grad is None else grad.numpy())


@pytest.mark.parametrize("bad", BAD_VALUES.values(), ids=BAD_VALUES.keys())
@pytest.mark.parametrize("name", ROI_LAYER_NAMES)
def test_nonfinite_features_reach_only_the_bins_that_read_them(name, bad, impl):
    """A NaN / ±inf feature value is the user's data: the bins that read it (max over it, a
    positive bilinear weight on it, an average over it) are non-finite as IEEE arithmetic says
    (NaN for NaN or for +inf and -inf together), every other bin keeps its finite value. The
    fallbacks used to spread it over every RoI (0 · inf in RoIAlign's matmuls, inf - inf in
    PSRoIPooling's summed-area table), the roi_pool kernel used to skip a NaN."""
    make_layer, channels, _ = ROI_LAYERS[name]
    features = make_features(channels, bad)
    expected = expected_output(name, features, ROIS)
    finite = np.isfinite(expected)
    assert finite.any() and not finite.all()  # the case covers both kinds of bins
    rng = np.random.default_rng(1)
    dy = rng.standard_normal(expected.shape).astype(np.float32)
    out, grad = call_with_gradient(make_layer(), features, ROIS, dy)
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)  # ±inf must match too
    # Gradients do not depend on the values (RoIPooling's goes to the first NaN of a bin).
    np.testing.assert_allclose(grad, expected_gradient(name, features, ROIS, dy),
                               rtol=1e-5, atol=1e-5)


def test_roi_align_never_reads_a_zero_weight_neighbour(impl):
    """Bilinear interpolation exactly on a cell returns that cell: its neighbours have weight
    0 and must not be read, or 0 · inf = NaN."""
    features = np.arange(42, dtype=np.float32).reshape(1, 6, 7, 1)
    features[0, 3, 3, 0] = np.inf  # the (zero-weight) lower-right neighbour of sample (2, 2)
    features[0, 5, 3, 0] = np.inf
    layer = RoIAlign(pool_size=2, spatial_scale=0.5, sampling_ratio=1)
    # Pixels (2, 2)-(10, 10) are cells (1, 1)-(5, 5): bins of 2 cells, one sample each at
    # 1 + 2i + 1 = 2 + 2i (likewise x): exactly cells (2, 2), (2, 4), (4, 2), (4, 4).
    out = layer(features, np.array([[[2, 2, 10, 10]]], np.float32)).numpy()
    np.testing.assert_array_equal(out[0, 0, :, :, 0], [[16, 18], [30, 32]])  # 7y + x
    # One sample at y = 5.5 + 0.5 = 6 = H: it snaps to row 5 with weight 1 (and 0 on the
    # "high" row, which is row 5 again); x = 3.5 weighs columns 3 and 4 by 1/2: inf, not NaN.
    layer = RoIAlign(pool_size=1, spatial_scale=1.0, sampling_ratio=1)
    out = layer(features, np.array([[[3, 5.5, 3, 5.5]]], np.float32)).numpy()
    assert out[0, 0, 0, 0, 0] == np.inf


@pytest.mark.parametrize("bad", BAD_VALUES.values(), ids=BAD_VALUES.keys())
@pytest.mark.parametrize("name", ROI_LAYER_NAMES)
def test_nonfinite_roi_coordinates_raise_naming_rois(name, bad, impl):
    make_layer, channels, _ = ROI_LAYERS[name]
    rois = ROIS.copy()
    rois[1, 2, 3] = bad
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)rois.*finite|finite.*rois"):
        make_layer()(make_features(channels), rois).numpy()
    # Also inside a tf.function with unknown shapes (the check runs at run time).
    run = tf.function(lambda f, r: make_layer()(f, r), input_signature=[
        tf.TensorSpec([None, None, None, channels]), tf.TensorSpec([None, None, 4])])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)rois.*finite|finite.*rois"):
        run(make_features(channels), rois).numpy()


@pytest.mark.parametrize("name", ROI_LAYER_NAMES)
def test_huge_roi_coordinates_stay_finite(name, impl):
    """RoIs at ±1e9 pixels and at 3e38 (close to float32's max): no overflow into NaN, no
    out-of-range read. Worked out by hand for a 6 x 7 map at scale 1/2:

    - (1e9, 1e9, 2e9, 2e9) lies wholly outside: every bin is empty (or samples nothing) → 0;
    - (-1e9, ..., 3e38) and friends are compared with the NumPy loops where those stay small
      (roi_pool, ps_roi_pool, RoIAlign with a fixed grid of 2); RoIAlign's adaptive grid takes
      ceil(5e8 / 2) samples per bin side there, almost all off the map and counted as zeros, so
      its output is finite and ~0 (|x| < 1e-6).
    """
    make_layer, channels, reference = ROI_LAYERS[name]
    features = make_features(channels)
    rois = np.array([[[1e9, 1e9, 2e9, 2e9], [-1e9, -1e9, 1e9, 1e9], [-1e9, 3.0, 3e38, 9.0]],
                     [[0, 0, 3e38, 3e38], [-3e38, -3e38, 3e38, 3e38], [4, 4, 1e9, 6]]],
                    np.float32)
    out, grad = call_with_gradient(make_layer(), features, rois)
    assert out.shape == (2, 3, 2, 2, 2 if name == "PSRoIPooling" else channels)
    assert np.isfinite(out).all() and np.isfinite(grad).all()
    np.testing.assert_array_equal(out[0, 0], 0)
    if name == "RoIAlign-adaptive-aligned":
        assert np.abs(out).max() < 1e-6
    else:
        expected = reference(features, rows_of(rois)).reshape(out.shape)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ROI_LAYER_NAMES)
def test_no_rois_and_no_images(name, impl):
    """K = 0: ``[B, 0, ph, pw, C]`` and a zero gradient; B = 0 as well."""
    make_layer, channels, _ = ROI_LAYERS[name]
    d = 2 if name == "PSRoIPooling" else channels
    features = make_features(channels)
    out, grad = call_with_gradient(make_layer(), features, np.zeros([2, 0, 4], np.float32))
    assert out.shape == (2, 0, 2, 2, d)
    assert grad.shape == features.shape and not grad.any()
    out = make_layer()(np.zeros([0, 6, 7, channels], np.float32), np.zeros([0, 0, 4], np.float32))
    assert out.shape == (0, 0, 2, 2, d)
    # Under tf.function with unknown B and R, the same.
    run = tf.function(lambda f, r: make_layer()(f, r), input_signature=[
        tf.TensorSpec([None, None, None, channels]), tf.TensorSpec([None, None, 4])])
    assert run(features, np.zeros([2, 0, 4], np.float32)).shape == (2, 0, 2, 2, d)


@pytest.mark.parametrize("shape", [(2, 0, 7), (2, 6, 0), (2, 0, 0)], ids=str)
@pytest.mark.parametrize("name", ROI_LAYER_NAMES)
def test_empty_feature_maps(name, shape, impl):
    """A map with no rows or columns is legal: every bin is empty, so every output is 0
    (the ops' documented value of an empty bin), and the gradient is empty."""
    make_layer, channels, _ = ROI_LAYERS[name]
    d = 2 if name == "PSRoIPooling" else channels
    features = np.zeros((*shape, channels), np.float32)
    out, grad = call_with_gradient(make_layer(), features, ROIS)
    assert out.shape == (2, 3, 2, 2, d)
    np.testing.assert_array_equal(out, 0)
    assert grad.shape == features.shape


@pytest.mark.parametrize("name", ["RoIPooling", "RoIAlign"])
def test_zero_channels(name, impl):
    out, grad = call_with_gradient(ROI_LAYERS[name][0](), np.zeros((2, 6, 7, 0), np.float32),
                                   ROIS)
    assert out.shape == (2, 3, 2, 2, 0) and grad.shape == (2, 6, 7, 0)


def test_ps_roi_pooling_channel_mismatch_names_channels(impl):
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?i)channel"):
        PSRoIPooling(group_size=2, output_dim=2, spatial_scale=SCALE)(
            make_features(7), ROIS).numpy()


# ---------------------------------------------------------------------------------------------
# AnchorGenerator.

CONVENTIONS = ("py-faster-rcnn", "torchvision", "detectron2")


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(sizes=(0,)), "sizes"),
        (dict(sizes=(32, -64)), "sizes"),
        (dict(sizes=(np.nan,)), "sizes"),
        (dict(sizes=(np.inf,)), "sizes"),
        (dict(sizes=((32,), (0,)), strides=(8, 16)), "sizes"),
        (dict(aspect_ratios=(0.0,)), "aspect_ratios"),
        (dict(aspect_ratios=(-1.0, 1.0)), "aspect_ratios"),
        (dict(aspect_ratios=(np.nan,)), "aspect_ratios"),
        (dict(aspect_ratios=(np.inf,)), "aspect_ratios"),
        (dict(strides=(0,)), "strides"),
        (dict(strides=(-16,)), "strides"),
        # Widths of ~size · 1e40 (or size / float32(1e-80) = size / 0): inf anchors.
        (dict(aspect_ratios=(1e-80,)), "overflow"),
        (dict(sizes=(1e39,)), "overflow"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_anchor_generator_rejects_sizes_that_give_no_finite_anchor(kwargs, name, convention):
    """A zero, negative or non-finite size or aspect ratio, or a stride < 1, used to give
    zero-area, inverted, NaN or inf anchors (or a bare ZeroDivisionError): now a ValueError
    that names the argument."""
    with pytest.raises(ValueError, match=name):
        AnchorGenerator(convention=convention, **kwargs)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_anchor_generator_extreme_ratios_give_finite_possibly_flat_anchors(convention):
    """Extreme but finite aspect ratios are allowed: the anchors are finite, well ordered and
    of the documented shape ``[H·W·A, 4]``; one side may round to 0 (zero-area anchors)."""
    gen = AnchorGenerator(sizes=(32, 64), aspect_ratios=(1e-30, 1.0, 1e30), strides=(16,),
                          convention=convention)
    anchors = gen(tf.zeros([1, 3, 4, 8])).numpy()
    assert anchors.shape == (3 * 4 * 6, 4) and np.isfinite(anchors).all()
    assert (anchors[:, 2] >= anchors[:, 0]).all() and (anchors[:, 3] >= anchors[:, 1]).all()


@pytest.mark.parametrize("stride_rule", ["nominal", "image_over_grid"])
def test_anchor_generator_empty_feature_maps(stride_rule):
    """No cells, no anchors: ``[0, 4]`` (image_over_grid used to divide by the zero size)."""
    gen = AnchorGenerator(strides=(8, 16), sizes=((32,), (64,)), stride_rule=stride_rule)
    levels = [tf.zeros([1, 0, 5, 3]), tf.zeros([1, 4, 0, 3])]
    for anchors in gen(levels, image_shape=(64, 64)):
        assert anchors.shape == (0, 4)
    for hw in ((0, 5), (4, 0), (0, 0)):
        assert gen.anchors_for_shapes([hw, hw], image_shape=(64, 64))[0].shape == (0, 4)
    # And a dynamic empty size under tf.function.
    run = tf.function(lambda x: gen([x, x], image_shape=(64, 64))[0],
                      input_signature=[tf.TensorSpec([None, None, None, 3])])
    assert run(tf.zeros([1, 0, 3, 3])).shape == (0, 4)


def test_anchor_generator_image_smaller_than_grid_names_image_shape():
    """image_over_grid spaces cells ``image // grid`` apart: an image smaller than the grid
    gives stride 0 (every anchor on one spot); that is an error naming image_shape."""
    gen = AnchorGenerator(strides=(16,), stride_rule="image_over_grid")
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_shape"):
        gen.anchors_for_shapes((8, 8), image_shape=(4, 64)).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_shape"):
        gen.anchors_for_shapes((8, 8), image_shape=(-128, 128)).numpy()


# ---------------------------------------------------------------------------------------------
# ProposalLayer. Zero deltas decode to the anchors themselves, so expected boxes below are
# anchors (or worked out by hand) and expected scores are sigmoid(logit).

ANCHORS = np.array(
    [
        [0, 0, 100, 100],  # a0
        [10, 0, 110, 100],  # a1: IoU with a0 = 9000 / 11000 = 0.82 > 0.7, suppressed by it
        [200, 200, 300, 300],  # a2
        [50, 150, 150, 250],  # a3: overlaps none of the others
    ],
    np.float32,
)
LOGITS = np.array([[3.0, 2.0, 1.0, 0.0]], np.float32)
DELTAS = np.zeros([1, 4, 4], np.float32)
IMAGE = np.array([400, 400], np.float32)
ZERO = [0.0, 0.0, 0.0, 0.0]


def sigmoid(x):
    with np.errstate(over="ignore"):  # exp(1e30) = inf gives sigmoid(-1e30) = 0, as it should
        return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def proposal_layer(**kwargs):
    defaults = dict(pre_nms_top_n_test=10, post_nms_top_n_test=4, nms_threshold=0.7,
                    min_size=16.0)
    defaults.update(kwargs)
    return ProposalLayer(**defaults)


def propose(layer=None, logits=LOGITS, deltas=DELTAS, anchors=ANCHORS, image_shape=IMAGE):
    layer = layer or proposal_layer()
    out = layer(tf.constant(logits), tf.constant(deltas), tf.constant(anchors),
                tf.constant(image_shape))
    out = {k: v.numpy() for k, v in out.items()}
    check_proposal_invariants(out, image_shape)
    return out


def check_proposal_invariants(out, image_shape):
    """What every ProposalLayer output must satisfy, whatever the input."""
    boxes, scores, num_valid = out["boxes"], out["scores"], out["num_valid"]
    batch, post_n = scores.shape
    assert boxes.shape == (batch, post_n, 4) and num_valid.shape == (batch,)
    assert np.isfinite(boxes).all() and np.isfinite(scores).all()
    assert ((0 <= num_valid) & (num_valid <= post_n)).all()
    hw = np.broadcast_to(np.asarray(image_shape, np.float64).reshape(-1, image_shape.shape[-1]),
                         (batch, image_shape.shape[-1]))
    for b in range(batch):
        n = num_valid[b]
        valid = boxes[b, :n]
        assert (valid[:, 0] >= 0).all() and (valid[:, 1] >= 0).all()
        assert (valid[:, 2] <= hw[b, 1]).all() and (valid[:, 3] <= hw[b, 0]).all()
        assert (valid[:, 2] >= valid[:, 0]).all() and (valid[:, 3] >= valid[:, 1]).all()
        assert ((scores[b, :n] >= 0) & (scores[b, :n] <= 1)).all()
        assert (np.diff(scores[b, :n]) <= 0).all()  # descending
        assert not boxes[b, n:].any() and not scores[b, n:].any()  # padding is zeros


def assert_proposals(out, boxes, logits, num_valid=None):
    n = len(boxes)
    np.testing.assert_array_equal(out["num_valid"], [n] if num_valid is None else num_valid)
    post_n = out["boxes"].shape[1]
    # atol: float32 exp(log(1000 / 16)) · 100 is 6250 within ~0.01.
    np.testing.assert_allclose(out["boxes"][0], list(boxes) + [ZERO] * (post_n - n), atol=2e-2)
    np.testing.assert_allclose(out["scores"][0], list(sigmoid(logits)) + [0] * (post_n - n),
                               rtol=1e-6)


def test_reference_case():
    # a0 (3) keeps and suppresses a1; then a2 (1) and a3 (0).
    assert_proposals(propose(), [ANCHORS[0], ANCHORS[2], ANCHORS[3]], [3, 1, 0])


@pytest.mark.parametrize("from_logits", [True, False])
def test_nan_objectness_drops_the_candidate(from_logits):
    logits = LOGITS.copy() if from_logits else sigmoid(LOGITS).astype(np.float32)
    logits[0, 0] = np.nan
    layer = proposal_layer(from_logits=from_logits)
    # Without a0, a1 is no longer suppressed.
    out = propose(layer, logits=logits)
    assert_proposals(out, [ANCHORS[1], ANCHORS[2], ANCHORS[3]], [2, 1, 0])


def test_nan_objectness_takes_no_pre_nms_slot():
    """top_k ranks NaN first: a NaN logit used to take one of the pre-NMS top-n places and then
    vanish in NMS, leaving fewer proposals than there are valid candidates."""
    logits = np.array([[3.0, np.nan, 1.0, 0.0]], np.float32)
    out = propose(proposal_layer(pre_nms_top_n_test=2), logits=logits)
    assert_proposals(out, [ANCHORS[0], ANCHORS[2]], [3, 1])
    # All NaN: no proposal at all, and nothing NaN in the output.
    out = propose(logits=np.full_like(LOGITS, np.nan))
    assert_proposals(out, [], [])


def test_infinite_objectness():
    logits = LOGITS.copy()
    logits[0, 2] = np.inf  # a2 first, with probability 1
    logits[0, 0] = -np.inf  # a0 never: a1 survives
    out = propose(logits=logits)
    np.testing.assert_array_equal(out["num_valid"], [3])
    np.testing.assert_allclose(out["boxes"][0, :3], [ANCHORS[2], ANCHORS[1], ANCHORS[3]])
    np.testing.assert_allclose(out["scores"][0, :3], [1.0, *sigmoid([2, 0])], rtol=1e-6)


@pytest.mark.parametrize("column", range(4), ids=["dx", "dy", "dw", "dh"])
@pytest.mark.parametrize("bad", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_nonfinite_deltas(bad, column):
    """A NaN delta makes a NaN box: dropped. ±inf in dx / dy moves the box to the border,
    where clipping flattens it to zero width / height: dropped by min_size. -inf in dw / dh
    gives size 0: dropped. +inf in dw / dh is clamped at log(1000/16): a0 becomes 6250 px wide
    around x = 50 (or tall around y = 50), clipped to the 400 px image, and stays first."""
    deltas = DELTAS.copy()
    deltas[0, 0, column] = bad
    out = propose(deltas=deltas)
    if bad == np.inf and column >= 2:
        grown = [0, 0, 400, 100] if column == 2 else [0, 0, 100, 400]
        # The grown a0 overlaps a1 by 10000 / 40000 (dw) or 9000 / 41000 (dh): a1 survives.
        # Grown down (dh) it overlaps a3 by 5000 / 45000, also below 0.7.
        assert_proposals(out, [grown, ANCHORS[1], ANCHORS[2], ANCHORS[3]], [3, 2, 1, 0])
    else:
        assert_proposals(out, [ANCHORS[1], ANCHORS[2], ANCHORS[3]], [2, 1, 0])


@pytest.mark.parametrize("rule", sorted(MIN_SIZE_RULES))
def test_nonfinite_deltas_with_min_size_zero(rule):
    """With min_size 0 a box clipped flat at the border is a (zero-width) proposal inside the
    image — except for mmdetection, whose strict rule drops zero sizes — but a NaN box never
    is, under any rule."""
    deltas = DELTAS.copy()
    deltas[0, 0, 0] = np.inf  # a0 -> x = inf -> clipped to [400, 0, 400, 100]
    deltas[0, 2, 1] = np.nan  # a2 -> NaN
    out = propose(proposal_layer(min_size=0.0, min_size_rule=rule), deltas=deltas)
    if rule == "mmdetection":
        assert_proposals(out, [ANCHORS[1], ANCHORS[3]], [2, 0])
    else:
        # The flat a0 has IoU 0 with everything: a1 survives.
        assert_proposals(out, [[400, 0, 400, 100], ANCHORS[1], ANCHORS[3]], [3, 2, 0])


def test_nan_delta_does_not_disable_per_level_nms():
    """With per_level=True the levels are shifted apart by the extent of all boxes before one
    NMS: a NaN box made that extent NaN, every shifted box NaN, and nothing was suppressed (a1
    came back next to a0)."""
    layer = proposal_layer(per_level=True)
    deltas = DELTAS.copy()
    deltas[0, 2, 0] = np.nan  # a2 (level 1) decodes to NaN
    out = layer([LOGITS[:, :2], LOGITS[:, 2:]], [deltas[:, :2], deltas[:, 2:]],
                [ANCHORS[:2], ANCHORS[2:]], tf.constant(IMAGE))
    out = {k: v.numpy() for k, v in out.items()}
    check_proposal_invariants(out, IMAGE)
    assert_proposals(out, [ANCHORS[0], ANCHORS[3]], [3, 0])


def test_huge_image_size():
    """1e9 px is a (silly but) valid size: nothing to clip; an infinite dx still flattens a0 at
    the 1e9 border (dropped); +inf dw grows a2 to 6250 px around x = 250: [-2875, 3375] clipped
    at 0."""
    image = np.array([1e9, 1e9], np.float32)
    assert_proposals(propose(image_shape=image), [ANCHORS[0], ANCHORS[2], ANCHORS[3]], [3, 1, 0])
    deltas = DELTAS.copy()
    deltas[0, 0, 0] = np.inf
    deltas[0, 2, 2] = np.inf
    out = propose(deltas=deltas, image_shape=image)
    assert_proposals(out, [ANCHORS[1], [0, 200, 3375, 300], ANCHORS[3]], [2, 1, 0])


@pytest.mark.parametrize(
    "image_shape",
    [[0, 400], [400, 0], [-400, 400], [400, -1], [np.nan, 400], [400, np.inf], [-np.inf, 400],
     [[400, 400, 0.0]], [[400, 400, np.nan]], [[400, 400, -2.0]]],
    ids=str,
)
def test_bad_image_shape_names_image_shape(image_shape):
    """A zero, negative or non-finite image size (or im_info scale) would clip proposals to
    nothing, to outside the image, or to NaN: an InvalidArgumentError naming image_shape,
    eagerly and inside tf.function."""
    image_shape = np.array(image_shape, np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_shape"):
        propose(image_shape=image_shape)
    layer = proposal_layer()
    run = tf.function(lambda *args: layer(*args)["boxes"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_shape"):
        run(LOGITS, DELTAS, ANCHORS, image_shape).numpy()


def test_no_anchors():
    """N = 0 (e.g. an empty feature map): no proposals, zero padding — it used to fail with
    'indices[0,0] = 0 is not in [0, 0)' while gathering the padding rows."""
    out = propose(logits=LOGITS[:, :0], deltas=DELTAS[:, :0], anchors=ANCHORS[:0])
    assert_proposals(out, [], [])
    # Two images, training sizes, and one empty FPN level next to a full one.
    layer = proposal_layer(per_level=True, post_nms_top_n_train=3)
    logits = np.repeat(LOGITS, 2, axis=0)
    deltas = np.repeat(DELTAS, 2, axis=0)
    out = layer([logits[:, :0], logits], [deltas[:, :0], deltas], [ANCHORS[:0], ANCHORS],
                tf.constant(IMAGE), training=True)
    out = {k: v.numpy() for k, v in out.items()}
    check_proposal_invariants(out, IMAGE)
    np.testing.assert_array_equal(out["num_valid"], [3, 3])
    np.testing.assert_allclose(out["boxes"][1], [ANCHORS[0], ANCHORS[2], ANCHORS[3]])
    # And no image at all.
    out = proposal_layer()(LOGITS[:0], DELTAS[:0], ANCHORS, tf.zeros([0, 2]))
    assert out["boxes"].shape == (0, 4, 4) and out["num_valid"].shape == (0,)


@pytest.mark.parametrize("rule", sorted(MIN_SIZE_RULES))
def test_zero_area_anchors(rule):
    """Zero-area anchors decode to zero-area boxes whatever the (finite) deltas, since the
    deltas scale the anchor size: never big enough for min_size 16; with min_size 0 they are
    (flat) proposals inside the image except under mmdetection's strict rule. An infinite dx
    on a zero-width anchor is inf · 0 = NaN: dropped under every rule."""
    flat = ANCHORS.copy()
    flat[:, 2] = flat[:, 0]  # zero width
    flat[3, 3] = flat[3, 1]  # a3: a point
    deltas = np.random.default_rng(0).standard_normal(DELTAS.shape).astype(np.float32)
    deltas[0, 1, 0] = np.inf
    out = propose(proposal_layer(min_size_rule=rule), deltas=deltas, anchors=flat)
    assert_proposals(out, [], [])
    out = propose(proposal_layer(min_size=0.0, min_size_rule=rule), deltas=deltas, anchors=flat)
    valid = out["boxes"][0, :out["num_valid"][0]]
    if rule == "mmdetection":
        assert len(valid) == 0
    else:
        # a0, a2, a3 survive (flat boxes have IoU 0 with each other), a1 is NaN and dropped.
        np.testing.assert_array_equal(out["num_valid"], [3])
        np.testing.assert_allclose(out["scores"][0, :3], sigmoid([3, 1, 0]), rtol=1e-6)
        np.testing.assert_array_equal(valid[:, 2] - valid[:, 0], 0)


def test_anchor_generator_to_proposal_layer_with_extreme_ratios():
    """The whole RPN tail on anchors of extreme aspect ratio (flat or hair-thin, 6.4e16 px
    long): finite proposals inside the image, under every min_size rule."""
    gen = AnchorGenerator(sizes=(32, 64), aspect_ratios=(1e-30, 1.0, 1e30), strides=(16,),
                          convention="torchvision")
    anchors = gen(tf.zeros([1, 4, 5, 8]))
    rng = np.random.default_rng(1)
    n = anchors.shape[0]
    logits = rng.standard_normal((2, n)).astype(np.float32)
    deltas = rng.standard_normal((2, n, 4)).astype(np.float32)
    image = np.array([[64, 80], [50, 70]], np.float32)
    for rule in sorted(MIN_SIZE_RULES):
        for min_size in (0.0, 1e-3, 16.0):
            layer = proposal_layer(min_size=min_size, min_size_rule=rule,
                                   post_nms_top_n_test=20)
            out = layer(logits, deltas, anchors, image)
            check_proposal_invariants({k: v.numpy() for k, v in out.items()}, image)
            if min_size == 16.0:  # only the 32 / 64 px square anchors can be big enough
                assert out["num_valid"].numpy().max() > 0


@pytest.mark.parametrize("per_level", [False, True])
@pytest.mark.parametrize("rule", sorted(MIN_SIZE_RULES))
def test_random_hostile_inputs_keep_the_invariants(rule, per_level):
    """Random logits and deltas with NaN / ±inf / huge values sprinkled in, random anchors
    (some flat, some inverted), a small and a huge image: every output satisfies
    check_proposal_invariants, and no proposal comes from a candidate with a NaN logit."""
    rng = np.random.default_rng(2 * sorted(MIN_SIZE_RULES).index(rule) + per_level)
    n, batch = 60, 2
    centre = rng.uniform(-50, 450, (n, 2))
    size = rng.choice([0.0, 8.0, 32.0, 128.0, -16.0], (n, 2))
    anchors = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    logits = rng.standard_normal((batch, n)).astype(np.float32)
    deltas = rng.standard_normal((batch, n, 4)).astype(np.float32)
    specials = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30], np.float32)
    for array in (logits, deltas):
        flat = array.reshape(-1)
        hit = rng.random(flat.shape) < 0.15
        flat[hit] = rng.choice(specials, hit.sum())
    image = np.array([[300, 350], [1e9, 1e9]], np.float32)
    layer = proposal_layer(min_size=0.0 if rule != "py-faster-rcnn" else 4.0, min_size_rule=rule,
                           per_level=per_level, pre_nms_top_n_test=40, post_nms_top_n_test=30)
    split = n // 3
    if per_level:
        args = ([logits[:, :split], logits[:, split:]], [deltas[:, :split], deltas[:, split:]],
                [anchors[:split], anchors[split:]])
    else:
        args = (logits, deltas, anchors)
    out = {k: v.numpy() for k, v in layer(*args, tf.constant(image)).items()}
    check_proposal_invariants(out, image)
    assert out["num_valid"].min() > 0  # the case keeps something
    # Valid scores are sigmoid of some non-NaN logit of the same image.
    for b in range(batch):
        allowed = sigmoid(logits[b][~np.isnan(logits[b])]).astype(np.float32)
        for s in out["scores"][b, :out["num_valid"][b]]:
            assert np.isclose(allowed, s, rtol=1e-6, atol=0).any()
