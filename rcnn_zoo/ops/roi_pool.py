"""RoI max pooling (Fast R-CNN, Girshick 2015), as in py-faster-rcnn's ``ROIPoolingLayer``.

For RoI ``(b, x1, y1, x2, y2)``: ``start = round(coord · spatial_scale)`` (C ``round``, halves
away from zero) for each corner, ``roi_h = max(y2' − y1' + 1, 1)`` (likewise ``roi_w``), and bin
``(i, j)`` covers rows ``floor(i · roi_h/ph) … ceil((i+1) · roi_h/ph) − 1`` shifted by ``y1'``
and clipped to ``[0, H)`` (likewise columns). The output is the maximum over the bin, 0 for an
empty bin; the gradient goes to the first maximum in row-major order. A bin holding a NaN
yields NaN (gradient to its first NaN); non-finite features reach only the bins that hold them.

The pure-TF fallback (stock ops only, so exported graphs run in stock TF Serving) never builds
a ``[K, H, W, C]`` tensor. The maximum is separable:

- columns: a sparse table along the width (level ``q`` = max over ``2^q`` columns, as many levels
  as the widest bin needs) gives the max of any column bin from two overlapping blocks, for every
  row a RoI spans;
- rows: a running max over the row offset inside each bin.

RoIs are sorted by the number of rows they span and processed in chunks whose largest tensor
stays under ``CHUNK_BUDGET``. The custom gradient recomputes the same with argmax tracking
(left block and earlier row win ties, which is the first maximum in row-major order) and adds
``dy`` there; the forward pass, which exported models run, tracks values only.
"""

import functools

import tensorflow as tf

from rcnn_zoo.ops import _validation

_OP = "roi_pool"

# Largest number of elements of a chunk's biggest tensor (8 MB in float32).
CHUNK_BUDGET = 1 << 21
MAX_CHUNK = 512
# Integer coordinates are clipped here before any int32 arithmetic (a feature map is never this
# large, and clipping does not change which bins are empty).
_INT_LIMIT = float(1 << 29)


def roi_pool(features, rois, pool_size=(7, 7), spatial_scale=1.0 / 16, impl=None):
    """Max-pool every RoI into a ``pool_size`` grid.

    Args:
        features: ``[N, H, W, C]`` float tensor (float16/bfloat16 are computed in float32).
        rois: ``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.
        pool_size: int or ``(ph, pw)``.
        spatial_scale: feature-map pixels per input pixel (1/16 for a stride-16 map).
        impl: ``None`` (compiled kernel when loaded, else pure TF), ``"compiled"`` or
            ``"fallback"``.

    Returns:
        ``[K, ph, pw, C]`` in the dtype of ``features``.
    """
    ph, pw = _validation.pair(pool_size, "pool_size", _OP)
    scale = _validation.scale(spatial_scale, _OP)
    module = _validation.select_module(impl, _OP)
    features, rois, dtype = _validation.prepare(features, rois, _OP)
    if module is not None:
        from rcnn_zoo.ops import _compiled  # noqa: PLC0415  (may not exist before the build)

        output = _compiled.compiled_roi_pool(module, features, rois, (ph, pw), scale)
    else:
        output = _fallback(features.dtype)(features, rois, (ph, pw), scale)
        _validation.set_output_shape(output, features, rois, ph, pw)
    return tf.cast(output, dtype) if output.dtype != dtype else output


# ---------------------------------------------------------------------------------------------
# Helpers shared with roi_align.


