"""Detection records, the dataset object the readers return, and the ``tf.data`` input pipeline.

Shape shorthand: ``B`` images in a batch, ``H, W`` (padded) image height and width, ``G`` ground
truth boxes per image (padded), ``n`` objects of one image.

Every box here is float32 ``xyxy`` in pixels of the image it belongs to, **continuous**
coordinates: ``x2 - x1`` is the width (``docs/conventions.md``). Readers convert from their file
format (VOC's 1-based inclusive corners, COCO's ``xywh``) when they read; labels are
``0 … C−1`` and ``-1`` marks padding.

The pipeline is one pass, :func:`detection_batches`, over the stages of
``rcnn_zoo.data.stages`` and the augmentations of ``rcnn_zoo.data.augment``::

    read + decode (optionally cached) → shuffle → resize (record rule) → augment
    → resize (detector rule, training_dataset only) → pad + batch → prefetch

:func:`make_tf_dataset` (and ``rcnn_zoo.data.training_dataset``) only choose its options. It
turns records into batches ready for ``model.fit``::

    ({"images":      float32 [B, H, W, 3] in 0..255, padded bottom/right with zeros,
      "image_sizes": int32   [B, 2] each image's own (height, width) inside the batch},
     {"boxes":  float32 [B, G, 4] xyxy pixels of the resized image, padded with zeros,
      "labels": int32   [B, G], padded with -1})

The sizes travel with the batch so that a detector resizes and pads each image as it would
alone (a portrait photo next to a landscape one is not shrunk).

With ``training=False`` the targets also carry ``"difficult"`` (bool ``[B, G]``: VOC
``difficult`` or COCO ``iscrowd``, objects an evaluator ignores), and with
``return_metadata=True`` they carry ``"image_id"`` (int32 ``[B]``: index of the record),
``"scale"`` (float32 ``[B, 2]``: ``(sy, sx)``, resized / original size), ``"original_size"``
and ``"image_size"`` (int32 ``[B, 2]``: ``(height, width)`` before resizing and after resizing,
before padding), so that predictions can be mapped back to original pixels: divide x by ``sx``,
y by ``sy``; and ``"flipped"`` (bool ``[B]``: the image was mirrored horizontally).

The readers' checks (``check_image``, ``ProblemLog``, the problem kinds) live in
``rcnn_zoo.data.checks`` and are importable from here too, where the readers import them.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from rcnn_zoo.data import stages
from rcnn_zoo.data.augment import DEFAULT_JITTER, Augmentation, Jitter
from rcnn_zoo.data.checks import (  # noqa: F401  (the readers and tests import them from here)
    BOX_CLIPPED,
    BOX_OUTSIDE,
    DAMAGED_IMAGE,
    DUPLICATE_IMAGE,
    EMPTY_BOX,
    EMPTY_IMAGE_FILE,
    MALFORMED_ANNOTATION,
    MISSING_FILE,
    NON_FINITE_BOX,
    NOT_AN_IMAGE,
    SIZE_MISMATCH,
    UNKNOWN_CLASS,
    UNREADABLE_IMAGE,
    DatasetError,
    DatasetWarning,
    ProblemLog,
    UnreadableImageError,
    check_image,
    check_images,
    problem_text,
    sanitize_boxes,
)
from rcnn_zoo.data.stages import Batching, RecordTable, resized_size

__all__ = [
    "DatasetError",
    "DatasetWarning",
    "DetectionRecord",
    "DetectionDataset",
    "make_tf_dataset",
    "detection_batches",
    "flip_probability",
    "resized_size",
    "DEFAULT_JITTER",
]


@dataclasses.dataclass
class DetectionRecord:
    """One image and its objects, in the image's original pixels.

    Attributes:
        image_path: path of the image file.
        image_id: the source's id: the file stem for VOC, the ``"id"`` of the image for COCO.
        boxes: float32 ``[n, 4]`` xyxy, continuous pixel coordinates of the original image.
        labels: int32 ``[n]`` in ``0 … C−1``.
        difficult: bool ``[n]``: VOC ``difficult`` / COCO ``iscrowd``. Evaluators ignore these
            objects (neither true nor false positives); training leaves them out by default.
        height, width: size of the image in pixels (of the file itself when it was checked).
        annotation_path: the file the objects came from.
        areas: float32 ``[n]`` COCO ``"area"`` of each object (segment area), or None; the COCO
            evaluator uses it for its small/medium/large ranges, box area otherwise.
    """

    image_path: str
    image_id: object
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    height: int
    width: int
    annotation_path: str = None
    areas: np.ndarray = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int32).reshape(-1)
        self.difficult = np.asarray(self.difficult, bool).reshape(-1)
        if self.areas is not None:
            self.areas = np.asarray(self.areas, np.float32).reshape(-1)
        if not len(self.boxes) == len(self.labels) == len(self.difficult):
            raise ValueError(f"{self.image_path}: boxes, labels and difficult differ in length")


class DetectionDataset:
    """Records plus class names: what :func:`read_voc` and :func:`read_coco` return.

    Args:
        records: list of :class:`DetectionRecord`.
        class_names: names of classes ``0 … C−1``.
        category_ids: for COCO, the original category id of each class (to write results
            back); None otherwise.
        use_difficult: whether training batches include ``difficult``/crowd objects.
        source: a short description of where the data came from (used in messages).
        problems: what the reader skipped or changed, ``{kind: ["file: detail", …]}``.
    """

    def __init__(
        self,
        records,
        class_names,
        *,
        category_ids=None,
        use_difficult=False,
        source="custom",
        problems=None,
    ):
        self.records = list(records)
        self.class_names = list(class_names)
        self.category_ids = None if category_ids is None else list(category_ids)
        self.use_difficult = use_difficult
        self.source = source
        self.problems = dict(problems or {})

    @property
    def num_classes(self):
        return len(self.class_names)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]

    def __iter__(self):
        return iter(self.records)

    def __repr__(self):
        return (
            f"DetectionDataset({self.source!r}, {len(self)} images, "
            f"{sum(len(r.labels) for r in self.records)} objects, classes={self.class_names})"
        )

    def class_counts(self, include_difficult=True):
        """``{class name: number of objects}`` over all records."""
        counts = np.zeros(self.num_classes, np.int64)
        for record in self.records:
            labels = record.labels if include_difficult else record.labels[~record.difficult]
            counts += np.bincount(labels, minlength=self.num_classes)[: self.num_classes]
        return dict(zip(self.class_names, counts.tolist()))

    def ground_truths(self, with_areas=False):
        """Per image ``(boxes [n, 4], labels [n], difficult [n])`` in original pixels.

        This is the ``ground_truths`` argument of ``rcnn_zoo.evaluation.voc_ap_per_class`` and
        ``coco_evaluate``; ``with_areas`` appends the COCO ``areas`` (or None) as a 4th item.
        """
        if with_areas:
            return [(r.boxes, r.labels, r.difficult, r.areas) for r in self.records]
        return [(r.boxes, r.labels, r.difficult) for r in self.records]

    def subset(self, indices):
        """A dataset with the records at ``indices`` (same classes)."""
        return DetectionDataset(
            [self.records[i] for i in indices],
            self.class_names,
            category_ids=self.category_ids,
            use_difficult=self.use_difficult,
            source=self.source,
            problems=self.problems,
        )

    def to_tf_dataset(self, batch_size=2, training=False, **kwargs):
        """``tf.data.Dataset`` of batches; see :func:`make_tf_dataset` for the arguments."""
        kwargs.setdefault("use_difficult", self.use_difficult)
        return make_tf_dataset(self.records, batch_size=batch_size, training=training, **kwargs)


# ------------------------------------------------------------------------------------------
# The tf.data pipeline.


def flip_probability(flip, default):
    """``flip`` as a probability: None → ``default``, ``True`` → 0.5, ``False`` → 0, else the number."""
    if flip is None:
        return default
    return 0.5 if flip is True else float(flip)


def make_tf_dataset(
    records,
    *,
    batch_size=2,
    training=False,
    min_size=None,
    max_size=None,
    flip=None,
    jitter=None,
    shuffle=None,
    seed=None,
    max_boxes=None,
    pad_to=None,
    size_divisibility=None,
    use_difficult=False,
    cache=False,
    return_metadata=False,
    drop_remainder=False,
    num_parallel_calls=tf.data.AUTOTUNE,
):
    """Input pipeline: read → decode → resize → augment → pad → batch → prefetch.

    Args:
        records: list of :class:`DetectionRecord` (e.g. ``dataset.records``).
        batch_size: images per batch ``B``.
        training: augment (see ``flip``/``jitter``), shuffle, and leave ``difficult``/crowd
            objects out unless ``use_difficult``. When False, every object is kept and the
            targets carry ``"difficult"``.
        min_size, max_size: resize keeping the aspect ratio (:func:`resized_size`); boxes are
            scaled with the exact per-axis factors ``new / old``. None: no resize.
        flip: probability of a horizontal flip (``True`` = 0.5); default 0.5 when training.
            Boxes become ``(W − x2, y1, W − x1, y2)``. Like ``jitter``, only used in training.
        jitter: photometric jitter when training: ``True`` for :data:`DEFAULT_JITTER` or a dict
            with any of ``brightness`` (max delta, 0..1 scale), ``contrast``, ``saturation``
            (factor range ``1 ± v``) and ``hue`` (max delta, 0..0.5). Default: none.
        shuffle: shuffle the records every epoch (default: ``training``).
        seed: makes shuffling, flips and jitter reproducible (per element, whatever the
            parallelism); each epoch still differs from the previous.
        max_boxes: pad boxes to this fixed ``G`` (images with more keep the first ``G``, with a
            warning); None pads to the largest count in each batch.
        pad_to: ``(H, W)`` fixed padded image size (static shapes); an image that does not fit
            after resizing raises ``ValueError`` here. None pads to the batch maximum.
        size_divisibility: also pad ``H`` and ``W`` up to a multiple of this (e.g. 32).
        use_difficult: keep ``difficult``/crowd objects in training batches.
        cache: ``True`` keeps the decoded images (uint8, original size) in memory after the
            first epoch; a string caches them in that file. Worth it for small datasets.
        return_metadata: add ``image_id``, ``scale``, ``original_size``, ``image_size`` and
            ``flipped`` to the targets (see the module docstring).
        drop_remainder: drop a last incomplete batch (static batch dimension).
        num_parallel_calls: parallelism of decoding and augmentation.

    Returns:
        ``tf.data.Dataset`` of ``({"images", "image_sizes"}, targets)``, prefetched.
    """
    table = RecordTable.build(records, keep_difficult=use_difficult or not training, max_boxes=max_boxes,
                              min_size=min_size, max_size=max_size)
    augmentation = Augmentation()
    if training:
        augmentation = Augmentation(flip=flip_probability(flip, 0.5), jitter=Jitter.parse(jitter))
    if pad_to is not None:
        pad_to = (int(pad_to[0]), int(pad_to[1]))
    batching = Batching(batch_size, pad_to=pad_to, size_divisibility=size_divisibility, drop_remainder=drop_remainder)
    return detection_batches(
        table, batching, augmentation, shuffle=training if shuffle is None else shuffle, seed=seed, cache=cache,
        with_difficult=not training, with_metadata=return_metadata, num_parallel_calls=num_parallel_calls,
    )


def _element_randoms(augmentation, seed):
    """A dataset of one int64 per element, drawn anew each epoch (``seed`` fixes every epoch's
    draws), or of 0s when nothing is random. :meth:`Augmentation.apply` keys its stateless draws
    on it, so the augmentation of an element does not depend on the map's parallelism."""
    if augmentation.random:
        return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()


