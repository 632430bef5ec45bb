"""Pascal VOC average precision (Everingham et al., "The PASCAL Visual Object Classes
Challenge", IJCV 2010), computed as py-faster-rcnn's ``voc_eval.py`` does.

Shape shorthand: ``n`` detections or objects of one image, ``C`` classes.

Per class, over all images: detections are sorted by decreasing score; each one takes the
ground truth box of its class and image with the largest IoU (the first on ties). If that IoU is
``> iou_threshold`` (strictly, voc_eval's ``ovmax > ovthresh``) and the box is ``difficult``,
the detection is ignored (neither TP nor FP); if the box is not difficult and not yet matched, the
detection is a TP and the box becomes matched; otherwise (already matched, or IoU too low, or no
box) it is a FP — a detection never falls back to its second-best box. Recall is
``cumsum(TP) / #non-difficult boxes`` and precision ``cumsum(TP) / cumsum(TP + FP)``; AP is
either the VOC2007 11-point mean of the interpolated precision at recall 0, 0.1, …, 1
(``use_07_metric=True``) or the area under the monotone precision envelope at every recall step
(VOC2010+, the default).

Pixel convention. IoU uses widths ``x2 − x1 + pixel_offset``:

- ``pixel_offset=1`` for *inclusive* pixel coordinates — the numbers in VOC XML files and VOC
  results files, as voc_eval.py reads them; the result equals voc_eval.py's.
- ``pixel_offset=0`` for the library's continuous boxes (``x2 − x1`` = width).

The two agree on VOC data: the reader maps a VOC box ``(xmin, ymin, xmax, ymax)`` to the
continuous ``(xmin − 1, ymin − 1, xmax, ymax)``, and py-faster-rcnn writes a detection whose
continuous box is ``(x1, y1, x2, y2)`` as ``(x1 + 1, y1 + 1, x2, y2)`` in its results file
(``rcnn_zoo.data.voc.continuous_to_voc``). Under that map ``(x2 − x1 + 1)`` on VOC coordinates
is exactly ``(x2 − x1)`` on continuous ones, for widths, heights and intersections, so the IoUs
and hence the APs are the same (up to float rounding of the shifted coordinates).

Deviations from voc_eval.py, both only where it is ill-defined: ties in score are broken by
image order then detection order (a stable sort; voc_eval's ``np.argsort`` leaves them to the
sort algorithm), and a class without any non-difficult ground truth gets AP ``NaN`` (voc_eval
gives 0 or NaN depending on the detections) and is left out of the mean.
"""

import numpy as np

__all__ = ["voc_ap", "voc_ap_per_class", "voc_class_tp_fp", "pairwise_iou_np"]


