"""R-CNN's head: SVM margins or softmax probabilities from fc7, class-specific deltas from
pool5, the regressors' loss, and the config round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rcnn_zoo.heads import RCNNHead
from rcnn_zoo.heads.rcnn_head import ClassSpecificSquaredError

C, P, F = 3, 12, 8


def _head(**kwargs):
    keras.utils.set_random_seed(0)
    head = RCNNHead(C, name="rcnn_head", **kwargs)
    head.build((None, P), (None, F))
    rng = np.random.default_rng(0)
    for layer in (head.svm, head.bbox_regressor):  # zero-initialised: give them values
        layer.kernel.assign(rng.normal(0, 0.5, layer.kernel.shape).astype("float32"))
    return head


def test_scores_and_deltas_per_classifier():
    head = _head()
    pool5 = np.random.default_rng(1).normal(size=(5, P)).astype("float32")
    fc7 = np.random.default_rng(2).normal(size=(5, F)).astype("float32")
    scores, deltas = head(pool5, fc7)
    assert scores.shape == (5, C) and deltas.shape == (5, C, 4) and scores.dtype == tf.float32
    np.testing.assert_allclose(scores, fc7 @ head.svm.kernel.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(deltas, (pool5 @ head.bbox_regressor.kernel.numpy()).reshape(5, C, 4),
                               rtol=1e-5, atol=1e-6)
    assert head.default_score_threshold == -1.0
    head.classifier = "softmax"
    probabilities = head.classify(fc7).numpy()
    logits = head.fine_tune_logits(fc7).numpy()
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, softmax[:, 1:], rtol=1e-5)  # background dropped
    assert head.default_score_threshold == 0.05


def test_svms_and_regressors_start_at_zero_and_bad_classifier_is_refused():
    head = RCNNHead(C)
    head.build((None, P), (None, F))
    assert not np.any(head.svm.kernel.numpy()) and not np.any(head.bbox_regressor.kernel.numpy())
    assert head.cls_score.kernel.shape == (F, C + 1)
    with pytest.raises(ValueError, match="classifier"):
        RCNNHead(C, classifier="boosting")


def test_config_round_trip():
    head = _head(classifier="softmax")
    clone = RCNNHead.from_config(head.get_config())
    assert clone.num_classes == C and clone.classifier == "softmax" and clone.name == "rcnn_head"


def test_class_specific_squared_error_reads_only_the_regions_class():
    loss = ClassSpecificSquaredError(num_classes=2)
    y_true = np.array([[1, 2, 3, 4, 1], [0, 0, 0, 0, 0]], np.float32)
    y_pred = np.array([[9, 9, 9, 9, 1, 2, 3, 5], [1, 0, 0, 0, 7, 7, 7, 7]], np.float32)
    np.testing.assert_allclose(loss.call(tf.constant(y_true), tf.constant(y_pred)), [1.0, 1.0])
    np.testing.assert_allclose(loss(y_true, y_pred), 1.0)  # averaged over the batch
    assert keras.losses.deserialize(keras.losses.serialize(loss)).num_classes == 2
