"""Input pipelines for training and evaluating a detector on a :class:`DetectionDataset`.

Shapes: B images in a batch, G ground-truth boxes per image (padded with label −1). Boxes are
float32 xyxy in pixels (``docs/conventions.md``).

Training data. Each image is resized by the model's own rule
(:func:`rcnn_zoo.models.preprocessing.resize_images`: shorter side ``min_size``, longer side at
most ``max_size``) in the input pipeline, after the augmentations, and batches hold images of one
orientation only. The model resizes a padded batch by one scale computed from the padded size;
for such batches that scale is exactly 1, so what the model trains on is what the pipeline made.
(A batch mixing a portrait and a landscape image would pad to a square and be shrunk.)
Evaluation feeds one original image at a time and lets the model resize it.

Both are options of the one pass :func:`rcnn_zoo.data.pipeline.detection_batches`.
"""

import math

from rcnn_zoo.data.augment import Augmentation, Crop, Jitter, ZoomOut
from rcnn_zoo.data.pipeline import detection_batches, flip_probability
from rcnn_zoo.data.stages import Batching, RecordTable, orientation_batch_count

__all__ = ["training_dataset", "evaluation_dataset", "steps_per_epoch"]


def steps_per_epoch(dataset, batch_size):
    """Batches per epoch of :func:`training_dataset`: images of each orientation (by their
    original size, portrait = height > width) are batched separately."""
    return orientation_batch_count([(r.height, r.width) for r in dataset.records], batch_size)


def _decode_cap(records, min_size, max_size, crop, crop_min_scale):
    """Longest side in pixels that decoded images are shrunk to before augmenting, or None.

    Images stay large enough for the detector's size after a crop of ``crop_min_scale`` of a
    side (a zoom of up to ``1 / crop_min_scale``); no cap when every image is smaller anyway.
    """
    if max_size is None and min_size is None:
        return None
    target = max_size if max_size is not None else 2 * min_size
    cap = int(math.ceil(target / (crop_min_scale if crop > 0 else 1.0)))
    return cap if cap < max(max(r.height, r.width) for r in records) else None


def training_dataset(dataset, batch_size=4, min_size=None, max_size=None, flip=0.5, jitter=False, crop=0.0,
                     crop_min_scale=0.5, zoom_out=1.0, zoom_out_prob=0.5, seed=None):
    """Shuffled, augmented training batches for ``model.fit``.

    Per image: decode (cached in memory after the first epoch; shrunk so its longer side is at
    most what the crops need), horizontal flip with probability ``flip``, photometric
    ``jitter`` (``rcnn_zoo.data.augment.DEFAULT_JITTER``), with probability ``zoom_out_prob`` a
    zoom-out onto a canvas up to ``zoom_out`` times larger (1 = off), with probability ``crop``
    a random crop of ``crop_min_scale … 1`` of each side, then resize by the detector's rule
    (``min_size``, ``max_size``). Images of one orientation are batched together (see the
    module docstring); the dataset's cardinality is :func:`steps_per_epoch`.

    Returns:
        ``tf.data.Dataset`` of ``({"images" float32 [B,H,W,3] 0..255, "image_sizes" int32
        [B,2]}, {"boxes" [B,G,4] xyxy pixels, "labels" [B,G] −1 padded})``.
    """
    cap = _decode_cap(dataset.records, min_size, max_size, crop, crop_min_scale)
    table = RecordTable.build(dataset.records, keep_difficult=dataset.use_difficult, max_size=cap)
    augmentation = Augmentation(
        flip=flip_probability(flip, 0.5),
        jitter=Jitter.parse(jitter or None),
        zoom_out=ZoomOut(float(zoom_out), float(zoom_out_prob)) if zoom_out > 1.0 else None,
        crop=Crop(float(crop), float(crop_min_scale)) if crop > 0 else None,
    )
    return detection_batches(
        table, Batching(batch_size, by_orientation=True), augmentation,
        detector_sizes=(min_size, max_size), shuffle=True, seed=seed, cache=True,
    )


def evaluation_dataset(dataset):
    """One original image per batch with its ground truth and metadata (what
    :func:`rcnn_zoo.evaluation.predict_detections` reads); the model resizes it."""
    return dataset.to_tf_dataset(batch_size=1, training=False, return_metadata=True, cache=True)
