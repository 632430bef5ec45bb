"""Shared checks of roi_pool, roi_align and ps_roi_pool, for both implementations.

compiled kernel = pure-TF fallback = NumPy reference (forward and gradient), errors on invalid
inputs, K = 0, unknown shapes under tf.function, reduced precision, export without custom ops.
"""

import functools
import os

import numpy as np
import pytest
import tensorflow as tf

import rcnn_zoo.ops as ops

from . import roi_testing as rt

SHAPES = ((2, 9, 11), (1, 5, 4), (3, 14, 7))


@pytest.fixture(params=rt.IMPLEMENTATIONS)
def impl(request):
    rt.require(request.param)
    return request.param


@pytest.mark.parametrize("dtype", rt.DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("spec", rt.SPECS, ids=str)
def test_matches_reference(spec, impl, dtype):
    for seed, shape in enumerate(SHAPES):
        rt.check_against_reference(spec, impl, dtype, shape, seed)


# Small pools keep the Jacobians (one backward pass per output element) small.
@pytest.mark.parametrize("spec", [rt.SPECS[i] for i in (1, 3, 4, 6)], ids=str)
def test_numeric_gradient_float64(spec, impl):
    rng = np.random.default_rng(1)
    h, w = 4, 5
    # Distinct values 1/8 apart: no ties within finite-difference reach of a max.
    features = (rng.permutation(h * w * spec.channels) / 8.0).reshape(1, h, w, -1)
    # Inside, tiny, huge, the whole image.
    rois = rt.random_rois(rng, 1, h / spec.spatial_scale, w / spec.spatial_scale, np.float64,
                          count=1)[[0, 4, 6, 7]]
    rt.check_numeric_gradient(spec, impl, features, rois)


@pytest.mark.parametrize("dtype", rt.DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("spec", rt.SPECS, ids=str)
def test_compiled_equals_fallback(spec, dtype):
    rt.require("compiled")
    rng = np.random.default_rng(2)
    features, rois = rt.random_case(rng, spec, (2, 10, 12), dtype)
    dy = rng.standard_normal(rt.run(spec, "fallback", features, rois).shape).astype(dtype)
    rt.assert_close(rt.run(spec, "compiled", features, rois).numpy(),
                    rt.run(spec, "fallback", features, rois).numpy(), dtype, "forward")
    rt.assert_close(rt.vjp(spec, "compiled", features, rois, dy),
                    rt.vjp(spec, "fallback", features, rois, dy), dtype, "gradient")


@pytest.mark.parametrize("spec", rt.ONE_PER_OP, ids=str)
def test_no_rois(spec, impl):
    features = tf.constant(np.random.default_rng(3).standard_normal((2, 6, 7, spec.channels)),
                           tf.float32)
    rois = tf.zeros([0, 5])
    with tf.GradientTape() as tape:
        tape.watch(features)
        out = spec.op(features, rois, impl=impl)
        loss = tf.reduce_sum(out)
    assert out.shape[0] == 0 and out.shape[1:] == rt.run(
        spec, impl, features.numpy(), np.array([[0, 1, 1, 5, 5]], np.float32)).shape[1:]
    grad = tape.gradient(loss, features)
    assert grad is None or not np.any(grad.numpy())


@pytest.mark.parametrize("spec", rt.ONE_PER_OP, ids=str)
def test_unknown_shapes_under_tf_function(spec, impl):
    rng = np.random.default_rng(4)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32),
                                  tf.TensorSpec([None, 5], tf.float32)])
    def forward_and_grad(features, rois):
        with tf.GradientTape() as tape:
            tape.watch(features)
            out = spec.op(features, rois, impl=impl)
        return out, tape.gradient(out, features, output_gradients=tf.ones_like(out))

    for shape in ((2, 9, 11), (1, 4, 13)):  # one trace, two sets of shapes, K = 0 too
        features, rois = rt.random_case(rng, spec, shape, np.float32)
        for batch in (rois, rois[:0]):
            out, grad = forward_and_grad(features, batch)
            rt.assert_close(out.numpy(), spec.reference(features, batch), np.float32)
            rt.assert_close(grad.numpy(), spec.reference_grad(features, batch,
                                                              np.ones_like(out.numpy())),
                            np.float32)
    assert forward_and_grad.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("spec", rt.ONE_PER_OP, ids=str)
