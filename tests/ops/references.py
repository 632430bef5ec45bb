"""Naive NumPy loop references for the RoI ops, written from the semantics in the docstrings.

Scalar arithmetic is done in the features' dtype (``np.float32`` for float32) so that bin
boundaries round exactly like the C++ kernels, which compute in the kernel's type. Each forward
has a matching backward (the vector-Jacobian product for an upstream gradient ``dy``).
"""

import math

import numpy as np


def c_round(value):
    """C ``round``: halves away from zero (``np.round`` rounds halves to even)."""
    magnitude = abs(value)
    whole = math.floor(magnitude)
    if magnitude - whole >= 0.5:
        whole += 1
    return -whole if value < 0 else whole


def _roi_pool_bins(features, rois, pool_size, spatial_scale):
    """Yields ``(k, batch, i, j, h_lo, h_hi, w_lo, w_hi)`` for every bin (clipped, half-open)."""
    t = features.dtype.type
    _, height, width, _ = features.shape
    ph, pw = pool_size
    for k, roi in enumerate(rois.astype(features.dtype)):
        b = int(roi[0])
        x1, y1, x2, y2 = (c_round(t(c) * t(spatial_scale)) for c in roi[1:])
        roi_h = max(y2 - y1 + 1, 1)
        roi_w = max(x2 - x1 + 1, 1)
        bin_h = t(roi_h) / t(ph)
        bin_w = t(roi_w) / t(pw)
        for i in range(ph):
            h_lo = min(max(math.floor(t(i) * bin_h) + y1, 0), height)
            h_hi = min(max(math.ceil(t(i + 1) * bin_h) + y1, 0), height)
            for j in range(pw):
                w_lo = min(max(math.floor(t(j) * bin_w) + x1, 0), width)
                w_hi = min(max(math.ceil(t(j + 1) * bin_w) + x1, 0), width)
                yield k, b, i, j, h_lo, h_hi, w_lo, w_hi


def roi_pool(features, rois, pool_size, spatial_scale):
    """Fast R-CNN RoI max pooling: ``[K, ph, pw, C]``."""
    out = np.zeros((len(rois), *pool_size, features.shape[3]), features.dtype)
    for k, b, i, j, h_lo, h_hi, w_lo, w_hi in _roi_pool_bins(features, rois, pool_size,
                                                            spatial_scale):
        if h_hi > h_lo and w_hi > w_lo:
            out[k, i, j] = features[b, h_lo:h_hi, w_lo:w_hi].max(axis=(0, 1))
    return out


def roi_pool_grad(features, rois, pool_size, spatial_scale, dy):
    """Gradient to the first maximum in row-major order of every bin."""
    dx = np.zeros_like(features)
    for k, b, i, j, h_lo, h_hi, w_lo, w_hi in _roi_pool_bins(features, rois, pool_size,
                                                            spatial_scale):
        if h_hi <= h_lo or w_hi <= w_lo:
            continue
        for c in range(features.shape[3]):
            window = features[b, h_lo:h_hi, w_lo:w_hi, c]
            r, q = np.unravel_index(np.argmax(window), window.shape)  # first maximum
            dx[b, h_lo + r, w_lo + q, c] += dy[k, i, j, c]
    return dx


def _bilinear_weights(y, x, height, width, t):
    """Weight map ``[H, W]`` of a set of samples (arrays ``y``, ``x`` of equal shape), each
    interpolated as detectron2's ``bilinear_interpolate`` does, summed."""
    weights = np.zeros((height, width), t)
    keep = ~((y < -1.0) | (y > height) | (x < -1.0) | (x > width))
    y, x = np.maximum(y[keep], t(0)), np.maximum(x[keep], t(0))
    y_low, x_low = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    y_end, x_end = y_low >= height - 1, x_low >= width - 1
    y_low[y_end], x_low[x_end] = height - 1, width - 1
    y_high = np.where(y_end, height - 1, y_low + 1)
    x_high = np.where(x_end, width - 1, x_low + 1)
    y = np.where(y_end, y_low.astype(t), y)
    x = np.where(x_end, x_low.astype(t), x)
    ly, lx = y - y_low.astype(t), x - x_low.astype(t)
    hy, hx = t(1) - ly, t(1) - lx
    for rows, cols, w in ((y_low, x_low, hy * hx), (y_low, x_high, hy * lx),
                          (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)):
        np.add.at(weights, (rows, cols), w)
    return weights