def chunk_loop(total, padded_dims, unit, body, state):
    """Run ``body(start, n, *state) -> state`` over consecutive chunks covering ``[0, total)``.

    ``padded_dims`` ``[total, D]`` int32 (each ≥ 1) are the per-RoI sizes a chunk pads to: a chunk
    of ``m`` RoIs costs ``m · Π max(dims) · unit`` elements. Each chunk takes the most RoIs (up to
    ``MAX_CHUNK``, at least one) that fit ``CHUNK_BUDGET``.
    """
    unit = tf.cast(unit, tf.int64)

    def cond(start, *_):
        return start < total

    def step(start, *loop_state):
        n0 = tf.minimum(total - start, MAX_CHUNK)
        dims = padded_dims[start : start + n0]  # [n0, D]
        candidates = tf.range(1, n0 + 1)
        prefix = tf.range(n0)[None, :] < candidates[:, None]  # [n0, n0]: row m-1 = first m
        prefix_max = tf.reduce_max(tf.where(prefix[:, :, None], dims[None, :, :], 0), axis=1)
        cost = (
            tf.cast(candidates, tf.int64)
            * tf.reduce_prod(tf.cast(prefix_max, tf.int64), axis=1)
            * unit
        )
        n = tf.maximum(tf.reduce_sum(tf.cast(cost <= CHUNK_BUDGET, tf.int32)), 1)
        return (start + n, *body(start, n, *loop_state))

    result = tf.while_loop(cond, step, (tf.constant(0), *state), parallel_iterations=2)
    return result[1:]


def empty_outputs_array(dtype, shape):
    """A TensorArray for per-chunk outputs, holding an empty first element so that ``concat``
    also works when there are no RoIs."""
    array = tf.TensorArray(dtype, size=0, dynamic_size=True, infer_shape=False)
    return array.write(0, tf.zeros(shape, dtype))


# ---------------------------------------------------------------------------------------------
# Pure-TF fallback.


def _bins(start, end, bins, size, dtype):
    """Clipped ``[lo, hi)`` of every bin along one axis: two ``[K, bins]`` int32 tensors."""
    length = tf.maximum(end - start + 1, 1)
    bin_size = _validation.true_divide(tf.cast(length, dtype), bins)
    index = tf.cast(tf.range(bins), dtype)
    lo = tf.floor(index[None, :] * bin_size[:, None])
    hi = tf.math.ceil((index[None, :] + 1) * bin_size[:, None])
    lo = tf.cast(tf.minimum(lo, 2 * _INT_LIMIT), tf.int32) + start[:, None]
    hi = tf.cast(tf.minimum(hi, 2 * _INT_LIMIT), tf.int32) + start[:, None]
    return tf.clip_by_value(lo, 0, size), tf.clip_by_value(hi, 0, size)


def _beats(a, b):
    """``a`` replaces the running maximum ``b``: greater, or a NaN over a number (no NaN beats
    another). ``tf.maximum`` propagates NaN, so this keeps the argmax on the first NaN of a bin,
    as the kernel does (and ``np.argmax``)."""
    return (a > b) | (tf.math.is_nan(a) & ~tf.math.is_nan(b))


def _floor_log2(x):
    """``floor(log2(x))`` of int32 ``x >= 1``, exactly."""
    powers = tf.constant([1 << s for s in range(1, 31)], tf.int32)
    return tf.reduce_sum(tf.cast(x[..., None] >= powers, tf.int32), axis=-1)


def _column_tables(features, levels, with_argmax):
    """Sparse table along columns: level ``q`` holds the max of columns ``[w, w + 2^q)``.

    Returns ``[levels · N·H·W, C]`` values and, with ``with_argmax``, the column of the first
    maximum (same shape, int32). Blocks running past the right edge are clamped; queries never
    read them.
    """
    shape = tf.shape(features)
    width = shape[2]
    columns = tf.range(width)
    values = tf.TensorArray(features.dtype, size=levels, infer_shape=False).write(0, features)
    args = tf.TensorArray(tf.int32, size=levels if with_argmax else 0, infer_shape=False)
    if with_argmax:
        args = args.write(0, tf.broadcast_to(columns[None, None, :, None], shape))

    def step(q, values, args):
        shift = tf.bitwise.left_shift(1, q - 1)
        right = tf.minimum(columns + shift, width - 1)
        previous = values.read(q - 1)
        shifted = tf.gather(previous, right, axis=2)
        if with_argmax:
            previous_arg = args.read(q - 1)
            take_right = _beats(shifted, previous)  # ties keep the left (earlier) column
            args = args.write(
                q, tf.where(take_right, tf.gather(previous_arg, right, axis=2), previous_arg)
            )
        return q + 1, values.write(q, tf.maximum(previous, shifted)), args

    _, values, args = tf.while_loop(lambda q, *_: q < levels, step, (tf.constant(1), values, args))
    flat = tf.stack([-1, shape[3]])
    values = tf.reshape(values.stack(), flat)
    return values, (tf.reshape(args.stack(), flat) if with_argmax else None)


