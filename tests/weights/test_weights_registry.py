"""The weights registry (data in weights/registry.json) and name resolution."""

import inspect
import json
import re
import shutil

import pytest

from rcnn_zoo import FasterRCNN, weights
from rcnn_zoo.data.synthetic import CLASS_NAMES as SHAPE_CLASSES
from rcnn_zoo.data.voc import VOC_CLASSES

REQUIRED = ("description", "model", "class_names", "preprocessing", "source", "licence", "metric", "sha256")


FASTER_RCNN_PRESETS = [
    "coco", "coco_mobilenet_v3_large_320_fpn", "coco_mobilenet_v3_large_fpn", "coco_v2", "shapes", "voc",
]


def test_builtin_registry_entries():
    path = weights.builtin_registry_path()
    assert path.name == "registry.json"
    assert json.loads(path.read_text())["format"] == weights.REGISTRY_FORMAT
    assert weights.available_weights("FasterRCNN") == FASTER_RCNN_PRESETS
    for name in FASTER_RCNN_PRESETS:
        entry = weights.get_weights_entry(name)
        missing = [field for field in REQUIRED if field not in entry]
        assert not missing, (name, missing)
        assert len(entry["class_names"]) == entry["model"]["num_classes"]
        accepted = set(inspect.signature(FasterRCNN.__init__).parameters) | set(FasterRCNN.accepted_hyperparameters())
        assert set(entry["model"]) <= accepted, set(entry["model"]) - accepted


def test_published_entries_record_url_and_hash_prefix():
    for name, metric, converter in (("coco", 37.0, "torchvision"), ("voc", 79.5, "mmdet")):
        entry = weights.get_weights_entry(name)
        assert entry["url"].startswith("https://")
        assert entry["url"].endswith("/" + entry["file_name"])
        # The 8 hex digits after the last '-' of the published file name are its SHA-256 prefix.
        assert re.search(r"-([0-9a-f]{8})\.pth$", entry["file_name"]).group(1) == entry["sha256_prefix"]
        assert entry["sha256"] is None  # full hash not published: never invented
        assert entry["convert"].startswith(converter)
        assert entry["metric"]["value"] == metric
        assert entry["model"]["backbone"] == "resnet50_fpn"


def test_class_names_and_label_conventions():
    coco = weights.get_weights_entry("coco")
    assert coco["model"]["num_classes"] == 90
    assert coco["category_ids"] == list(range(1, 91))
    names = coco["class_names"]
    assert names[0] == "person" and names[-1] == "toothbrush"
    assert [i + 1 for i, n in enumerate(names) if n == "N/A"] == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
    assert len(set(names) - {"N/A"}) == 80
    assert weights.get_weights_entry("voc")["class_names"] == list(VOC_CLASSES)
    shapes = weights.get_weights_entry("shapes")
    assert shapes["class_names"] == list(SHAPE_CLASSES)
    assert shapes["model"] == {"num_classes": 3, "backbone": "tiny"}
    assert shapes["file"] == "shapes_tiny.weights.h5"


def test_unknown_name_lists_registered_weights():
    with pytest.raises(ValueError, match=r"Unknown weights 'nope' for FasterRCNN.*'coco'.*'shapes'.*'voc'"):
        FasterRCNN(num_classes=3, backbone="tiny", weights="nope")


def test_wrong_backbone_is_refused_before_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_DIR_ENV, str(tmp_path))
    with pytest.raises(weights.WeightsMismatchError, match="backbone='tiny' \\(the weights have 'resnet50_fpn'\\)"):
        FasterRCNN(num_classes=20, backbone="tiny", weights="voc")
    assert not (tmp_path / weights.CACHE_SUBDIR).exists() or not any((tmp_path / weights.CACHE_SUBDIR).iterdir())


def test_register_local_file_and_load_by_name(tmp_path, monkeypatch):
    registry = tmp_path / "registry.json"
    shutil.copy(weights.builtin_registry_path(), registry)
    registry.chmod(0o644)
    trained = FasterRCNN(num_classes=3, backbone="tiny")
    trained.save_weights(tmp_path / "shapes_tiny.weights.h5")
    entry = weights.register_local_file("shapes", tmp_path / "shapes_tiny.weights.h5", registry=registry)
    assert entry["file"] == "shapes_tiny.weights.h5"
    assert entry["sha256"] == weights.file_sha256(tmp_path / "shapes_tiny.weights.h5")
    assert entry["size"] == (tmp_path / "shapes_tiny.weights.h5").stat().st_size
    assert registry.stat().st_mode & 0o777 == 0o644  # rewritten in place, mode kept
    saved = json.loads(registry.read_text())
    assert saved["weights"]["shapes"]["sha256"] == entry["sha256"]
    assert saved["weights"]["coco"] == json.loads(weights.builtin_registry_path().read_text())["weights"]["coco"]

    monkeypatch.setenv(weights.REGISTRY_ENV, str(registry))
    model = FasterRCNN(num_classes=3, backbone="tiny", weights="shapes")
    assert model.class_names == list(SHAPE_CLASSES)
    for a, b in zip(model.weights, trained.weights):
        assert (a.numpy() == b.numpy()).all(), a.path

    (tmp_path / "shapes_tiny.weights.h5").write_bytes(b"changed")
    with pytest.raises(weights.WeightsIntegrityError, match="expected " + entry["sha256"]):
        FasterRCNN(num_classes=3, backbone="tiny", weights="shapes")

    with pytest.raises(ValueError, match="needs model="):
        weights.register_local_file("new_entry", registry, registry=registry)


def test_missing_local_file_is_explained(tmp_path, monkeypatch):
    registry = tmp_path / "extra.json"
    registry.write_text(json.dumps({
        "format": weights.REGISTRY_FORMAT,
        "weights": {"shapes": {"model": {"num_classes": 3, "backbone": "tiny"}, "file": "nowhere.weights.h5",
                               "url": None, "sha256": None, "source": "Produced by make demo."}},
    }))
    monkeypatch.setenv(weights.REGISTRY_ENV, str(registry))
    with pytest.raises(FileNotFoundError, match=r"local file that is not there: .*nowhere\.weights\.h5\. Produced by make demo"):
        weights.weights_file("shapes")
