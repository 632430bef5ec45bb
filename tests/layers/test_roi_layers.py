"""RoIPooling, RoIAlign and PSRoIPooling: the layers only build ``[B·R, 5]`` rows and reshape.

Each layer is checked against its op called on rows built by hand, and (with the op replaced by
a recorder) on exactly which rows and arguments it passes.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import rcnn_zoo.ops
from rcnn_zoo.layers import PSRoIPooling, RoIAlign, RoIPooling

ROIS = np.array(
    [
        [[0, 0, 63, 63], [16, 8, 40, 56], [32, 32, 127, 95]],
        [[4, 4, 20, 20], [0, 0, 127, 95], [50, 10, 90, 60]],
    ],
    np.float32,
)
# The same RoIs as op rows (batch_index, x1, y1, x2, y2), written out by hand.
ROWS = np.array(
    [
        [0, 0, 0, 63, 63],
        [0, 16, 8, 40, 56],
        [0, 32, 32, 127, 95],
        [1, 4, 4, 20, 20],
        [1, 0, 0, 127, 95],
        [1, 50, 10, 90, 60],
    ],
    np.float32,
)

# (layer class, constructor kwargs, op name, op kwargs, channels, expected per-RoI shape)
CASES = [
    (RoIPooling, dict(pool_size=(3, 2), spatial_scale=1 / 8), "roi_pool",
     dict(pool_size=(3, 2), spatial_scale=1 / 8), 5, (3, 2, 5)),
    (RoIAlign, dict(pool_size=(2, 3), spatial_scale=1 / 8, sampling_ratio=2, aligned=True),
     "roi_align", dict(pool_size=(2, 3), spatial_scale=1 / 8, sampling_ratio=2, aligned=True),
     5, (2, 3, 5)),
    (PSRoIPooling, dict(group_size=3, output_dim=2, spatial_scale=1 / 8), "ps_roi_pool",
     dict(group_size=3, output_dim=2, spatial_scale=1 / 8), 18, (3, 3, 2)),
]
IDS = ["RoIPooling", "RoIAlign", "PSRoIPooling"]


def features(channels, batch=2, dtype=tf.float32):
    rng = np.random.default_rng(0)
    return tf.constant(rng.normal(size=(batch, 12, 16, channels)), dtype)


@pytest.mark.parametrize("cls, kwargs, op_name, op_kwargs, channels, shape", CASES, ids=IDS)
def test_equals_op_on_hand_built_rows(cls, kwargs, op_name, op_kwargs, channels, shape):
    feats = features(channels)
    out = cls(**kwargs)(feats, tf.constant(ROIS))
    assert out.shape == (2, 3, *shape)
    op = getattr(rcnn_zoo.ops, op_name)
    expected = op(feats, tf.constant(ROWS), **op_kwargs).numpy().reshape(2, 3, *shape)
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("cls, kwargs, op_name, op_kwargs, channels, shape", CASES, ids=IDS)
def test_passes_rows_and_arguments_to_the_op(
    monkeypatch, cls, kwargs, op_name, op_kwargs, channels, shape
):
    calls = []

    def recorder(feats, rois, **called_kwargs):
        calls.append((feats, rois, called_kwargs))
        return tf.zeros([tf.shape(rois)[0], *shape], feats.dtype)

    monkeypatch.setattr(rcnn_zoo.ops, op_name, recorder)
    feats = features(channels, dtype=tf.float16)
    out = cls(**kwargs)(feats, tf.constant(ROIS))
    assert out.shape == (2, 3, *shape)
    (got_feats, got_rows, got_kwargs), = calls
    assert got_feats.dtype == tf.float16  # features are not cast by the layer
    assert got_rows.dtype == tf.float32  # pixel coordinates stay float32
    np.testing.assert_array_equal(got_rows.numpy(), ROWS)
    for key, value in op_kwargs.items():
        assert tuple(np.atleast_1d(got_kwargs[key])) == tuple(np.atleast_1d(value)), key


@pytest.mark.parametrize("cls, kwargs, op_name, op_kwargs, channels, shape", CASES, ids=IDS)
def test_unknown_batch_and_roi_count_in_tf_function(
    cls, kwargs, op_name, op_kwargs, channels, shape
):
    layer = cls(**kwargs)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, channels]),
            tf.TensorSpec([None, None, 4]),
        ]
    )
    def fn(feats, rois):
        out = layer(feats, rois)
        assert out.shape.as_list() == [None, None, *shape]
        return out

    feats = features(channels)
    np.testing.assert_allclose(
        fn(feats, ROIS).numpy(), layer(feats, tf.constant(ROIS)).numpy(), rtol=1e-6, atol=1e-6
    )
    assert fn(feats[:1], ROIS[:1, :2]).shape == (1, 2, *shape)


@pytest.mark.parametrize("cls, kwargs, op_name, op_kwargs, channels, shape", CASES, ids=IDS)
def test_zero_rois(cls, kwargs, op_name, op_kwargs, channels, shape):
    out = cls(**kwargs)(features(channels), tf.zeros([2, 0, 4]))
    assert out.shape == (2, 0, *shape)


@pytest.mark.parametrize("cls, kwargs, op_name, op_kwargs, channels, shape", CASES, ids=IDS)
def test_config_round_trip(cls, kwargs, op_name, op_kwargs, channels, shape):
    layer = cls(**kwargs)
    config = json.loads(json.dumps(layer.get_config()))
    for key, value in kwargs.items():
        assert np.all(np.asarray(config[key]) == np.asarray(value)), key
    clone = cls.from_config(config)
    feats, rois = features(channels), tf.constant(ROIS)
    np.testing.assert_array_equal(clone(feats, rois).numpy(), layer(feats, rois).numpy())
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(rebuilt) is cls
    np.testing.assert_array_equal(rebuilt(feats, rois).numpy(), layer(feats, rois).numpy())


def test_defaults_follow_the_papers():
    assert RoIPooling().pool_size == (7, 7) and RoIPooling().spatial_scale == 1 / 16
    align = RoIAlign()
    assert (align.sampling_ratio, align.aligned) == (-1, False)
    ps = PSRoIPooling()
    assert (ps.group_size, ps.output_dim, ps.spatial_scale) == (7, 21, 1 / 16)


def test_rejects_flat_rows():
    with pytest.raises(ValueError):
        RoIPooling()(features(4), tf.constant(ROWS))


def test_functional_model():
    feats_in = keras.Input([12, 16, 5])
    rois_in = keras.Input([3, 4])
    out = RoIAlign(pool_size=(2, 2), spatial_scale=1 / 8)(feats_in, rois_in)
    assert tuple(out.shape) == (None, 3, 2, 2, 5)
    model = keras.Model([feats_in, rois_in], out)
    assert model.predict([features(5), ROIS], verbose=0).shape == (2, 3, 2, 2, 5)
