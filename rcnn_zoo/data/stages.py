"""The stages of the input pipeline, each a small function; ``pipeline.detection_batches``
composes them into one ``tf.data`` pass::

    read + decode → resize (record rule) → augment → resize (detector rule) → example → pad + batch

Shape shorthand: ``N`` records, ``H, W`` image height and width, ``n`` objects of one image,
``B`` images in a batch, ``G`` boxes per image after padding. Images are float32 ``[H, W, 3]``
RGB in 0..255 once decoded; boxes float32 ``[n, 4]`` xyxy in continuous pixels of the image they
belong to (``docs/conventions.md``); labels int32 ``[n]`` in ``0 … C−1``, ``-1`` pads.
"""

import dataclasses
import math
import warnings

import numpy as np
import tensorflow as tf

from rcnn_zoo.data.checks import DatasetWarning
from rcnn_zoo.models.preprocessing import resize_images

__all__ = [
    "resized_size",
    "RecordTable",
    "Batching",
    "decode",
    "resize_to_record_size",
    "scale_boxes",
    "resize_by_rule",
    "example",
    "batch",
    "pad_to_multiple",
    "orientation_batch_count",
]


def _round_half_up(value):
    return int(math.floor(value + 0.5))


def resized_size(height, width, min_size=None, max_size=None):
    """Size ``(new_height, new_width)`` keeping the aspect ratio: the shorter side becomes
    ``min_size`` unless the longer one would exceed ``max_size``, then the longer side is
    ``max_size``. Only ``max_size``: shrink images whose longer side is larger. Neither: same.
    """
    scale = 1.0
    if min_size is not None:
        scale = min_size / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, _round_half_up(height * scale)), max(1, _round_half_up(width * scale))


def orientation_batch_count(sizes, batch_size):
    """Batches in an epoch when portrait originals (``height > width``) and the others are
    batched apart: ``sizes`` are the originals' ``(height, width)``."""
    sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
    portrait = int(np.sum(sizes[:, 0] > sizes[:, 1]))
    return math.ceil(portrait / batch_size) + math.ceil((len(sizes) - portrait) / batch_size)


@dataclasses.dataclass(frozen=True)
class RecordTable:
    """Everything the pipeline needs per record, computed once in NumPy and gathered by index
    inside the ``tf.data`` maps (so a map never touches Python objects).

    Attributes:
        paths: string ``[N]`` image files.
        sizes: int32 ``[N, 2]`` original ``(height, width)``; new_sizes: after the record
            resize (:func:`resized_size`), in pixels.
        boxes: float32 ``[Σn, 4]`` xyxy, original pixels, every record's objects end to end;
            labels int32 ``[Σn]``; difficult bool ``[Σn]``; splits int64 ``[N + 1]``: record
            ``i`` owns rows ``splits[i] … splits[i+1]``.
        max_boxes: ``G`` when fixed, or None (pad to the largest count of a batch).
        resize: whether the record resize is on (``min_size`` or ``max_size`` given).
    """

    paths: tf.Tensor
    sizes: tf.Tensor
    new_sizes: tf.Tensor
    boxes: tf.Tensor
    labels: tf.Tensor
    difficult: tf.Tensor
    splits: tf.Tensor
    max_boxes: int = None
    resize: bool = False

    @classmethod
    def build(cls, records, *, keep_difficult=True, max_boxes=None, min_size=None, max_size=None):
        """The table of ``records`` (:class:`~rcnn_zoo.data.DetectionRecord` s).

        ``keep_difficult=False`` leaves ``difficult``/crowd objects out; ``max_boxes`` keeps the
        first ``G`` objects of an image that has more (one :class:`DatasetWarning` names them).
        """
        records = list(records)
        if not records:
            raise ValueError("no records to build a dataset from")
        objects = _first([_objects(r, keep_difficult) for r in records], records, max_boxes)
        boxes, labels, difficult = (np.concatenate(part) for part in zip(*objects))
        sizes = np.asarray([(r.height, r.width) for r in records], np.int32).reshape(-1, 2)
        new_sizes = np.asarray([resized_size(h, w, min_size, max_size) for h, w in sizes], np.int32)
        splits = np.concatenate([[0], np.cumsum([len(o[1]) for o in objects])]).astype(np.int64)
        return cls(
            paths=tf.constant([str(r.image_path) for r in records]),
            sizes=tf.constant(sizes),
            new_sizes=tf.constant(new_sizes.reshape(-1, 2)),
            boxes=tf.constant(boxes.astype(np.float32).reshape(-1, 4)),
            labels=tf.constant(labels.astype(np.int32)),
            difficult=tf.constant(difficult.astype(bool)),
            splits=tf.constant(splits),
            max_boxes=max_boxes,
            resize=min_size is not None or max_size is not None,
        )

    def __len__(self):
        return int(self.paths.shape[0])

    def objects(self, index):
        """``(boxes [n, 4] xyxy original pixels, labels [n], difficult [n])`` of record ``index``."""
        start, end = self.splits[index], self.splits[index + 1]
        return self.boxes[start:end], self.labels[start:end], self.difficult[start:end]

    def check_fits(self, pad_to):
        """Raise ``ValueError`` naming the first image that, resized, is larger than
        ``pad_to`` ``(H, W)``."""
        # Static values: the table's tensors are constants, also when built inside a graph.
        for path, (h, w) in zip(tf.get_static_value(self.paths), tf.get_static_value(self.new_sizes)):
            if h > pad_to[0] or w > pad_to[1]:
                raise ValueError(f"{path.decode()}: resized to {h}x{w} (HxW), larger than pad_to={pad_to}")

    def batch_count(self, batch_size):
        """:func:`orientation_batch_count` of these records."""
        return orientation_batch_count(tf.get_static_value(self.sizes), batch_size)


