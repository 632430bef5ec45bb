"""SavedModel export for TensorFlow Serving, with the TF Object Detection API's signature.

Shapes: B images in a request, H, W their height and width in pixels, D = the model's
``max_detections``.

The SavedModel has one signature, ``serving_default``, with one input ``input_tensor`` whose
type depends on ``input_type``:

- ``"image_tensor"``: uint8 ``[B, H, W, 3]`` RGB;
- ``"float_image_tensor"``: float32 ``[B, H, W, 3]`` RGB in 0..255;
- ``"encoded_image_string_tensor"``: string ``[B]`` of JPEG/PNG/BMP/GIF bytes, each decoded to
  RGB (``tf.io.decode_image(channels=3, expand_animations=False)``, so the first GIF frame, alpha
  dropped). Images of different sizes are batched with their own sizes, so each is resized and
  detected exactly as it would be alone.

For ``image_tensor`` and ``float_image_tensor`` every image of ``serving_default``'s batch fills
it. A batch of images of different sizes goes to the second signature, ``serving_padded``: the
same ``input_tensor`` padded by the client at the bottom/right, plus ``image_sizes`` int32
``[B, 2]``, each image's own ``(height, width)``; each image then gets the detections it gets
alone, and its boxes are normalised by its own size.

B, H and W are dynamic. The outputs are named as in the TF Object Detection API:

- ``detection_boxes`` float32 ``[B, D, 4]``: ``[ymin, xmin, ymax, xmax]`` normalised to
  ``[0, 1]`` by **each input image's own** height and width (for a padded encoded image, its
  decoded size; padding at the bottom/right does not move the origin, so the boxes stay
  relative to that image's pixels), clipped to ``[0, 1]``;
- ``detection_scores`` float32 ``[B, D]``, best first;
- ``detection_classes`` float32 ``[B, D]``: **1-based** class ids as in an OD API label map,
  ``id = model label + 1``, so id ``k`` is ``model.class_names[k - 1]``;
- ``num_detections`` float32 ``[B]``: the valid rows; rows past it are all zero (class 0).

Detectors whose proposals come from outside the network take them as a second input,
``proposals`` float32 ``[B, R, 4]`` in the model's ``bounding_box_format`` and each image's own
pixels, zero-padded (a row without area is padding), computed by the client (e.g. with
``rcnn_zoo.proposals.selective_search``): Fast R-CNN, and R-CNN, whose regions are warped and
scored in chunks of its ``region_batch_size`` inside the graph (its ``predict`` loop), so memory
does not grow with ``R``.

The class names travel with the model as two assets: ``assets/labels.txt`` (line ``k``, counted
from 1, is the name of class id ``k``) and ``assets/label_map.pbtxt`` (an OD API
``StringIntLabelMap``). The graph is traced inside :func:`rcnn_zoo.ops.force_fallback`, so it
holds only stock TensorFlow ops and stock TF Serving loads it; see ``docs/serving.md``.
"""

import contextlib
import os
import tempfile

import tensorflow as tf

from rcnn_zoo.checkpoints import replace_directory
from rcnn_zoo.ops import _loader
from rcnn_zoo.ops import boxes as box_ops

INPUT_TYPES = ("image_tensor", "encoded_image_string_tensor", "float_image_tensor")
SIGNATURE_NAME = "serving_default"
PADDED_SIGNATURE_NAME = "serving_padded"  # image/float tensors + each image's own size
INPUT_NAME = "input_tensor"
SIZES_NAME = "image_sizes"
PROPOSALS_NAME = "proposals"  # second input of models that take external proposals (Fast R-CNN, R-CNN)
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
LABELS_FILENAME = "labels.txt"
LABEL_MAP_FILENAME = "label_map.pbtxt"
CUSTOM_OP_PREFIX = "RcnnZoo"

