"""Unpacking of the ``y_true`` structures shared by the rcnn_zoo losses.

A target structure is either a dict ``{"labels": [B, N], "deltas": [B, N, 4], ...}`` (extra keys,
such as ``rois`` or ``matched_gt`` from :func:`rcnn_zoo.targets.sample_rois`, are ignored) or a
tensor: ``[B, N]`` labels alone, or ``[B, N, 5]`` deltas concatenated with the label as the last
column. Labels are ``>= 1`` for a positive (RPN ``1``, head ``c + 1``), ``0`` for a sampled
negative/background and ``-1`` for entries the loss ignores.
"""

import tensorflow as tf


def labels_of(y_true):
    """``[B, N]`` int32 labels out of a target structure (Keras casts them to float first)."""
    if isinstance(y_true, dict):
        labels = y_true["labels"]
    else:
        labels = tf.convert_to_tensor(y_true)
        if labels.shape.rank == 3 and labels.shape[-1] == 5:
            labels = labels[..., 4]
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_floating:
        labels = tf.round(labels)  # float labels are whole numbers; guard against 0.999…
    return tf.cast(labels, tf.int32)


def deltas_and_labels_of(y_true):
    """``([B, N, 4] float32 deltas, [B, N] int32 labels)`` out of a target structure."""
    if isinstance(y_true, dict):
        deltas = y_true["deltas"]
    else:
        packed = tf.convert_to_tensor(y_true)
        if packed.shape.rank != 3 or packed.shape[-1] != 5:
            raise ValueError(
                "box-loss targets must be a dict with 'deltas' and 'labels' or a [B, N, 5] "
                f"tensor (deltas, label); got shape {packed.shape}"
            )
        deltas = packed[..., :4]
    return tf.cast(deltas, tf.float32), labels_of(y_true)


def safe_count(mask):
    """Number of True entries of ``mask`` as float32, at least 1 (a normaliser never 0)."""
    return tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32)), 1.0)
