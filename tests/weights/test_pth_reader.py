"""The PyTorch checkpoint reader: zip and legacy formats, strides, dtypes, refusals."""

import collections
import os
import zipfile

import numpy as np
import pytest

from rcnn_zoo.convert.pth import CheckpointFormatError, UnsafeCheckpointError, read_pth, read_state_dict
from torch_checkpoint_writer import (
    View,
    forbidden_global,
    write_legacy_checkpoint,
    write_zip_checkpoint,
)

WRITERS = {"zip": write_zip_checkpoint, "legacy": write_legacy_checkpoint}


def _state_dict():
    rng = np.random.default_rng(0)
    return collections.OrderedDict(
        [
            ("backbone.conv1.weight", rng.standard_normal((4, 3, 7, 7)).astype(np.float32)),
            ("backbone.bn1.running_var", rng.uniform(0.1, 2, 4).astype(np.float32)),
            ("backbone.bn1.num_batches_tracked", np.array(1234, np.int64)),
            ("head.weight", rng.standard_normal((5, 6)).astype(np.float64)),
            ("head.half", rng.standard_normal(7).astype(np.float16)),
            ("mask", np.array([True, False, True])),
            ("empty", np.zeros((0, 3), np.float32)),
        ]
    )


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_round_trip_arrays_equal(tmp_path, fmt):
    expected = _state_dict()
    path = tmp_path / f"{fmt}.pth"
    WRITERS[fmt](path, expected)
    loaded = read_pth(path)
    assert isinstance(loaded, collections.OrderedDict)
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype, key
        assert loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_shared_storage_offsets_and_strides(tmp_path, fmt):
    flat = np.arange(12, dtype=np.float32)
    obj = {
        "matrix": View(flat, 0, (3, 4), (4, 1)),
        "transposed": View(flat, 0, (4, 3), (1, 4)),
        "every_other_from_2": View(flat, 2, (5,), (2,)),
    }
    path = tmp_path / "views.pth"
    WRITERS[fmt](path, obj)
    loaded = read_pth(path)
    np.testing.assert_array_equal(loaded["matrix"], flat.reshape(3, 4))
    np.testing.assert_array_equal(loaded["transposed"], flat.reshape(3, 4).T)
    np.testing.assert_array_equal(loaded["every_other_from_2"], flat[2:12:2])
    assert loaded["transposed"].flags["C_CONTIGUOUS"]


def test_nested_mmdetection_style_checkpoint(tmp_path):
    weights = {"roi_head.bbox_head.fc_cls.weight": np.ones((21, 8), np.float32)}
    checkpoint = {
        "meta": {"mmdet_version": "2.1.0", "CLASSES": ("aeroplane", "bicycle"), "epoch": 4, "lr": 0.02},
        "state_dict": collections.OrderedDict(weights),
    }
    path = tmp_path / "mmdet.pth"
    write_legacy_checkpoint(path, checkpoint)
    loaded = read_pth(path)
    assert loaded["meta"]["CLASSES"] == ("aeroplane", "bicycle")
    assert loaded["meta"]["lr"] == 0.02
    state = read_state_dict(path)
    assert list(state) == list(weights)
    np.testing.assert_array_equal(state["roi_head.bbox_head.fc_cls.weight"], weights["roi_head.bbox_head.fc_cls.weight"])


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_refuses_os_system_without_running_it(tmp_path, fmt):
    marker = tmp_path / "pwned"
    obj = {"weight": np.zeros(3, np.float32), "payload": forbidden_global("os", "system", f"touch {marker}")}
    path = tmp_path / "evil.pth"
    WRITERS[fmt](path, obj)
    with pytest.raises(UnsafeCheckpointError, match=r"os\.system"):
        read_pth(path)
    assert not marker.exists()


def test_refuses_pickled_objects_other_than_tensors(tmp_path):
    obj = {"args": forbidden_global("argparse", "Namespace", "x")}
    path = tmp_path / "training_checkpoint.pth"
    write_zip_checkpoint(path, obj)
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        read_pth(path)


def test_archive_prefix_is_not_fixed(tmp_path):
    path = tmp_path / "named.pth"
    write_zip_checkpoint(path, {"w": np.arange(3, dtype=np.int64)}, prefix="fasterrcnn_coco")
    np.testing.assert_array_equal(read_pth(path)["w"], [0, 1, 2])


def test_damaged_and_foreign_files_are_explained(tmp_path):
    html = tmp_path / "error_page.pth"
    html.write_text("<html>403 Forbidden</html>")
    with pytest.raises(CheckpointFormatError, match="not a PyTorch checkpoint"):
        read_pth(html)

    not_torch = tmp_path / "other.zip"
    with zipfile.ZipFile(not_torch, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointFormatError, match="data.pkl"):
        read_pth(not_torch)

    truncated = tmp_path / "truncated.pth"
    write_legacy_checkpoint(truncated, {"w": np.ones(1000, np.float32)})
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        read_pth(truncated)

    with pytest.raises(FileNotFoundError):
        read_pth(tmp_path / "missing.pth")


def test_out_of_bounds_strides_are_refused(tmp_path):
    path = tmp_path / "oob.pth"
    write_zip_checkpoint(path, {"w": View(np.arange(4, dtype=np.float32), 2, (4,), (1,))})
    with pytest.raises(CheckpointFormatError, match="reaches element"):
        read_pth(path)


def test_state_dict_needs_tensors(tmp_path):
    path = tmp_path / "plain.pth"
    write_zip_checkpoint(path, {"epoch": 3})
    with pytest.raises(CheckpointFormatError, match="not a state dict"):
        read_state_dict(path)
    assert os.path.exists(path)
