"""Position-sensitive RoI pooling (R-FCN, Dai et al. 2016), as in the original
``PSROIPoolingLayer``.

For RoI ``(b, x1, y1, x2, y2)``: ``x1' = round(x1)·s``, ``y1' = round(y1)·s``,
``x2' = (round(x2) + 1)·s``, ``y2' = (round(y2) + 1)·s`` (C ``round``), ``roi_w = max(x2' − x1',
0.1)`` (likewise ``roi_h``). Bin ``(i, j)`` of a ``k × k`` grid covers rows
``floor(i·roi_h/k + y1') … ceil((i+1)·roi_h/k + y1') − 1`` clipped to ``[0, H]`` (likewise
columns), and output channel ``d`` of that bin is the average of input channel
``(d·k + i)·k + j`` over the bin (0 if the bin is empty). A NaN or ±inf feature reaches only
the bins that hold it (as a direct sum: NaN for a NaN or both infinities, else ±inf).

The pure-TF fallback reads every bin sum from a summed-area table (four gathers per output), so
its cost does not depend on RoI sizes. The table is accumulated in float64, which keeps float32
results within float32 rounding of a direct sum even on large maps; autodiff through the
cumulative sums spreads ``dy / area`` over each bin.
"""

import functools

import tensorflow as tf

from rcnn_zoo.ops import _validation

_OP = "ps_roi_pool"


def ps_roi_pool(features, rois, group_size=7, output_dim=21, spatial_scale=1.0 / 16, impl=None):
    """Position-sensitive average pooling of every RoI into a ``group_size²`` grid.

    Args:
        features: ``[N, H, W, group_size² · output_dim]`` float tensor (score maps; float16 and
            bfloat16 are computed in float32).
        rois: ``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.
        group_size: ``k``, bins per side.
        output_dim: ``D``, output channels (classes + 1, or 4·(classes + 1) for box regression).
        spatial_scale: feature-map pixels per input pixel.
        impl: ``None`` (compiled kernel when loaded, else pure TF), ``"compiled"`` or
            ``"fallback"``.

    Returns:
        ``[K, k, k, D]`` in the dtype of ``features``.
    """
    group_size = _validation.positive_int(group_size, "group_size", _OP)
    output_dim = _validation.positive_int(output_dim, "output_dim", _OP)
    scale = _validation.scale(spatial_scale, _OP)
    module = _validation.select_module(impl, _OP)
    features, rois, dtype = _validation.prepare(features, rois, _OP)
    _validation.static_channel_check(features, group_size, output_dim, _OP)
    if module is not None:
        from rcnn_zoo.ops import _compiled  # noqa: PLC0415  (may not exist before the build)

        output = _compiled.compiled_ps_roi_pool(
            module, features, rois, group_size, output_dim, scale
        )
    else:
        output = _fallback(features.dtype)(features, rois, group_size, output_dim, scale)
        _validation.set_output_shape(
            output, features, rois, group_size, group_size, output_dim
        )
    return tf.cast(output, dtype) if output.dtype != dtype else output


def _bins(start, length, group_size, size):
    """Clipped ``[lo, hi)`` of every bin along one axis: two ``[K, k]`` int32 tensors."""
    dtype = start.dtype
    bin_size = _validation.true_divide(length, group_size)
    index = tf.cast(tf.range(group_size), dtype)[None, :]
    lo = tf.floor(index * bin_size[:, None] + start[:, None])
    hi = tf.math.ceil((index + 1) * bin_size[:, None] + start[:, None])
    size_f = tf.cast(size, dtype)
    lo = tf.cast(tf.clip_by_value(lo, 0, size_f), tf.int32)
    hi = tf.cast(tf.clip_by_value(hi, 0, size_f), tf.int32)
    return lo, hi


