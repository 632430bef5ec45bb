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
"""

import math

import tensorflow as tf

from rcnn_zoo.data.augment import random_crop
from rcnn_zoo.data.augment import zoom_out as _zoom_out  # ``zoom_out`` is also an argument below
from rcnn_zoo.models.preprocessing import resize_images

__all__ = ["training_dataset", "evaluation_dataset", "steps_per_epoch"]


def _first_of_batch(inputs, targets):
    """``(inputs, targets)`` of a batch of one → those of its image, and whether its original
    is portrait (``height > width``: the batching key, fixed per record whatever the crop)."""
    original = targets["original_size"][0]
    targets = {"boxes": targets["boxes"][0], "labels": targets["labels"][0]}
    return {k: v[0] for k, v in inputs.items()}, targets, original[0] > original[1]


def steps_per_epoch(dataset, batch_size):
    """Batches per epoch of :func:`training_dataset`: images of each orientation (by their
    original size, portrait = height > width) are batched separately."""
    portrait = sum(1 for r in dataset.records if r.height > r.width)
    return math.ceil(portrait / batch_size) + math.ceil((len(dataset) - portrait) / batch_size)


def training_dataset(
    dataset,
    batch_size=4,
    min_size=None,
    max_size=None,
    flip=0.5,
    jitter=False,
    crop=0.0,
    crop_min_scale=0.5,
    zoom_out=1.0,
    zoom_out_prob=0.5,
    seed=None,
):
    """Shuffled, augmented training batches for ``model.fit``.

    Per image: decode (cached in memory after the first epoch), horizontal flip with
    probability ``flip``, photometric ``jitter`` (``rcnn_zoo.data.pipeline.DEFAULT_JITTER``),
    with probability ``zoom_out_prob`` a zoom-out onto a canvas up to ``zoom_out`` times larger
    (1 = off), with probability ``crop`` a random crop of ``crop_min_scale … 1`` of each side,
    then resize by the detector's rule (``min_size``, ``max_size``). Images of one orientation
    are batched together (see the module docstring).

    Returns:
        ``tf.data.Dataset`` of ``({"images" float32 [B,H,W,3] 0..255, "image_sizes" int32
        [B,2]}, {"boxes" [B,G,4] xyxy pixels, "labels" [B,G] −1 padded})``.
    """
    longest = max((max(r.height, r.width) for r in dataset.records))
    # Decode once and keep images no larger than needed (crops of up to 1/crop_min_scale zoom).
    cap = None
    if max_size is not None or min_size is not None:
        target = max_size if max_size is not None else 2 * min_size
        cap = int(math.ceil(target / (crop_min_scale if crop > 0 else 1.0)))
        cap = cap if cap < longest else None
    # Batches of one, taken apart by indexing: Dataset.unbatch() crashes the process (SIGSEGV,
    # TF 2.21) on an element with zero boxes, i.e. on every photo without objects.
    base = dataset.to_tf_dataset(
        batch_size=1, training=True, max_size=cap, flip=flip, jitter=jitter or None,
        seed=seed, cache=True, return_metadata=True,
    ).map(_first_of_batch)
    augment_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def augment(element, rng):
        inputs, targets, portrait = element
        image = inputs["images"]
        boxes, labels = targets["boxes"], targets["labels"]
        seeds = tf.random.experimental.stateless_split(tf.stack([rng, tf.constant(7, tf.int64)]), 4)
        if zoom_out > 1.0:
            image, boxes = tf.cond(
                tf.random.stateless_uniform([], seeds[0]) < zoom_out_prob,
                lambda: _zoom_out(image, boxes, seeds[1], zoom_out),
                lambda: (image, boxes),
            )
        if crop > 0:
            image, boxes, labels = tf.cond(
                tf.random.stateless_uniform([], seeds[2]) < crop,
                lambda: random_crop(image, boxes, labels, seeds[3], crop_min_scale),
                lambda: (image, boxes, labels),
            )
        resized, factors = resize_images(image[None], min_size, max_size)
        boxes = boxes * tf.stack([factors[1], factors[0], factors[1], factors[0]])
        image = resized[0]
        inputs = {"images": image, "image_sizes": tf.shape(image)[:2]}
        return inputs, {"boxes": boxes, "labels": labels}, portrait

    per_image = tf.data.Dataset.zip(base, augment_seeds).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    shapes = ({"images": [None, None, 3], "image_sizes": [2]}, {"boxes": [None, 4], "labels": [None]}, [])
    padding = ({"images": 0.0, "image_sizes": 0}, {"boxes": 0.0, "labels": -1}, False)
    # Same-orientation batches waste less padding (each image's size travels with it anyway).
    # The key is the original's orientation, not the augmented image's, so that the number of
    # batches is the same every epoch and known: Keras then shows n/N steps, and never runs a
    # step into the end of the data.
    batches = per_image.group_by_window(
        key_func=lambda x, targets, portrait: tf.cast(portrait, tf.int64),
        reduce_func=lambda key, window: window.padded_batch(batch_size, shapes, padding),
        window_size=batch_size,
    ).map(lambda x, targets, portrait: (x, targets))
    batches = batches.apply(tf.data.experimental.assert_cardinality(steps_per_epoch(dataset, batch_size)))
    return batches.prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(dataset):
    """One original image per batch with its ground truth and metadata (what
    :func:`rcnn_zoo.evaluation.predict_detections` reads); the model resizes it."""
    return dataset.to_tf_dataset(batch_size=1, training=False, return_metadata=True, cache=True)
