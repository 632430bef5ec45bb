"""Python bindings of the compiled RoI ops (``custom_ops/``) and their gradients.

These functions assume validated inputs (``rcnn_zoo.ops.roi_pool`` & co. validate and dispatch);
the kernels re-check everything that could make them read or write out of bounds and raise
``tf.errors.InvalidArgumentError`` naming the offending RoI.

Shapes: ``features`` ``[N, H, W, C]`` float32/float64 (channels-last); ``rois`` ``[K, 5]`` of the
same dtype, rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels; ``spatial_scale`` maps
image pixels onto the feature map (e.g. 1/16).

The scale is passed to the kernels as a scalar tensor of the features' dtype (TensorFlow has no
float64 attributes), so float64 calls use the exact Python value, as the pure-TF ops do.

The library is found and loaded by ``_loader``: the ``_rcnn_zoo_ops*.so`` next to this file, or
the one that the environment variable ``RCNN_ZOO_OPS_LIBRARY=/path/to/lib.so`` names (e.g. an
AddressSanitizer build, see ``tools/asan_kernels.sh``).
"""

import tensorflow as tf

from rcnn_zoo.ops import _loader

# The module that created the forward ops, used to build their gradient ops. Remembered at
# forward time because the gradient may be built inside ``force_fallback()`` (where
# ``compiled_module()`` returns None) or in another thread.
_gradient_module = {"module": None}


def _remember(module):
    _gradient_module["module"] = module
    return module


def _module_for_gradient():
    module = _gradient_module["module"] or _loader.compiled_module()
    if module is None:
        raise RuntimeError(
            "rcnn_zoo: a compiled RoI op needs its gradient but the op library is not loaded"
        )
    return module


def _scale(spatial_scale, features):
    return tf.constant(float(spatial_scale), dtype=features.dtype)


def compiled_roi_pool(module, features, rois, pool_size, spatial_scale):
    """RoI max pooling (Fast R-CNN) with the compiled kernel.

    Args:
        module: the loaded op library (``_loader.compiled_module()``).
        features: ``[N, H, W, C]`` float32 or float64.
        rois: ``[K, 5]`` same dtype, ``(batch_index, x1, y1, x2, y2)`` in image pixels.
        pool_size: ``(ph, pw)`` python ints.
        spatial_scale: python float, feature-map cells per image pixel.

    Returns:
        ``[K, ph, pw, C]``: the max of each bin (0 for an empty bin).
    """
    pooled_height, pooled_width = (int(v) for v in pool_size)
    output, _argmax = _remember(module).rcnn_zoo_roi_pool(
        features,
        rois,
        _scale(spatial_scale, features),
        pooled_height=pooled_height,
        pooled_width=pooled_width,
    )
    return output


def compiled_roi_align(module, features, rois, pool_size, spatial_scale, sampling_ratio, aligned):
    """RoIAlign (Mask R-CNN / detectron2) with the compiled kernel.

    Args:
        module, features, rois, pool_size, spatial_scale: as for ``compiled_roi_pool``.
        sampling_ratio: python int, samples per bin along each axis; ``<= 0`` means adaptive
            (``ceil(roi_size / pooled_size)``).
        aligned: python bool, shift RoIs by -0.5 cell (pixel-centre alignment).

    Returns:
        ``[K, ph, pw, C]``: the average of each bin's bilinear samples.
    """
    pooled_height, pooled_width = (int(v) for v in pool_size)
    return _remember(module).rcnn_zoo_roi_align(
        features,
        rois,
        _scale(spatial_scale, features),
        pooled_height=pooled_height,
        pooled_width=pooled_width,
        sampling_ratio=int(sampling_ratio),
        aligned=bool(aligned),
    )


def compiled_ps_roi_pool(module, features, rois, group_size, output_dim, spatial_scale):
    """Position-sensitive RoI average pooling (R-FCN) with the compiled kernel.

    Args:
        module, rois, spatial_scale: as for ``compiled_roi_pool``.
        features: ``[N, H, W, k * k * D]`` float32 or float64.
        group_size: python int ``k``, bins per side.
        output_dim: python int ``D``, output channels.

    Returns:
        ``[K, k, k, D]``: channel ``d`` of bin ``(i, j)`` averages input channel
        ``(d * k + i) * k + j`` over the bin.
    """
    return _remember(module).rcnn_zoo_ps_roi_pool(
        features,
        rois,
        _scale(spatial_scale, features),
        group_size=int(group_size),
        output_dim=int(output_dim),
    )


# Gradients flow to the features only: RoI coordinates are not differentiable through these ops
# (as in the reference implementations), and neither is the scale.


@tf.RegisterGradient("RcnnZooRoiPool")
def _roi_pool_grad(op, grad, _argmax_grad):
    features, rois, spatial_scale = op.inputs
    grad_features = _module_for_gradient().rcnn_zoo_roi_pool_grad(
        features,
        rois,
        spatial_scale,
        op.outputs[1],
        grad,
        pooled_height=op.get_attr("pooled_height"),
        pooled_width=op.get_attr("pooled_width"),
    )
    return [grad_features, None, None]


@tf.RegisterGradient("RcnnZooRoiAlign")
def _roi_align_grad(op, grad):
    features, rois, spatial_scale = op.inputs
    grad_features = _module_for_gradient().rcnn_zoo_roi_align_grad(
        features,
        rois,
        spatial_scale,
        grad,
        pooled_height=op.get_attr("pooled_height"),
        pooled_width=op.get_attr("pooled_width"),
        sampling_ratio=op.get_attr("sampling_ratio"),
        aligned=op.get_attr("aligned"),
    )
    return [grad_features, None, None]


@tf.RegisterGradient("RcnnZooPsRoiPool")
def _ps_roi_pool_grad(op, grad):
    features, rois, spatial_scale = op.inputs
    grad_features = _module_for_gradient().rcnn_zoo_ps_roi_pool_grad(
        features,
        rois,
        spatial_scale,
        grad,
        group_size=op.get_attr("group_size"),
        output_dim=op.get_attr("output_dim"),
    )
    return [grad_features, None, None]
