"""Balanced positive/negative sampling of matched boxes (Faster R-CNN §3.1.3, Fast R-CNN §2.3).

Shapes: ``B`` images, ``M`` labelled boxes (anchors or RoI candidates) per image.

Per image, at most ``int(num_samples * positive_fraction)`` positives are drawn uniformly at
random without replacement; negatives, drawn the same way, fill the rest up to ``num_samples``.
When there are too few negatives the batch is simply smaller (it is not topped up with more
positives), as in py-faster-rcnn and torchvision. Ignored boxes (label ``-1``) are never drawn.

Drawing is a random ranking: every box gets a uniform key, the ``k`` largest keys among the
eligible boxes win (``top_k``), which keeps every shape static.
"""

import tensorflow as tf


def _draw(eligible, keys, max_count, count):
    """Mask of the ``count[b]`` eligible boxes with the largest keys (``count <= max_count``).

    Args:
        eligible: ``[B, M]`` bool.
        keys: ``[B, M]`` float in ``[0, 1)``.
        max_count: Python int, static upper bound of ``count``.
        count: ``[B]`` int32 number to draw per image (``<= number eligible``).
    """
    k = int(max_count)
    if k <= 0:
        return tf.zeros_like(eligible)
    # k never-eligible columns make top_k valid for any M (even M < k or M unknown).
    scores = tf.pad(tf.where(eligible, keys, -1.0), [[0, 0], [0, k]], constant_values=-1.0)
    _, indices = tf.math.top_k(scores, k=k, sorted=True)  # [B, k], distinct per row
    take = tf.range(k, dtype=tf.int32)[None, :] < count[:, None]  # first `count` ranks
    batch = tf.broadcast_to(tf.range(tf.shape(indices)[0])[:, None], tf.shape(indices))
    scatter_at = tf.stack([batch, indices], axis=-1)
    drawn = tf.tensor_scatter_nd_update(tf.zeros(tf.shape(scores), tf.bool), scatter_at, take)
    num_boxes = eligible.shape[1] if eligible.shape[1] is not None else tf.shape(eligible)[1]
    return drawn[:, :num_boxes]


def sample_balanced(match_labels, num_samples, positive_fraction, seed=None):
    """Draw a fixed-size, class-balanced subset of labelled boxes.

    Args:
        match_labels: ``[B, M]`` int labels, ``1`` positive, ``0`` negative, ``-1`` ignored
            (the output of :func:`rcnn_zoo.targets.matcher.match`).
        num_samples: Python int, boxes drawn per image (at most).
        positive_fraction: Python float in ``[0, 1]``, the largest share of positives.
        seed: optional Python int operation seed for ``tf.random.uniform``.

    Returns:
        ``(positive_mask, negative_mask)``, both ``[B, M]`` bool and disjoint. Per image
        ``sum(positive_mask) = min(#positives, int(num_samples * positive_fraction))`` and
        ``sum(negative_mask) = min(#negatives, num_samples - sum(positive_mask))``.
    """
    match_labels = tf.convert_to_tensor(match_labels)
    if match_labels.shape.rank != 2:
        raise ValueError(f"match_labels must be [B, M], got {match_labels.shape}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    num_samples = int(num_samples)
    max_positives = int(num_samples * positive_fraction)

    positive = tf.equal(match_labels, 1)
    negative = tf.equal(match_labels, 0)
    num_positive = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), max_positives)
    num_negative = tf.minimum(
        tf.reduce_sum(tf.cast(negative, tf.int32), axis=1), num_samples - num_positive
    )
    # One key per box serves both draws: positives and negatives are disjoint.
    keys = tf.random.uniform(tf.shape(match_labels), dtype=tf.float32, seed=seed)
    positive_mask = _draw(positive, keys, max_positives, num_positive)
    negative_mask = _draw(negative, keys, num_samples, num_negative)
    return positive_mask, negative_mask
