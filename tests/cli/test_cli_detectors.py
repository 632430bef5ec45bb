"""Every detector of the registry through the command line, end to end, as a user runs it
(``python -m rcnn_zoo.cli`` in fresh processes) on small copies of real raccoon photos.

Per detector: ``train --detector NAME`` (tiny backbone, one epoch; R-CNN: one fine-tuning epoch,
then its SVM and box regressor stages, on 32-px warps of at most 100 proposals per image), with
the training photos as validation split, then ``evaluate``, ``predict`` on the image folder and
``export``, and the SavedModel run in a fresh TensorFlow-only process
(``tests/export/saved_model_runner.py``) on one photo (the one with most detections), whose
detections must be those ``predict`` wrote for it. Fast R-CNN and R-CNN are served with the selective search proposals the CLI
computes for that photo, with the same settings.

Five photos shrunk to a longer side of 128 px, so selective search takes ~0.05 s per image and
every process is dominated by TensorFlow's start.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from photo_copies import REPO, copy_raccoon_photos, run_cli

STEMS = ("raccoon-1", "raccoon-10", "raccoon-100", "raccoon-105", "raccoon-106")
RUNNER = os.path.join(REPO, "tests", "export", "saved_model_runner.py")
TITLES = {"faster_rcnn": "Faster R-CNN", "rfcn": "R-FCN", "fast_rcnn": "Fast R-CNN", "rcnn": "R-CNN"}
# Fast R-CNN's proposals as the CLI computes them (rcnn_zoo.inference.FAST_RCNN_PROPOSALS).
FAST_RCNN_SEARCH = {"mode": "fast", "max_proposals": 2000}
SIZES = ["--image-min-size", 96, "--image-max-size", 128]
# Detectors scoring with probabilities keep every detection (score_threshold 0), so that boxes
# are there to check; R-CNN's SVM margins are cut at its own −1.
DETECTOR_ARGS = {
    "faster_rcnn": SIZES + ["--model-arg", "score_threshold=0.0"],
    "rfcn": SIZES + ["--model-arg", "score_threshold=0.0"],
    "fast_rcnn": SIZES + ["--model-arg", "score_threshold=0.0"],
    "rcnn": ["--model-arg", "warp_size=32", "--model-arg", "context_padding=4",
             "--model-arg", "max_proposals=100"],
}
PREDICT_THRESHOLD = {"faster_rcnn": 0.0, "rfcn": 0.0, "fast_rcnn": 0.0, "rcnn": -1.0}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return copy_raccoon_photos(str(tmp_path_factory.mktemp("raccoon") / "voc"), STEMS, long_side=128)


def _ok(result, what):
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _served(jobs, path):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"jobs": jobs}, handle)
    result = subprocess.run([sys.executable, RUNNER, path], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["jobs"]


def _search(pixels, settings):
    from rcnn_zoo.proposals import selective_search  # numpy + OpenCV only

    return selective_search(pixels, mode=settings["mode"], max_proposals=settings["max_proposals"])


@pytest.mark.parametrize("detector", list(TITLES))
def test_train_evaluate_predict_export(detector, photos, tmp_path):
    takes_proposals = detector in ("fast_rcnn", "rcnn")
    out = tmp_path / "run"
    # --- train (validation on the same photos: the val mAP path runs, on cached proposals)
    stdout = _ok(run_cli("train", "--data", photos, "--split", "train", "--val-split", "train",
                         "--detector", detector, "--backbone", "tiny", "--epochs", 1, "--batch-size", 2,
                         *DETECTOR_ARGS[detector], "--output-dir", out, "--verbose", 2), "train")
    assert f"Training tiny {TITLES[detector]} on 5 images (raccoon)" in stdout
    for name in ("last.keras", "best.keras", "history.csv", "training_curves.png", "config.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["arguments"]["detector"] == detector
    assert config["epochs_done"] == 1
    with open(out / "history.csv", encoding="utf-8") as handle:
        header, *rows = [line.split(",") for line in handle.read().splitlines()]
    assert len(rows) == 1
    row = dict(zip(header, rows[0]))
    assert math.isfinite(float(row["loss"])) and math.isfinite(float(row["val_mAP"]))
    cached = sorted(os.listdir(out / "proposals")) if (out / "proposals").is_dir() else []
    if takes_proposals:
        assert len(cached) == len(STEMS)
        assert "Selective search: 5 image(s) computed, 0 read from the cache." in stdout
        assert "Selective search: 0 image(s) computed, 5 read from the cache." in stdout  # val split
    else:
        assert cached == [] and "Selective search" not in stdout

    # --- evaluate: the per-class AP table names raccoon; proposals come from the run's cache
    report = tmp_path / "eval.json"
    stdout = _ok(run_cli("evaluate", "--model", out / "last.keras", "--data", photos, "--split", "train",
                         "--output", report), "evaluate")
    line = next(line for line in stdout.splitlines() if line.startswith("raccoon"))
    assert line.split()[1] == "5" and 0.0 <= float(line.split()[2]) <= 1.0
    results = json.loads(report.read_text())
    assert results["class_names"] == ["raccoon"] and math.isfinite(results["voc"]["mAP"])
    if takes_proposals:
        assert "Selective search: 0 image(s) computed, 5 read from the cache." in stdout
        assert sorted(os.listdir(out / "proposals")) == cached
    else:
        assert "Selective search" not in stdout

    # --- predict on the folder: one entry per photo, boxes inside it
    detections = tmp_path / "detections"
    threshold = PREDICT_THRESHOLD[detector]
    _ok(run_cli("predict", "--model", out / "last.keras", "--images", photos + "/images",
                "--output-dir", detections, "--score-threshold", threshold, "--verbose", 0), "predict")
    written = json.loads((detections / "detections.json").read_text())
    assert sorted(os.path.basename(item["image"]) for item in written) == sorted(f"{s}.jpg" for s in STEMS)
    found = 0
    for item in written:
        with Image.open(item["image"]) as image:
            width, height = image.size
        assert (item["width"], item["height"]) == (width, height)
        boxes = np.array(item["boxes"], np.float64).reshape(-1, 4)
        assert len(boxes) == len(item["scores"]) == len(item["class_names"])
        assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= width) and np.all(boxes[:, [1, 3]] <= height)
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert np.all(np.array(item["scores"]) >= threshold) and set(item["class_names"]) <= {"raccoon"}
        assert os.path.isfile(item["output"])
        found += len(boxes)
    assert found > 0

    # --- export, then serve one photo in a fresh TensorFlow-only process
    saved = tmp_path / "serving" / "1"
    _ok(run_cli("export", "--model", out / "last.keras", "--output", saved), "export")
    assert (saved / "saved_model.pb").is_file()
    entry = max(written, key=lambda item: len(item["boxes"]))  # the photo with the most detections
    job = {"name": detector, "model": str(saved), "input_type": "image_tensor", "images": [entry["image"]]}
    if takes_proposals:
        with Image.open(entry["image"]) as image:
            pixels = np.asarray(image.convert("RGB"))
        model = config["model"]
        settings = ({"mode": model["proposal_mode"], "max_proposals": model["max_proposals"]}
                    if detector == "rcnn" else FAST_RCNN_SEARCH)
        job["proposals"] = [_search(pixels, settings).tolist()]
    served = _served([job], tmp_path / "jobs.json")[detector]
    expected_inputs = {"input_tensor", "proposals"} if takes_proposals else {"input_tensor"}
    assert set(served["inputs"]) == expected_inputs and served["labels"] == ["raccoon"]
    outputs = served["outputs"]
    count = int(outputs["num_detections"][0])
    height, width = entry["height"], entry["width"]
    boxes = np.array(outputs["detection_boxes"][0][:count]).reshape(-1, 4) * [height, width, height, width]
    boxes = boxes[:, [1, 0, 3, 2]]  # [ymin, xmin, ymax, xmax] → xyxy
    scores = np.array(outputs["detection_scores"][0][:count])
    assert count == len(entry["boxes"]) > 0
    assert np.all(np.array(outputs["detection_classes"][0][:count]) == 1)
    # The served detections are predict's (order may differ among equal scores).
    expected = np.array(entry["boxes"]).reshape(-1, 4)
    for box, score in zip(boxes, scores):
        close = (np.abs(expected - box).max(axis=1) < 0.05) & (np.abs(np.array(entry["scores"]) - score) < 1e-4)
        assert close.any(), f"served {box} {score} is not among predict's detections"


def test_unknown_detector_exits_2_with_one_line_naming_the_detectors(photos, tmp_path):
    result = run_cli("train", "--data", photos, "--detector", "yolo", "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rcnn-zoo: error: ") and "'yolo'" in lines[0]
    for name in TITLES:
        assert name in lines[0]
    assert not (tmp_path / "out").exists()