def test_static_output_shape_in_graph(spec, impl):
    @tf.function(input_signature=[tf.TensorSpec([2, 9, 11, spec.channels], tf.float32),
                                  tf.TensorSpec([6, 5], tf.float32)])
    def f(features, rois):
        out = spec.op(features, rois, impl=impl)
        assert out.shape[0] == 6 and out.shape.is_fully_defined(), out.shape
        return out

    f.get_concrete_function()


@pytest.mark.parametrize("dtype", (tf.float16, tf.bfloat16), ids=lambda d: d.name)
@pytest.mark.parametrize("spec", rt.ONE_PER_OP, ids=str)
def test_reduced_precision_computes_in_float32(spec, impl, dtype):
    rng = np.random.default_rng(5)
    features, rois = rt.random_case(rng, spec, (2, 9, 11), np.float32)
    low = tf.cast(features, dtype)
    x = tf.Variable(low)
    with tf.GradientTape() as tape:
        out = spec.op(x, tf.constant(rois), impl=impl)
        loss = tf.reduce_sum(tf.cast(out, tf.float32))
    assert out.dtype == dtype
    expected = spec.reference(tf.cast(low, tf.float32).numpy(), rois)
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), expected, rtol=1e-2, atol=2e-2)
    grad = tape.gradient(loss, x)
    assert grad.dtype == dtype and np.any(tf.cast(grad, tf.float32).numpy())


# --------------------------------------------------------------------------------------------
# Invalid inputs: InvalidArgumentError saying what is wrong, eagerly and under tf.function
# (static shapes caught at trace time, unknown shapes at run time).

def _bad_inputs(spec):
    rng = np.random.default_rng(6)
    features = rng.standard_normal((2, 6, 7, spec.channels)).astype(np.float32)
    good = np.array([[0, 0, 0, 40, 40], [1, 10, 10, 60, 50]], np.float32)
    cases = {}
    for name, value, pattern in (
        ("batch_too_large", 2, "batch index"),
        ("batch_negative", -1, "batch index"),
        ("batch_not_integer", 0.5, "batch index"),
        ("batch_nan", np.nan, "finite"),
    ):
        rois = good.copy()
        rois[1, 0] = value
        cases[name] = (features, rois, pattern)
    for name, value in (("coordinate_nan", np.nan), ("coordinate_inf", np.inf)):
        rois = good.copy()
        rois[0, 3] = value
        cases[name] = (features, rois, "finite")
    cases["features_rank_3"] = (features[0], good, "rank")
    # The compiled kernels say "rois must have shape [K, 5] ..., got shape [5]".
    cases["rois_rank_1"] = (features, good[0], r"rank|shape \[K, 5\]")
    cases["rois_4_columns"] = (features, good[:, :4], "5")
    if spec.name.startswith("ps_roi_pool"):
        cases["channels_not_divisible"] = (features[..., 1:], good, "channel")
        cases["channels_not_k2_d"] = (np.concatenate([features] * 2, axis=-1), good,
                                      "channel")
    return cases


_SHAPE_CASES = ("features_rank_3", "rois_rank_1", "rois_4_columns", "channels_not_divisible",
                "channels_not_k2_d")


@pytest.mark.parametrize("mode", ("eager", "static_graph", "dynamic_graph"))
@pytest.mark.parametrize("spec", rt.ONE_PER_OP, ids=lambda s: s.name.split("(")[0])
def test_invalid_inputs_raise(spec, mode, impl):
    """Eagerly; under tf.function with the static shapes (shape problems are then caught while
    tracing, value problems at run time); and with unknown ranks (everything at run time, one
    trace for all cases)."""
    dynamic = tf.function(
        lambda f, r: spec.op(f, r, impl=impl),
        input_signature=[tf.TensorSpec(None, tf.float32), tf.TensorSpec(None, tf.float32)],
    )
    for case, (features, rois, pattern) in _bad_inputs(spec).items():
        if mode == "eager":
            call = functools.partial(spec.op, impl=impl)
        elif mode == "dynamic_graph":
            call = dynamic
        elif case in _SHAPE_CASES:
            call = tf.function(
                lambda f, r: spec.op(f, r, impl=impl),
                input_signature=[tf.TensorSpec(features.shape, tf.float32),
                                 tf.TensorSpec(rois.shape, tf.float32)],
            )
        else:
            continue  # same as dynamic_graph for value problems
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"(?i){pattern}"):
            call(tf.constant(features), tf.constant(rois)).numpy()