def _forward(features, rois, group_size, output_dim, scale):
    dtype = features.dtype
    k = group_size
    shape = tf.shape(features, out_type=tf.int64)
    height, width, channels = shape[1], shape[2], shape[3]

    s = scale
    # Everything stays in floating point until the bin edges are clipped to the map, so any
    # finite coordinate works.
    x1, y1, x2, y2 = tf.unstack(_validation.round_half_away(rois[:, 1:]), axis=1)
    x1, y1 = x1 * s, y1 * s
    x2, y2 = (x2 + 1) * s, (y2 + 1) * s
    tenth = tf.constant(0.1, dtype)
    hs, he = _bins(y1, tf.maximum(y2 - y1, tenth), k, tf.cast(height, tf.int32))
    ws, we = _bins(x1, tf.maximum(x2 - x1, tenth), k, tf.cast(width, tf.int32))

    batch = tf.cast(rois[:, 0], tf.int64)[:, None, None, None]
    hs, he = (tf.cast(t, tf.int64)[:, :, None, None] for t in (hs, he))  # [K, k, 1, 1]
    ws, we = (tf.cast(t, tf.int64)[:, None, :, None] for t in (ws, we))  # [K, 1, k, 1]
    k = tf.cast(k, tf.int64)
    d = tf.range(tf.cast(output_dim, tf.int64))
    i = tf.range(k)
    channel = (d[None, None, :] * k + i[:, None, None]) * k + i[None, :, None]  # [k, k, D]

    def bin_sums(values):
        """``[K, k, k, D]`` float64 sum of ``values`` over every bin, from a summed-area table
        with a zero first row and column (``[N, H+1, W+1, C]``)."""
        table = tf.cumsum(tf.cumsum(tf.cast(values, tf.float64), axis=1), axis=2)
        table = tf.reshape(tf.pad(table, [[0, 0], [1, 0], [1, 0], [0, 0]]), [-1])

        def corner(h, w):
            return tf.gather(
                table, ((batch * (height + 1) + h) * (width + 1) + w) * channels + channel)

        return corner(he, we) - corner(hs, we) - corner(he, ws) + corner(hs, ws)

    def nonfinite_bins():
        # One NaN or inf in a summed-area table spoils every corner after it (inf - inf), so
        # non-finite cells are summed as 0 and counted apart. Adding NaN / ±inf to the finite
        # sum then gives what a direct sum gives: NaN if the bin holds a NaN or both
        # infinities, else ±inf if it holds one (0 for the other bins).
        nan = bin_sums(tf.math.is_nan(features)) > 0
        pos = bin_sums(tf.equal(features, float("inf"))) > 0
        neg = bin_sums(tf.equal(features, float("-inf"))) > 0
        inf = tf.constant(float("inf"), tf.float64)
        special = tf.where(neg, -inf, tf.zeros((), tf.float64))
        special = tf.where(pos, inf, special)
        return tf.where(nan | (pos & neg), tf.constant(float("nan"), tf.float64), special)

    # The gradient flows through the finite sum only: dy / area to every cell of the bin,
    # whatever the values (as from the kernel).
    total = bin_sums(_finite_part(features))
    special = tf.cond(tf.reduce_all(tf.math.is_finite(features)),
                      lambda: tf.zeros_like(total), nonfinite_bins)
    total = total + tf.stop_gradient(special)
    area = tf.cast(tf.maximum(he - hs, 0) * tf.maximum(we - ws, 0), tf.float64)
    output = tf.where(area > 0, total / tf.maximum(area, 1.0), tf.zeros((), tf.float64))
    return tf.cast(output, dtype)


@tf.custom_gradient
def _finite_part(features):
    """Non-finite values replaced by 0, with the identity gradient: every cell of a bin gets
    ``dy / area`` whatever its value, as from the kernel."""
    finite = tf.where(tf.math.is_finite(features), features, tf.zeros((), features.dtype))
    return finite, lambda dy: dy


@functools.lru_cache(maxsize=None)
def _fallback(dtype):
    """The fallback for one dtype: ``f(features, rois, group_size, output_dim, spatial_scale)``,
    traced once with every shape and configuration a runtime value."""

    def run(features, rois, group_size, output_dim, scale):
        features, rois = _validation.runtime_checks(
            features, rois, _OP, group_size=group_size, output_dim=output_dim
        )
        return _forward(features, tf.stop_gradient(rois), group_size, output_dim, scale)

    spec = [tf.TensorSpec(None, dtype), tf.TensorSpec(None, dtype), tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32), tf.TensorSpec([], dtype)]
    return tf.function(run, input_signature=spec, autograph=False)
