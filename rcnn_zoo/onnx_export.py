"""ONNX export: the SavedModel's serving function (:mod:`rcnn_zoo.export`) as one ``.onnx`` file
that onnxruntime (or any ONNX runtime with the standard operators) runs without TensorFlow.

Shapes: B images in a request, H, W their height and width in pixels, R proposals per image,
D = the model's ``max_detections``. B, H, W and R are dynamic (named ``batch``, ``height``,
``width``, ``proposals`` in the model); one file serves any batch and any image size.

Inputs, named as the SavedModel's:

- ``input_tensor``: uint8 ``[B, H, W, 3]`` RGB (``input_type="image_tensor"``) or float32
  ``[B, H, W, 3]`` RGB in 0..255 (``"float_image_tensor"``). Encoded images
  (``"encoded_image_string_tensor"``) cannot be exported: ONNX has no image decoder.
- ``image_sizes`` int32 ``[B, 2]``, only with ``padded=True`` (the SavedModel's
  ``serving_padded``): each image's own ``(height, width)`` inside a batch padded by the client
  at the bottom/right; each image is then detected as it would be alone.
- ``proposals`` float32 ``[B, R, 4]``, only for Fast R-CNN and R-CNN: the client's proposals in
  the model's ``bounding_box_format`` and each image's own pixels, zero rows as padding.

Outputs (as in the TF Object Detection API, see :mod:`rcnn_zoo.export`):

- ``detection_boxes`` float32 ``[B, D, 4]``: ``[ymin, xmin, ymax, xmax]`` normalised to
  ``[0, 1]`` by each image's own height and width;
- ``detection_scores`` float32 ``[B, D]``, best first;
- ``detection_classes`` float32 ``[B, D]``: **1-based** class ids, ``id = model label + 1``;
- ``num_detections`` float32 ``[B]``: valid rows; the rows after them are all zero (class 0).

The class names travel in the model's ``metadata_props``: key ``labels`` holds a JSON list
whose item ``k - 1`` names class id ``k`` (``onnxruntime.InferenceSession(path).
get_modelmeta().custom_metadata_map["labels"]``).

How: tf2onnx converts the serving function of :func:`rcnn_zoo.export.serving_fn`, traced with
rcnn_zoo's **compiled** RoI ops, and this module maps those ops onto standard ONNX operators
(all float32, channels-last around channels-first ONNX ops):

- ``RcnnZooRoiAlign`` → ``RoiAlign`` (avg; ``aligned`` → ``half_pixel``, else
  ``output_half_pixel``, which keeps the 1×1 minimum RoI; ``sampling_ratio <= 0`` → 0, adaptive);
- ``RcnnZooRoiPool`` → ``MaxRoiPool`` (Caffe's rounded, ``+1`` quantised bins);
- ``RcnnZooPsRoiPool`` → a float64 summed-area table and four gathers per bin, as the pure-TF
  fallback (non-finite score maps are not special-cased: a NaN or inf spreads over every bin
  whose table corners come after it);
- ``CombinedNonMaxSuppression`` with per-class boxes (tf2onnx handles shared boxes only) → one
  ``NonMaxSuppression`` problem per image and class, then the ``D`` best of each image;
- ``ResizeBilinear`` and ``DynamicStitch`` get handlers of their own (tf2onnx's dynamic-size
  ``Resize`` fails ONNX shape inference inside a ``Loop``; its ``DynamicStitch`` scatters
  element by element).

The pure-TF fallbacks of RoIAlign and RoI pooling (what ``force_fallback`` traces for the
SavedModel) are not converted: their chunked ``while`` loops gather into ``TensorArray.concat``,
which tf2onnx cannot express, and ONNX has these two operators built in. So exporting a model
with RoIAlign or RoI pooling needs the compiled op library at export time (not at run time).
The exported file holds only standard ONNX operators.
"""

