"""R-CNN's heads on the CNN features of a warped region (Girshick et al. 2014):

    fc7   [K, F] → per-class linear SVMs            → scores [K, C]      (section 2.3)
    fc7   [K, F] → softmax over C + 1 (fine-tuning)  → logits [K, C + 1]  (appendix B)
    pool5 [K, P] → per-class ridge box regressors   → deltas [K, C, 4]   (appendix C)

``K`` regions, ``F`` fc7 and ``P`` (flattened) pool5 features, ``C`` foreground classes. The
SVMs score detections by default; ``classifier="softmax"`` scores with the fine-tuned softmax
instead (appendix B's ablation). Each part trains in its own stage, on its own loss: the
softmax on cross-entropy, the SVMs on :class:`~rcnn_zoo.losses.SVMHingeLoss`, the regressors on
:class:`ClassSpecificSquaredError`.
"""

import keras
import tensorflow as tf
from keras import layers

CLASSIFIERS = ("svm", "softmax")
# A detection's score must exceed this: the negatives' side of the margin for SVMs, the usual
# 0.05 for probabilities.
DEFAULT_SCORE_THRESHOLDS = {"svm": -1.0, "softmax": 0.05}


def check_classifier(classifier):
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be 'svm' or 'softmax', got {classifier!r}")
    return classifier


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class RCNNHead(layers.Layer):
    """The fine-tuning softmax, the SVMs and the box regressors of R-CNN.

    ``call(pool5 [K, P], fc7 [K, F])`` → ``(scores [K, C], deltas [K, C, 4])`` float32, scores
    from ``classifier`` (SVM margins, any real number, or softmax probabilities).

    Args:
        num_classes: ``C``.
        classifier: ``"svm"`` or ``"softmax"``: which part scores detections (settable later).

    The SVMs and regressors start at zero (their stages fit them from scratch); the softmax at
    N(0, 0.01), as Fast R-CNN's classifier.
    """

    def __init__(self, num_classes, classifier="svm", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.classifier = check_classifier(classifier)
        self.cls_score = layers.Dense(
            self.num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="cls_score",
        )
        self.svm = layers.Dense(self.num_classes, kernel_initializer="zeros", name="svm")
        self.bbox_regressor = layers.Dense(
            4 * self.num_classes, kernel_initializer="zeros", name="bbox_regressor"
        )

    def build(self, pool5_shape, fc7_shape):
        self.cls_score.build(fc7_shape)
        self.svm.build(fc7_shape)
        self.bbox_regressor.build(pool5_shape)
        self.built = True

    def call(self, pool5, fc7):
        return self.classify(fc7), self.regress(pool5)

    def fine_tune_logits(self, fc7):
        """fc7 ``[K, F]`` → logits ``[K, C + 1]`` of the fine-tuning softmax (0 = background)."""
        return self.cls_score(fc7)

    def classify(self, fc7):
        """fc7 ``[K, F]`` → class scores ``[K, C]`` (SVM margins or softmax probabilities)."""
        if self.classifier == "svm":
            return tf.cast(self.svm(fc7), tf.float32)
        return tf.nn.softmax(tf.cast(self.cls_score(fc7), tf.float32), axis=-1)[:, 1:]

    def regress(self, pool5):
        """pool5 ``[K, P]`` → class-specific deltas ``[K, C, 4]`` (``box_ops.encode``'s)."""
        return tf.reshape(tf.cast(self.bbox_regressor(pool5), tf.float32), [-1, self.num_classes, 4])

    @property
    def default_score_threshold(self):
        return DEFAULT_SCORE_THRESHOLDS[self.classifier]

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "classifier": self.classifier})
        return config


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class ClassSpecificSquaredError(keras.losses.Loss):
    """The box regressors' least-squares loss: each region trains its own class's regressor.

    ``y_true [n, 5]`` = (4 targets, class) and ``y_pred [n, 4C]`` (the regressor's output) →
    ``[n]`` squared errors of the class's four outputs, averaged over the batch by the default
    reduction. The ridge term ``λ‖W‖²`` is a penalty on the kernel, added by the training stage.
    """

    def __init__(self, num_classes, name="class_specific_squared_error", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        classes = tf.cast(y_true[:, 4], tf.int32)
        predicted = tf.gather(tf.reshape(y_pred, [-1, self.num_classes, 4]), classes, batch_dims=1)
        return tf.reduce_sum(tf.square(y_true[:, :4] - tf.cast(predicted, tf.float32)), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes})
        return config
