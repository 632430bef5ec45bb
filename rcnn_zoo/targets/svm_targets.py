"""R-CNN's SVM training sets: per-class labels and hard negative mining (Girshick et al. 2014,
section 2.3, "Object category classifiers"; the original code's ``rcnn_train.m``).

NumPy over a :class:`~rcnn_zoo.targets.regions.RegionSet`: ``K`` regions, ``C`` classes.
"""

import numpy as np

# A negative scoring above this lies inside the margin (or on the wrong side of it): the
# original code's hard threshold, −1 − 1e-4.
SVM_HARD_THRESHOLD = -1.0 - 1e-4


def svm_labels(regions, negative_iou=0.3):
    """Per-class SVM labels ``[K, C]`` int8: ``+1`` positive, ``-1`` negative, ``0`` unused.

    Section 2.3: only the ground-truth boxes of class ``c`` are its positives; regions whose IoU
    with every box of class ``c`` is below ``negative_iou`` are its negatives (including other
    classes' boxes); the grey zone is ignored.
    """
    classes = np.arange(regions.num_classes)
    positive = regions.gt_label[:, None] == classes[None, :]
    negative = (regions.class_iou < negative_iou) & ~positive
    return np.where(positive, 1, np.where(negative, -1, 0)).astype(np.int8)


def initial_negative_cache(negative, count, rng):
    """The negatives each class's SVM starts from: ``count`` of them drawn at random (all if
    fewer), without replacement. ``negative [K, C]`` bool → cache ``[K, C]`` bool."""
    cached = np.zeros_like(negative)
    for c in range(negative.shape[1]):
        pool = np.flatnonzero(negative[:, c])
        cached[rng.choice(pool, min(len(pool), int(count)), replace=False), c] = True
    return cached


def mine_hard_negatives(scores, negative, cached, max_new=None, hard_threshold=SVM_HARD_THRESHOLD):
    """Indices of the hard negatives of one class to add to its cache, hardest first.

    A negative is hard when its SVM score exceeds ``hard_threshold`` (−1 − 1e-4: it lies inside
    the margin or on the wrong side). Of those not yet ``cached``, the ``max_new`` highest
    scoring are returned (all if ``None``), ties in index order.

    Args:
        scores: ``[K]`` SVM scores; negative, cached: ``[K]`` bool.
    """
    scores = np.asarray(scores, np.float64)
    candidates = np.flatnonzero(np.asarray(negative) & ~np.asarray(cached) & (scores > hard_threshold))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    return order if max_new is None else order[: int(max_new)]


def svm_training_set(positive, cached):
    """The rows one fit of the SVMs trains on, and their per-class targets.

    Args:
        positive: ``[K, C]`` bool; cached: ``[K, C]`` bool, each class's negative cache.
    Returns:
        ``(rows [n] int, targets [n, C] float32)``: every region that is a positive or a cached
        negative of some class; targets ``+1``, ``-1`` or ``0`` (not a training row of that
        class, see :class:`~rcnn_zoo.losses.SVMHingeLoss`).
    """
    rows = np.flatnonzero(positive.any(axis=1) | cached.any(axis=1))
    targets = np.where(positive, 1, np.where(cached, -1, 0))[rows].astype(np.float32)
    return rows, targets
