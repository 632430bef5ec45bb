"""The one tester the RoI op tests share.

An ``OpSpec`` binds an op and one configuration (pool size, scale, ...) to its NumPy loop
reference and reference gradient. The checks run the op for an implementation (``"fallback"``
or ``"compiled"``) and compare: forward against the reference, the vector-Jacobian product
against the reference gradient, and in float64 the autodiff Jacobian against finite differences.
"""

import dataclasses
import functools
from typing import Callable

import numpy as np
import pytest
import tensorflow as tf

import rcnn_zoo.ops as ops

from . import references as ref

IMPLEMENTATIONS = ("fallback", "compiled")
DTYPES = (np.float32, np.float64)
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-10}


def require(impl):
    """Skip a compiled-kernel test when the library is not loaded (not built yet, or forced)."""
    if impl == "compiled" and ops.implementation() != "compiled":
        pytest.skip(f"compiled RoI ops are not loaded: {ops.fallback_reason()}")


@dataclasses.dataclass(frozen=True)
class OpSpec:
    name: str
    op: Callable  # op(features, rois, impl=...) with the configuration bound
    reference: Callable  # reference(features, rois) -> [K, ph, pw, C]
    reference_grad: Callable  # reference_grad(features, rois, dy) -> like features
    channels: int  # channel count this configuration takes
    spatial_scale: float

    def __str__(self):
        return self.name


def roi_pool_spec(pool_size, spatial_scale, channels=3):
    return OpSpec(
        f"roi_pool{pool_size}@{spatial_scale:g}",
        functools.partial(ops.roi_pool, pool_size=pool_size, spatial_scale=spatial_scale),
        functools.partial(ref.roi_pool, pool_size=pool_size, spatial_scale=spatial_scale),
        lambda f, r, dy: ref.roi_pool_grad(f, r, pool_size, spatial_scale, dy),
        channels,
        spatial_scale,
    )


def roi_align_spec(pool_size, spatial_scale, sampling_ratio, aligned, channels=3):
    kwargs = dict(pool_size=pool_size, spatial_scale=spatial_scale,
                  sampling_ratio=sampling_ratio, aligned=aligned)
    return OpSpec(
        f"roi_align{pool_size}@{spatial_scale:g},sr={sampling_ratio},aligned={aligned}",
        functools.partial(ops.roi_align, **kwargs),
        functools.partial(ref.roi_align, **kwargs),
        lambda f, r, dy: ref.roi_align_grad(f, r, dy=dy, **kwargs),
        channels,
        spatial_scale,
    )


def ps_roi_pool_spec(group_size, output_dim, spatial_scale):
    kwargs = dict(group_size=group_size, output_dim=output_dim, spatial_scale=spatial_scale)
    return OpSpec(
        f"ps_roi_pool(k={group_size},D={output_dim})@{spatial_scale:g}",
        functools.partial(ops.ps_roi_pool, **kwargs),
        functools.partial(ref.ps_roi_pool, **kwargs),
        lambda f, r, dy: ref.ps_roi_pool_grad(f, r, dy=dy, **kwargs),
        group_size * group_size * output_dim,
        spatial_scale,
    )


# A few configurations per op: each one is traced once per dtype, so keep the list short.
SPECS = (
    roi_pool_spec((7, 7), 1.0 / 16),
    roi_pool_spec((2, 3), 0.25),
    roi_align_spec((7, 7), 1.0 / 16, -1, False),
    roi_align_spec((3, 2), 0.125, 2, True),
    roi_align_spec((2, 2), 0.5, 0, True),
    ps_roi_pool_spec(3, 2, 1.0 / 16),
    ps_roi_pool_spec(2, 3, 0.125),
)
# One configuration per op, for the checks that do not depend on it.
ONE_PER_OP = (SPECS[0], SPECS[2], SPECS[5])


