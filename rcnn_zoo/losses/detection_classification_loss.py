"""Classification loss of the Fast R-CNN head (Fast R-CNN eq. 1, ``L_cls``).

Shapes: ``B`` images, ``S`` sampled RoIs per image, ``C`` foreground classes.

Softmax cross-entropy over ``C + 1`` logits (index 0 background, ``c + 1`` foreground class
``c``), averaged over the sampled RoIs of the whole batch; RoIs labelled ``-1`` (padding slots of
:func:`rcnn_zoo.targets.sample_rois`) are ignored.
"""

import keras
import tensorflow as tf

from rcnn_zoo.losses._targets import labels_of, safe_count


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class DetectionClassificationLoss(keras.losses.Loss):
    """Softmax cross-entropy over sampled RoIs.

    ``loss(y_true, y_pred)`` with

    * ``y_true``: ``[B, S]`` head labels (``0`` background, ``c + 1``, ``-1`` ignored) or a dict
      holding them under ``"labels"`` (the dict of :func:`rcnn_zoo.targets.sample_rois`);
    * ``y_pred``: ``[B, S, C + 1]`` logits.

    Returns a float32 scalar, 0 when no RoI is sampled.
    """

    def __init__(self, name="detection_classification_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        labels = labels_of(y_true)
        logits = tf.cast(y_pred, tf.float32)
        sampled = labels >= 0
        per_roi = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.where(sampled, labels, 0), logits=logits
        )
        total = tf.reduce_sum(tf.where(sampled, per_roi, 0.0))
        return total / safe_count(sampled)