def _chunk_max(tables, table_args, plane, height, width, batch, hs, he, ws, we):
    """Max pooling of one chunk of RoIs.

    Returns ``output [n, ph, pw, C]`` and, when ``table_args`` is given, the argmax position
    ``(b·H + h)·W + w`` (first maximum in row-major order).
    """
    bin_h = tf.maximum(he - hs, 0)
    bin_w = tf.maximum(we - ws, 0)
    top = hs[:, 0]
    rows_spanned = tf.maximum(tf.reduce_max(he[:, -1] - top), 1)
    rows = tf.minimum(top[:, None] + tf.range(rows_spanned)[None, :], height - 1)  # [n, rows]

    # Columns: the max of a bin is the max of two (overlapping) power-of-two blocks.
    level = _floor_log2(tf.maximum(bin_w, 1))  # [n, pw]
    left = tf.minimum(ws, width - 1)
    right = tf.clip_by_value(we - tf.bitwise.left_shift(1, level), 0, width - 1)
    base = (level * plane)[:, None, :] + ((batch[:, None] * height + rows) * width)[:, :, None]
    index_left = base + left[:, None, :]  # [n, rows, pw]
    index_right = base + right[:, None, :]
    value_left = tf.gather(tables, index_left)  # [n, rows, pw, C]
    value_right = tf.gather(tables, index_right)
    column_max = tf.maximum(value_left, value_right)
    if table_args is not None:
        take_right = _beats(value_right, value_left)  # ties: the left block holds the first max
        column_arg = tf.where(
            take_right, tf.gather(table_args, index_right), tf.gather(table_args, index_left)
        )

    # Rows: running max over the row offset t of each bin. Offsets past a bin's end re-read its
    # last row, which cannot change the maximum (or, strictly compared, the argmax).
    relative_top = hs - top[:, None]
    last = tf.maximum(bin_h - 1, 0)

    def rows_at(t):
        return tf.minimum(relative_top + tf.minimum(t, last), rows_spanned - 1)  # [n, ph]

    best = tf.gather(column_max, rows_at(0), batch_dims=1)  # [n, ph, pw, C]
    loop_vars = (tf.constant(1), best)
    if table_args is not None:
        row = tf.broadcast_to(rows_at(0)[:, :, None, None], tf.shape(best))
        loop_vars += (row, tf.gather(column_arg, rows_at(0), batch_dims=1))

    def row_step(t, best, *args):
        index = rows_at(t)
        values = tf.gather(column_max, index, batch_dims=1)
        if table_args is None:
            return t + 1, tf.maximum(best, values)
        row, col = args
        better = _beats(values, best)
        return (
            t + 1,
            tf.where(better, values, best),
            tf.where(better, index[:, :, None, None], row),
            tf.where(better, tf.gather(column_arg, index, batch_dims=1), col),
        )

    result = tf.while_loop(lambda t, *_: t < tf.reduce_max(bin_h), row_step, loop_vars)
    nonempty = ((bin_h > 0)[:, :, None] & (bin_w > 0)[:, None, :])[..., None]
    output = tf.where(nonempty, result[1], tf.zeros((), result[1].dtype))
    if table_args is None:
        return output, tf.zeros([0], tf.int32)
    row, col = result[2:]
    position = (batch[:, None, None, None] * height + top[:, None, None, None] + row) * width + col
    return output, tf.where(nonempty, position, -1)