import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from rcnn_zoo import ops as rcnn_ops
from rcnn_zoo.export import (
    INPUT_NAME,
    OUTPUT_NAMES,
    PROPOSALS_NAME,
    SIZES_NAME,
    _check_model,
    class_names_of,
    serving_fn,
    takes_proposals,
)

ONNX_INPUT_TYPES = ("image_tensor", "float_image_tensor")
DEFAULT_OPSET = 17
# RoiAlign's coordinate_transformation_mode needs 16; tf2onnx 1.17 writes at most 18.
OPSET_RANGE = (16, 18)
LABELS_KEY = "labels"
INSTALL_HINT = "pip install tf2onnx onnx"

# onnx.TensorProto data types (stable numbers of the ONNX standard).
_FLOAT, _INT32, _INT64, _DOUBLE = 1, 6, 7, 11

_DYNAMIC_DIMS = {
    INPUT_NAME: ("batch", "height", "width", None),
    SIZES_NAME: ("batch", None),
    PROPOSALS_NAME: ("batch", "proposals", None),
    "detection_boxes": ("batch", None, None),
    "detection_scores": ("batch", None),
    "detection_classes": ("batch", None),
    "num_detections": ("batch",),
}


def _require_converters():
    """``(tf2onnx, onnx)``, or an ImportError that says how to install them."""
    try:
        import onnx  # noqa: PLC0415  (optional dependency)
        import tf2onnx  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs the tf2onnx and onnx packages ({error}); `{INSTALL_HINT}`"
        ) from error
    return tf2onnx, onnx


def export_onnx(model, path, input_type="image_tensor", padded=False, opset=None, verbose=True):
    """Write ``model`` as an ONNX file with the SavedModel's inputs and outputs.

    Args:
        model: a detector, as for :func:`rcnn_zoo.export.export_saved_model`.
        path: the ``.onnx`` file to write (its directory is created; an existing file is
            replaced atomically: a kill leaves the old file or the new one).
        input_type: ``"image_tensor"`` (uint8 ``[B,H,W,3]``) or ``"float_image_tensor"``
            (float32 ``[B,H,W,3]``, 0..255).
        padded: add the ``image_sizes`` int32 ``[B, 2]`` input (a batch of images of different
            sizes padded at the bottom/right; ``serving_padded`` of the SavedModel).
        opset: ONNX opset, 16 to 18 (default 17).
        verbose: print where the model went and its inputs and outputs.

    Returns:
        ``path`` as a string. Inputs, outputs and conventions: see the module docstring.

    Raises:
        ImportError: tf2onnx or onnx is not installed.
        ValueError: an input type ONNX cannot take, a bad opset, or a graph tf2onnx could not
            convert (the message says which ops).
        TypeError: ``model`` is not a detector.
    """
    if input_type == "encoded_image_string_tensor":
        raise ValueError(
            "ONNX has no image decoder, so input_type='encoded_image_string_tensor' cannot be "
            f"exported to ONNX; use one of {ONNX_INPUT_TYPES} and decode on the client"
        )
    if input_type not in ONNX_INPUT_TYPES:
        raise ValueError(f"input_type must be one of {ONNX_INPUT_TYPES} for ONNX, got {input_type!r}")
    opset = _checked_opset(opset)
    _, onnx = _require_converters()
    _check_model(model)
    names = class_names_of(model)
    if len(names) != int(model.num_classes):
        raise ValueError(f"{len(names)} class names for num_classes={model.num_classes}")
    proto = convert_function(serving_fn(model, input_type, with_sizes=padded), opset)
    _name_dynamic_dims(proto.graph)
    _add_metadata(onnx, proto, model, names, input_type)
    # Full check = ONNX shape inference too: what onnxruntime runs when it loads the file.
    onnx.checker.check_model(proto, full_check=True)
    path = os.fspath(path)
    _write_atomically(proto.SerializeToString(), path)
    if verbose:
        _print_summary(model, path, input_type, padded, names, opset)
    return path


