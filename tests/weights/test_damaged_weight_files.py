"""Damaged weight and model files (truncated, empty, not that format) are refused with a message
naming the file; a registered local file with another SHA-256 is explained as the user's own
file (re-register it), a download as a damaged download (delete it and try again)."""

import json
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from rcnn_zoo import FasterRCNN, cli, weights
from rcnn_zoo.errors import UsageError
from rcnn_zoo.inference import load_model

CLASSES = ["circle", "square", "triangle"]
HDF5_DAMAGED = "the file is damaged or truncated (not a valid HDF5 file); download or save it again"
ZIP_DAMAGED = ("the file is damaged or truncated (not a valid zip archive, which .keras files are); "
               "download or save it again")
EMPTY = "the file is empty (0 bytes); download or save it again"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny detector with its .weights.h5 and .keras files."""
    folder = tmp_path_factory.mktemp("saved")
    model = FasterRCNN(num_classes=3, backbone="tiny", class_names=CLASSES)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.uniform(-1, 1, variable.shape).astype("float32"))
    model.save_weights(folder / "tiny.weights.h5")
    model.save(folder / "tiny.keras")
    return model, folder


def _damaged(saved, tmp_path, suffix, damage):
    source = (saved[1] / f"tiny{suffix}").read_bytes()
    path = tmp_path / f"damaged{suffix}"
    if damage == "truncated":
        path.write_bytes(source[: len(source) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a text file with the name
        path.write_text("<html>404 Not Found</html>\n")
    return path


CASES = [
    (".weights.h5", "truncated", HDF5_DAMAGED),
    (".weights.h5", "empty", EMPTY),
    (".weights.h5", "text", HDF5_DAMAGED),
    (".keras", "truncated", ZIP_DAMAGED),
    (".keras", "empty", EMPTY),
    (".keras", "text", ZIP_DAMAGED),
]


@pytest.mark.parametrize("suffix, damage, reason", CASES)
def test_faster_rcnn_weights_argument_names_the_damaged_file(suffix, damage, reason, saved, tmp_path):
    path = _damaged(saved, tmp_path, suffix, damage)
    with pytest.raises(weights.WeightsFileError) as info:
        FasterRCNN(num_classes=3, backbone="tiny", weights=str(path))
    assert str(info.value) == f"cannot read weights file {path}: {reason}"
    assert info.value.path == str(path)
    # What h5py / zipfile raised before (OSError), like the other weights errors (ValueError),
    # and a UsageError for rcnn-zoo's one-line errors.
    assert isinstance(info.value, OSError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, UsageError)


@pytest.mark.parametrize("damage, reason", [("truncated", ZIP_DAMAGED), ("empty", EMPTY), ("text", ZIP_DAMAGED)])
def test_load_model_names_the_damaged_keras_file(damage, reason, saved, tmp_path):
    path = _damaged(saved, tmp_path, ".keras", damage)
    with pytest.raises(weights.WeightsFileError) as info:
        load_model(path)
    assert str(info.value) == f"cannot read model file {path}: {reason}"


def test_damage_inside_a_keras_archive_is_named(saved, tmp_path):
    """The zip's directory is intact, the weights inside are not (the CRC check fails)."""
    source = saved[1] / "tiny.keras"
    with zipfile.ZipFile(source) as archive:
        member = archive.getinfo("model.weights.h5")
    data = bytearray(source.read_bytes())
    middle = member.header_offset + member.compress_size // 2
    data[middle : middle + 64] = bytes(64)
    path = tmp_path / "bitrot.keras"
    path.write_bytes(bytes(data))
    with pytest.raises(weights.WeightsFileError, match=rf"cannot read model file {re.escape(str(path))}: the file is damaged .*Bad CRC-32"):
        load_model(path)
    with pytest.raises(weights.WeightsFileError, match=rf"cannot read weights file {re.escape(str(path))}: the file is damaged"):
        FasterRCNN(num_classes=3, backbone="tiny", weights=str(path))


