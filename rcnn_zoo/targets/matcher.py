"""IoU matcher: label every anchor/proposal positive, negative or ignored (Faster R-CNN §3.1.2).

Shapes: ``B`` images, ``M`` anchors or candidate boxes per image, ``G`` ground-truth boxes per
image (padded; ``gt_valid`` marks the real ones).

Each of the ``M`` boxes is matched to the ground-truth box it overlaps most. Its label is

* ``1`` (positive) when that IoU is ``>= positive_threshold``,
* ``0`` (negative) when it is ``< negative_threshold`` (also when the image has no ground truth),
* ``-1`` (ignored) in between.

With ``allow_low_quality_matches`` (the RPN rule (i) of the paper) every ground-truth box also
claims the box(es) with the highest IoU with it, ties included, even below
``positive_threshold``, as long as that IoU is above 0. Such a box becomes positive and is matched
to *that* ground-truth box, so every ground-truth box gets at least one positive. (torchvision and
detectron2 keep the box's own argmax instead; the two differ only when a box is the best for one
ground-truth box but overlaps another one more.) If a box is the best one for several ground-truth
boxes, the one it overlaps most wins.
"""

import tensorflow as tf

POSITIVE = 1
NEGATIVE = 0
IGNORED = -1


def pad_empty_ground_truth(gt_boxes, gt_labels):
    """Give ``gt_boxes [B, G, 4]`` / ``gt_labels [B, G]`` at least one (padding) slot.

    With ``G == 0`` (or ``G`` unknown) one slot labelled ``-1`` is appended, so reductions and
    gathers over ``G`` stay defined; a batch with real slots is returned unchanged.
    """
    gt_boxes = tf.convert_to_tensor(gt_boxes)
    gt_labels = tf.convert_to_tensor(gt_labels)
    if gt_labels.shape.rank is not None and gt_labels.shape[-1] not in (None, 0):
        return gt_boxes, gt_labels
    gt_boxes = tf.pad(gt_boxes, [[0, 0], [0, 1], [0, 0]])
    gt_labels = tf.pad(gt_labels, [[0, 0], [0, 1]], constant_values=-1)
    return gt_boxes, gt_labels


def match(iou, gt_valid, positive_threshold, negative_threshold, allow_low_quality_matches):
    """Match ``M`` boxes to ``G`` ground-truth boxes by IoU.

    Args:
        iou: ``[B, M, G]`` float IoU of every box with every ground-truth box.
        gt_valid: ``[B, G]`` bool, False for padded ground-truth slots (they never match).
        positive_threshold: IoU at or above which a box is positive.
        negative_threshold: IoU below which a box is negative (``<= positive_threshold``).
        allow_low_quality_matches: Python bool; also make the best box(es) of every ground-truth
            box positive (see the module docstring).

    Returns:
        ``(matched_gt, match_labels)``: ``[B, M]`` int32 index into ``G`` of the matched
        ground-truth box (0 where the label is not positive), and ``[B, M]`` int32 labels
        ``1`` positive / ``0`` negative / ``-1`` ignored.
    """
    matched_gt, match_labels, _ = match_with_iou(
        iou, gt_valid, positive_threshold, negative_threshold, allow_low_quality_matches
    )
    return matched_gt, match_labels


def match_with_iou(iou, gt_valid, positive_threshold, negative_threshold,
                   allow_low_quality_matches):
    """:func:`match`, also returning the ``[B, M]`` IoU with the best valid ground-truth box.

    The returned IoU is 0 for images without ground truth. Used by the RoI sampler, which needs a
    lower bound for background boxes.
    """
    if negative_threshold > positive_threshold:
        raise ValueError(
            f"negative_threshold ({negative_threshold}) must not exceed "
            f"positive_threshold ({positive_threshold})"
        )
    iou = tf.convert_to_tensor(iou)
    if not iou.dtype.is_floating:
        iou = tf.cast(iou, tf.float32)
    gt_valid = tf.cast(gt_valid, tf.bool)
    if iou.shape[-1] == 0 or iou.shape[-1] is None:  # no gt slot: add one padded column
        iou = tf.pad(iou, [[0, 0], [0, 0], [0, 1]])
        gt_valid = tf.pad(gt_valid, [[0, 0], [0, 1]])
    # Padded columns get IoU -1 so they never win a max; real IoUs are in [0, 1].
    iou = tf.where(gt_valid[:, None, :], iou, tf.constant(-1.0, iou.dtype))

    best_gt = tf.argmax(iou, axis=-1, output_type=tf.int32)  # [B, M]
    best_iou = tf.maximum(tf.reduce_max(iou, axis=-1), 0.0)  # no valid gt -> 0

    positive = best_iou >= positive_threshold
    negative = best_iou < negative_threshold
    labels = tf.where(positive, POSITIVE, tf.where(negative, NEGATIVE, IGNORED))

    if allow_low_quality_matches:
        # Best IoU of every gt over all M boxes; padded gts are -1, gts overlapping nothing 0.
        best_per_gt = tf.reduce_max(iou, axis=1)  # [B, G]
        is_best = tf.logical_and(
            tf.equal(iou, best_per_gt[:, None, :]), (best_per_gt > 0.0)[:, None, :]
        )  # [B, M, G]
        claimed = tf.reduce_any(is_best, axis=-1)  # [B, M]
        claiming_gt = tf.argmax(
            tf.where(is_best, iou, tf.constant(-1.0, iou.dtype)), axis=-1, output_type=tf.int32
        )
        labels = tf.where(claimed, POSITIVE, labels)
        best_gt = tf.where(claimed, claiming_gt, best_gt)

    labels = tf.cast(labels, tf.int32)
    matched_gt = tf.where(labels == POSITIVE, best_gt, tf.zeros_like(best_gt))
    return matched_gt, labels, best_iou