def convert_function(function, opset=None):
    """Convert a ``tf.function`` with an ``input_signature`` (e.g. rcnn_zoo ops or a detector's
    serving function, traced with the compiled RoI ops) to an ``onnx.ModelProto``.

    Inputs and outputs keep the signature's names (and, for a dict, the output keys). RoI ops
    and per-class NMS become standard ONNX operators as the module docstring says.

    Raises:
        ImportError: tf2onnx or onnx is not installed.
        ValueError: a bad opset, or ops tf2onnx could not convert (named in the message).
    """
    tf2onnx, onnx = _require_converters()
    proto = _convert(tf2onnx, function, _checked_opset(opset))
    _check_standard_ops(onnx, proto)
    return proto


def _checked_opset(opset):
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ValueError(f"opset must be in {OPSET_RANGE[0]}..{OPSET_RANGE[1]}, got {opset}")
    return opset


# ---------------------------------------------------------------------------------------------
# Conversion.


def _convert(tf2onnx, function, opset):
    """tf2onnx's ``from_function`` pipeline, with this module's op handlers and fewer graph
    optimisers (:func:`_optimizers`). Returns the ``onnx.ModelProto``.

    As in ``from_function``, a rewriter or op that tf2onnx fails on is logged and skipped; an op
    left unconverted is then reported by :func:`_check_standard_ops`."""
    from tf2onnx import optimizer, tf_loader, tfonnx  # noqa: PLC0415  (optional dependency)

    concrete = function.get_concrete_function()
    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    renames = tf2onnx.convert.tensor_names_from_structed(concrete, inputs, outputs)
    with tf.device("/cpu:0"):
        frozen = tf_loader.from_function(concrete, inputs, outputs)
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(frozen, name="")
        converted = tfonnx.process_tf_graph(
            graph, continue_on_error=True, opset=opset, custom_op_handlers=_handlers(),
            input_names=inputs, output_names=outputs, tensors_to_rename=renames,
        )
        converted = optimizer.optimize_graph(converted, catch_errors=False, optimizers=_optimizers(optimizer))
        return converted.make_model(f"rcnn_zoo detector, converted from {concrete.name}")


def _optimizers(optimizer):
    """tf2onnx's ONNX-graph optimisers that change these graphs: drop the NHWC↔NCHW transposes
    around convolutions, fold constants (the weights' transposes), tidy up. The others
    (quantisation, einsum, upsample, global pooling) find nothing here, and every pass
    re-serialises the whole graph, weights included (half the time of a ResNet-50)."""
    return {
        "optimize_transpose": optimizer.TransposeOptimizer,
        "fold_constants": optimizer.ConstFoldOptimizer,
        "loop_optimizer": optimizer.LoopOptimizer,
        "merge_duplication": optimizer.MergeDuplicatedNodesOptimizer,
        "reshape_optimizer": optimizer.ReshapeOptimizer,
        "remove_identity": optimizer.IdentityOptimizer,
        "remove_back_to_back": optimizer.BackToBackOptimizer,
    }


def _conversion_failure(unconverted):
    message = (f"tf2onnx could not convert the TensorFlow ops {unconverted} of the serving graph "
               "(its log above says why)")
    if rcnn_ops.implementation() != "compiled":
        message += (
            "; ONNX export maps rcnn_zoo's compiled RoI ops onto ONNX's RoiAlign/MaxRoiPool (their "
            "pure-TF fallbacks do not convert), and they are not loaded because "
            f"{rcnn_ops.fallback_reason()}"
        )
    return message


def _handlers():
    """tf2onnx's ``custom_op_handlers``: TF op type → ``(handler, [])``."""
    return {
        "RcnnZooRoiAlign": (_roi_align, []),
        "RcnnZooRoiPool": (_roi_pool, []),
        "RcnnZooPsRoiPool": (_ps_roi_pool, []),
        "CombinedNonMaxSuppression": (_combined_nms, []),
        "ResizeBilinear": (_resize_bilinear, []),
        "DynamicStitch": (_dynamic_stitch, []),
    }