def test_intact_files_still_load(saved):
    model, folder = saved
    for name in ("tiny.weights.h5", "tiny.keras"):
        weights.check_weights_file(folder / name)
        loaded = FasterRCNN(num_classes=3, backbone="tiny", weights=str(folder / name))
        for a, b in zip(loaded.weights, model.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert load_model(folder / "tiny.keras").class_names == CLASSES


# ---------------------------------------------------------------------------- registered files


def _registry(tmp_path, monkeypatch, **entries):
    path = tmp_path / "my_registry.json"
    path.write_text(json.dumps({"format": weights.REGISTRY_FORMAT, "weights": entries}))
    monkeypatch.setenv(weights.REGISTRY_ENV, str(path))
    monkeypatch.setenv(weights.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return path


def _entry(**fields):
    return {"model": {"num_classes": 3, "backbone": "tiny"}, "class_names": CLASSES, **fields}


def test_a_changed_local_file_is_not_called_a_damaged_download(saved, tmp_path, monkeypatch):
    model, folder = saved
    mine = tmp_path / "mine.weights.h5"
    mine.write_bytes((folder / "tiny.weights.h5").read_bytes())
    registry = _registry(tmp_path, monkeypatch, mine=_entry(file="mine.weights.h5", sha256="0" * 64))
    got = weights.file_sha256(mine)

    with pytest.raises(weights.WeightsIntegrityError) as info:
        FasterRCNN(num_classes=3, backbone="tiny", weights="mine")
    message = str(info.value)
    assert f"{mine} differs from the one registered in {registry}" in message
    assert f"SHA-256 is {got}, expected {'0' * 64}" in message
    assert "Delete" not in message and "rm " not in message and "download" not in message
    advice = f"rcnn_zoo.weights.register_local_file('mine', {str(mine)!r}, registry={str(registry)!r})"
    assert advice in message

    # The advice works: re-registering the file records its hash, and it loads.
    exec(advice, {"rcnn_zoo": __import__("rcnn_zoo")})
    assert json.loads(registry.read_text())["weights"]["mine"]["sha256"] == got
    loaded = FasterRCNN(num_classes=3, backbone="tiny", weights="mine")
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_a_changed_local_file_with_a_hash_prefix_names_the_field(saved, tmp_path, monkeypatch):
    _, folder = saved
    mine = tmp_path / "mine.weights.h5"
    mine.write_bytes((folder / "tiny.weights.h5").read_bytes())
    _registry(tmp_path, monkeypatch, mine=_entry(file=str(mine), sha256_prefix="deadbeef"))
    with pytest.raises(weights.WeightsIntegrityError) as info:
        weights.weights_file("mine")
    message = str(info.value)
    assert "expected deadbeef… (the entry's 'sha256_prefix')" in message
    assert "register_local_file('mine'" in message and "Delete" not in message


def test_a_changed_local_file_is_one_line_in_the_cli(saved, tmp_path, monkeypatch, capsys):
    _, folder = saved
    (tmp_path / "mine.weights.h5").write_bytes((folder / "tiny.weights.h5").read_bytes())
    _registry(tmp_path, monkeypatch, mine=_entry(file="mine.weights.h5", sha256="1" * 64))
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    code = cli.main(["predict", "--weights", "mine", "--images", str(image), "--output-dir", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("rcnn-zoo: error: cannot load weights 'mine': The 'mine' weights file ")
    assert "register_local_file('mine'" in err and "Delete" not in err and len(err.splitlines()) == 1


def test_a_damaged_download_still_says_delete_it_and_try_again(saved, tmp_path, monkeypatch):
    _, folder = saved
    _registry(tmp_path, monkeypatch, demo=_entry(url=(folder / "tiny.weights.h5").as_uri(), sha256="0" * 64))
    with pytest.raises(weights.WeightsIntegrityError) as info:
        FasterRCNN(num_classes=3, backbone="tiny", weights="demo")
    message = str(info.value)
    cached = tmp_path / "cache" / weights.CACHE_SUBDIR / "tiny.weights.h5"
    assert f"Delete it (rm {cached}) and try again" in message
    assert "register_local_file(" not in message


def test_an_unverified_truncated_download_says_to_delete_the_cached_copy(saved, tmp_path, monkeypatch):
    _, folder = saved
    published = tmp_path / "server" / "cut.weights.h5"
    published.parent.mkdir()
    data = (folder / "tiny.weights.h5").read_bytes()
    published.write_bytes(data[: len(data) // 3])
    _registry(tmp_path, monkeypatch, demo=_entry(url=published.as_uri(), sha256=None))
    cached = tmp_path / "cache" / weights.CACHE_SUBDIR / "cut.weights.h5"
    with pytest.warns(UserWarning, match="No SHA-256"), pytest.raises(weights.WeightsFileError) as info:
        FasterRCNN(num_classes=3, backbone="tiny", weights="demo")
    assert str(info.value) == (
        f"cannot read weights file {cached}: the file is damaged or truncated (not a valid HDF5 file); "
        f"it is rcnn_zoo's cached copy of the 'demo' weights: delete it (rm {cached}) and load them "
        "again to download it anew"
    )
