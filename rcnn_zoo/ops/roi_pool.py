"""RoI max pooling (Fast R-CNN, Girshick 2015), as in py-faster-rcnn's ``ROIPoolingLayer``.

For RoI ``(b, x1, y1, x2, y2)``: ``start = round(coord · spatial_scale)`` (C ``round``, halves
away from zero) for each corner, ``roi_h = max(y2' − y1' + 1, 1)`` (likewise ``roi_w``), and bin
``(i, j)`` covers rows ``floor(i · roi_h/ph) … ceil((i+1) · roi_h/ph) − 1`` shifted by ``y1'``
and clipped to ``[0, H)`` (likewise columns). The output is the maximum over the bin, 0 for an
empty bin; the gradient goes to the first maximum in row-major order.

The pure-TF fallback (stock ops only, so exported graphs run in stock TF Serving) never builds
a ``[K, H, W, C]`` tensor. RoIs are sorted by size and processed in chunks whose largest tensor
stays under a fixed budget; within a chunk the maximum is separable: first over the columns of
each bin for every row the RoI spans (a loop over the column offset inside a bin, keeping the
running max and its offset), then over the rows of each bin. Scanning columns first and taking
a strictly greater value only gives the first maximum in row-major order, which is where the
custom gradient sends ``dy``.
"""

import functools

import tensorflow as tf

from rcnn_zoo.ops import _validation

_OP = "roi_pool"

# Largest number of elements of a chunk's biggest tensor (about 16 MB in float32).
CHUNK_BUDGET = 1 << 22
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
        output = _fallback(ph, pw, scale)(features, rois)
    return tf.cast(output, dtype) if output.dtype != dtype else output


# ---------------------------------------------------------------------------------------------
# Helpers shared with roi_align.