def _objects(record, keep_difficult):
    """``(boxes, labels, difficult)`` of a record, without ``difficult`` ones unless kept."""
    keep = np.ones(len(record.labels), bool) if keep_difficult else ~record.difficult
    return record.boxes[keep].reshape(-1, 4), record.labels[keep], record.difficult[keep]


def _first(objects, records, max_boxes):
    """The first ``max_boxes`` objects of each image; one warning names images that had more."""
    if max_boxes is None:
        return objects
    too_many = [f"{r.image_path} ({len(o[1])})" for r, o in zip(records, objects) if len(o[1]) > max_boxes]
    if too_many:
        warnings.warn(
            f"{len(too_many)} image(s) have more than max_boxes={max_boxes} boxes; only the first "
            f"{max_boxes} are used: {', '.join(too_many[:3])}{' …' if len(too_many) > 3 else ''}",
            DatasetWarning,
            stacklevel=4,  # the caller of make_tf_dataset (_first ← build ← make_tf_dataset)
        )
    return [tuple(part[:max_boxes] for part in o) for o in objects]


@dataclasses.dataclass(frozen=True)
class Batching:
    """How images become batches.

    Attributes:
        size: images per batch ``B``.
        pad_to: fixed padded ``(H, W)`` in pixels (static shapes), or None: the batch maximum.
        size_divisibility: also pad ``H`` and ``W`` up to a multiple of this (e.g. 32).
        drop_remainder: drop a last incomplete batch (static batch dimension).
        by_orientation: batch portrait originals (``height > width``) and the others apart,
            keyed by the ORIGINAL size so the number of batches is the same every epoch
            (:func:`orientation_batch_count`) and is declared as the cardinality.
    """

    size: int = 2
    pad_to: tuple = None
    size_divisibility: int = None
    drop_remainder: bool = False
    by_orientation: bool = False

    def __post_init__(self):
        if self.by_orientation and self.drop_remainder:
            raise ValueError("by_orientation declares every batch in its cardinality; drop_remainder would drop some")


def decode(table, index):
    """Read and decode record ``index``: ``(index, uint8 [H, W, 3])``. A decoded size that
    differs from the record's raises ``InvalidArgumentError`` naming the file."""
    path = table.paths[index]
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    check = tf.debugging.Assert(
        tf.reduce_all(tf.equal(tf.shape(image)[:2], table.sizes[index])),
        ["decoded image size differs from its record:", path, tf.shape(image), table.sizes[index]],
    )
    with tf.control_dependencies([check]):
        return index, tf.identity(image)


def resize_to_record_size(table, index, image):
    """Resize a decoded image to the record's new size (bilinear) when the table resizes.

    Returns:
        ``(float32 [h, w, 3] 0..255, scale float32 [2])``: ``(sy, sx)`` = new / original size.
    """
    new_size = table.new_sizes[index]
    image = tf.cast(image, tf.float32)
    if table.resize:
        image = tf.image.resize(image, new_size, method="bilinear")
    return image, tf.cast(new_size, tf.float32) / tf.cast(table.sizes[index], tf.float32)


