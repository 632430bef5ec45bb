"""RoIAlign (Mask R-CNN, He et al. 2017) with detectron2's ``ROIAlign`` semantics.

Corners are ``coord · spatial_scale`` (minus 0.5 with ``aligned=True``); without ``aligned`` the
RoI is at least 1×1. Each of the ``ph × pw`` bins averages a ``grid_h × grid_w`` grid of bilinear
samples, ``grid = sampling_ratio`` if positive else ``ceil(roi_size / pooled)`` per RoI. Sample
``y = y1 + i·bin_h + (iy + 0.5)·bin_h/grid_h``; a sample with ``y < −1`` or ``y > H`` (or ``x``
likewise) contributes 0, otherwise ``y`` clamps to ``≥ 0`` and, once ``floor(y) ≥ H − 1``, to
row ``H − 1``. A neighbour of weight 0 is not read, so a NaN or ±inf feature reaches exactly
the bins that weigh it (NaN if a NaN or both infinities, else ±inf); the others stay finite.

The pure-TF fallback uses that the bilinear weights of a sample factor into a row part and a
column part, as does the validity test, so a RoI's output is ``A_y · F · A_xᵀ`` (per channel) with
``A_y [ph, rows]`` and ``A_x [pw, cols]`` holding the summed, averaged sample weights. RoIs are
sorted by size and processed in chunks under a memory budget: gather each RoI's window of the
map (the rows and columns its samples can touch), then two batched matmuls. The gradient
(custom, RoIs get none) is the transpose, scattered back into the map. Nothing of size
``[K, H, W, C]`` is built, and the number of samples only enters the small ``A`` matrices, for
the samples that can land on the map (so a RoI far larger than the map costs no more than the
map, with no cap on the adaptive grid).
"""

import functools
import numbers

import tensorflow as tf

from rcnn_zoo.ops import _validation
from rcnn_zoo.ops.roi_pool import chunk_loop, empty_outputs_array

_OP = "roi_align"
MAX_SAMPLING_RATIO = 256

# Corners beyond ±2^28 feature pixels are clipped there (keeps every int32 cast and float32
# product in range; no real feature map comes near).
_LIMIT = float(1 << 28)


def roi_align(
    features,
    rois,
    pool_size=(7, 7),
    spatial_scale=1.0 / 16,
    sampling_ratio=-1,
    aligned=False,
    impl=None,
):
    """Bilinearly sample and average every RoI into a ``pool_size`` grid.

    Args:
        features: ``[N, H, W, C]`` float tensor (float16/bfloat16 are computed in float32).
        rois: ``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.
        pool_size: int or ``(ph, pw)``.
        spatial_scale: feature-map pixels per input pixel.
        sampling_ratio: samples per bin side; ``<= 0`` for ``ceil(roi_size / pooled)`` per RoI.
        aligned: shift by half a pixel (detectron2 ``aligned=True``, the correct alignment).
        impl: ``None`` (compiled kernel when loaded, else pure TF), ``"compiled"`` or
            ``"fallback"``.

    Returns:
        ``[K, ph, pw, C]`` in the dtype of ``features``.
    """
    ph, pw = _validation.pair(pool_size, "pool_size", _OP)
    scale = _validation.scale(spatial_scale, _OP)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, numbers.Integral):
        raise ValueError(f"{_OP}: sampling_ratio must be an integer, got {sampling_ratio!r}")
    sampling_ratio = int(sampling_ratio)
    if sampling_ratio > MAX_SAMPLING_RATIO:
        # Same limit as the kernel (custom_ops/roi_common.h): sampling_ratio² samples per bin.
        raise ValueError(
            f"{_OP}: sampling_ratio must be at most {MAX_SAMPLING_RATIO}, got {sampling_ratio}"
        )
    aligned = bool(aligned)
    module = _validation.select_module(impl, _OP)
    features, rois, dtype = _validation.prepare(features, rois, _OP)
    if module is not None:
        from rcnn_zoo.ops import _compiled  # noqa: PLC0415  (may not exist before the build)

        output = _compiled.compiled_roi_align(
            module, features, rois, (ph, pw), scale, sampling_ratio, aligned
        )
    else:
        output = _fallback(features.dtype)(
            features, rois, (ph, pw), scale, sampling_ratio, aligned
        )
        _validation.set_output_shape(output, features, rois, ph, pw)
    return tf.cast(output, dtype) if output.dtype != dtype else output