def chunk_loop(total, padded_dims, unit, body, state):
    """Run ``body(start, n, *state) -> state`` over consecutive chunks covering ``[0, total)``.

    ``padded_dims`` ``[total, D]`` int32 (each ≥ 1) are the per-RoI sizes a chunk pads to; a chunk
    of ``n`` RoIs costs ``n · Π max(dims) · unit`` elements. Starting from ``MAX_CHUNK``
    candidates the chunk shrinks to fit ``CHUNK_BUDGET`` (shrinking only lowers the maxima, so the
    bound holds), and never below one RoI.
    """
    unit = tf.cast(unit, tf.int64)

    def cond(start, *_):
        return start < total

    def step(start, *loop_state):
        n0 = tf.minimum(total - start, MAX_CHUNK)
        dims = tf.reduce_max(padded_dims[start : start + n0], axis=0)
        per_roi = tf.maximum(tf.reduce_prod(tf.cast(dims, tf.int64)) * unit, 1)
        n = tf.cast(tf.clip_by_value(CHUNK_BUDGET // per_roi, 1, tf.cast(n0, tf.int64)), tf.int32)
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
    index = tf.range(bins, dtype=dtype)
    lo = tf.floor(index[None, :] * bin_size[:, None])
    hi = tf.math.ceil((index[None, :] + 1) * bin_size[:, None])
    lo = tf.cast(tf.minimum(lo, 2 * _INT_LIMIT), tf.int32) + start[:, None]
    hi = tf.cast(tf.minimum(hi, 2 * _INT_LIMIT), tf.int32) + start[:, None]
    return tf.clip_by_value(lo, 0, size), tf.clip_by_value(hi, 0, size)


def _chunk_max(flat, height, width, batch, hs, he, ws, we):
    """Max pooling of one chunk of RoIs: ``(output [n, ph, pw, C], argmax position or -1)``."""
    dtype = flat.dtype
    n = tf.shape(batch)[0]
    ph = hs.shape[1]
    pw = ws.shape[1]
    channels = tf.shape(flat)[1]
    bin_h = tf.maximum(he - hs, 0)
    bin_w = tf.maximum(we - ws, 0)
    top = hs[:, 0]
    rows_spanned = tf.maximum(tf.reduce_max(he[:, -1] - top), 1)
    rows = tf.minimum(top[:, None] + tf.range(rows_spanned)[None, :], height - 1)
    row_base = (batch[:, None] * height + rows) * width  # [n, rows]
    lowest = tf.constant(float("-inf"), dtype)

    # Columns: running max over the column offset t inside each column bin, every spanned row.
    def column_step(t, best, offset):
        columns = tf.minimum(ws + t, width - 1)  # [n, pw]
        values = tf.gather(flat, row_base[:, :, None] + columns[:, None, :])  # [n, rows, pw, C]
        better = (values > best) & (t < bin_w)[:, None, :, None]
        return t + 1, tf.where(better, values, best), tf.where(better, t, offset)

    shape = tf.stack([n, rows_spanned, pw, channels])
    _, column_max, column_offset = tf.while_loop(
        lambda t, *_: t < tf.reduce_max(bin_w),
        column_step,
        (tf.constant(0), tf.fill(shape, lowest), tf.zeros(shape, tf.int32)),
    )

    # Rows: running max over the row offset t inside each row bin.
    relative_top = hs - top[:, None]

    def row_step(t, best, row_offset, col_offset):
        index = tf.minimum(relative_top + t, rows_spanned - 1)  # [n, ph]
        values = tf.gather(column_max, index, batch_dims=1)  # [n, ph, pw, C]
        offsets = tf.gather(column_offset, index, batch_dims=1)
        better = (values > best) & (t < bin_h)[:, :, None, None]
        return (
            t + 1,
            tf.where(better, values, best),
            tf.where(better, t, row_offset),
            tf.where(better, offsets, col_offset),
        )

    shape = tf.stack([n, ph, pw, channels])
    _, best, row_offset, col_offset = tf.while_loop(
        lambda t, *_: t < tf.reduce_max(bin_h),
        row_step,
        (tf.constant(0), tf.fill(shape, lowest), tf.zeros(shape, tf.int32),
         tf.zeros(shape, tf.int32)),
    )
    nonempty = ((bin_h > 0)[:, :, None] & (bin_w > 0)[:, None, :])[..., None]
    output = tf.where(nonempty, best, tf.zeros((), dtype))
    position = (
        (batch[:, None, None, None] * height + hs[:, :, None, None] + row_offset) * width
        + ws[:, None, :, None]
        + col_offset
    )
    return output, tf.where(nonempty, position, -1)


def _forward(features, rois, ph, pw, scale):
    """``(output [K, ph, pw, C], position [K, ph, pw, C])``: argmax ``(n·H + h)·W + w`` or -1."""
    dtype = features.dtype
    shape = tf.shape(features)
    height, width, channels = shape[1], shape[2], shape[3]
    num_rois = tf.shape(rois)[0]
    out_shape = tf.stack([num_rois, ph, pw, channels])

    def empty_map():
        return tf.zeros(out_shape, dtype), tf.fill(out_shape, -1)

    def pool():
        batch = tf.cast(rois[:, 0], tf.int32)
        corners = _validation.round_half_away(rois[:, 1:] * tf.constant(scale, dtype))
        corners = tf.cast(tf.clip_by_value(corners, -_INT_LIMIT, _INT_LIMIT), tf.int32)
        hs, he = _bins(corners[:, 1], corners[:, 3], ph, height, dtype)
        ws, we = _bins(corners[:, 0], corners[:, 2], pw, width, dtype)
        rows = tf.maximum(he[:, -1] - hs[:, 0], 1)
        cols = tf.maximum(we[:, -1] - ws[:, 0], 1)
        order = tf.argsort(rows * cols, stable=True)
        batch, hs, he, ws, we, rows = (tf.gather(t, order) for t in (batch, hs, he, ws, we, rows))
        flat = tf.reshape(features, tf.stack([-1, channels]))

        def body(start, n, index, outputs, positions):
            part = slice(start, start + n)
            output, position = _chunk_max(
                flat, height, width, batch[part], hs[part], he[part], ws[part], we[part]
            )
            return index + 1, outputs.write(index, output), positions.write(index, position)

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
        return tf.gather(outputs.concat(), inverse), tf.gather(positions.concat(), inverse)

    return tf.cond((height > 0) & (width > 0), pool, empty_map)


@functools.lru_cache(maxsize=None)
def _fallback(ph, pw, scale):
    @tf.custom_gradient
    def pool(features, rois):
        output, position = _forward(features, rois, ph, pw, scale)

        def grad(dy):
            channels = tf.shape(features, out_type=tf.int64)[3]
            ids = tf.cast(position, tf.int64) * channels + tf.range(channels)
            ids = tf.where(position >= 0, ids, -1)  # negative ids are dropped
            dx = tf.math.unsorted_segment_sum(
                tf.reshape(dy, [-1]), tf.reshape(ids, [-1]), tf.size(features, out_type=tf.int64)
            )
            return tf.reshape(dx, tf.shape(features)), None

        return output, grad

    def run(features, rois):
        features, rois = _validation.runtime_checks(features, rois, _OP)
        return pool(features, rois)

    return tf.function(run, reduce_retracing=True, autograph=False)