def _roi_align_bins(features, rois, pool_size, spatial_scale, sampling_ratio, aligned):
    """Yields ``(k, batch, i, j, weights [H, W])``: the bin's output is
    ``sum(weights · features[batch])``. Every sample of the bin's grid is evaluated."""
    t = features.dtype.type
    _, height, width, _ = features.shape
    ph, pw = pool_size
    offset = t(0.5) if aligned else t(0)
    for k, roi in enumerate(rois.astype(features.dtype)):
        b = int(roi[0])
        x1, y1, x2, y2 = (t(c) * t(spatial_scale) - offset for c in roi[1:])
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, t(1)), max(roi_h, t(1))
        bin_h, bin_w = roi_h / t(ph), roi_w / t(pw)
        grid_h = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_h / t(ph)), 0)
        grid_w = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_w / t(pw)), 0)
        count = t(max(grid_h * grid_w, 1))
        iy = np.arange(grid_h).astype(t)
        ix = np.arange(grid_w).astype(t)
        for i in range(ph):
            # y = y1 + i·bin_h + (iy + .5)·bin_h / grid_h, in this order, in the dtype.
            y = (y1 + t(i) * bin_h) + (iy + t(0.5)) * bin_h / t(max(grid_h, 1))
            for j in range(pw):
                x = (x1 + t(j) * bin_w) + (ix + t(0.5)) * bin_w / t(max(grid_w, 1))
                ys, xs = np.meshgrid(y, x, indexing="ij")
                yield k, b, i, j, _bilinear_weights(ys, xs, height, width, t) / count


def roi_align(features, rois, pool_size, spatial_scale, sampling_ratio, aligned):
    """Mask R-CNN RoIAlign (detectron2 semantics): ``[K, ph, pw, C]``."""
    out = np.zeros((len(rois), *pool_size, features.shape[3]), features.dtype)
    for k, b, i, j, weights in _roi_align_bins(features, rois, pool_size, spatial_scale,
                                               sampling_ratio, aligned):
        out[k, i, j] = np.tensordot(weights, features[b], axes=([0, 1], [0, 1]))
    return out


def roi_align_grad(features, rois, pool_size, spatial_scale, sampling_ratio, aligned, dy):
    dx = np.zeros_like(features)
    for k, b, i, j, weights in _roi_align_bins(features, rois, pool_size, spatial_scale,
                                               sampling_ratio, aligned):
        dx[b] += weights[:, :, None] * dy[k, i, j]
    return dx


def _ps_bins(features, rois, group_size, spatial_scale):
    """Yields ``(k, batch, i, j, h_lo, h_hi, w_lo, w_hi)`` (R-FCN ``PSROIPoolingLayer``)."""
    t = features.dtype.type
    _, height, width, _ = features.shape
    g = group_size
    for k, roi in enumerate(rois.astype(features.dtype)):
        b = int(roi[0])
        x1 = t(c_round(roi[1])) * t(spatial_scale)
        y1 = t(c_round(roi[2])) * t(spatial_scale)
        x2 = t(c_round(roi[3]) + 1) * t(spatial_scale)
        y2 = t(c_round(roi[4]) + 1) * t(spatial_scale)
        roi_w = max(x2 - x1, t(0.1))
        roi_h = max(y2 - y1, t(0.1))
        bin_h, bin_w = roi_h / t(g), roi_w / t(g)
        for i in range(g):
            h_lo = min(max(math.floor(t(i) * bin_h + y1), 0), height)
            h_hi = min(max(math.ceil(t(i + 1) * bin_h + y1), 0), height)
            for j in range(g):
                w_lo = min(max(math.floor(t(j) * bin_w + x1), 0), width)
                w_hi = min(max(math.ceil(t(j + 1) * bin_w + x1), 0), width)
                yield k, b, i, j, h_lo, h_hi, w_lo, w_hi


def ps_roi_pool(features, rois, group_size, output_dim, spatial_scale):
    """R-FCN position-sensitive RoI average pooling: ``[K, k, k, D]``."""
    g = group_size
    out = np.zeros((len(rois), g, g, output_dim), features.dtype)
    for k, b, i, j, h_lo, h_hi, w_lo, w_hi in _ps_bins(features, rois, group_size,
                                                      spatial_scale):
        if h_hi <= h_lo or w_hi <= w_lo:
            continue
        channels = [(d * g + i) * g + j for d in range(output_dim)]
        window = features[b, h_lo:h_hi, w_lo:w_hi][..., channels]
        area = (h_hi - h_lo) * (w_hi - w_lo)
        out[k, i, j] = window.sum(axis=(0, 1), dtype=np.float64) / area
    return out


def ps_roi_pool_grad(features, rois, group_size, output_dim, spatial_scale, dy):
    g = group_size
    dx = np.zeros_like(features)
    for k, b, i, j, h_lo, h_hi, w_lo, w_hi in _ps_bins(features, rois, group_size,
                                                      spatial_scale):
        if h_hi <= h_lo or w_hi <= w_lo:
            continue
        area = (h_hi - h_lo) * (w_hi - w_lo)
        for d in range(output_dim):
            dx[b, h_lo:h_hi, w_lo:w_hi, (d * g + i) * g + j] += dy[k, i, j, d] / area
    return dx
