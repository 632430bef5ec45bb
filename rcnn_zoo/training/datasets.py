"""The data of a training run: the training and validation sets ``rcnn-zoo train`` reads, and
the batches each detector trains on.

Faster R-CNN and R-FCN: :func:`rcnn_zoo.data.training_dataset` (augmented, resized by the
model's rule). Fast R-CNN: :func:`proposal_training_dataset`, the same images with their
selective search proposals. R-CNN: :func:`rcnn_regions`, the candidate regions of its stages.
Selective search runs once per image; its proposals are cached in ``cache_dir``.
"""

import math
import os

import numpy as np
import tensorflow as tf

from rcnn_zoo.data import load_dataset, make_tf_dataset, steps_per_epoch, training_dataset
from rcnn_zoo.data.loading import default_split
from rcnn_zoo.errors import UsageError
from rcnn_zoo.inference import boxes_in_model_format, image_proposals
from rcnn_zoo.models.registry import detector_name
from rcnn_zoo.proposals import add_proposals
from rcnn_zoo.training.distribute import full_batches_only, shard_by_data

__all__ = ["class_summary", "distributed_batches", "fit_batches", "full_batch_count", "load_training_data",
           "proposal_training_dataset", "rcnn_regions"]


def load_training_data(config):
    """``(train_set, val_set)`` of :class:`~rcnn_zoo.training.TrainConfig` ``config``
    (:func:`rcnn_zoo.data.load_dataset`); ``val_set`` is None without a validation split. The
    class order comes from the training set. Raises :class:`UsageError` when either set has
    no objects."""
    split = config.split
    if config.format == "voc" and split is None and config.data and os.path.isdir(config.data):
        split = default_split(config.data, "train")
    train_set = load_dataset(config.data, config.format, split, config.annotations, config.images)
    val_set = None
    if config.val_split or config.val_annotations:
        val_set = load_dataset(config.data, config.format, config.val_split, config.val_annotations,
                               config.val_images, class_names=train_set.class_names)
    if sum(len(r.labels) for r in train_set.records) == 0:
        raise UsageError(f"the training set {train_set.source} has no objects")
    if val_set is not None and sum(len(r.labels) for r in val_set.records) == 0:
        # mAP is undefined without objects: every epoch would log val_mAP nan, no best.keras.
        raise UsageError(f"the validation set {val_set.source} has no objects of the training "
                         f"classes ({', '.join(train_set.class_names[:5])}); val mAP needs some")
    return train_set, val_set


def class_summary(dataset, max_listed=20):
    """``Classes found in N images: a (x images, y objects), …``: the classes a training run
    takes from the data, so a misspelt name (a class of one image) is seen before training."""
    images = [0] * dataset.num_classes
    objects = [0] * dataset.num_classes
    for record in dataset.records:
        for label in set(record.labels.tolist()):
            images[label] += 1
        for label in record.labels.tolist():
            objects[label] += 1
    parts = [f"{name} ({images[i]} image{'s' * (images[i] != 1)}, {objects[i]} object{'s' * (objects[i] != 1)})"
             for i, name in enumerate(dataset.class_names[:max_listed])]
    more = dataset.num_classes - max_listed
    listed = ", ".join(parts) + (f", … {more} more" if more > 0 else "")
    return f"{dataset.num_classes} class(es) found in {len(dataset)} training images: {listed}"


def fit_batches(model, dataset, config, cache_dir=None):
    """What ``model.fit`` trains ``model`` (any detector but R-CNN) on: ``(batches, steps)``,
    ``steps`` batches of ``config.batch_size`` images an epoch, augmented as ``config`` says.
    Fast R-CNN's carry their proposals (:func:`proposal_training_dataset`)."""
    if detector_name(model) == "fast_rcnn":
        batches = proposal_training_dataset(model, dataset, config, cache_dir)
    else:
        batches = training_dataset(
            dataset, config.batch_size, getattr(model, "image_min_size", None), getattr(model, "image_max_size", None),
            flip=config.flip, jitter=config.jitter, crop=config.random_crop, crop_min_scale=config.crop_min_scale,
            zoom_out=config.zoom_out, seed=config.seed,
        )
    return batches, fit_steps(model, dataset, config.batch_size)


