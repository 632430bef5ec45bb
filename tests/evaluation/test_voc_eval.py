"""VOC AP: hand-computed values, and equality with py-faster-rcnn's voc_eval.py algorithm."""

import numpy as np
import pytest

from rcnn_zoo.data import continuous_to_voc, voc_to_continuous
from rcnn_zoo.evaluation import voc_ap, voc_ap_per_class


# ------------------------------------------------------------------------------------------
# An independent NumPy transcription of voc_eval.py's algorithm (per class, files replaced by
# in-memory lists): class_recs per image, detections sorted by -confidence, the greedy loop with
# "+1" IoU, tp/fp cumsum, then voc_ap with the 11-point loop or the mrec/mpre envelope loop.


def reference_voc_ap(rec, prec, use_07_metric):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def reference_voc_eval(class_dets, gt_objects, image_names, ovthresh=0.5, use_07_metric=False):
    """``class_dets``: lines ``(image_name, confidence, x1, y1, x2, y2)`` of one class;
    ``gt_objects[image_name]``: list of ``(bbox, difficult)`` of that class."""
    class_recs, npos = {}, 0
    for name in image_names:
        objects = gt_objects.get(name, [])
        bbox = np.array([o[0] for o in objects])
        difficult = np.array([o[1] for o in objects]).astype(bool)
        npos = npos + sum(~difficult)
        class_recs[name] = {"bbox": bbox, "difficult": difficult, "det": [False] * len(objects)}
    image_ids = [d[0] for d in class_dets]
    confidence = np.array([d[1] for d in class_dets])
    BB = np.array([d[2:] for d in class_dets]).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence)
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = (
                (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                + (BBGT[:, 2] - BBGT[:, 0] + 1.0) * (BBGT[:, 3] - BBGT[:, 1] + 1.0)
                - inters
            )
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return reference_voc_ap(rec, prec, use_07_metric)


def random_problem(rng, num_images=25, num_classes=3):
    """VOC-coordinate (1-based inclusive, integer) ground truth and detections near it."""
    gts, dets = [], []
    for _ in range(num_images):
        n = rng.integers(0, 5)
        x1, y1 = rng.integers(1, 200, n), rng.integers(1, 200, n)
        w, h = rng.integers(4, 80, n), rng.integers(4, 80, n)
        boxes = np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float64)
        labels = rng.integers(0, num_classes, n)
        difficult = rng.random(n) < 0.15
        gts.append((boxes, labels, difficult))
        # Jittered copies of the gt (some duplicated, some mislabelled) plus random boxes.
        m = rng.integers(0, 8)
        source = boxes[rng.integers(0, n, m)] if n else np.zeros((0, 4))
        noise = rng.normal(0, rng.choice([1.0, 6.0]), (len(source), 4))
        jittered = source + noise
        corner = rng.uniform(1, 250, (rng.integers(0, 3), 2))
        spurious = np.concatenate([corner, corner + rng.uniform(3, 60, corner.shape)], 1)
        d_boxes = np.concatenate([jittered, spurious]).reshape(-1, 4)
        copied_labels = labels[rng.integers(0, n, m)] if n else np.zeros(0, int)
        d_labels = np.concatenate(
            [copied_labels, rng.integers(0, num_classes, len(spurious))]
        ).astype(int)
        flip = rng.random(len(d_labels)) < 0.1
        d_labels[flip] = rng.integers(0, num_classes, flip.sum())
        # Distinct scores, higher on average for the jittered copies (a realistic ranking).
        scores = rng.random(len(d_labels)) + 0.5 * (np.arange(len(d_labels)) < len(jittered))
        dets.append((d_boxes, scores, d_labels))
    return dets, gts


def reference_all_classes(dets, gts, num_classes, use_07_metric):
    names = [f"img{i}" for i in range(len(gts))]
    aps = []
    for c in range(num_classes):
        class_dets = [
            (names[i], s, *box)
            for i, (boxes, scores, labels) in enumerate(dets)
            for box, s, l in zip(boxes, scores, labels)
            if l == c
        ]
        gt_objects = {
            names[i]: [(box, d) for box, l, d in zip(*gt) if l == c] for i, gt in enumerate(gts)
        }
        aps.append(reference_voc_eval(class_dets, gt_objects, names, 0.5, use_07_metric))
    return np.array(aps)


@pytest.mark.parametrize("use_07_metric", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_voc_eval_on_random_detections(seed, use_07_metric):
    rng = np.random.default_rng(seed)
    dets, gts = random_problem(rng)
    # Every class needs a non-difficult gt for voc_eval to be defined.
    for c in range(3):
        if not any(np.any((g[1] == c) & ~g[2]) for g in gts):
            gts.append((np.array([[1.0, 1, 30, 30]]), np.array([c]), np.array([False])))
            dets.append((np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)))
    expected = reference_all_classes(dets, gts, 3, use_07_metric)
    assert 0.05 < np.mean(expected) < 0.95  # a non-trivial case

    # On VOC file coordinates with the "+1" convention: the same arithmetic, the same numbers.
    ap, mean = voc_ap_per_class(dets, gts, 3, use_07_metric=use_07_metric, pixel_offset=1)
    np.testing.assert_array_equal(ap, expected)
    assert mean == pytest.approx(np.mean(expected), abs=1e-12)

    # The reader's continuous boxes with pixel_offset=0 give the same APs.
    gts_c = [(voc_to_continuous(b), l, d) for b, l, d in gts]
    dets_c = [(voc_to_continuous(b), s, l) for b, s, l in dets]  # what py-faster-rcnn writes, back
    ap_c, _ = voc_ap_per_class(dets_c, gts_c, 3, use_07_metric=use_07_metric, pixel_offset=0)
    np.testing.assert_allclose(ap_c, expected, rtol=0, atol=1e-9)


