"""Balanced sampler: exact counts, never ignored entries, random choice."""

import numpy as np
import pytest
import tensorflow as tf

from rcnn_zoo.targets.sampler import sample_balanced


def _labels(num_positive, num_negative, num_ignored, seed=0):
    labels = np.array([1] * num_positive + [0] * num_negative + [-1] * num_ignored, np.int32)
    return np.random.default_rng(seed).permutation(labels)


def _counts(labels, num_samples, fraction):
    labels = np.asarray(labels)
    pos, neg = sample_balanced(tf.constant(labels), num_samples, fraction)
    pos, neg = pos.numpy(), neg.numpy()
    assert pos.dtype == bool and neg.dtype == bool
    assert not np.any(pos & neg)
    assert np.all(labels[pos] == 1) and np.all(labels[neg] == 0)  # never an ignored entry
    return pos.sum(axis=1).tolist(), neg.sum(axis=1).tolist()


@pytest.mark.parametrize(
    "num_positive, num_negative, expected",
    [
        (10, 1000, (10, 246)),   # few positives: negatives fill up to 256
        (300, 1000, (128, 128)),  # positives capped at 256 * 0.5
        (5, 20, (5, 20)),        # too few of both: everything, no more
        (0, 1000, (0, 256)),     # no positive at all
        (0, 0, (0, 0)),          # everything ignored
    ],
)
def test_exact_counts(num_positive, num_negative, expected):
    labels = _labels(num_positive, num_negative, 50)[None]
    assert _counts(labels, 256, 0.5) == ([expected[0]], [expected[1]])


def test_too_few_negatives_are_not_topped_up_with_positives():
    labels = _labels(300, 40, 7)[None]
    assert _counts(labels, 256, 0.5) == ([128], [40])


def test_roi_head_fraction_and_batch_rows_independent():
    labels = np.stack([_labels(200, 1000, 0, seed=1), _labels(30, 1170, 0, seed=2)])
    # 512 * 0.25 = 128 positives at most.
    assert _counts(labels, 512, 0.25) == ([128, 30], [384, 482])


def test_choice_is_random_without_replacement():
    labels = tf.constant(np.r_[np.ones(300), np.zeros(300)].astype(np.int32)[None])
    fn = tf.function(lambda x: sample_balanced(x, 256, 0.5))
    first, _ = fn(labels)
    second, _ = fn(labels)
    first, second = first.numpy()[0], second.numpy()[0]
    assert first.sum() == second.sum() == 128
    assert not np.array_equal(first, second)      # a new draw per call
    assert not np.all(first[:128])                # not simply the first positives


def test_more_samples_than_boxes():
    labels = np.array([[1, 0, -1, 0]], np.int32)
    assert _counts(labels, 256, 0.5) == ([1], [2])