def fit_steps(model, dataset, batch_size):
    """Steps per epoch of :func:`fit_batches` at ``batch_size``, without building them: Fast
    R-CNN's proposal batches mix orientations, the others batch each orientation apart."""
    if detector_name(model) == "fast_rcnn":
        return math.ceil(len(dataset) / batch_size)
    return steps_per_epoch(dataset, batch_size)


def full_batch_count(model, dataset, batch_size):
    """Batches of exactly ``batch_size`` images an epoch of :func:`fit_batches` holds: Fast
    R-CNN's batch the shuffled images in one run; the others batch portrait originals
    (height > width) and the rest apart (``rcnn_zoo.data.steps_per_epoch``)."""
    if detector_name(model) == "fast_rcnn":
        return len(dataset) // batch_size
    portrait = sum(1 for r in dataset.records if r.height > r.width)
    return portrait // batch_size + (len(dataset) - portrait) // batch_size


def distributed_batches(model, dataset, batches, batch_size):
    """``(batches, steps)`` of :func:`fit_batches` for several replicas: only the full global
    batches (:func:`~rcnn_zoo.training.distribute.full_batches_only`), split by data across
    workers (:func:`~rcnn_zoo.training.distribute.shard_by_data`). Raises :class:`UsageError`
    when no batch is full."""
    steps = full_batch_count(model, dataset, batch_size)
    if steps == 0:
        raise UsageError(f"--batch-size {batch_size} (the global batch) is larger than the training images of each "
                         "orientation: distributed training keeps full batches only; lower it")
    return shard_by_data(full_batches_only(batches, batch_size, steps)), steps


def proposal_training_dataset(model, dataset, config, cache_dir=None):
    """Fast R-CNN's training batches: :func:`rcnn_zoo.data.make_tf_dataset` (resized by the
    model's rule, ``config``'s flip and jitter, shuffled) with each image's selective search
    proposals attached by :func:`rcnn_zoo.proposals.add_proposals` (scaled and mirrored with
    the image). The proposals are computed once per image with
    :func:`rcnn_zoo.inference.image_proposals` and cached in ``cache_dir``.

    Returns:
        ``tf.data.Dataset`` of ``({"images", "image_sizes", "proposals" [B, R, 4]},
        {"boxes", "labels"})``, ``ceil(N / batch_size)`` batches an epoch.
    """
    records = dataset.records
    proposals = image_proposals(model, [r.image_path for r in records], cache_dir=cache_dir,
                                verbose=config.verbose)
    batches = make_tf_dataset(
        records, batch_size=config.batch_size, training=True, min_size=model.image_min_size,
        max_size=model.image_max_size, flip=config.flip, jitter=config.jitter or None, seed=config.seed,
        use_difficult=dataset.use_difficult, cache=True, return_metadata=True,
    )
    batches = add_proposals(batches, proposals)
    return batches.map(lambda inputs, targets: (inputs, {"boxes": targets["boxes"], "labels": targets["labels"]}))


def rcnn_regions(model, dataset, cache_dir=None, verbose=1):
    """R-CNN's candidate regions (:meth:`RCNN.prepare_regions`) of a training set: each image
    decoded as the input pipeline decodes it, its objects (difficult ones left out unless the
    dataset uses them) and its selective search proposals (cached in ``cache_dir``)."""
    records = dataset.records
    proposals = image_proposals(model, [r.image_path for r in records], cache_dir=cache_dir, verbose=verbose)
    images, boxes, labels = [], [], []
    for record in records:
        data = tf.io.read_file(record.image_path)
        images.append(tf.io.decode_image(data, channels=3, expand_animations=False).numpy())
        keep = np.ones(len(record.labels), bool) if dataset.use_difficult else ~record.difficult
        boxes.append(boxes_in_model_format(model, record.boxes[keep], record.height, record.width))
        labels.append(record.labels[keep])
    return model.prepare_regions(images, boxes, labels, proposals=proposals)
