"""Box-regression loss of the Fast R-CNN head (Fast R-CNN eq. 1, ``L_loc``).

Shapes: ``B`` images, ``S`` sampled RoIs per image, ``C`` foreground classes.

Only the deltas predicted for the RoI's true class are regressed (class-specific regression), and
only for foreground RoIs; the smooth L1 (``beta = 1``, py-faster-rcnn's ``sigma = 1``) summed
over the 4 coordinates and the foreground RoIs is divided by the number of sampled RoIs of the
batch (torchvision's normalisation).
"""

import keras
import tensorflow as tf

from rcnn_zoo.losses._targets import deltas_and_labels_of
from rcnn_zoo.losses.smooth_l1_box_loss import SmoothL1BoxLoss, normalized_box_loss


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class DetectionBoxLoss(SmoothL1BoxLoss):
    """Smooth L1 on the true class's deltas of foreground RoIs.

    ``loss(y_true, y_pred)`` with

    * ``y_true``: ``{"deltas": [B, S, 4], "labels": [B, S]}`` (the dict of
      :func:`rcnn_zoo.targets.sample_rois`; head labels ``0`` background, ``c + 1``, ``-1``
      ignored) or a ``[B, S, 5]`` tensor ``(deltas, label)``;
    * ``y_pred``: predicted deltas, one of

      - ``[B, S, C + 1, 4]`` (or flat ``[B, S, (C + 1)·4]``) when ``include_background`` (the
        default): slot 0 belongs to the background and is never used, the deltas of head label
        ``l`` are read at slot ``l``;
      - ``[B, S, C, 4]`` (or ``[B, S, C·4]``) with ``include_background=False``: foreground
        classes only, head label ``l`` read at slot ``l - 1``;
      - ``[B, S, 4]``: class-agnostic deltas, used as they are.

    Returns a float32 scalar, 0 when no RoI is foreground.

    Args:
        beta: transition point of the smooth L1.
        include_background: whether the class axis of ``y_pred`` has a background slot 0.
        name, reduction, dtype: as ``keras.losses.Loss``.
    """

    def __init__(self, beta=1.0, include_background=True, name="detection_box_loss", **kwargs):
        super().__init__(beta=beta, name=name, **kwargs)
        self.include_background = bool(include_background)

    def call(self, y_true, y_pred):
        deltas, labels = deltas_and_labels_of(y_true)
        y_pred = tf.cast(y_pred, tf.float32)
        if y_pred.shape.rank == 3 and y_pred.shape[-1] != 4:  # flat [B, S, K·4]
            y_pred = tf.reshape(y_pred, tf.concat([tf.shape(y_pred)[:2], [-1, 4]], axis=0))
        if y_pred.shape.rank == 4:
            num_slots = tf.shape(y_pred)[2]
            slot = labels if self.include_background else labels - 1
            # Non-foreground RoIs read slot 0 (their value is masked out by the loss anyway).
            slot = tf.where(labels >= 1, tf.clip_by_value(slot, 0, num_slots - 1), 0)
            y_pred = tf.gather(y_pred, slot, batch_dims=2)  # [B, S, 4]
        elif y_pred.shape.rank != 3:
            raise ValueError(
                f"y_pred must be [B, S, K, 4], [B, S, K*4] or [B, S, 4], got {y_pred.shape}"
            )
        return normalized_box_loss(deltas, y_pred, labels, self.beta)

    def get_config(self):
        config = super().get_config()
        config.update({"include_background": self.include_background})
        return config
