"""``rcnn_zoo.data.analyze`` and ``rcnn-zoo analyze``: box statistics, duplicates and the anchor
recall, against references written from the definitions (NumPy loops over every anchor of the
grid, torchvision's anchor rule), on hand-made boxes, on the real raccoon photos with the CLI's
default model and with the registered pretrained architecture (ResNet-50-FPN)."""

import json
import math
import os
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PIL import Image

from photo_copies import RACCOON, run_cli
from rcnn_zoo.data import DetectionDataset, DetectionRecord, analyze, load_dataset
from rcnn_zoo.data.analysis import best_anchor_iou
from rcnn_zoo.training.detectors import build_detector

TINY_SIZES, RATIOS, STRIDE = (32, 64, 128, 256), (0.5, 1.0, 2.0), 8  # the CLI's tiny model


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference_anchors(height, width):
    """torchvision's rule, cell by cell: w = s/√r, h = s·√r, half sides rounded, centred on
    (x·stride, y·stride), over a grid of ⌈side / stride⌉ cells."""
    anchors = []
    for y in range(math.ceil(height / STRIDE)):
        for x in range(math.ceil(width / STRIDE)):
            for r in RATIOS:
                for s in TINY_SIZES:
                    w, h = s / math.sqrt(r), s * math.sqrt(r)
                    half = [round(-w / 2), round(-h / 2), round(w / 2), round(h / 2)]
                    anchors.append([half[0] + x * STRIDE, half[1] + y * STRIDE,
                                    half[2] + x * STRIDE, half[3] + y * STRIDE])
    return anchors


def _record(path, boxes, labels, size=256, difficult=None):
    boxes = np.asarray(boxes, np.float32)
    return DetectionRecord(path, os.path.basename(path), boxes, np.asarray(labels, np.int32),
                           np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult),
                           size, size)


@pytest.fixture(scope="module")
def tiny_model():
    return build_detector(2, ["a", "b"], backbone="tiny")


def test_best_anchor_iou_equals_the_pairwise_loop():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (7, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 60, (7, 2))], axis=1)
    axy = rng.uniform(-20, 120, (300, 2))
    anchors = np.concatenate([axy, axy + rng.uniform(1, 80, (300, 2))], axis=1)
    expected = [max(_iou(b, a) for a in anchors) for b in boxes]
    np.testing.assert_allclose(best_anchor_iou(boxes, anchors, chunk=3), expected, rtol=1e-5)
    assert best_anchor_iou(boxes, np.zeros((0, 4))).tolist() == [0.0] * 7


def test_anchor_recall_of_hand_made_boxes_matches_the_grid_reference(tmp_path, tiny_model):
    # 256×256 images: the CLI's tiny rule (shorter side 256) leaves them as they are.
    boxes = [
        [48, 64, 112, 128],  # = the 64 px square anchor of cell (x 10, y 12): IoU 1
        [100, 100, 108, 108],  # 8 px: smaller than every anchor (best IoU ≈ 0.06)
        [52, 64, 116, 128],  # the first, 4 px to the right (IoU 0.88)
        [112, 112, 208, 208],  # 96 px centred on a cell: 0.5625 with the 128 px anchor
    ]
    path = str(tmp_path / "a.png")
    Image.new("RGB", (256, 256)).save(path)
    dataset = DetectionDataset([_record(path, boxes, [0, 0, 1, 1])], ["a", "b"])
    result = analyze(dataset, tiny_model, duplicates=False)
    anchors = _reference_anchors(256, 256)
    expected = np.array([max(_iou(b, a) for a in anchors) for b in boxes])
    np.testing.assert_allclose(expected[[0, 3]], [1.0, 0.5625], rtol=1e-6)  # the reference itself
    report = result["anchors"]
    np.testing.assert_allclose(report["_best_iou"], expected, rtol=1e-5)
    assert report["overall"]["recall@0.7"] == 0.5 and report["overall"]["recall@0.5"] == 0.75
    per_class = {r["class"]: r for r in report["per_class"]}
    assert per_class["a"]["recall@0.7"] == 0.5 and per_class["b"]["recall@0.7"] == 0.5
    assert per_class["b"]["recall@0.5"] == 1.0
    per_size = {r["size"]: r for r in report["per_size"]}  # COCO: small < 32², medium < 96² ≤ large
    assert [per_size[k]["boxes"] for k in ("small", "medium", "large")] == [1, 2, 1]
    assert per_size["small"]["recall@0.5"] == 0.0 and per_size["medium"]["recall@0.7"] == 1.0
    assert result["boxes"]["size_buckets_resized"] == {"small": 1, "medium": 2, "large": 1}


