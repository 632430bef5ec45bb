"""Smooth L1 box-regression loss (Fast R-CNN eq. 3), for the RPN and class-agnostic heads.

Shapes: ``B`` images, ``N`` anchors or sampled RoIs per image.

``smooth_l1(x) = 0.5 x² / beta`` if ``|x| < beta`` else ``|x| - 0.5 beta``. py-faster-rcnn
writes it with ``sigma = 1 / sqrt(beta)``: ``sigma = 3`` (``beta = 1/9``) for the RPN,
``sigma = 1`` (``beta = 1``) for the Fast R-CNN head.

Normalisation follows torchvision: the smooth L1 summed over the 4 coordinates of every positive
entry (label ``>= 1``), divided by the number of sampled entries (label ``>= 0``) of the whole
batch (at least 1).
"""

import keras
import tensorflow as tf

from rcnn_zoo.losses._targets import deltas_and_labels_of, safe_count


def smooth_l1(x, beta):
    """Element-wise smooth L1 of ``x`` with transition point ``beta`` (L1 when ``beta == 0``)."""
    abs_x = tf.abs(x)
    if beta < 1e-5:
        return abs_x
    return tf.where(abs_x < beta, 0.5 * tf.square(x) / beta, abs_x - 0.5 * beta)


def normalized_box_loss(deltas_true, deltas_pred, labels, beta):
    """Sum of smooth L1 over positives (``labels >= 1``) / number sampled (``labels >= 0``).

    ``deltas_true``, ``deltas_pred``: ``[B, N, 4]``; ``labels``: ``[B, N]`` int.
    """
    positive = labels >= 1
    per_box = tf.reduce_sum(smooth_l1(deltas_pred - deltas_true, beta), axis=-1)  # [B, N]
    # tf.where (not a product) so that ignored entries cannot leak inf/NaN into the sum.
    total = tf.reduce_sum(tf.where(positive, per_box, 0.0))
    return total / safe_count(labels >= 0)


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class SmoothL1BoxLoss(keras.losses.Loss):
    """Smooth L1 loss on class-agnostic box deltas of sampled positives.

    ``loss(y_true, y_pred)`` with

    * ``y_true``: ``{"deltas": [B, N, 4], "labels": [B, N]}`` (e.g. the dict returned by
      :func:`rcnn_zoo.targets.rpn_targets`) or a ``[B, N, 5]`` tensor ``(deltas, label)``;
      labels ``>= 1`` positive, ``0`` sampled negative, ``-1`` ignored;
    * ``y_pred``: predicted deltas, any shape with ``B·N·4`` elements in the same order
      (``[B, N, 4]``, or ``[B, H, W, A·4]`` for RPN anchors enumerated location-major).

    Returns a float32 scalar (0 when nothing is positive).

    Args:
        beta: transition point of the smooth L1 (``1/9`` for the RPN, ``1`` for the head).
        name, reduction, dtype: as ``keras.losses.Loss``; the result is already a scalar.
    """

    def __init__(self, beta=1.0 / 9.0, name="smooth_l1_box_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.beta = float(beta)

    def call(self, y_true, y_pred):
        deltas, labels = deltas_and_labels_of(y_true)
        y_pred = tf.reshape(tf.cast(y_pred, tf.float32), tf.shape(deltas))
        return normalized_box_loss(deltas, y_pred, labels, self.beta)

    def get_config(self):
        config = super().get_config()
        config.update({"beta": self.beta})
        return config