def _name_dynamic_dims(graph):
    """Name the dynamic dims of the inputs and outputs (``batch``, ``height``, …) instead of
    tf2onnx's ``unk__N``, so that the file documents which ones are shared."""
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, _DYNAMIC_DIMS.get(value.name, ())):
            if name is not None and not dim.HasField("dim_value"):
                dim.dim_param = name


def _add_metadata(onnx, proto, model, names, input_type):
    proto.producer_name = "rcnn_zoo"
    proto.doc_string = (
        f"{type(model).__name__}: detection_boxes [B, D, 4] (ymin, xmin, ymax, xmax normalised by "
        "each image's own size), detection_scores [B, D], detection_classes [B, D] (1-based ids; "
        f"id k is {LABELS_KEY}[k - 1]), num_detections [B]"
    )
    onnx.helper.set_model_props(proto, {
        LABELS_KEY: json.dumps(names),
        "input_type": input_type,
        "detector": type(model).__name__,
    })


def _check_standard_ops(onnx, proto):
    """Every node (subgraphs included) must be a standard ONNX operator of the model's opset;
    tf2onnx leaves a TF op it could not convert in the graph under its TF name."""
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    unconverted = set()
    pending = [proto.graph]
    while pending:
        graph = pending.pop()
        for node in graph.node:
            if node.domain not in ("", "ai.onnx") or not onnx.defs.has(node.op_type, opset, ""):
                unconverted.add(node.op_type if not node.domain else f"{node.domain}:{node.op_type}")
            for attribute in node.attribute:  # Loop and If bodies
                pending.extend([attribute.g] if attribute.HasField("g") else attribute.graphs)
    if unconverted:
        raise ValueError(_conversion_failure(sorted(unconverted)))


def _write_atomically(data, path):
    """Write next to ``path`` and rename into place, so a reader never sees half a file."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _print_summary(model, path, input_type, padded, names, opset):
    dtype = "uint8" if input_type == "image_tensor" else "float32"
    extra = f", {SIZES_NAME} int32 [B, 2]" if padded else ""
    if takes_proposals(model):
        extra += f", {PROPOSALS_NAME} float32 [B, R, 4] ({model.bounding_box_format}, own pixels)"
    print(
        f"Saved {type(model).__name__} to {path} (ONNX opset {opset})\n"
        f"  inputs: {INPUT_NAME} {dtype} [B, H, W, 3]{extra}\n"
        f"  outputs: {', '.join(OUTPUT_NAMES)} (as the SavedModel's; 1-based class ids)\n"
        f"  classes: {', '.join(f'{i + 1}={n}' for i, n in enumerate(names))} "
        f"(metadata_props['{LABELS_KEY}'])"
    )


# ---------------------------------------------------------------------------------------------
# Op handlers. Each gets tf2onnx's graph ``ctx`` and the TF ``node``, and replaces the node by
# ONNX nodes producing its outputs under the same names.


class _Nodes:
    """Adds ONNX nodes to a tf2onnx graph under one name scope."""

    def __init__(self, ctx, scope):
        from tf2onnx import utils  # noqa: PLC0415  (optional dependency)

        self.ctx, self.scope, self._make_name = ctx, scope, utils.make_name

    def op(self, op_type, *inputs, outputs=1, **attr):
        """One node; its output name (or names, for ``outputs > 1``)."""
        node = self.ctx.make_node(op_type, list(inputs), attr=attr, output_count=outputs,
                                  op_name_scope=self.scope)
        return node.output[0] if outputs == 1 else list(node.output)

    def const(self, value, dtype):
        name = self._make_name(f"{self.scope}_const")
        return self.ctx.make_const(name, np.asarray(value, dtype)).output[0]

    def ints(self, *values):
        """An int64 ``[len(values)]`` constant (ONNX axes, starts, shapes, …)."""
        return self.const(list(values), np.int64)

    def column(self, matrix, index):
        """``matrix[:, index]`` of a ``[K, n]`` tensor → ``[K]``."""
        part = self.op("Slice", matrix, self.ints(index), self.ints(index + 1), self.ints(1))
        return self.op("Squeeze", part, self.ints(1))

    def dim(self, tensor, axis):
        """``tf.shape(tensor)[axis:axis + 1]``, int64 ``[1]``."""
        return self.op("Slice", self.op("Shape", tensor), self.ints(axis), self.ints(axis + 1))

    def finish(self, op_type, inputs, node, outputs=1, **attr):
        """The last node, writing the TF node's first ``outputs`` outputs (same names)."""
        names = list(node.output)[:outputs]
        dtypes = [self.ctx.get_dtype(name) for name in names]
        self.ctx.make_node(op_type, list(inputs), attr=attr, outputs=names, dtypes=dtypes,
                           op_name_scope=self.scope)