# ---------------------------------------------------------------------------------------------
# Pure-TF fallback.


def _axis(start, length, pooled, size, sampling_ratio):
    """Per-RoI geometry along one axis: bin size, grid, window origin and window length."""
    dtype = start.dtype
    bin_size = _validation.true_divide(length, pooled)
    adaptive = tf.math.ceil(_validation.true_divide(length, pooled))
    adaptive = tf.cast(tf.clip_by_value(adaptive, 0, _LIMIT), tf.int32)
    grid = tf.where(sampling_ratio > 0, sampling_ratio, adaptive)
    # Samples lie strictly between the two corners; one pixel of slack on each side keeps
    # float rounding at an integer corner inside the window.
    size_f = tf.cast(size, dtype)
    lo = tf.clip_by_value(tf.minimum(start, start + length), -2.0, size_f + 2)
    hi = tf.clip_by_value(tf.maximum(start, start + length), -2.0, size_f + 2)
    origin = tf.clip_by_value(tf.cast(tf.floor(lo), tf.int32) - 1, 0, size - 1)
    end = tf.clip_by_value(tf.cast(tf.floor(hi), tf.int32) + 2, 0, size - 1)
    return bin_size, grid, origin, tf.maximum(end - origin + 1, 1)


def _sample_range(base, bin_size, grid, size):
    """``[first, stop)`` sample indices of each bin that may fall inside ``[-1, size]``.

    Only those can contribute, so a RoI much larger than the map costs no more than the map:
    ``(iy + 0.5)·bin/grid`` is solved for both limits (with two samples of slack for rounding;
    every sample kept is still tested exactly).
    """
    dtype = base.dtype
    grid_f = tf.cast(grid, dtype)[:, None]
    bin_size = bin_size[:, None]
    degenerate = tf.equal(bin_size, 0)  # every sample sits at `base`
    safe = tf.where(degenerate, tf.ones((), dtype), bin_size)
    low = (-1 - base) * grid_f / safe - 0.5
    high = (tf.cast(size, dtype) - base) * grid_f / safe - 0.5
    first = tf.clip_by_value(tf.math.ceil(tf.minimum(low, high)) - 2, 0, grid_f)
    stop = tf.clip_by_value(tf.floor(tf.maximum(low, high)) + 3, 0, grid_f)
    first = tf.where(degenerate, tf.zeros((), dtype), first)
    stop = tf.where(degenerate, grid_f, stop)
    return tf.cast(first, tf.int32), tf.cast(stop, tf.int32)


def _weights(start, bin_size, grid, origin, span, size, pooled):
    """``[n, pooled, span]``: averaged bilinear weight of every window row for every bin."""
    dtype = start.dtype
    n = tf.shape(start)[0]
    bin_index = tf.cast(tf.range(pooled), dtype)[None, :]
    base = start[:, None] + bin_index * bin_size[:, None]  # [n, pooled]
    first, stop = _sample_range(base, bin_size, grid, size)
    count = tf.maximum(tf.reduce_max(stop - first), 1)
    sample = first[:, :, None] + tf.range(count)[None, None, :]  # [n, pooled, count]
    grid_f = tf.cast(tf.maximum(grid, 1), dtype)[:, None, None]
    # Same operation order as the kernels: (y1 + i·bin) + ((iy + .5)·bin) / grid.
    y = base[:, :, None] + ((tf.cast(sample, dtype) + 0.5) * bin_size[:, None, None]) / grid_f
    size_f = tf.cast(size, dtype)
    valid = (sample < stop[:, :, None]) & (sample < grid[:, None, None])
    valid &= (y >= -1) & (y <= size_f)
    y = tf.clip_by_value(y, 0, size_f)
    low = tf.cast(tf.floor(y), tf.int32)
    at_end = low >= size - 1
    low = tf.where(at_end, size - 1, low)
    high = tf.where(at_end, size - 1, low + 1)
    y = tf.where(at_end, tf.cast(size - 1, dtype), y)
    frac = y - tf.cast(low, dtype)
    zero = tf.zeros((), dtype)
    w_low = tf.where(valid, (1 - frac) / grid_f, zero)
    w_high = tf.where(valid, frac / grid_f, zero)
    segment = (tf.range(n)[:, None, None] * pooled + tf.range(pooled)[None, :, None]) * span
    origin = origin[:, None, None]
    id_low = segment + tf.clip_by_value(low - origin, 0, span - 1)
    id_high = segment + tf.clip_by_value(high - origin, 0, span - 1)
    weights = tf.math.unsorted_segment_sum(
        tf.concat([tf.reshape(w_low, [-1]), tf.reshape(w_high, [-1])], 0),
        tf.concat([tf.reshape(id_low, [-1]), tf.reshape(id_high, [-1])], 0),
        n * pooled * span,
    )
    return tf.reshape(weights, tf.stack([n, pooled, span]))


