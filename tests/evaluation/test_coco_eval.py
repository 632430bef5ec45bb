"""COCO AP: hand-made cases with known values, and equality with COCOeval run directly."""

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rcnn_zoo.evaluation import COCO_STAT_NAMES, coco_evaluate, coco_results

GT = [(np.array([[0.0, 0.0, 100.0, 100.0]]), np.array([0]), np.array([False]))]


def one_detection(box, label=0, score=0.9):
    return [(np.array([box], float), np.array([score]), np.array([label]))]


def test_perfect_detection_is_ap_one():
    stats = coco_evaluate(one_detection([0, 0, 100, 100]), GT, 1)
    for name in ("AP", "AP50", "AP75", "APl", "AR1", "AR10", "AR100", "ARl"):
        assert stats[name] == pytest.approx(1.0), name
    # A 100 x 100 box is "large": no small or medium ground truth, COCOeval's -1 → NaN.
    for name in ("APs", "APm", "ARs", "ARm"):
        assert math.isnan(stats[name]), name


def test_detection_at_iou_062():
    # (0, 0, 100, 62) against (0, 0, 100, 100): IoU 0.62, a match at thresholds .50, .55, .60.
    stats = coco_evaluate(one_detection([0, 0, 100, 62]), GT, 1)
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP75"] == pytest.approx(0.0)
    assert stats["AP"] == pytest.approx(0.3)
    assert stats["AR100"] == pytest.approx(0.3)


def test_wrong_class_no_detections_and_crowd():
    assert coco_evaluate(one_detection([0, 0, 100, 100], label=1), GT, 2)["AP"] == 0.0
    nothing = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))]
    assert coco_evaluate(nothing, GT, 1)["AP"] == 0.0
    # A detection on a crowd region is ignored, not a false positive (even when ranked first).
    gt = [(np.array([[0, 0, 100, 100], [200, 0, 300, 100]], float), np.array([0, 0]),
           np.array([False, True]))]
    dets = [(np.array([[200, 0, 300, 100], [0, 0, 100, 100]], float), np.array([0.95, 0.9]),
             np.array([0, 0]))]
    assert coco_evaluate(dets, gt, 1)["AP"] == pytest.approx(1.0)
    # Without the crowd region that detection is a false positive ranked first.
    stats = coco_evaluate(dets, GT, 1, per_class=True)
    assert stats["AP"] == pytest.approx(0.5) and stats["per_class_AP"][0] == pytest.approx(0.5)


def test_areas_decide_the_size_ranges():
    # Box area 10000 (large) but a segment area of 500 (small): COCO uses the given area.
    gt = [(GT[0][0], GT[0][1], GT[0][2], np.array([500.0]))]
    stats = coco_evaluate(one_detection([0, 0, 100, 100]), gt, 1)
    assert stats["APs"] == pytest.approx(1.0) and math.isnan(stats["APl"])


def random_case(rng, num_images=12, num_classes=3):
    gts, dets = [], []
    for _ in range(num_images):
        n = rng.integers(0, 6)
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 150, (n, 2))], 1)
        labels = rng.integers(0, num_classes, n)
        crowd = rng.random(n) < 0.1
        gts.append((boxes, labels, crowd))
        noisy = boxes + rng.normal(0, 6, boxes.shape)
        extra = rng.uniform(0, 300, (rng.integers(0, 4), 2))
        extra = np.concatenate([extra, extra + 40], 1)
        d_boxes = np.concatenate([noisy, extra])
        d_labels = np.concatenate([labels, rng.integers(0, num_classes, len(extra))])
        dets.append((d_boxes, rng.random(len(d_boxes)), d_labels))
    return dets, gts


def test_equals_cocoeval_run_directly():
    rng = np.random.default_rng(0)
    dets, gts = random_case(rng)
    image_ids = [100 + i for i in range(len(gts))]
    category_ids = [5, 9, 11]
    stats = coco_evaluate(dets, gts, 3, image_ids=image_ids, category_ids=category_ids)

    # The same data through pycocotools by hand.
    annotations = []
    for image_id, (boxes, labels, crowd) in zip(image_ids, gts):
        for box, label, is_crowd in zip(boxes, labels, crowd):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": category_ids[label], "bbox": [box[0], box[1], w, h],
                "area": w * h, "iscrowd": int(is_crowd),
            })
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": [{"id": i} for i in image_ids],
            "categories": [{"id": c} for c in category_ids],
            "annotations": annotations,
        }
        coco_gt.createIndex()
        results = [
            {"image_id": image_id, "category_id": category_ids[label],
             "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score}
            for image_id, (boxes, scores, labels) in zip(image_ids, dets)
            for box, score, label in zip(boxes, scores, labels)
        ]
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    expected = [np.nan if v == -1 else v for v in evaluator.stats]
    np.testing.assert_allclose([stats[k] for k in COCO_STAT_NAMES], expected, rtol=0, atol=1e-12)
    assert 0.2 < stats["AP"] < 0.9


def test_coco_results_format():
    dets = [(np.array([[1.0, 2.0, 11.0, 7.0]]), np.array([0.5]), np.array([1])),
            (np.array([[0.0, 0.0, 1.0, 1.0]]), np.array([0.1]), np.array([-1]))]
    assert coco_results(dets, [42, 43], category_ids=[3, 18]) == [
        {"image_id": 42, "category_id": 18, "bbox": [1.0, 2.0, 10.0, 5.0], "score": 0.5}
    ]
    assert coco_results(dets[:1], [42])[0]["category_id"] == 2
