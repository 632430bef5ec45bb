"""``FasterRCNN(weights="x.keras")`` takes the architecture from the file, and a ``.weights.h5``
of another anchor layout is refused with a message that says so (the tiny backbone's CLI
anchors, 4 sizes × 3 ratios, are not its Python default, 3 × 3)."""

import numpy as np
import pytest

import rcnn_zoo
from rcnn_zoo.training import build_detector
from rcnn_zoo.weights import WeightsMismatchError

IMAGE = np.random.default_rng(5).uniform(0, 255, (1, 90, 120, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def cli_style_model():
    model = build_detector(2, ["cat", "dog"], "tiny", image_min_size=96, image_max_size=128)
    model(IMAGE)
    assert model.rpn.anchor_generator.num_anchors_per_location[0] == 12  # the CLI's tiny anchors
    return model


def test_a_keras_file_is_its_own_preset(cli_style_model, tmp_path):
    path = tmp_path / "best.keras"
    cli_style_model.save(path)
    model = rcnn_zoo.FasterRCNN(weights=str(path))
    assert model.class_names == ["cat", "dog"] and model.num_classes == 2
    assert model.rpn.anchor_generator.num_anchors_per_location[0] == 12
    expected, got = cli_style_model.predict(IMAGE, verbose=0), model.predict(IMAGE, verbose=0)
    np.testing.assert_array_equal(got["boxes"], expected["boxes"])


def test_a_keras_file_fine_tunes_to_other_classes_and_refuses_other_architectures(cli_style_model, tmp_path):
    path = tmp_path / "best.keras"
    cli_style_model.save(path)
    with pytest.warns(UserWarning, match="2 classes, this model has 5"):
        model = rcnn_zoo.FasterRCNN(weights=str(path), num_classes=5)
    assert model.num_classes == 5 and model.class_names is None
    with pytest.raises(WeightsMismatchError, match="backbone='resnet50'.*'tiny'"):
        rcnn_zoo.FasterRCNN(weights=str(path), backbone="resnet50")
    with pytest.raises(WeightsMismatchError, match="holds a FasterRCNN, not a RFCN"):
        rcnn_zoo.RFCN(weights=str(path))


def test_weights_of_another_anchor_layout_are_refused_naming_the_anchors(cli_style_model, tmp_path):
    path = tmp_path / "cli.weights.h5"
    cli_style_model.save_weights(path)
    with pytest.raises(WeightsMismatchError) as caught:
        rcnn_zoo.FasterRCNN(weights=str(path), num_classes=2, backbone="tiny")
    message = str(caught.value)
    assert "12 anchors per location" in message and "has 9" in message and str(path) in message
    model = rcnn_zoo.FasterRCNN(weights=str(path), num_classes=2, backbone="tiny",
                                anchor_sizes=((32.0, 64.0, 128.0, 256.0),))
    np.testing.assert_array_equal(model.rpn.head.weights[0].numpy(), cli_style_model.rpn.head.weights[0].numpy())