_INPUT_SPECS = {
    "image_tensor": tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME),
    "float_image_tensor": tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_NAME),
    "encoded_image_string_tensor": tf.TensorSpec([None], tf.string, name=INPUT_NAME),
}


def class_names_of(model):
    """The model's class names, or ``class_0 … class_{C−1}`` (model labels) when it has none."""
    names = getattr(model, "class_names", None)
    if names is None:
        return [f"class_{label}" for label in range(int(model.num_classes))]
    return [str(name) for name in names]


def decode_images(encoded):
    """JPEG/PNG/BMP/GIF bytes ``[B]`` → (uint8 ``[B, H, W, 3]`` padded with zeros at the
    bottom/right to the largest image, int32 ``[B, 2]`` each image's own ``(height, width)``)."""

    def decode(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
        image.set_shape([None, None, 3])
        return tf.RaggedTensor.from_tensor(image, ragged_rank=1), tf.shape(image)[:2]

    images, sizes = tf.map_fn(
        decode,
        encoded,
        fn_output_signature=(
            tf.RaggedTensorSpec([None, None, 3], tf.uint8, ragged_rank=1),
            tf.TensorSpec([2], tf.int32),
        ),
    )
    return images.to_tensor(), sizes


def detections_to_od_api(model, outputs, image_sizes):
    """The model's predict dict → the OD API's four outputs (see the module docstring).

    Args:
        model: gives ``bounding_box_format``.
        outputs: ``{"boxes" [B,D,4] (bounding_box_format, each image's own pixels),
            "scores" [B,D], "labels" [B,D] (0…C−1, −1 padding), "num_detections" [B]}``.
        image_sizes: int ``[B, 2]`` ``(height, width)`` of each image's own pixels (relative
            box formats are relative to them).
    """
    sizes = tf.cast(image_sizes, tf.float32)
    height, width = sizes[:, 0:1], sizes[:, 1:2]
    boxes = box_ops.convert_format(
        tf.cast(outputs["boxes"], tf.float32), model.bounding_box_format, "xyxy", height=height, width=width
    )
    normalised = tf.stack(
        [boxes[..., 1] / height, boxes[..., 0] / width, boxes[..., 3] / height, boxes[..., 2] / width],
        axis=-1,
    )
    normalised = tf.clip_by_value(normalised, 0.0, 1.0)
    scores = tf.cast(outputs["scores"], tf.float32)
    classes = tf.cast(tf.cast(outputs["labels"], tf.int32) + 1, tf.float32)
    valid = tf.sequence_mask(tf.cast(outputs["num_detections"], tf.int32), tf.shape(scores)[1])
    # A detection outside its image is empty once clipped: drop it and move the rest up, keeping
    # their order (best first). rcnn_zoo's detectors already clip and drop, so they lose nothing.
    valid &= (normalised[..., 2] > normalised[..., 0]) & (normalised[..., 3] > normalised[..., 1])
    order = tf.argsort(tf.cast(~valid, tf.int32), axis=1, stable=True)
    normalised = tf.gather(normalised, order, batch_dims=1)
    scores = tf.gather(scores, order, batch_dims=1)
    classes = tf.gather(classes, order, batch_dims=1)
    count = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
    valid = tf.sequence_mask(count, tf.shape(scores)[1])
    return {
        "detection_boxes": tf.where(valid[..., None], normalised, 0.0),
        "detection_scores": tf.where(valid, scores, 0.0),
        "detection_classes": tf.where(valid, classes, 0.0),
        "num_detections": tf.cast(count, tf.float32),
    }


def _is_region_scorer(model):
    """R-CNN: scores warped regions (``score_regions``) and post-processes them itself
    (``postprocess``) instead of one call on the images."""
    return callable(getattr(model, "score_regions", None)) and callable(getattr(model, "postprocess", None))


def takes_proposals(model):
    """Whether the SavedModel of ``model`` has the ``proposals`` input: Fast R-CNN
    (``takes_proposals``) and R-CNN."""
    return bool(getattr(model, "takes_proposals", False)) or _is_region_scorer(model)


def region_scorer_detections(model, images, image_sizes, proposals):
    """R-CNN's detections on given proposals, as a graph: its ``predict`` loop without
    selective search.

    Args:
        images: float32 ``[B, H, W, 3]`` raw pixels, padded bottom/right.
        image_sizes: int32 ``[B, 2]`` each image's own ``(height, width)``.
        proposals: ``[B, R, 4]`` in ``model.bounding_box_format``, each image's own pixels;
            all-zero rows (and rows without area) are padding.

    The ``B·R`` regions are warped (pixels outside an image's own size count as outside it) and
    scored ``model.region_batch_size`` at a time in a ``tf.while_loop``, then regressed, clipped
    and suppressed (``model.postprocess``) as ``predict`` does.
    """
    images = tf.cast(images, tf.float32)
    image_sizes = tf.cast(image_sizes, tf.int32)
    shape = tf.shape(images)
    batch = shape[0]
    own = tf.cast(image_sizes, tf.float32)
    boxes = tf.cast(proposals, tf.float32)
    padding = tf.reduce_all(tf.equal(boxes, 0.0), axis=-1, keepdims=True)
    boxes = box_ops.convert_format(boxes, model.bounding_box_format, "xyxy",
                                   height=own[:, 0:1], width=own[:, 1:2])
    boxes = tf.where(padding, 0.0, boxes)
    count = tf.shape(boxes)[1]
    flat = tf.reshape(boxes, [-1, 4])
    owners = tf.repeat(tf.range(batch), count)
    chunk = int(model.region_batch_size)
    total = tf.shape(flat)[0]
    steps = tf.maximum((total + chunk - 1) // chunk, 1)
    classes = int(model.num_classes)

    def body(step, scores, deltas):
        start = step * chunk
        part_scores, part_deltas = model.score_regions(
            images, flat[start:start + chunk], owners[start:start + chunk], image_sizes
        )
        return step + 1, tf.concat([scores, part_scores], 0), tf.concat([deltas, part_deltas], 0)

    # The chunks are appended to loop-carried tensors rather than a TensorArray: tf2onnx cannot
    # convert TensorArray.concat (ONNX export), and the values are the same.
    scores = tf.zeros([0, classes], tf.float32)
    deltas = tf.zeros([0, classes, 4], tf.float32)
    invariants = (tf.TensorShape([]), tf.TensorShape([None, classes]), tf.TensorShape([None, classes, 4]))
    _, scores, deltas = tf.while_loop(lambda step, *_: step < steps, body, (0, scores, deltas),
                                      shape_invariants=invariants)
    scores = tf.reshape(scores, [batch, count, classes])
    deltas = tf.reshape(deltas, [batch, count, classes, 4])
    return model.postprocess(boxes, scores, deltas, tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32))


def serving_fn(model, input_type, with_sizes=False):
    """The ``tf.function`` behind ``serving_default`` (input signature fixed by ``input_type``),
    or with ``with_sizes`` behind ``serving_padded`` (a second input ``image_sizes [B, 2]``).

    Not traced here; :func:`export_saved_model` traces it inside ``force_fallback()``.
    """
    if input_type not in _INPUT_SPECS:
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")
    if with_sizes and input_type == "encoded_image_string_tensor":
        raise ValueError("encoded images carry their own sizes; serving_padded takes image tensors")
    with_proposals = takes_proposals(model)
    region_scorer = _is_region_scorer(model)

    def serve(input_tensor, *extra):
        extra = list(extra)
        sizes = extra.pop(0) if with_sizes else None
        proposals = extra.pop(0) if with_proposals else None
        if input_type == "encoded_image_string_tensor":
            images, sizes = decode_images(input_tensor)
        else:
            images = input_tensor
            if sizes is None:
                shape = tf.shape(images)
                sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
        images = tf.cast(images, tf.float32)
        sizes = tf.cast(sizes, tf.int32)
        inputs = {"images": images, "image_sizes": sizes}
        if proposals is not None:
            # Fast R-CNN, R-CNN: proposals [B, R, 4] in each image's own pixels, computed by the client.
            inputs["proposals"] = proposals
        if region_scorer:
            outputs = region_scorer_detections(model, images, sizes, proposals)
        else:
            outputs = model(inputs, training=False)
        return detections_to_od_api(model, outputs, sizes)

    signature = [_INPUT_SPECS[input_type]]
    if with_sizes:
        signature.append(tf.TensorSpec([None, 2], tf.int32, name=SIZES_NAME))
    if with_proposals:
        signature.append(tf.TensorSpec([None, None, 4], tf.float32, name=PROPOSALS_NAME))
    return tf.function(serve, input_signature=signature, autograph=False)


def custom_op_types(graph_def):
    """Sorted op types of rcnn_zoo's custom ops in a GraphDef, its function library included."""
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return sorted({node.op for node in nodes if node.op.startswith(CUSTOM_OP_PREFIX)})


class _ServingModule(tf.Module):
    """What is saved: the model's variables, the serving function and the label assets.

    The Keras model itself is not an attribute (it would be tracked and saved as an object
    graph); the function captures its variables, which are tracked through ``model_variables``.
    """

    def __init__(self, model, functions, asset_paths):
        super().__init__(name="rcnn_zoo_detector")
        self.model_variables = list(model.variables)
        self.serve = functions[0]
        if len(functions) > 1:
            self.serve_padded = functions[1]
        self.labels_file = tf.saved_model.Asset(asset_paths[0])
        self.label_map_file = tf.saved_model.Asset(asset_paths[1])


def _write_label_assets(directory, names):
    labels = os.path.join(directory, LABELS_FILENAME)
    with open(labels, "w", encoding="utf-8") as handle:
        handle.writelines(f"{name}\n" for name in names)
    label_map = os.path.join(directory, LABEL_MAP_FILENAME)
    with open(label_map, "w", encoding="utf-8") as handle:
        for index, name in enumerate(names):
            escaped = name.replace("\\", "\\\\").replace("'", "\\'")
            handle.write(f"item {{\n  id: {index + 1}\n  name: '{escaped}'\n}}\n")
    return labels, label_map


def _check_model(model):
    missing = [
        attribute
        for attribute in ("bounding_box_format", "num_classes")
        if getattr(model, attribute, None) is None
    ]
    if missing or not callable(model):
        raise TypeError(
            "export_saved_model needs a detector: callable as model(images, training=False) "
            "→ {'boxes', 'scores', 'labels', 'num_detections'}, with bounding_box_format and "
            f"num_classes; {type(model).__name__} lacks {missing or ['__call__']}"
        )
    if not model.built:
        # Build eagerly: creating variables while tracing the serving function would fail.
        images = tf.zeros([1, 64, 64, 3], tf.float32)
        if takes_proposals(model):
            model({"images": images, "proposals": tf.zeros([1, 1, 4])}, training=False)
        else:
            model(images, training=False)


def export_saved_model(model, path, input_type="image_tensor", verbose=True, portable=True):
    """Write ``model`` as a SavedModel for TF Serving (signature ``serving_default``).

    Args:
        model: a :class:`rcnn_zoo.TwoStageDetector` (anything with ``model({"images": [B,H,W,3],
            "image_sizes": [B,2]}, training=False)`` → ``{"boxes", "scores", "labels",
            "num_detections"}`` in each image's own pixels,
            ``bounding_box_format``, ``num_classes`` and optional ``class_names``).
        path: the SavedModel directory to write (created if missing).
        input_type: ``"image_tensor"`` (uint8 ``[B,H,W,3]``), ``"float_image_tensor"``
            (float32 ``[B,H,W,3]``, 0..255) or ``"encoded_image_string_tensor"`` (JPEG/PNG bytes
            ``[B]``); the input is named ``input_tensor``.
        verbose: print where the model went and its signature.
        portable: trace with the pure-TensorFlow RoI ops (default), so any TensorFlow or TF
            Serving loads the model. ``False`` keeps the compiled ops when they are loaded; the
            server must then load ``_rcnn_zoo_ops*.so`` before the model.

    Returns:
        ``path`` as a string. Outputs, box and class conventions: see the module docstring.

    Raises:
        ValueError: unknown ``input_type``, or (``portable=True``) custom ops in the graph.
        TypeError: ``model`` is not a detector.
    """
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")
    _check_model(model)
    path = os.fspath(path)
    names = class_names_of(model)
    if len(names) != int(model.num_classes):
        raise ValueError(f"{len(names)} class names for num_classes={model.num_classes}")
    functions = {SIGNATURE_NAME: serving_fn(model, input_type)}
    if input_type != "encoded_image_string_tensor":
        functions[PADDED_SIGNATURE_NAME] = serving_fn(model, input_type, with_sizes=True)
    with tempfile.TemporaryDirectory(prefix="rcnn_zoo_export_") as scratch:
        module = _ServingModule(model, list(functions.values()), _write_label_assets(scratch, names))
        tracing = _loader.force_fallback() if portable else contextlib.nullcontext()
        with tracing:
            signatures = {name: f.get_concrete_function() for name, f in functions.items()}
            custom = sorted(
                {op for c in signatures.values() for op in custom_op_types(c.graph.as_graph_def())}
            )
            if portable and custom:
                raise ValueError(f"custom ops {custom} in a portable export (please report this)")
            _check_replaceable(path)
            # Written next to ``path`` and renamed into place: a kill mid-export leaves the
            # previous export (TF Serving may be serving it) or the new one, never half of one.
            replace_directory(lambda tmp: tf.saved_model.save(module, tmp, signatures=signatures), path)
    if verbose:
        _print_summary(model, path, input_type, names, custom)
    return path


def _check_replaceable(path):
    """Refuse to replace a non-empty directory that is not a SavedModel (someone's files)."""
    if os.path.isdir(path) and os.listdir(path) and not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"{path} exists and is not a SavedModel (no saved_model.pb); export to a new "
                         "or empty directory, e.g. serving/<name>/<version>")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path} exists and is a file; export to a directory")


