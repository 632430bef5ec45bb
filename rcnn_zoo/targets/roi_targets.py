"""Training targets of the Fast R-CNN head: sample RoIs from proposals (Fast R-CNN §2.3).

Shapes: ``B`` images, ``P`` proposals per image (padded; ``proposal_valid`` marks the real
ones), ``G`` ground-truth boxes per image (padded), ``S = num_samples`` sampled RoIs per image.

The ground-truth boxes are appended to the proposals (py-faster-rcnn, torchvision), every
candidate is matched to the ground truth by IoU, and ``S`` RoIs are drawn per image: up to
``S * positive_fraction`` foreground RoIs (IoU ``>= foreground_iou``), the rest background
(IoU in ``[background_iou_low, background_iou_high)``). Candidates in neither range are never
drawn. When there are too few candidates, the remaining slots are padding: label ``-1``, box
zeros, ignored by the losses.

Sampled RoIs come in a fixed order per image: foreground first, then background, then padding
(each group in candidate order).
"""

import tensorflow as tf

from rcnn_zoo.ops.boxes import encode, pairwise_iou
from rcnn_zoo.targets.matcher import match_with_iou, pad_empty_ground_truth
from rcnn_zoo.targets.sampler import sample_balanced


def sample_rois(
    proposals,
    proposal_valid,
    gt_boxes,
    gt_labels,
    num_samples=512,
    positive_fraction=0.25,
    foreground_iou=0.5,
    background_iou_high=0.5,
    background_iou_low=0.0,
    box_weights=(10.0, 10.0, 5.0, 5.0),
    append_ground_truth=True,
    seed=None,
):
    """Sample RoIs and their classification / regression targets.

    Args:
        proposals: ``[B, P, 4]`` float xyxy proposals in input-image pixels.
            Gradients do not flow back through them.
        proposal_valid: ``[B, P]`` bool, False for padding proposals.
        gt_boxes: ``[B, G, 4]`` float xyxy ground-truth boxes in input-image pixels.
        gt_labels: ``[B, G]`` int classes ``0 … C-1``, ``-1`` for padding slots.
        num_samples: ``S``, RoIs per image.
        positive_fraction: largest share of foreground RoIs.
        foreground_iou: IoU at or above which a candidate is foreground.
        background_iou_high, background_iou_low: a candidate is background when its IoU is in
            ``[low, high)``; without ground truth its IoU counts as 0.
        box_weights: ``(wx, wy, ww, wh)`` delta weights.
        append_ground_truth: add the valid ground-truth boxes to the candidates.
        seed: optional operation seed of the sampler.

    Returns:
        dict with
        ``rois``: ``[B, S, 4]`` float32 xyxy sampled RoIs (zeros in padding slots);
        ``labels``: ``[B, S]`` int32 head classes, ``0`` background, ``c + 1`` for foreground
        class ``c``, ``-1`` padding;
        ``deltas``: ``[B, S, 4]`` float32 ground truth encoded against the RoI for foreground
        RoIs, zeros elsewhere;
        ``matched_gt``: ``[B, S]`` int32 index into ``G`` of the matched ground-truth box for
        foreground RoIs, 0 elsewhere.
    """
    if background_iou_high > foreground_iou:
        raise ValueError(
            f"background_iou_high ({background_iou_high}) must not exceed "
            f"foreground_iou ({foreground_iou})"
        )
    num_samples = int(num_samples)
    proposals = tf.stop_gradient(tf.cast(tf.convert_to_tensor(proposals), tf.float32))
    proposal_valid = tf.cast(proposal_valid, tf.bool)
    gt_boxes, gt_labels = pad_empty_ground_truth(gt_boxes, gt_labels)
    gt_boxes = tf.stop_gradient(tf.cast(tf.convert_to_tensor(gt_boxes), tf.float32))
    gt_labels = tf.cast(tf.convert_to_tensor(gt_labels), tf.int32)
    gt_valid = gt_labels >= 0

    candidates, candidate_valid = proposals, proposal_valid
    if append_ground_truth:
        candidates = tf.concat([candidates, gt_boxes], axis=1)
        candidate_valid = tf.concat([candidate_valid, gt_valid], axis=1)
    num_candidates = candidates.shape[1]
    if num_candidates is None or num_candidates < num_samples:
        # Pad so that the S slots can always be filled (by S when the count is unknown).
        extra = num_samples if num_candidates is None else num_samples - num_candidates
        candidates = tf.pad(candidates, [[0, 0], [0, extra], [0, 0]])
        candidate_valid = tf.pad(candidate_valid, [[0, 0], [0, extra]])

    iou = pairwise_iou(candidates, gt_boxes)  # [B, M, G]
    # The matcher's negatives are IoU < high; the lower bound and validity are applied here.
    matched_gt, match_labels, best_iou = match_with_iou(
        iou, gt_valid, foreground_iou, background_iou_high, allow_low_quality_matches=False
    )
    is_background = tf.logical_and(match_labels == 0, best_iou >= background_iou_low)
    match_labels = tf.where(match_labels == 1, 1, tf.where(is_background, 0, -1))
    match_labels = tf.where(candidate_valid, match_labels, -1)
    foreground, background = sample_balanced(
        match_labels, num_samples, positive_fraction, seed=seed
    )

    # Foreground (2) before background (1) before the rest (0); top_k keeps index order on ties.
    rank_key = tf.cast(foreground, tf.int32) * 2 + tf.cast(background, tf.int32)
    _, picked = tf.math.top_k(rank_key, k=num_samples, sorted=True)  # [B, S]
    picked_foreground = tf.gather(foreground, picked, batch_dims=1)
    picked_background = tf.gather(background, picked, batch_dims=1)
    picked_valid = tf.logical_or(picked_foreground, picked_background)

    rois = tf.gather(candidates, picked, batch_dims=1)
    rois = tf.where(picked_valid[..., None], rois, 0.0)
    matched_gt = tf.gather(matched_gt, picked, batch_dims=1)
    matched_gt = tf.where(picked_foreground, matched_gt, 0)
    matched_labels = tf.gather(gt_labels, matched_gt, batch_dims=1)
    labels = tf.where(picked_foreground, matched_labels + 1, tf.where(picked_background, 0, -1))

    matched_boxes = tf.gather(gt_boxes, matched_gt, batch_dims=1)
    # Non-foreground slots encode against a unit box (deltas exactly 0, no log of garbage).
    unit_box = tf.constant([0.0, 0.0, 1.0, 1.0])
    reference = tf.where(picked_foreground[..., None], rois, unit_box)
    target = tf.where(picked_foreground[..., None], matched_boxes, unit_box)
    deltas = encode(target, reference, weights=box_weights)
    deltas = tf.where(picked_foreground[..., None], deltas, 0.0)

    return {
        "rois": tf.stop_gradient(rois),
        "labels": tf.cast(labels, tf.int32),
        "deltas": tf.stop_gradient(deltas),
        "matched_gt": tf.cast(matched_gt, tf.int32),
    }
