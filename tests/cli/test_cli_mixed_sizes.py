"""``rcnn-zoo predict`` and ``evaluate`` on folders of real photos of mixed sizes and
orientations with the FPN backbones of the registered presets (not only ``tiny``), run as a user
runs them (``python -m rcnn_zoo.cli`` in a fresh process).

CI-sized: the detectors resize to a shorter side of 96 px; the layers are the full ones.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import rcnn_zoo

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RACCOON = os.path.join(REPO, os.pardir, "shared", "datasets", "raccoon")
# Real photos of different sizes: 640×480, 426×640 (portrait), 259×194, 2000×1333.
PHOTOS = ("raccoon-88", "raccoon-115", "raccoon-1", "raccoon-183")


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory):
    """A VOC folder (images/, annotations/, test.txt) with the PHOTOS, read from the shared data."""
    if not os.path.isdir(RACCOON):
        pytest.fail(f"the raccoon photos are missing: {RACCOON}")
    root = tmp_path_factory.mktemp("raccoon_mixed")
    (root / "images").mkdir()
    (root / "annotations").mkdir()
    for stem in PHOTOS:
        shutil.copy(os.path.join(RACCOON, "images", f"{stem}.jpg"), root / "images")
        shutil.copy(os.path.join(RACCOON, "annotations", f"{stem}.xml"), root / "annotations")
    (root / "test.txt").write_text("\n".join(PHOTOS) + "\n")
    sizes = {Image.open(root / "images" / f"{s}.jpg").size for s in PHOTOS}
    assert len(sizes) == len(PHOTOS)
    return root


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "rcnn_zoo.cli", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("backbone", ["resnet50_fpn", "mobilenet_v3_large_fpn"])
def test_predict_and_evaluate_a_folder_of_mixed_sizes(backbone, photo_tree, tmp_path):
    model = rcnn_zoo.FasterRCNN(num_classes=1, backbone=backbone, class_names=["raccoon"],
                                image_min_size=96, image_max_size=160, score_threshold=0.0)
    path = tmp_path / f"{backbone}.keras"
    model.save(path)
    out = tmp_path / "detections"
    result = run_cli("predict", "--model", path, "--images", photo_tree / "images",
                     "--output-dir", out, "--score-threshold", "0.0")
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((out / "detections.json").read_text())
    assert len(written) == len(PHOTOS)
    for item in written:
        width, height = Image.open(item["image"]).size
        assert (item["width"], item["height"]) == (width, height)
        boxes = np.array(item["boxes"]).reshape(-1, 4)
        assert len(boxes) > 0 and os.path.isfile(item["output"])
        assert np.all(boxes[:, [0, 2]] <= width + 0.01) and np.all(boxes[:, [1, 3]] <= height + 0.01)
    report = tmp_path / "eval.json"
    result = run_cli("evaluate", "--model", path, "--data", photo_tree, "--split", "test",
                     "--metric", "voc", "--output", report)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "raccoon" in result.stdout
    assert json.loads(report.read_text())["data"]