class _Plan:
    """Per-RoI geometry, sorted by window area, shared by the forward and backward passes."""

    def __init__(self, features, rois, pool_size, scale, sampling_ratio, aligned):
        """``pool_size`` ``[2]`` int32, ``scale``, ``sampling_ratio`` (int32, ≤ 0 adaptive) and
        ``aligned`` (bool) are tensors, so one trace serves every configuration."""
        dtype = features.dtype
        shape = tf.shape(features)
        self.height, self.width, self.channels = shape[1], shape[2], shape[3]
        self.num_rois = tf.shape(rois)[0]
        ph, pw = pool_size[0], pool_size[1]
        self.ph, self.pw = ph, pw
        corners = rois[:, 1:] * scale - tf.where(aligned, tf.constant(0.5, dtype), 0)
        corners = tf.clip_by_value(corners, -_LIMIT, _LIMIT)
        x1, y1, x2, y2 = tf.unstack(corners, axis=1)
        roi_w, roi_h = x2 - x1, y2 - y1
        one = tf.ones((), dtype)
        roi_w = tf.where(aligned, roi_w, tf.maximum(roi_w, one))
        roi_h = tf.where(aligned, roi_h, tf.maximum(roi_h, one))
        bin_h, grid_h, top, rows = _axis(y1, roi_h, ph, self.height, sampling_ratio)
        bin_w, grid_w, left, cols = _axis(x1, roi_w, pw, self.width, sampling_ratio)
        self.order = tf.argsort(rows * cols, stable=True)
        parts = (tf.cast(rois[:, 0], tf.int32), y1, bin_h, grid_h, top, rows,
                 x1, bin_w, grid_w, left, cols)
        (self.batch, self.y1, self.bin_h, self.grid_h, self.top, self.rows,
         self.x1, self.bin_w, self.grid_w, self.left, self.cols) = (
            tf.gather(t, self.order) for t in parts)
        self.sizes = tf.stack([self.rows, self.cols], axis=1)

    def chunk(self, start, n):
        """``(A_y [n, ph, rows], A_x [n, pw, cols], window indices [n, rows, cols])``."""
        part = slice(start, start + n)
        rows = tf.reduce_max(self.rows[part])
        cols = tf.reduce_max(self.cols[part])
        top, left = self.top[part], self.left[part]
        a_y = _weights(self.y1[part], self.bin_h[part], self.grid_h[part], top, rows,
                       self.height, self.ph)
        a_x = _weights(self.x1[part], self.bin_w[part], self.grid_w[part], left, cols,
                       self.width, self.pw)
        # Window positions past a RoI's own window are clamped duplicates with zero weight.
        r = tf.minimum(top[:, None] + tf.range(rows)[None, :], self.height - 1)
        c = tf.minimum(left[:, None] + tf.range(cols)[None, :], self.width - 1)
        index = (self.batch[part][:, None, None] * self.height + r[:, :, None]) * self.width
        return a_y, a_x, index + c[:, None, :]


def _forward(features, plan):
    dtype = features.dtype
    out_shape = tf.stack([plan.num_rois, plan.ph, plan.pw, plan.channels])

    def sample():
        flat = tf.reshape(features, tf.stack([-1, plan.channels]))

        def body(start, n, index, outputs):
            a_y, a_x, window = plan.chunk(start, n)
            values = tf.gather(flat, window)  # [n, rows, cols, C]
            shape = tf.shape(values)
            # Rows, as one matmul per RoI: [ph, rows] @ [rows, cols·C].
            values = tf.matmul(a_y, tf.reshape(values, tf.stack([n, shape[1], -1])))
            values = tf.reshape(values, tf.stack([n, plan.ph, shape[2], plan.channels]))
            # Columns: [pw, cols] @ [cols, C] for every RoI and output row.
            values = tf.matmul(a_x[:, None], values)  # [n, ph, pw, C]
            return index + 1, outputs.write(index, values)

        _, outputs = chunk_loop(
            plan.num_rois, plan.sizes, plan.channels, body,
            (tf.constant(1),
             empty_outputs_array(dtype, tf.stack([0, plan.ph, plan.pw, plan.channels]))),
        )
        return tf.gather(outputs.concat(), tf.math.invert_permutation(plan.order))

    return tf.cond(
        (plan.height > 0) & (plan.width > 0), sample, lambda: tf.zeros(out_shape, dtype)
    )


