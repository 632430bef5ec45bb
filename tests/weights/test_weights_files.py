"""Loading .weights.h5 / .keras files, including into a detector with other num_classes."""

import numpy as np
import pytest

from rcnn_zoo import FasterRCNN
from rcnn_zoo.weights import (
    WeightsMismatchError,
    checkpoint_num_classes,
    load_detector_weights,
    load_weights_file,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    model = FasterRCNN(num_classes=3, backbone="tiny", class_names=["a", "b", "c"])
    rng = np.random.default_rng(1)
    for variable in model.weights:
        variable.assign(rng.uniform(-1, 1, variable.shape).astype("float32"))
    model.save_weights(folder / "three.weights.h5")
    model.save(folder / "three.keras")
    return model, folder


@pytest.mark.parametrize("file_name", ["three.weights.h5", "three.keras"])
def test_same_configuration_loads_everything(saved, file_name):
    model, folder = saved
    assert checkpoint_num_classes(folder / file_name) == 3
    loaded = FasterRCNN(num_classes=3, backbone="tiny", weights=str(folder / file_name))
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("file_name", ["three.weights.h5", "three.keras"])
def test_other_num_classes_keeps_the_predictor_initialised(saved, file_name):
    model, folder = saved
    target = FasterRCNN(num_classes=5, backbone="tiny")
    initial = {v.path: v.numpy() for v in target.weights if v.path.startswith("box_predictor/")}
    with pytest.warns(UserWarning, match=r"3 classes.*5.*box_predictor/bbox_pred, box_predictor/cls_score"):
        skipped = load_detector_weights(target, str(folder / file_name))
    assert skipped == ["box_predictor/bbox_pred", "box_predictor/cls_score"]
    source = {v.path: v.numpy() for v in model.weights}
    for variable in target.weights:
        if variable.path in initial:
            np.testing.assert_array_equal(variable.numpy(), initial[variable.path])
        else:
            np.testing.assert_array_equal(variable.numpy(), source[variable.path], err_msg=variable.path)


def test_strict_refuses_other_num_classes(saved):
    _, folder = saved
    target = FasterRCNN(num_classes=5, backbone="tiny")
    with pytest.raises(WeightsMismatchError, match="num_classes=3.*num_classes=5.*strict=False"):
        load_weights_file(target, folder / "three.weights.h5", strict=True)


def test_other_layer_sizes_are_refused_clearly(saved):
    _, folder = saved
    with pytest.raises(WeightsMismatchError, match="same backbone and layer hyperparameters"):
        FasterRCNN(num_classes=3, backbone="tiny", roi_head_dim=64, weights=str(folder / "three.weights.h5"))


def test_bad_paths_are_explained(tmp_path):
    model = FasterRCNN(num_classes=3, backbone="tiny")
    with pytest.raises(FileNotFoundError, match="No weights file.*registered name"):
        load_detector_weights(model, str(tmp_path / "missing.weights.h5"))
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"\x80\x02")
    with pytest.raises(ValueError, match="rcnn-zoo convert"):
        load_detector_weights(model, str(checkpoint))
    other = tmp_path / "weights.npz"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.weights\.h5 or \.keras"):
        load_weights_file(model, other)