def test_impl_argument():
    features = tf.zeros([1, 4, 4, 3])
    rois = tf.constant([[0, 0, 0, 30, 30]], tf.float32)
    with pytest.raises(ValueError, match="impl"):
        ops.roi_pool(features, rois, impl="cuda")
    if ops.implementation() == "fallback":
        with pytest.raises(RuntimeError, match="compiled"):
            ops.roi_align(features, rois, impl="compiled")
    with ops.force_fallback():
        with pytest.raises(RuntimeError, match="not available"):
            ops.ps_roi_pool(tf.zeros([1, 4, 4, 4]), rois, 2, 1, impl="compiled")
        assert ops.roi_pool(features, rois, 2).shape == (1, 2, 2, 3)


def test_bad_static_arguments():
    features = tf.zeros([1, 4, 4, 3])
    rois = tf.constant([[0, 0, 0, 30, 30]], tf.float32)
    for kwargs in (dict(pool_size=0), dict(pool_size=(2, 2, 2)), dict(spatial_scale=0.0),
                   dict(pool_size=2.5)):
        with pytest.raises(ValueError):
            ops.roi_pool(features, rois, impl="fallback", **kwargs)
    with pytest.raises(TypeError, match="floating"):
        ops.roi_align(tf.zeros([1, 4, 4, 3], tf.int32), rois, impl="fallback")


def test_pool_size_int_or_pair():
    rng = np.random.default_rng(7)
    features = rng.standard_normal((1, 8, 8, 2)).astype(np.float32)
    rois = np.array([[0, 3, 5, 90, 100]], np.float32)
    for op in (ops.roi_pool, ops.roi_align):
        a = op(features, rois, 3, 1 / 16, impl="fallback")
        b = op(features, rois, (3, 3), 1 / 16, impl="fallback")
        assert a.shape == (1, 3, 3, 2)
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# --------------------------------------------------------------------------------------------
# Export: the fallbacks are stock TF ops, so a SavedModel loads without the op library.

def test_fallback_savedmodel_has_only_stock_ops(tmp_path):
    class Heads(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 18], tf.float32),
                                      tf.TensorSpec([None, 5], tf.float32)])
        def __call__(self, features, rois):
            with ops.force_fallback():
                return {
                    "pool": ops.roi_pool(features, rois, 2, 1 / 8),
                    "align": ops.roi_align(features, rois, 2, 1 / 8),
                    "ps": ops.ps_roi_pool(features, rois, 3, 2, 1 / 8),
                }

    rng = np.random.default_rng(8)
    features = tf.constant(rng.standard_normal((1, 6, 7, 18)), tf.float32)
    rois = tf.constant([[0, 2, 3, 40, 30], [0, -5, 10, 100, 70]], tf.float32)
    module = Heads()
    expected = module(features, rois)
    path = os.path.join(tmp_path, "heads")
    tf.saved_model.save(
        module, path, options=tf.saved_model.SaveOptions(experimental_custom_gradients=False)
    )
    loaded = tf.saved_model.load(path)
    got = loaded(features, rois)
    for key in expected:
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=1e-6)

    graph = loaded.__call__.get_concrete_function(
        tf.TensorSpec([None, None, None, 18], tf.float32), tf.TensorSpec([None, 5], tf.float32)
    ).graph
    op_types = {node.type for node in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        op_types |= {node.op for node in function.node_def}
    unknown = {t for t in op_types if not hasattr(tf.raw_ops, t)}
    assert not unknown, f"non-stock ops in the exported graph: {unknown}"
    assert not any(t in ("PyFunc", "EagerPyFunc", "PyFuncStateless") for t in op_types)
