"""Argument parsing, input validation and compiled/fallback dispatch shared by the RoI ops.

Static problems (a rank or a column count known at trace time) raise at once; the rest become
``tf.debugging.Assert`` ops that the fallbacks wire in front of every computation with control
dependencies, so a bad input always fails with a readable ``tf.errors.InvalidArgumentError``
(never an out-of-bounds gather), both eagerly and inside ``tf.function``. The compiled kernels
check the same things in C++, so only the static checks run before them.
"""

import numbers

import numpy as np
import tensorflow as tf

from rcnn_zoo.ops import _loader

_IMPLS = (None, "compiled", "fallback")


def invalid_argument(message):
    """An ``InvalidArgumentError`` raised from Python (static checks), like the runtime ones."""
    return tf.errors.InvalidArgumentError(None, None, message)


def positive_int(value, name, op_name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{op_name}: {name} must be a positive integer, got {value!r}")
    return int(value)


def pair(value, name, op_name):
    """``7`` or ``(7, 7)`` → ``(7, 7)`` of python ints."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        values = tuple(value)
    except TypeError:
        values = ()
    if len(values) != 2:
        raise ValueError(f"{op_name}: {name} must be an int or a pair of ints, got {value!r}")
    return tuple(positive_int(v, name, op_name) for v in values)


def scale(value, op_name):
    """``spatial_scale`` as a python float (both implementations take it in the features' dtype,
    so float64 calls use the exact value)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{op_name}: spatial_scale must be a number, got {value!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{op_name}: spatial_scale must be positive and finite, got {value!r}")
    return value


def select_module(impl, op_name):
    """The compiled op module to call, or None for the pure-TF fallback."""
    if impl not in _IMPLS:
        raise ValueError(f'{op_name}: impl must be None, "compiled" or "fallback", got {impl!r}')
    if impl == "fallback":
        return None
    module = _loader.compiled_module()
    if impl == "compiled" and module is None:
        raise RuntimeError(
            f'{op_name}(impl="compiled"): the compiled RoI ops are not available because '
            f"{_loader.fallback_reason()}. Use impl=None or impl=\"fallback\" for the pure-"
            "TensorFlow implementation."
        )
    return module


def prepare(features, rois, op_name):
    """Tensors in the compute dtype: ``(features, rois, output_dtype)``.

    float16/bfloat16 features are computed in float32 (cast back by the caller); rois take the
    compute dtype. Also runs the static rank/column checks.
    """
    features = tf.convert_to_tensor(features)
    rois = tf.convert_to_tensor(rois)
    dtype = features.dtype
    if not dtype.is_floating:
        raise TypeError(f"{op_name}: features must be a floating-point tensor, got {dtype.name}")
    compute = tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype
    if dtype != compute:
        features = tf.cast(features, compute)
    if not (rois.dtype.is_floating or rois.dtype.is_integer):
        raise TypeError(f"{op_name}: rois must be a numeric tensor, got {rois.dtype.name}")
    if rois.dtype != compute:
        rois = tf.cast(rois, compute)
    static_checks(features, rois, op_name)
    return features, rois, dtype


def static_checks(features, rois, op_name):
    rank = features.shape.rank
    if rank is not None and rank != 4:
        raise invalid_argument(
            f"{op_name}: features must have rank 4 [N, H, W, C] (channels-last), "
            f"got rank {rank} (shape {features.shape})"
        )
    rank = rois.shape.rank
    if rank is not None and rank != 2:
        raise invalid_argument(
            f"{op_name}: rois must have rank 2 [K, 5], got rank {rank} (shape {rois.shape})"
        )
    if rank == 2 and rois.shape[1] is not None and rois.shape[1] != 5:
        raise invalid_argument(
            f"{op_name}: rois must have 5 columns (batch_index, x1, y1, x2, y2), "
            f"got {rois.shape[1]} (shape {rois.shape})"
        )


def static_channel_check(features, group_size, output_dim, op_name):
    """ps_roi_pool: ``C == group_size² · output_dim`` when C is known at trace time."""
    channels = features.shape[-1] if features.shape.rank == 4 else None
    if channels is None:
        return
    message = channel_message(group_size, output_dim, op_name)
    if channels % (group_size * group_size) != 0:
        raise invalid_argument(f"{message}; got C={channels}, which is not divisible by "
                               f"{group_size * group_size}")
    if channels != group_size * group_size * output_dim:
        raise invalid_argument(f"{message}; got C={channels}")


def channel_message(group_size, output_dim, op_name):
    k2 = group_size * group_size
    return (
        f"{op_name}: features channels not divisible as required: C must equal "
        f"group_size² · output_dim = {group_size}² · {output_dim} = {k2 * output_dim}"
    )


def runtime_checks(features, rois, op_name, group_size=None, output_dim=None):
    """``(features, rois)`` that only exist once every check passed (for the fallbacks).

    Each check asserts only once the earlier ones hold, so the first problem is the one
    reported. Nothing here can fail on a bad shape before its assertion does: shapes are read
    padded, and the tensors handed on pass through a ``tf.cond`` that substitutes empty
    stand-ins when a shape is wrong. (Grappler folds ops with the shapes of the actual call, so
    an ``rois[:, 0]`` on a rank-1 tensor would otherwise fail first, with a cryptic message.)
    """
    dtype = rois.dtype

    def padded(shape, n):
        return tf.concat([shape, tf.zeros([n], tf.int32)], 0)[:n]

    features_shape, rois_shape = tf.shape(features), tf.shape(rois)
    features_rank, rois_rank = tf.size(features_shape), tf.size(rois_shape)
    features_shape, rois_shape = padded(features_shape, 4), padded(rois_shape, 2)
    ok = tf.constant(True)
    checks = []

    def check(condition, data):
        nonlocal ok
        checks.append(tf.debugging.Assert(~ok | condition, data, summarize=8))
        ok = ok & condition

    check(tf.equal(features_rank, 4),
          [f"{op_name}: features must have rank 4 [N, H, W, C] (channels-last); got rank",
           features_rank])
    check(tf.equal(rois_rank, 2),
          [f"{op_name}: rois must have rank 2 [K, 5]; got rank", rois_rank])
    check(tf.equal(rois_shape[1], 5),
          [f"{op_name}: rois must have 5 columns (batch_index, x1, y1, x2, y2); got shape",
           rois_shape])
    if group_size is not None:
        channels = features_shape[3]
        check(tf.equal(channels, group_size * group_size * output_dim),
              [f"{op_name}: features channels not divisible as required: C must equal "
               "group_size² · output_dim; got C =", channels, "group_size =", group_size,
               "output_dim =", output_dim])
    shapes_ok = ok
    table = tf.cond(shapes_ok, lambda: tf.reshape(rois, [-1, 5]), lambda: tf.zeros([0, 5], dtype))
    row = tf.range(tf.shape(table)[0])
    finite = tf.reduce_all(tf.math.is_finite(table), axis=1)
    check(tf.reduce_all(finite),
          [f"{op_name}: non-finite value (NaN or inf) in rois: every coordinate and batch index "
           "must be finite; first bad RoI row:", tf.boolean_mask(row, ~finite)[:1]])
    batch_index = table[:, 0]
    in_range = (tf.equal(batch_index, tf.floor(batch_index)) & (batch_index >= 0)
                & (batch_index < tf.cast(features_shape[0], dtype)))
    check(tf.reduce_all(in_range),
          [f"{op_name}: rois batch index out of range: column 0 must be an integer in [0, N) "
           "with N = features.shape[0] =", features_shape[0], "; first bad RoI (row, value):",
           tf.boolean_mask(row, ~in_range)[:1], tf.boolean_mask(batch_index, ~in_range)[:1]])

    with tf.control_dependencies(checks):
        # The fallbacks are traced with unknown ranks (one trace per dtype); from here on the
        # shapes are [N, H, W, C] and [K, 5].
        features = tf.cond(shapes_ok, lambda: tf.identity(features),
                           lambda: tf.zeros([0, 0, 0, 0], features.dtype))
        rois = tf.identity(table)
    features.set_shape([None, None, None, None])
    rois.set_shape([None, 5])
    return features, rois


def set_output_shape(output, features, rois, height, width, channels=None):
    """Restore the static shape ``[K, height, width, C]`` the traced fallback cannot know."""
    if channels is None and features.shape.rank == 4:
        channels = features.shape[3]
    num_rois = rois.shape[0] if rois.shape.rank == 2 else None
    output.set_shape([num_rois, height, width, channels])
    return output


def round_half_away(x):
    """C ``round()``: halves go away from zero (``tf.round`` rounds half to even).

    ``floor(|x| + 0.5)`` would round 0.49999997f up in float32; comparing the exact fraction
    ``|x| - floor(|x|)`` with 0.5 does not.
    """
    magnitude = tf.abs(x)
    whole = tf.floor(magnitude)
    whole = whole + tf.cast(magnitude - whole >= 0.5, x.dtype)
    return tf.where(x < 0, -whole, whole)


def true_divide(x, y):
    """``x / y`` rounded like C, also inside ``tf.function``.

    Grappler's constant folding rewrites ``x / constant`` as ``x * (1 / constant)``, which is
    off by one ulp now and then (``7 · (9 · (1/7)) = 9.000001``), enough to move a ``ceil``ed bin
    edge. ``DivNoNan`` is left alone, and the denominators here are never 0.
    """
    return tf.math.divide_no_nan(x, tf.cast(y, x.dtype))