def _constant(ctx, name):
    """The value of a constant input (a RoI op's spatial scale, NMS's ``max_total_size``)."""
    node = ctx.get_node_by_output(name)
    if node is None or not node.is_const():
        raise ValueError(f"ONNX export needs {name} to be a constant")
    return node.get_tensor_value(as_list=False)


def _take_over(ctx, node):
    """Remove the TF ``node`` and return a builder for its replacement."""
    ctx.remove_node(node.name)
    return _Nodes(ctx, node.name)


def _roi_align(ctx, node, name, args):
    """``RcnnZooRoiAlign(features [N,H,W,C], rois [K,5], scale)`` → ``[K,ph,pw,C]``."""
    del name, args
    features, rois, scale = node.input[:3]
    attr = {
        "mode": "avg",
        "output_height": node.get_attr_value("pooled_height"),
        "output_width": node.get_attr_value("pooled_width"),
        "sampling_ratio": max(int(node.get_attr_value("sampling_ratio")), 0),  # 0: adaptive
        "spatial_scale": float(_constant(ctx, scale)),
        "coordinate_transformation_mode": (
            "half_pixel" if node.get_attr_value("aligned") else "output_half_pixel"
        ),
    }
    b = _take_over(ctx, node)
    channels_first = b.op("Transpose", features, perm=[0, 3, 1, 2])
    boxes = b.op("Slice", rois, b.ints(1), b.ints(5), b.ints(1))
    owners = b.op("Cast", b.column(rois, 0), to=_INT64)
    pooled = b.op("RoiAlign", channels_first, boxes, owners, **attr)
    b.finish("Transpose", [pooled], node, perm=[0, 2, 3, 1])


def _roi_pool(ctx, node, name, args):
    """``RcnnZooRoiPool(features [N,H,W,C], rois [K,5], scale)`` → ``[K,ph,pw,C]`` (its
    second output, the argmax, only feeds the gradient and is not produced)."""
    del name, args
    features, rois, scale = node.input[:3]
    attr = {
        "pooled_shape": [node.get_attr_value("pooled_height"), node.get_attr_value("pooled_width")],
        "spatial_scale": float(_constant(ctx, scale)),
    }
    b = _take_over(ctx, node)
    pooled = b.op("MaxRoiPool", b.op("Transpose", features, perm=[0, 3, 1, 2]), rois, **attr)
    b.finish("Transpose", [pooled], node, perm=[0, 2, 3, 1])


def _round_half_away(b, x):
    """C ``round()`` (ONNX ``Round`` rounds halves to even); as ``_validation.round_half_away``."""
    magnitude = b.op("Abs", x)
    whole = b.op("Floor", magnitude)
    half_up = b.op("GreaterOrEqual", b.op("Sub", magnitude, whole), b.const(0.5, np.float32))
    whole = b.op("Add", whole, b.op("Cast", half_up, to=_FLOAT))
    return b.op("Where", b.op("Less", x, b.const(0.0, np.float32)), b.op("Neg", whole), whole)