def _forward_any(features, plan, rois, pool_size, scale, sampling_ratio, aligned):
    """``_forward``, with non-finite features reaching only the bins that weigh them.

    The matmuls multiply every cell of a window, zero-weight ones included (window padding, the
    far neighbour of a sample on a cell edge), and ``0 · inf`` is NaN: one infinite value would
    make NaN of every RoI sharing its chunk. So when the map holds NaN or ±inf, the finite part
    (non-finite cells read as 0) and, per bin, whether a +inf, -inf or NaN cell has a positive
    weight (the weights are ``>= 0``, so ``A_y · indicator · A_xᵀ > 0`` says exactly that) are
    computed in one pass over ``4·C`` channels. As in the kernel: NaN if a NaN or both
    infinities are weighed, else ±inf if one is, else the finite value.
    """
    dtype = features.dtype

    def nonfinite():
        finite = tf.math.is_finite(features)
        is_nan = tf.math.is_nan(features)
        parts = [
            tf.where(finite, features, tf.zeros((), dtype)),
            tf.cast(tf.equal(features, float("inf")), dtype),
            tf.cast(tf.equal(features, float("-inf")), dtype),
            tf.cast(is_nan, dtype),
        ]
        stacked = tf.concat(parts, axis=-1)
        wide = _Plan(stacked, rois, pool_size, scale, sampling_ratio, aligned)
        value, pos, neg, nan = tf.split(_forward(stacked, wide), 4, axis=-1)
        pos, neg, nan = pos > 0, neg > 0, nan > 0
        inf = tf.constant(float("inf"), dtype)
        out = tf.where(neg, -inf, value)
        out = tf.where(pos, inf, out)
        return tf.where(nan | (pos & neg), tf.constant(float("nan"), dtype), out)

    return tf.cond(tf.reduce_all(tf.math.is_finite(features)),
                   lambda: _forward(features, plan), nonfinite)


def _backward(features, plan, dy):
    shape = tf.shape(features)

    def scatter():
        grads = tf.gather(dy, plan.order)

        def body(start, n, accumulated):
            a_y, a_x, window = plan.chunk(start, n)
            # The forward's two matmuls, transposed.
            g = tf.matmul(a_x[:, None], grads[start : start + n], transpose_a=True)
            g = tf.matmul(a_y, tf.reshape(g, tf.stack([n, plan.ph, -1])), transpose_a=True)
            g = tf.reshape(g, tf.concat([tf.shape(window), [plan.channels]], 0))
            return (tf.tensor_scatter_nd_add(accumulated, window[..., None], g),)

        (accumulated,) = chunk_loop(
            plan.num_rois, plan.sizes, plan.channels, body,
            (tf.zeros(tf.stack([shape[0] * shape[1] * shape[2], shape[3]]), features.dtype),),
        )
        return tf.reshape(accumulated, shape)

    # No cell (H, W or C is 0): nothing to scatter into (tensor_scatter_nd_add rejects an
    # empty output).
    return tf.cond(tf.size(features) > 0, scatter, lambda: tf.zeros_like(features))


@functools.lru_cache(maxsize=None)
def _fallback(dtype):
    """The fallback for one dtype: ``f(features, rois, pool_size, spatial_scale,
    sampling_ratio, aligned)``, traced once with every shape and configuration a runtime value."""

    def run(features, rois, pool_size, scale, sampling_ratio, aligned):
        features, rois = _validation.runtime_checks(features, rois, _OP)

        @tf.custom_gradient
        def align(features, rois):
            plan = _Plan(features, rois, pool_size, scale, sampling_ratio, aligned)
            output = _forward_any(features, plan, rois, pool_size, scale, sampling_ratio,
                                  aligned)

            def grad(dy):
                return _backward(features, plan, dy), None

            return output, grad

        return align(features, rois)

    spec = [tf.TensorSpec(None, dtype), tf.TensorSpec(None, dtype), tf.TensorSpec([2], tf.int32),
            tf.TensorSpec([], dtype), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.bool)]
    return tf.function(run, input_signature=spec, autograph=False)
