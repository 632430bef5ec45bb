"""COCO box AP and AR (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014)
computed by ``pycocotools.cocoeval.COCOeval`` itself, from in-memory detections.

Shape shorthand: ``n`` detections or objects of one image, ``C`` classes.

The ground truth is turned into a COCO object in memory (image ids ``1 … N`` unless given,
category ids ``1 … C`` unless given, annotation ids from 1) and the detections into COCO results
(``bbox`` as ``[x, y, w, h]``, loaded with ``COCO.loadRes``), then ``evaluate``, ``accumulate``
and ``summarize`` run unchanged, so the numbers are COCOeval's by construction. Boxes are xyxy
continuous pixels (COCO's own convention, no ``+1``); pass them in original image pixels, since
the small/medium/large ranges are absolute areas (32², 96²).
"""

import contextlib
import io

import numpy as np

__all__ = ["coco_evaluate", "coco_results", "COCO_STAT_NAMES"]

# Names of COCOeval.stats, in its order.
COCO_STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


def coco_results(detections, image_ids, category_ids=None):
    """COCO results list (what a ``results.json`` holds) from per-image detections.

    Args:
        detections: per image ``(boxes [n, 4] xyxy pixels, scores [n], labels [n])``.
        image_ids: the COCO image id of each image (e.g. ``record.image_id``).
        category_ids: ``category_ids[label]`` is the COCO category id (``dataset.category_ids``);
            None: ``label + 1``.

    Returns:
        list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` with Python
        numbers; detections with a label outside ``category_ids`` are left out.
    """
    results = []
    for image_id, (boxes, scores, labels) in zip(image_ids, detections):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        for box, score, label in zip(boxes, scores, labels):
            if category_ids is None:
                if label < 0:
                    continue
                category = int(label) + 1
            else:
                if not 0 <= label < len(category_ids):
                    continue
                category = category_ids[label]
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return results


def _ground_truth_dataset(ground_truths, image_ids, category_ids, class_names, image_sizes):
    images = []
    for i, image_id in enumerate(image_ids):
        entry = {"id": image_id}
        if image_sizes is not None:
            entry["height"], entry["width"] = (int(v) for v in image_sizes[i])
        images.append(entry)
    categories = [
        {"id": cid, "name": str(class_names[c]) if class_names is not None else str(cid)}
        for c, cid in enumerate(category_ids)
    ]
    annotations = []
    for image_id, gt in zip(image_ids, ground_truths):
        boxes = np.asarray(gt[0], np.float64).reshape(-1, 4)
        labels = np.asarray(gt[1]).reshape(-1).astype(np.int64)
        crowd = gt[2] if len(gt) > 2 and gt[2] is not None else np.zeros(len(labels), bool)
        areas = gt[3] if len(gt) > 3 else None
        crowd = np.asarray(crowd, bool).reshape(-1)
        for j, (box, label) in enumerate(zip(boxes, labels)):
            if not 0 <= label < len(category_ids):
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            w, h = x2 - x1, y2 - y1
            area = float(areas[j]) if areas is not None and np.isfinite(areas[j]) else w * h
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCOeval treats id 0 as "unmatched"
                    "image_id": image_id,
                    "category_id": category_ids[label],
                    "bbox": [x1, y1, w, h],
                    "area": area,
                    "iscrowd": int(crowd[j]),
                }
            )
    return {"images": images, "categories": categories, "annotations": annotations}


def coco_evaluate(
    detections,
    ground_truths,
    num_classes,
    *,
    image_ids=None,
    category_ids=None,
    class_names=None,
    image_sizes=None,
    per_class=False,
    verbose=False,
):
    """COCO AP@[.50:.95], AP50, AP75, AP small/medium/large and AR@1/10/100, AR s/m/l.

    Args:
        detections: per image ``(boxes [n, 4] xyxy pixels, scores [n], labels [n])``; COCOeval
            keeps the 100 best per image.
        ground_truths: per image ``(boxes [n, 4], labels [n], iscrowd [n])`` optionally with a
            4th item ``areas [n]`` (COCO's segment areas; NaN or missing: box area) — e.g.
            ``dataset.ground_truths(with_areas=True)``. ``iscrowd`` may be None.
        num_classes: ``C``; labels outside ``0 … C−1`` are ignored.
        image_ids: COCO image id of each image (default ``1 … N``).
        category_ids: COCO category id of each label (default ``label + 1``).
        class_names: only used to name the categories.
        image_sizes: optional ``(height, width)`` per image (stored, not used by the metric).
        per_class: also return ``"per_class_AP"``: ``[C]`` AP@[.50:.95] of each class.
        verbose: let pycocotools print its usual summary.

    Returns:
        dict with the 12 :data:`COCO_STAT_NAMES` → float, equal to ``COCOeval.stats`` except
        that COCOeval's ``-1`` ("no ground truth in this area range") is NaN; plus
        ``"per_class_AP"`` if asked (NaN for classes without ground truth).
    """
    from pycocotools.coco import COCO  # noqa: PLC0415  (optional dependency)
    from pycocotools.cocoeval import COCOeval  # noqa: PLC0415

    if len(detections) != len(ground_truths):
        raise ValueError(
            f"{len(detections)} images of detections but {len(ground_truths)} of ground truth"
        )
    image_ids = list(range(1, len(ground_truths) + 1)) if image_ids is None else list(image_ids)
    category_ids = (
        list(range(1, num_classes + 1)) if category_ids is None else list(category_ids)
    )
    if len(category_ids) != num_classes:
        raise ValueError(f"{len(category_ids)} category ids for {num_classes} classes")

    out = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with out:
        gt = COCO()
        gt.dataset = _ground_truth_dataset(
            ground_truths, image_ids, category_ids, class_names, image_sizes
        )
        gt.createIndex()
        results = coco_results(detections, image_ids, category_ids)
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes cannot take an empty list; an empty result set is what it would build
            dt = COCO()
            dt.dataset = {"images": list(gt.dataset["images"]), "annotations": []}
            dt.dataset["categories"] = list(gt.dataset["categories"])
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    stats = {
        name: (float("nan") if value == -1 else float(value))
        for name, value in zip(COCO_STAT_NAMES, evaluator.stats)
    }
    if per_class:
        # precision: [T iou thresholds, R recall thresholds, K classes, A areas, M maxDets];
        # area "all" and maxDets 100 are index 0 and -1, as COCOeval's summary uses them.
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        per_class_ap = np.full(num_classes, np.nan)
        for c, cid in enumerate(category_ids):
            k = evaluator.params.catIds.index(cid)
            p = precision[:, :, k]
            if np.any(p > -1):
                per_class_ap[c] = float(np.mean(p[p > -1]))
        stats["per_class_AP"] = per_class_ap
    return stats
