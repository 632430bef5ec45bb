"""Files saved before the heads/models redesign still load and give the same detections.

The fixtures in ``legacy/`` were written by ``make_legacy_fixtures.py`` on commit df222d1 (see
``legacy/made_by.json``): a tiny detector of each kind as ``.keras`` and ``.weights.h5`` and its
``predict`` outputs on fixed inputs. The expected outputs are the old code's, so a change in how
a model is laid out (layer paths), configured (constructor arguments) or computes shows here.
"""

import json
import os

import keras
import numpy as np
import pytest

import rcnn_zoo
from compat.make_legacy_fixtures import OUT, build, inputs

KINDS = ("faster_rcnn", "rfcn", "fast_rcnn", "rcnn")


def _expected(kind):
    with np.load(os.path.join(OUT, f"{kind}_outputs.npz")) as data:
        return {key: data[key] for key in data.files}


def _assert_same_detections(outputs, expected):
    np.testing.assert_array_equal(np.asarray(outputs["num_detections"]), expected["num_detections"])
    for image, count in enumerate(expected["num_detections"]):
        np.testing.assert_array_equal(np.asarray(outputs["labels"])[image, :count], expected["labels"][image, :count])
        np.testing.assert_allclose(np.asarray(outputs["scores"])[image, :count], expected["scores"][image, :count],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(outputs["boxes"])[image, :count], expected["boxes"][image, :count],
                                   rtol=1e-5, atol=1e-3)


def test_fixtures_come_from_before_the_redesign():
    with open(os.path.join(OUT, "made_by.json")) as f:
        assert json.load(f)["commit"].startswith("df222d1")


@pytest.mark.parametrize("kind", KINDS)
def test_legacy_keras_file_loads_with_the_same_detections(kind):
    model = keras.saving.load_model(os.path.join(OUT, f"{kind}.keras"))
    assert rcnn_zoo.models.detector_name(type(model)) == kind
    assert model.class_names == ["a", "b"]
    _assert_same_detections(model.predict(inputs(kind), verbose=0), _expected(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_legacy_weights_file_loads_into_a_model_of_the_same_configuration(kind):
    model = build(kind, seed=123)  # other initial weights: only the file can make them agree
    expected = _expected(kind)
    before = model.predict(inputs(kind), verbose=0)
    assert not np.allclose(np.asarray(before["scores"]), expected["scores"])
    model.load_weights(os.path.join(OUT, f"{kind}.weights.h5"))
    _assert_same_detections(model.predict(inputs(kind), verbose=0), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_legacy_keras_file_as_weights_argument(kind):
    cls = rcnn_zoo.models.get_detector(kind)
    model = cls(weights=os.path.join(OUT, f"{kind}.keras"))
    _assert_same_detections(model.predict(inputs(kind), verbose=0), _expected(kind))


def test_rcnn_weights_file_with_its_architecture_given():
    model = rcnn_zoo.RCNN(2, backbone="tiny", classifier="softmax", score_threshold=0.0, max_proposals=10,
                          fc_dim=32, weights=os.path.join(OUT, "rcnn.weights.h5"))
    _assert_same_detections(model.predict(inputs("rcnn"), verbose=0), _expected("rcnn"))
