"""R-CNN's SVM training sets: the initial negative caches and the rows of one fit. (Labels and
hard negative mining are checked on hand-made regions in tests/models/test_rcnn.py.)"""

import numpy as np

from rcnn_zoo.targets.svm_targets import initial_negative_cache, svm_training_set


def test_initial_cache_draws_negatives_of_each_class_only():
    negative = np.zeros((10, 2), bool)
    negative[:6, 0] = True
    negative[7:, 1] = True  # only 3 negatives for class 1
    cached = initial_negative_cache(negative, 4, np.random.default_rng(0))
    assert cached.sum(axis=0).tolist() == [4, 3]
    assert not (cached & ~negative).any()


def test_training_set_keeps_positives_and_cached_negatives():
    positive = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], bool)
    cached = np.array([[0, 1], [0, 0], [1, 0], [0, 0]], bool)
    rows, targets = svm_training_set(positive, cached)
    np.testing.assert_array_equal(rows, [0, 2, 3])  # row 1 trains no class
    np.testing.assert_array_equal(targets, [[1, -1], [-1, 0], [0, 1]])
    assert targets.dtype == np.float32
