"""Objectness loss of the Region Proposal Network (Faster R-CNN eq. 1, ``L_cls``).

Shapes: ``B`` images, ``A`` anchors per image.

Binary cross-entropy from logits, averaged over the sampled anchors (label ``0`` or ``1``) of the
whole batch, as torchvision does; anchors labelled ``-1`` are ignored.
"""

import keras
import tensorflow as tf

from rcnn_zoo.losses._targets import labels_of, safe_count


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class RPNObjectnessLoss(keras.losses.Loss):
    """Binary cross-entropy over sampled anchors.

    ``loss(y_true, y_pred)`` with

    * ``y_true``: ``[B, A]`` labels ``1`` object / ``0`` background / ``-1`` ignored, or a dict
      holding them under ``"labels"`` (the dict of :func:`rcnn_zoo.targets.rpn_targets`);
    * ``y_pred``: objectness logits with ``B·A`` elements in the same anchor order
      (``[B, A]``, ``[B, A, 1]`` or ``[B, H, W, A_loc]``).

    Returns a float32 scalar, 0 when no anchor is sampled.
    """

    def __init__(self, name="rpn_objectness_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        labels = labels_of(y_true)
        logits = tf.reshape(tf.cast(y_pred, tf.float32), tf.shape(labels))
        sampled = labels >= 0
        targets = tf.cast(labels >= 1, tf.float32)
        per_anchor = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
        total = tf.reduce_sum(tf.where(sampled, per_anchor, 0.0))
        return total / safe_count(sampled)