def random_rois(rng, num_images, image_height, image_width, dtype, count=24):
    """RoIs ``[K, 5]`` in image pixels covering the interesting cases, over all images.

    Inside the image, straddling an edge, wholly outside, tiny (including x1 == x2 and a
    corner exactly on a half pixel), huge (several times the image) and inverted boxes.
    """
    h, w = float(image_height), float(image_width)
    rows = []
    for _ in range(count):  # inside, random sizes
        x1, x2 = np.sort(rng.uniform(0, w, 2))
        y1, y2 = np.sort(rng.uniform(0, h, 2))
        rows.append((x1, y1, x2, y2))
    for _ in range(count // 3):  # straddling
        x1, x2 = np.sort(rng.uniform(-0.5 * w, 1.5 * w, 2))
        y1, y2 = np.sort(rng.uniform(-0.5 * h, 1.5 * h, 2))
        rows.append((x1, y1, x2, y2))
    rows += [
        (-3 * w, -3 * h, -2 * w, -2 * h),  # wholly outside, above left
        (1.5 * w, 0.2 * h, 2.5 * w, 0.8 * h),  # wholly outside, right
        (0.3 * w, 0.4 * h, 0.3 * w, 0.4 * h),  # a point
        (0.5 * w, 0.5 * h, 0.5 * w + 1.5, 0.5 * h + 0.5),  # tiny
        (8.0, 24.0, 8.5, 40.5),  # half-pixel corners
        (-2 * w, -1.5 * h, 3 * w, 2.5 * h),  # huge
        (0.0, 0.0, w - 1, h - 1),  # the whole image
        (0.7 * w, 0.6 * h, 0.2 * w, 0.3 * h),  # inverted
    ]
    rows = np.asarray(rows)
    batch = rng.integers(0, num_images, len(rows))
    batch[:num_images] = np.arange(num_images)  # every image at least once
    return np.concatenate([batch[:, None], rows], axis=1).astype(dtype)


def random_case(rng, spec, shape, dtype):
    """Features of ``shape[:3] + (spec.channels,)`` and RoIs over the matching image."""
    n, h, w = shape
    features = rng.standard_normal((n, h, w, spec.channels)).astype(dtype)
    rois = random_rois(rng, n, h / spec.spatial_scale, w / spec.spatial_scale, dtype)
    return features, rois


def run(spec, impl, features, rois):
    return spec.op(tf.constant(features), tf.constant(rois), impl=impl)


def vjp(spec, impl, features, rois, dy):
    """Features gradient of ``sum(op · dy)``."""
    x = tf.constant(features)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = spec.op(x, tf.constant(rois), impl=impl)
    return tape.gradient(y, x, output_gradients=tf.constant(dy)).numpy()


def assert_close(actual, expected, dtype, what=""):
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=what)


def check_against_reference(spec, impl, dtype, shape, seed):
    """Forward and features gradient (for a random upstream gradient) equal the reference on
    ``random_case(seed)``."""
    features, rois = random_case(np.random.default_rng(seed), spec, shape, dtype)
    expected, dy, expected_grad = _reference(spec, dtype, shape, seed)
    got = run(spec, impl, features, rois)
    assert got.dtype == tf.as_dtype(dtype) and got.shape == expected.shape
    assert_close(got.numpy(), expected, dtype, f"{spec} [{impl}] forward")
    assert_close(vjp(spec, impl, features, rois, dy), expected_grad, dtype,
                 f"{spec} [{impl}] gradient")


@functools.lru_cache(maxsize=None)
def _reference(spec, dtype, shape, seed):
    """Reference output, upstream gradient and reference gradient, shared by both impls."""
    rng = np.random.default_rng(seed)
    features, rois = random_case(rng, spec, shape, dtype)
    expected = spec.reference(features, rois)
    dy = rng.standard_normal(expected.shape).astype(dtype)
    return expected, dy, spec.reference_grad(features, rois, dy)


def check_numeric_gradient(spec, impl, features, rois):
    """float64 autodiff Jacobian vs central differences (inputs must have no near-ties)."""
    rois = tf.constant(rois)
    theoretical, numerical = tf.test.compute_gradient(
        lambda x: spec.op(x, rois, impl=impl), [tf.constant(features)]
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6, atol=1e-6)
    assert np.abs(theoretical[0]).sum() > 0  # the check covered something