def _print_summary(model, path, input_type, names, custom):
    spec = _INPUT_SPECS[input_type]
    shape = "[B]" if input_type == "encoded_image_string_tensor" else "[B, H, W, 3]"
    ops = f"custom ops {custom} (load _rcnn_zoo_ops*.so first)" if custom else "stock TensorFlow ops only"
    padded = ""
    proposals = ""
    if takes_proposals(model):
        proposals = (f"  second input {PROPOSALS_NAME} float32 [B, R, 4] ({model.bounding_box_format}, each "
                     "image's own pixels, zero-padded; the client's selective search)\n")
    if input_type != "encoded_image_string_tensor":
        padded = (
            f"  signature '{PADDED_SIGNATURE_NAME}': the same, padded, plus {SIZES_NAME} int32 "
            "[B, 2] (each image's height, width)\n"
        )
    print(
        f"Saved {type(model).__name__} to {path} ({ops})\n"
        f"  signature '{SIGNATURE_NAME}': {INPUT_NAME} {spec.dtype.name} {shape} ({input_type})\n"
        f"{padded}"
        f"{proposals}"
        "  outputs: detection_boxes [B, D, 4] (normalised ymin, xmin, ymax, xmax), "
        "detection_scores [B, D], detection_classes [B, D] (1-based ids), num_detections [B]\n"
        f"  classes: {', '.join(f'{i + 1}={n}' for i, n in enumerate(names))} "
        f"(assets/{LABELS_FILENAME}, assets/{LABEL_MAP_FILENAME})"
    )
