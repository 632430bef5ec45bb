"""Hinge loss of R-CNN's per-class linear SVMs (Girshick et al. 2014, section 2.3), trained
jointly as one ``Dense(C)`` on fc7 features.

Shapes: ``n`` regions, ``C`` foreground classes.

Each class is its own binary SVM: a region is a positive (``+1``), a negative (``-1``) or not a
training example (``0``) of each class. Positives weigh ``positive_weight`` (2, the original
code's liblinear option ``-w1 2``), negatives 1.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class SVMHingeLoss(keras.losses.Loss):
    """Per-class weighted hinge loss ``Σ_c w_c · max(0, 1 − y_c · z_c)``.

    ``loss(y_true, y_pred)`` with

    * ``y_true``: ``[n, C]`` in {+1, −1, 0 (unused)};
    * ``y_pred``: ``[n, C]`` SVM scores (margins, any real number).

    ``call`` gives the ``[n]`` per-region sums over classes; the default reduction averages them
    over the batch. The SVM objective's L2 term is not here: the training stage adds it as a
    penalty on the kernel.
    """

    def __init__(self, positive_weight=2.0, name="svm_hinge_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weight = float(positive_weight)

    def call(self, y_true, y_pred):
        y = tf.cast(y_true, tf.float32)
        weight = tf.where(y > 0, self.positive_weight, tf.where(y < 0, 1.0, 0.0))
        return tf.reduce_sum(weight * tf.nn.relu(1.0 - y * tf.cast(y_pred, tf.float32)), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"positive_weight": self.positive_weight})
        return config