def scale_boxes(boxes, scale):
    """Boxes ``[n, 4]`` xyxy times ``scale`` ``(sy, sx)``."""
    return boxes * tf.stack([scale[1], scale[0], scale[1], scale[0]])


def resize_by_rule(image, boxes, min_size, max_size):
    """Resize an augmented image by the detector's own rule
    (:func:`rcnn_zoo.models.preprocessing.resize_images`), so that the model, which resizes the
    padded batch by one scale, finds a scale of exactly 1 for same-orientation batches.

    Returns:
        ``(float32 [H', W', 3], boxes [n, 4] xyxy pixels of the resized image)``.
    """
    resized, factors = resize_images(image[None], min_size, max_size)
    return resized[0], scale_boxes(boxes, factors)


def example(table, index, image, objects, *, flipped, scale, with_difficult, with_metadata):
    """One element ``(inputs, targets, portrait)``; ``portrait`` (the original's ``height >
    width``) is the batching key and is dropped by :func:`batch`.

    ``objects`` is ``(boxes, labels, difficult)`` of the final image; the targets hold
    ``"difficult"`` when ``with_difficult``, and the metadata of the module docstring of
    ``rcnn_zoo.data.pipeline`` when ``with_metadata`` (``scale`` from the record resize).
    """
    boxes, labels, difficult = objects
    targets = {"boxes": boxes, "labels": labels}
    if with_difficult:
        targets["difficult"] = difficult
    if with_metadata:
        targets.update(
            image_id=tf.cast(index, tf.int32),
            scale=scale,
            original_size=table.sizes[index],
            image_size=table.new_sizes[index],
            flipped=flipped,  # so per-image side data (e.g. proposals) can be mirrored too
        )
    inputs = {"images": image, "image_sizes": tf.shape(image)[:2]}
    original = table.sizes[index]
    return inputs, targets, original[0] > original[1]


def _padding(table, batching, with_difficult, with_metadata):
    """``(padded_shapes, padding_values)`` of an element of :func:`example`."""
    g = table.max_boxes
    target_shapes = {"boxes": [g, 4], "labels": [g]}
    target_padding = {"boxes": 0.0, "labels": -1}
    if with_difficult:
        target_shapes["difficult"] = [g]
        target_padding["difficult"] = False
    if with_metadata:
        target_shapes.update(image_id=[], scale=[2], original_size=[2], image_size=[2], flipped=[])
        target_padding.update(image_id=0, scale=0.0, original_size=0, image_size=0, flipped=False)
    image_shape = [None, None, 3] if batching.pad_to is None else [batching.pad_to[0], batching.pad_to[1], 3]
    shapes = ({"images": image_shape, "image_sizes": [2]}, target_shapes, [])
    return shapes, ({"images": 0.0, "image_sizes": 0}, target_padding, False)


def batch(elements, table, batching, *, with_difficult, with_metadata):
    """Pad and batch the elements of :func:`example` into ``(inputs, targets)`` batches:
    images padded bottom/right with zeros, boxes with zeros, labels with -1."""
    shapes, padding = _padding(table, batching, with_difficult, with_metadata)

    def padded_batch(dataset):
        return dataset.padded_batch(batching.size, shapes, padding, drop_remainder=batching.drop_remainder)

    if batching.by_orientation:
        batches = elements.group_by_window(
            key_func=lambda inputs, targets, portrait: tf.cast(portrait, tf.int64),
            reduce_func=lambda key, window: padded_batch(window),
            window_size=batching.size,
        )
    else:
        batches = padded_batch(elements)
    batches = batches.map(lambda inputs, targets, portrait: (inputs, targets))
    if batching.by_orientation:
        # Keras then shows n/N steps and never runs a step into the end of the data.
        batches = batches.apply(tf.data.experimental.assert_cardinality(table.batch_count(batching.size)))
    return batches


def pad_to_multiple(inputs, targets, divisor):
    """Pad a batch's images ``[B, H, W, 3]`` bottom/right with zeros so that ``H`` and ``W``
    are multiples of ``divisor``."""
    images = inputs["images"]
    shape = tf.shape(images)
    pad_h, pad_w = (-shape[1]) % divisor, (-shape[2]) % divisor
    images = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    return {**inputs, "images": images}, targets