def test_box_statistics_duplicates_and_difficult_objects(tmp_path, tiny_model):
    pixels = np.random.default_rng(1).integers(0, 255, (128, 128, 3), np.uint8)
    first, copy, other = (str(tmp_path / n) for n in ("first.png", "copy.png", "other.png"))
    Image.fromarray(pixels).save(first)
    Image.fromarray(pixels).save(copy)
    Image.fromarray(255 - pixels).save(other)
    records = [
        _record(first, [[0, 0, 32, 64]], [0], size=128),
        _record(copy, [[10, 10, 30, 20], [10, 10, 30, 20], [0, 0, 8, 8]], [1, 1, 0], size=128,
                difficult=[False, False, True]),
        _record(other, [[0, 0, 40, 40]], [0], size=128),
    ]
    result = analyze(DetectionDataset(records, ["a", "b"]), tiny_model)
    # 128 px images resized to the tiny rule's shorter side 256: boxes scale by 2.
    assert result["boxes"]["count"] == 4  # the difficult box is counted apart
    sizes = sorted([math.sqrt(32 * 64) * 2, math.sqrt(20 * 10) * 2, math.sqrt(20 * 10) * 2, 80.0])
    assert result["boxes"]["size_resized"]["p50"] == pytest.approx(np.percentile(sizes, 50), abs=0.01)
    assert result["boxes"]["aspect_ratio"]["p50"] == pytest.approx(np.percentile([2.0, 0.5, 0.5, 1.0], 50))
    assert [(c["objects"], c["images"], c["difficult"]) for c in result["classes"]] == [(2, 2, 1), (2, 1, 0)]
    assert result["duplicates"]["identical_images"] == [[first, copy]]
    assert result["duplicates"]["repeated_annotations"] == [{"image": copy, "repeated_annotations": 1}]
    assert result["images"]["square"] == 3 and result["images"]["most_common_sizes"][0]["resized"] == [256, 256]


def _raccoon_objects(split):
    """Objects per stem of a raccoon split, read straight from the XML files."""
    with open(os.path.join(RACCOON, f"{split}.txt")) as f:
        stems = f.read().split()
    counts = [len(ElementTree.parse(os.path.join(RACCOON, "annotations", f"{s}.xml")).findall("object"))
              for s in stems]
    return len(stems), sum(counts)


def test_resnet50_fpn_anchor_recall_on_the_raccoon_photos():
    """The registered pretrained architecture at its own size (800 px): its anchors stop at
    512 px while raccoons fill the photo, so most large boxes are under 0.7."""
    dataset = load_dataset(RACCOON, "voc", "test", check_images="header")
    model = build_detector(1, dataset.class_names, backbone="resnet50_fpn")
    result = analyze(dataset, model, duplicates=False)
    images, objects = _raccoon_objects("test")
    assert result["images"]["count"] == images and result["boxes"]["count"] == objects
    assert result["resize"] == {"image_min_size": 800, "image_max_size": 1333}
    report = result["anchors"]
    assert report["strides"] == (4, 8, 16, 32, 64) and report["overall"]["boxes"] == objects
    best = report["_best_iou"]
    assert report["overall"]["recall@0.7"] == pytest.approx(np.mean(best >= 0.7), abs=1e-4)
    assert report["overall"]["recall@0.5"] >= report["overall"]["recall@0.7"]
    # IoU ≤ (smaller area) / (larger area): a box of √(w·h) > √2 · 512 px (the largest anchor)
    # cannot reach 0.5 with any anchor. The raccoon photos have such boxes at 800 px.
    too_large = result["boxes"]["_sizes_resized"] > math.sqrt(2) * 512 * 1.001
    assert too_large.any() and np.all(best[too_large] < 0.5)


def test_cli_analyze_on_the_raccoon_photos(tmp_path):
    out = tmp_path / "analysis"
    done = run_cli("analyze", "--data", RACCOON, "--split", "train", "--output-dir", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "anchor recall" in done.stdout and "identical image files" in done.stdout
    with open(out / "analysis.json") as f:
        result = json.load(f)
    images, objects = _raccoon_objects("train")
    assert result["images"]["count"] == images and result["boxes"]["count"] == objects
    assert result["resize"] == {"image_min_size": 256, "image_max_size": 416}  # what train uses
    assert result["anchors"]["sizes"] == [[32.0, 64.0, 128.0, 256.0]]
    for row in result["anchors"]["per_class"] + result["anchors"]["per_size"] + [result["anchors"]["overall"]]:
        assert row["recall@0.7"] is None or 0.0 <= row["recall@0.7"] <= row["recall@0.5"] <= 1.0
    # The raccoon set holds the same photo under two names (raccoon-11 and raccoon-116, …).
    groups = [sorted(os.path.basename(p) for p in g) for g in result["duplicates"]["identical_images"]]
    assert ["raccoon-11.jpg", "raccoon-116.jpg"] in groups
    with Image.open(out / "analysis.png") as png:
        assert png.format == "PNG" and png.size == (900, 920)
    no_anchors = run_cli("analyze", "--data", RACCOON, "--split", "test", "--detector", "fast_rcnn",
                         "--no-duplicates", "--output-dir", tmp_path / "fast")
    assert no_anchors.returncode == 0, no_anchors.stderr[-2000:]
    assert "no anchor recall" in no_anchors.stdout
    with open(tmp_path / "fast" / "analysis.json") as f:
        assert "anchors" not in json.load(f)