def detection_batches(table, batching, augmentation=Augmentation(), *, detector_sizes=None, shuffle=False, seed=None,
                      cache=False, with_difficult=False, with_metadata=False, num_parallel_calls=tf.data.AUTOTUNE):
    """The one input pipeline pass; every ``tf.data`` input of rcnn_zoo is built here.

    Each image goes through every stage inside one ``map`` and is batched once: no batch of
    one taken apart again (``Dataset.unbatch()`` crashes the process, SIGSEGV on TF 2.21, on an
    element with zero boxes, i.e. on every photo without objects).

    Args:
        table: :class:`rcnn_zoo.data.stages.RecordTable` (files, sizes, objects; the record
            resize to ``min_size``/``max_size``).
        batching: :class:`rcnn_zoo.data.stages.Batching`.
        augmentation: :class:`rcnn_zoo.data.augment.Augmentation` (default: none).
        detector_sizes: ``(min_size, max_size)``: after augmenting, resize by the detector's
            rule (:func:`rcnn_zoo.data.stages.resize_by_rule`); None: no second resize.
        shuffle, seed, cache: as in :func:`make_tf_dataset` (``seed`` also fixes the
            augmentation).
        with_difficult: targets carry ``"difficult"``; with_metadata: and the metadata of the
            module docstring. Neither goes with zoom-out, crop or ``detector_sizes``, which
            change the objects and sizes that they describe.

    Returns:
        ``tf.data.Dataset`` of ``({"images", "image_sizes"}, targets)`` batches, prefetched.
    """
    if (augmentation.reframes or detector_sizes is not None) and (with_difficult or with_metadata):
        raise ValueError("difficult flags and metadata describe images that are not zoomed, cropped or resized again")
    if batching.pad_to is not None:
        table.check_fits(batching.pad_to)

    def one_image(index, image, element_random):
        image, scale = stages.resize_to_record_size(table, index, image)
        boxes, labels, difficult = table.objects(index)
        boxes = stages.scale_boxes(boxes, scale)
        image, boxes, labels, flipped = augmentation.apply(image, boxes, labels, element_random, index)
        if detector_sizes is not None:
            image, boxes = stages.resize_by_rule(image, boxes, *detector_sizes)
        return stages.example(table, index, image, (boxes, labels, difficult), flipped=flipped, scale=scale,
                              with_difficult=with_difficult, with_metadata=with_metadata)

    def decode(index):
        return stages.decode(table, index)

    dataset = tf.data.Dataset.range(len(table))
    # The cache comes before the shuffle: it holds the decoded images (uint8, original size) in
    # record order, and each epoch shuffles them anew (a cache after it would freeze one order).
    if cache:
        dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls).cache("" if cache is True else str(cache))
    if shuffle:
        dataset = dataset.shuffle(len(table), seed=seed, reshuffle_each_iteration=True)
    if not cache:
        dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls)
    dataset = tf.data.Dataset.zip(dataset, _element_randoms(augmentation, seed)).map(
        lambda decoded, element_random: one_image(*decoded, element_random), num_parallel_calls=num_parallel_calls
    )
    dataset = stages.batch(dataset, table, batching, with_difficult=with_difficult, with_metadata=with_metadata)
    if batching.size_divisibility:
        divisor = int(batching.size_divisibility)
        dataset = dataset.map(lambda inputs, targets: stages.pad_to_multiple(inputs, targets, divisor),
                              num_parallel_calls=num_parallel_calls)
    return dataset.prefetch(tf.data.AUTOTUNE)