def _pool(features, rois, pool_size, scale, with_argmax):
    """``output [K, ph, pw, C]`` and, ``with_argmax``, positions ``(n·H + h)·W + w`` (-1 for an
    empty bin); without, an empty placeholder. ``pool_size`` ``[2]`` int32 and ``scale`` are
    tensors, so one trace serves every configuration."""
    dtype = features.dtype
    ph, pw = pool_size[0], pool_size[1]
    shape = tf.shape(features)
    height, width, channels = shape[1], shape[2], shape[3]
    num_rois = tf.shape(rois)[0]
    out_shape = tf.stack([num_rois, ph, pw, channels])

    def empty_map():
        positions = tf.fill(out_shape, -1) if with_argmax else tf.zeros([0], tf.int32)
        return tf.zeros(out_shape, dtype), positions

    def pool():
        batch = tf.cast(rois[:, 0], tf.int32)
        corners = _validation.round_half_away(rois[:, 1:] * scale)
        corners = tf.cast(tf.clip_by_value(corners, -_INT_LIMIT, _INT_LIMIT), tf.int32)
        hs, he = _bins(corners[:, 1], corners[:, 3], ph, height, dtype)
        ws, we = _bins(corners[:, 0], corners[:, 2], pw, width, dtype)
        widest = tf.reduce_max(tf.concat([tf.reshape(we - ws, [-1]), [1]], 0))
        tables, table_args = _column_tables(features, _floor_log2(widest) + 1, with_argmax)
        plane = tf.shape(features)[0] * height * width
        rows = tf.maximum(he[:, -1] - hs[:, 0], 1)
        order = tf.argsort(rows, stable=True)
        batch, hs, he, ws, we, rows = (tf.gather(t, order) for t in (batch, hs, he, ws, we, rows))

        def body(start, n, index, outputs, positions):
            part = slice(start, start + n)
            output, position = _chunk_max(
                tables, table_args, plane, height, width,
                batch[part], hs[part], he[part], ws[part], we[part],
            )
            outputs = outputs.write(index, output)
            if with_argmax:
                positions = positions.write(index, position)
            return index + 1, outputs, positions

        empty = tf.stack([0, ph, pw, channels])
        _, outputs, positions = chunk_loop(
            num_rois,
            rows[:, None],
            pw * channels,
            body,
            (tf.constant(1), empty_outputs_array(dtype, empty),
             empty_outputs_array(tf.int32, empty)),
        )
        inverse = tf.math.invert_permutation(order)
        output = tf.gather(outputs.concat(), inverse)
        if not with_argmax:
            return output, tf.zeros([0], tf.int32)
        return output, tf.gather(positions.concat(), inverse)

    return tf.cond((height > 0) & (width > 0), pool, empty_map)


@functools.lru_cache(maxsize=None)
def _fallback(dtype):
    """The fallback for one dtype: ``f(features, rois, pool_size, spatial_scale)``, traced once
    with every shape and configuration a runtime value."""

    def run(features, rois, pool_size, scale):
        features, rois = _validation.runtime_checks(features, rois, _OP)
        return _with_gradient(features, rois, pool_size, scale)

    spec = [tf.TensorSpec(None, dtype), tf.TensorSpec(None, dtype),
            tf.TensorSpec([2], tf.int32), tf.TensorSpec([], dtype)]
    return tf.function(run, input_signature=spec, autograph=False)


def _with_gradient(features, rois, pool_size, scale):
    @tf.custom_gradient
    def pool(features, rois):
        output, _ = _pool(features, rois, pool_size, scale, with_argmax=False)

        def grad(dy):
            # Recompute the argmax (the forward, which exported graphs run, tracks values only),
            # then add dy at it. Bincount with weights is a much faster scatter-add than
            # unsorted_segment_sum for scattered scalar indices.
            _, position = _pool(features, rois, pool_size, scale, with_argmax=True)
            channels = tf.shape(features)[3]
            ids = position * channels + tf.range(channels)
            weights = tf.where(position >= 0, dy, tf.zeros((), dy.dtype))
            ids = tf.where(position >= 0, ids, 0)
            size = tf.size(features)
            dx = tf.math.bincount(
                tf.reshape(ids, [-1]), weights=tf.reshape(weights, [-1]),
                minlength=size, maxlength=size, dtype=dy.dtype,
            )
            return tf.reshape(dx, tf.shape(features)), None

        return output, grad

    return pool(features, rois)