def hand_case():
    """One class; npos = 3 (A, B, C), D is difficult. Ranked detections:
    0.9 A (TP), 0.8 A again (FP, duplicate), 0.7 D (ignored), 0.6 C (TP), 0.5 nothing (FP).
    Recall 1/3 1/3 1/3 2/3 2/3, precision 1 1/2 1/2 2/3 1/2; B is never found."""
    a, b, c, d = [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [50, 50, 60, 60]
    gts = [
        (np.array([a, b], float), np.array([0, 0]), np.array([False, False])),
        (np.array([c, d], float), np.array([0, 0]), np.array([False, True])),
    ]
    dets = [
        (
            np.array([a, a, [100, 100, 110, 110]], float),
            np.array([0.9, 0.8, 0.5]),
            np.array([0, 0, 0]),
        ),
        (np.array([d, c], float), np.array([0.7, 0.6]), np.array([0, 0])),
    ]
    return dets, gts


def test_hand_computed_ap_both_metrics():
    dets, gts = hand_case()
    # Envelope 1 (recall 0 → 1/3), 2/3 (→ 2/3), 0 (→ 1): 1/3 + 2/9.
    ap, mean = voc_ap_per_class(dets, gts, 1)
    assert ap[0] == pytest.approx(5 / 9) and mean == pytest.approx(5 / 9)
    # 11-point: recall ≥ 0, .1, .2, .3 → precision 1; ≥ .4, .5, .6 → 2/3; above → 0.
    ap07, _ = voc_ap_per_class(dets, gts, 1, use_07_metric=True)
    assert ap07[0] == pytest.approx(6 / 11)
    # voc_ap on its own.
    rec, prec = np.array([1, 1, 1, 2, 2]) / 3, np.array([1, 1 / 2, 1 / 2, 2 / 3, 1 / 2])
    assert voc_ap(rec, prec) == pytest.approx(5 / 9)
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(6 / 11)


def test_threshold_is_strict_and_no_fallback_to_second_best_box():
    gt = [(np.array([[0, 0, 10, 10]], float), np.array([0]), None)]
    half = [(np.array([[0, 0, 10, 5]], float), np.array([1.0]), np.array([0]))]  # IoU = 0.5
    assert voc_ap_per_class(half, gt, 1)[0][0] == 0.0
    assert voc_ap_per_class(half, gt, 1, iou_threshold=0.49)[0][0] == 1.0
    # Inclusive coordinates: (1, 1, 10, 10) is 10 x 10 pixels, (1, 1, 10, 5) 10 x 5: IoU 0.5.
    gt1 = [(np.array([[1, 1, 10, 10]], float), np.array([0]), None)]
    half1 = [(np.array([[1, 1, 10, 5]], float), np.array([1.0]), np.array([0]))]
    assert voc_ap_per_class(half1, gt1, 1, pixel_offset=1)[0][0] == 0.0
    # (1, 1, 10, 5.5): IoU 55/100 inclusive, but 40.5/81 = 0.5 as continuous boxes.
    more = [(np.array([[1, 1, 10, 5.5]]), np.array([1.0]), np.array([0]))]
    assert voc_ap_per_class(more, gt1, 1, pixel_offset=1)[0][0] == 1.0
    assert voc_ap_per_class(more, gt1, 1, pixel_offset=0)[0][0] == 0.0

    # Two gts; the second detection overlaps both but best matches the taken one: FP.
    gts = [(np.array([[0, 0, 10, 10], [0, 0, 10, 8]], float), np.array([0, 0]), None)]
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9.5]])
    dets = [(boxes, np.array([0.9, 0.8]), np.array([0, 0]))]
    ap, _ = voc_ap_per_class(dets, gts, 1)
    assert ap[0] == pytest.approx(0.5)  # recall 1/2 at precision 1, never more


def test_classes_without_ground_truth_are_nan_and_left_out():
    dets, gts = hand_case()
    dets = [(b, s, l) for b, s, l in dets] + [
        (np.array([[0, 0, 5, 5], [0, 0, 5, 5]], float), np.array([0.9, 0.3]), np.array([1, 2]))
    ]
    gts = gts + [(np.array([[0, 0, 5, 5]], float), np.array([1]), np.array([False]))]
    ap, mean = voc_ap_per_class(dets, gts, 4)
    assert ap[0] == pytest.approx(5 / 9) and ap[1] == 1.0
    assert np.isnan(ap[2]) and np.isnan(ap[3])  # 2: detections only; 3: nothing
    assert mean == pytest.approx((5 / 9 + 1) / 2)
    empty, mean = voc_ap_per_class([(np.zeros((0, 4)), [], [])], [(np.zeros((0, 4)), [], [])], 2)
    assert np.all(np.isnan(empty)) and np.isnan(mean)


def test_no_detections_is_zero_and_lengths_must_match():
    _, gts = hand_case()
    nothing = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))] * 2
    ap, mean = voc_ap_per_class(nothing, gts, 1)
    assert ap[0] == 0.0 and mean == 0.0
    with pytest.raises(ValueError, match="images"):
        voc_ap_per_class(nothing[:1], gts, 1)


def test_continuous_to_voc_matches_py_faster_rcnn_results_files():
    # py-faster-rcnn's 0-based inclusive box (x1, y1, x2 − 1, y2 − 1) is written + 1 everywhere.
    continuous = np.array([[4.5, 7.0, 20.25, 31.0]])
    inclusive0 = continuous - [0, 0, 1, 1]
    np.testing.assert_array_equal(continuous_to_voc(continuous), inclusive0 + 1)
