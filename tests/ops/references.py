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


def _bilinear(y, x, height, width, t):
    """``[(h, w, weight), ...]`` of one sample (detectron2 ``bilinear_interpolate``)."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    y = max(y, t(0))
    x = max(x, t(0))
    y_low, x_low = int(math.floor(y)), int(math.floor(x))
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = t(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = t(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - t(y_low), x - t(x_low)
    hy, hx = t(1) - ly, t(1) - lx
    return [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx),
            (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)]


def _roi_align_taps(features, rois, pool_size, spatial_scale, sampling_ratio, aligned):
    """Yields ``(k, batch, i, j, [(h, w, weight), ...])`` with weights already divided by the
    number of samples of the bin."""
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
        for i in range(ph):
            for j in range(pw):
                taps = []
                for iy in range(grid_h):
                    y = y1 + t(i) * bin_h + t(iy + 0.5) * bin_h / t(grid_h)
                    for ix in range(grid_w):
                        x = x1 + t(j) * bin_w + t(ix + 0.5) * bin_w / t(grid_w)
                        taps += [(h, w, wt / count) for h, w, wt in _bilinear(y, x, height,
                                                                             width, t)]
                yield k, b, i, j, taps


def roi_align(features, rois, pool_size, spatial_scale, sampling_ratio, aligned):
    """Mask R-CNN RoIAlign (detectron2 semantics): ``[K, ph, pw, C]``."""
    out = np.zeros((len(rois), *pool_size, features.shape[3]), features.dtype)
    for k, b, i, j, taps in _roi_align_taps(features, rois, pool_size, spatial_scale,
                                             sampling_ratio, aligned):
        for h, w, weight in taps:
            out[k, i, j] += weight * features[b, h, w]
    return out


def roi_align_grad(features, rois, pool_size, spatial_scale, sampling_ratio, aligned, dy):
    dx = np.zeros_like(features)
    for k, b, i, j, taps in _roi_align_taps(features, rois, pool_size, spatial_scale,
                                             sampling_ratio, aligned):
        for h, w, weight in taps:
            dx[b, h, w] += weight * dy[k, i, j]
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