def _ps_bins(b, start, end, group_size, size):
    """PS-RoI bins along one axis: ``start, end [K]`` float (feature cells) → ``(lo, hi)``
    int64 ``[K, k]``, ``floor(i·bin + start)`` and ``ceil((i+1)·bin + start)`` clipped to
    ``[0, size]`` (``size`` int64 ``[1]``)."""
    length = b.op("Max", b.op("Sub", end, start), b.const(0.1, np.float32))
    bin_size = b.op("Unsqueeze", b.op("Div", length, b.const(float(group_size), np.float32)), b.ints(1))
    start = b.op("Unsqueeze", start, b.ints(1))
    index = b.const(np.arange(group_size, dtype=np.float32)[None, :], np.float32)
    lo = b.op("Floor", b.op("Add", b.op("Mul", index, bin_size), start))
    after = b.op("Add", index, b.const(1.0, np.float32))
    hi = b.op("Ceil", b.op("Add", b.op("Mul", after, bin_size), start))
    limit = b.op("Cast", size, to=_FLOAT)
    zero = b.const(0.0, np.float32)
    return tuple(b.op("Cast", b.op("Min", b.op("Max", edge, zero), limit), to=_INT64) for edge in (lo, hi))


def _ps_roi_pool(ctx, node, name, args):
    """``RcnnZooPsRoiPool(features [N,H,W,k²D], rois [K,5], scale)`` → ``[K,k,k,D]``, the
    average of input channel ``(d·k + i)·k + j`` over bin ``(i, j)`` (0 for an empty bin), from
    a float64 summed-area table ``[N, H+1, W+1, C]`` as in ``rcnn_zoo.ops.ps_roi_pool``."""
    del name, args
    features, rois, scale = node.input[:3]
    k, depth = int(node.get_attr_value("group_size")), int(node.get_attr_value("output_dim"))
    spatial_scale = float(_constant(ctx, scale))
    b = _take_over(ctx, node)
    height, width, channels = (b.dim(features, axis) for axis in (1, 2, 3))
    corners = _round_half_away(b, b.op("Slice", rois, b.ints(1), b.ints(5), b.ints(1)))
    x1, y1, x2, y2 = (b.column(corners, i) for i in range(4))
    s, one = b.const(spatial_scale, np.float32), b.const(1.0, np.float32)
    x1, y1 = b.op("Mul", x1, s), b.op("Mul", y1, s)
    x2, y2 = (b.op("Mul", b.op("Add", c, one), s) for c in (x2, y2))
    row_lo, row_hi = (b.op("Unsqueeze", t, b.ints(2, 3)) for t in _ps_bins(b, y1, y2, k, height))
    col_lo, col_hi = (b.op("Unsqueeze", t, b.ints(1, 3)) for t in _ps_bins(b, x1, x2, k, width))
    owner = b.op("Unsqueeze", b.op("Cast", b.column(rois, 0), to=_INT64), b.ints(1, 2, 3))
    i = np.arange(k)
    channel = (np.arange(depth)[None, None, :] * k + i[:, None, None]) * k + i[None, :, None]
    channel = b.const(channel, np.int64)  # [k, k, D]
    table = b.op("CumSum", b.op("CumSum", b.op("Cast", features, to=_DOUBLE), b.ints(1)), b.ints(2))
    table = b.op("Reshape", b.op("Pad", table, b.ints(0, 1, 1, 0, 0, 0, 0, 0)), b.ints(-1))
    rows, cols = b.op("Add", height, b.ints(1)), b.op("Add", width, b.ints(1))
    row_base = b.op("Mul", owner, rows)  # [K, 1, 1, 1]

    def corner(row, col):
        # ((batch·(H+1) + row)·(W+1) + col)·C + channel, broadcast to [K, k, k, D]
        cell = b.op("Add", b.op("Mul", b.op("Add", row_base, row), cols), col)
        return b.op("Gather", table, b.op("Add", b.op("Mul", cell, channels), channel), axis=0)

    total = b.op("Sub", corner(row_hi, col_hi), corner(row_lo, col_hi))
    total = b.op("Add", b.op("Sub", total, corner(row_hi, col_lo)), corner(row_lo, col_lo))
    zero = b.ints(0)
    area = b.op("Mul", b.op("Max", b.op("Sub", row_hi, row_lo), zero), b.op("Max", b.op("Sub", col_hi, col_lo), zero))
    area = b.op("Cast", area, to=_DOUBLE)
    mean = b.op("Div", total, b.op("Max", area, b.const(1.0, np.float64)))
    mean = b.op("Where", b.op("Greater", area, b.const(0.0, np.float64)), mean, b.const(0.0, np.float64))
    b.finish("Cast", [mean], node, to=_FLOAT)