def voc_ap(recall, precision, use_07_metric=False):
    """AP from the recall ``[n]`` and precision ``[n]`` of the ranked detections.

    ``use_07_metric``: mean over recall thresholds 0, 0.1, …, 1.0 of the best precision at
    recall ≥ threshold (0 if none). Otherwise: area under the precision envelope (the running
    maximum of precision from the right) over the recall steps, with recall 0 and 1 sentinels.
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if use_07_metric:
        ap = 0.0
        for threshold in np.arange(0.0, 1.1, 0.1):
            above = recall >= threshold
            ap += (np.max(precision[above]) if np.any(above) else 0.0) / 11.0
        return ap
    recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def pairwise_iou_np(boxes1, boxes2, pixel_offset=0):
    """IoU ``[M, N]`` of xyxy ``boxes1 [M, 4]`` and ``boxes2 [N, 4]`` in float64, with widths
    ``x2 − x1 + pixel_offset`` (voc_eval's arithmetic for ``pixel_offset=1``)."""
    b1 = np.asarray(boxes1, np.float64).reshape(-1, 4)[:, None, :]
    b2 = np.asarray(boxes2, np.float64).reshape(-1, 4)[None, :, :]
    p = float(pixel_offset)
    # Same operations in the same order as voc_eval.py, so the floats are bit-identical.
    ixmin = np.maximum(b2[..., 0], b1[..., 0])
    iymin = np.maximum(b2[..., 1], b1[..., 1])
    ixmax = np.minimum(b2[..., 2], b1[..., 2])
    iymax = np.minimum(b2[..., 3], b1[..., 3])
    iw = np.maximum(ixmax - ixmin + p, 0.0)
    ih = np.maximum(iymax - iymin + p, 0.0)
    inters = iw * ih
    union = (
        (b1[..., 2] - b1[..., 0] + p) * (b1[..., 3] - b1[..., 1] + p)
        + (b2[..., 2] - b2[..., 0] + p) * (b2[..., 3] - b2[..., 1] + p)
        - inters
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inters / np.where(union > 0, union, 1.0), 0.0)


def _as_detections(item):
    boxes, scores, labels = item
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError("detection boxes, scores and labels differ in length")
    return boxes, scores, labels


def _as_ground_truth(item):
    boxes, labels = item[0], item[1]
    difficult = item[2] if len(item) > 2 and item[2] is not None else None
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if difficult is None:
        difficult = np.zeros(len(labels), bool)
    difficult = np.asarray(difficult, bool).reshape(-1)
    if not len(boxes) == len(labels) == len(difficult):
        raise ValueError("ground truth boxes, labels and difficult differ in length")
    return boxes, labels, difficult


def voc_class_tp_fp(detections, ground_truths, class_id, iou_threshold=0.5, pixel_offset=0):
    """TP/FP flags of one class's detections in ranked order.

    Args: as :func:`voc_ap_per_class` (already converted by it or raw).

    Returns:
        ``(tp [n], fp [n], num_positives)``: float64 0/1 flags of the class's detections sorted
        by decreasing score (ignored ones have both 0), and the number of non-difficult boxes.
    """
    scores, image_of, overlap, gt_index, gt_difficult = [], [], [], [], []
    num_positives = 0
    offset = 0  # global index of the first gt box of the class in the current image
    for image, (det, gt) in enumerate(zip(detections, ground_truths)):
        d_boxes, d_scores, d_labels = det
        g_boxes, g_labels, g_difficult = gt
        d_mask, g_mask = d_labels == class_id, g_labels == class_id
        g_cls, g_diff = g_boxes[g_mask], g_difficult[g_mask]
        num_positives += int(np.sum(~g_diff))
        if np.any(d_mask):
            n = int(np.sum(d_mask))
            scores.append(d_scores[d_mask])
            image_of.append(np.full(n, image))
            if len(g_cls):
                iou = pairwise_iou_np(d_boxes[d_mask], g_cls, pixel_offset)
                best = np.argmax(iou, axis=1)  # first maximum, like voc_eval's np.argmax
                overlap.append(iou[np.arange(n), best])
                gt_index.append(best + offset)
                gt_difficult.append(g_diff[best])
            else:
                overlap.append(np.full(n, -np.inf))
                gt_index.append(np.full(n, -1))
                gt_difficult.append(np.zeros(n, bool))
        offset += len(g_cls)
    if not scores:
        return np.zeros(0), np.zeros(0), num_positives
    scores = np.concatenate(scores)
    order = np.argsort(-scores, kind="stable")
    overlap = np.concatenate(overlap)[order]
    gt_index = np.concatenate(gt_index)[order]
    gt_difficult = np.concatenate(gt_difficult)[order]

    hit = overlap > iou_threshold
    candidate = hit & ~gt_difficult
    tp = np.zeros(len(order))
    # The first (highest-ranked) candidate for each box is the TP; later ones are duplicates.
    candidates = np.flatnonzero(candidate)
    _, first = np.unique(gt_index[candidates], return_index=True)
    tp[candidates[first]] = 1.0
    fp = (~hit | (candidate & (tp == 0))).astype(np.float64)
    return tp, fp, num_positives


def voc_ap_per_class(
    detections,
    ground_truths,
    num_classes,
    iou_threshold=0.5,
    use_07_metric=False,
    pixel_offset=0,
):
    """Pascal VOC AP of every class, and their mean.

    Args:
        detections: per image ``(boxes [n, 4] xyxy, scores [n], labels [n])``, labels in
            ``0 … C−1`` (anything else is ignored).
        ground_truths: per image (same order and length) ``(boxes [n, 4], labels [n],
            difficult [n])``; ``difficult`` may be left out or None (all False).
        num_classes: ``C``.
        iou_threshold: a detection matches when IoU ``>`` this.
        use_07_metric: VOC2007 11-point AP instead of the all-points area.
        pixel_offset: ``1`` for inclusive pixel coordinates (VOC files), ``0`` for continuous
            boxes; see the module docstring.

    Returns:
        ``(ap [C] float64, mAP float)``: ``ap[c]`` is NaN for a class without non-difficult
        ground truth and such classes are left out of ``mAP`` (NaN if all are).
    """
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"{len(detections)} images of detections but {len(ground_truths)} of ground truth"
        )
    detections = [_as_detections(d) for d in detections]
    ground_truths = [_as_ground_truth(g) for g in ground_truths]
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        tp, fp, num_positives = voc_class_tp_fp(
            detections, ground_truths, c, iou_threshold, pixel_offset
        )
        if num_positives == 0:
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / float(num_positives)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap[c] = voc_ap(recall, precision, use_07_metric)
    mean = float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")
    return ap, mean