def _combined_nms(ctx, node, name, args):
    """``CombinedNonMaxSuppression(boxes [B,N,q,4], scores [B,N,C], per_class, total, iou,
    score_threshold)`` with ``q = C`` (per-class boxes) or 1 → ``(boxes [B,D,4], scores [B,D],
    classes [B,D] float, valid [B] int32)``, ``D = total``, rows past ``valid`` zero.

    Each (image, class) is one ``NonMaxSuppression`` problem (boxes ``[B·q, N, 4]``, scores
    ``[B·q, C/q, N]``); the kept scores are scattered into a ``[B, C·N]`` grid of ``-inf`` whose
    ``TopK`` gives each image's ``D`` best (ties: lower class, then lower box first).
    """
    del name, args
    boxes, scores, per_class, total, iou, threshold = node.input
    if node.get_attr_value("pad_per_class", False) or node.get_attr_value("clip_boxes", True):
        raise ValueError("ONNX export of CombinedNonMaxSuppression supports pad_per_class=False, "
                         "clip_boxes=False only")
    keep_total = int(_constant(ctx, total))
    outputs = list(node.output)
    b = _take_over(ctx, node)
    batch, count, shared = b.dim(boxes, 0), b.dim(boxes, 1), b.dim(boxes, 2)
    classes = b.dim(scores, 2)
    per_group = b.op("Div", classes, shared)  # classes of one NMS problem: C (shared) or 1
    problem_boxes = b.op("Reshape", b.op("Transpose", boxes, perm=[0, 2, 1, 3]),
                         b.op("Concat", b.ints(-1), count, b.ints(4), axis=0))
    problem_scores = b.op("Reshape", b.op("Transpose", scores, perm=[0, 2, 1]),
                          b.op("Concat", b.ints(-1), per_group, count, axis=0))
    per_class = b.op("Cast", per_class, to=_INT64)
    kept = b.op("NonMaxSuppression", problem_boxes, problem_scores, per_class, iou, threshold)
    problem, box = b.column(kept, 0), b.column(kept, 2)
    image = b.op("Div", problem, shared)
    label = b.op("Add", b.column(kept, 1), b.op("Mul", b.op("Mod", problem, shared), per_group))

    def stack(*columns):
        return b.op("Concat", *(b.op("Unsqueeze", c, b.ints(1)) for c in columns), axis=1)

    kept_scores = b.op("GatherND", scores, stack(image, box, label))
    cells = b.op("Mul", classes, count)
    neg_inf = b.const(-np.inf, np.float32)
    grid = b.op("Expand", neg_inf, b.op("Concat", batch, cells, axis=0))
    grid = b.op("ScatterND", grid, stack(image, b.op("Add", b.op("Mul", label, count), box)), kept_scores)
    k = b.op("Min", b.ints(keep_total), cells)
    best, where = b.op("TopK", grid, k, outputs=2, axis=1, largest=1, sorted=1)
    pad = b.op("Concat", b.ints(0, 0, 0), b.op("Sub", b.ints(keep_total), k), axis=0)  # [B, k] → [B, D]
    best = b.op("Pad", best, pad, neg_inf)
    where = b.op("Pad", where, pad, b.const(0, np.int64))
    valid = b.op("Greater", best, neg_inf)
    best_label, best_box = b.op("Div", where, count), b.op("Mod", where, count)
    pick = b.op("Concat", b.op("Unsqueeze", best_box, b.ints(2)),
                b.op("Unsqueeze", b.op("Mod", best_label, shared), b.ints(2)), axis=2)
    picked = b.op("GatherND", boxes, pick, batch_dims=1)  # [B, D, 4]
    zero = b.const(0.0, np.float32)
    results = [
        ("Where", [b.op("Unsqueeze", valid, b.ints(2)), picked, zero], {}),
        ("Where", [valid, best, zero], {}),
        ("Where", [valid, b.op("Cast", best_label, to=_FLOAT), zero], {}),
        ("ReduceSum", [b.op("Cast", valid, to=_INT32), b.ints(1)], {"keepdims": 0}),
    ]
    for output, (op_type, inputs, attr) in zip(outputs, results):
        ctx.make_node(op_type, inputs, attr=attr, outputs=[output], op_name_scope=b.scope)


def _resize_bilinear(ctx, node, name, args):
    """``ResizeBilinear(images [B,H,W,C], size [2])`` → float32 ``[B,h,w,C]`` (replaces tf2onnx's
    handler, whose dynamic-size ``Resize`` does not pass ONNX shape inference inside a ``Loop``
    body, i.e. in the per-image resize of ``preprocess_batch``)."""
    del name, args
    if node.get_attr_value("align_corners", 0):
        mode = "align_corners"
    elif node.get_attr_value("half_pixel_centers", 0):
        mode = "half_pixel"
    else:
        mode = "asymmetric"
    images, size = node.input
    float_input = ctx.get_dtype(images) == _FLOAT
    b = _take_over(ctx, node)
    if not float_input:  # TF interpolates (and returns) float32 for any input type
        images = b.op("Cast", images, to=_FLOAT)
    channels_first = b.op("Transpose", images, perm=[0, 3, 1, 2])
    leading = b.op("Slice", b.op("Shape", channels_first), b.ints(0), b.ints(2))
    sizes = b.op("Concat", leading, b.op("Cast", size, to=_INT64), axis=0)
    # A static [4] shape: ONNX's Resize inference reads a symbolic length as 0 in Loop bodies.
    sizes = b.op("Reshape", sizes, b.ints(4))
    resized = b.op("Resize", channels_first, "", "", sizes, mode="linear",
                   coordinate_transformation_mode=mode)
    b.finish("Transpose", [resized], node, perm=[0, 2, 3, 1])


def _dynamic_stitch(ctx, node, name, args):
    """``DynamicStitch(indices_0…n−1 [M_i] int, data_0…n−1 [M_i, …])`` → ``[M, …]`` with
    ``output[indices[i]] = data[i]``, for indices that together are a permutation of
    ``0 … M−1`` (the positions of a ``tf.dynamic_partition``, as in ``MultiLevelRoIAlign``).

    Replaces tf2onnx's handler, which scatters element by element (``ScatterElements`` over an
    index expanded to the data's shape: a tenth of an R50-FPN's time); ``ScatterND`` moves whole
    rows. Its starting tensor is the concatenated data itself: every row is overwritten.
    """
    del name, args
    count = len(node.input) // 2
    indices, data = node.input[:count], node.input[count:]
    b = _take_over(ctx, node)
    rows = b.op("Concat", *data, axis=0)
    where = b.op("Cast", b.op("Concat", *indices, axis=0), to=_INT64)
    b.finish("ScatterND", [rows, b.op("Unsqueeze", where, b.ints(1)), rows], node)
