"""Training targets of the Region Proposal Network (Faster R-CNN §3.1.2–3.1.3).

Shapes: ``B`` images, ``A`` anchors of one image (all feature-map locations × anchors per
location, the same for every image of the batch), ``G`` ground-truth boxes per image (padded).

Anchors are matched to ground truth by IoU (positive ``>= 0.7``, negative ``< 0.3``, plus each
ground-truth box's best anchor(s)), then 256 anchors per image are sampled with up to half
positives. Unlike py-faster-rcnn, anchors crossing the image border are kept (as torchvision and
detectron2 do); the caller may mark them ignored itself.
"""

import tensorflow as tf

from rcnn_zoo.ops.boxes import encode, pairwise_iou
from rcnn_zoo.targets.matcher import match, pad_empty_ground_truth
from rcnn_zoo.targets.sampler import sample_balanced


def rpn_targets(
    anchors,
    gt_boxes,
    gt_labels,
    positive_threshold=0.7,
    negative_threshold=0.3,
    num_samples=256,
    positive_fraction=0.5,
    box_weights=(1.0, 1.0, 1.0, 1.0),
    seed=None,
):
    """Objectness labels and box-regression targets for every anchor.

    Args:
        anchors: ``[A, 4]`` float xyxy anchors in input-image pixels.
        gt_boxes: ``[B, G, 4]`` float xyxy ground-truth boxes in input-image pixels.
        gt_labels: ``[B, G]`` int ground-truth classes, ``-1`` for padding slots.
        positive_threshold, negative_threshold: IoU thresholds of the matcher.
        num_samples: anchors sampled per image.
        positive_fraction: largest share of positives among the sampled anchors.
        box_weights: ``(wx, wy, ww, wh)`` delta weights.
        seed: optional operation seed of the sampler.

    Returns:
        dict with
        ``labels``: ``[B, A]`` float32, ``1`` sampled positive, ``0`` sampled negative,
        ``-1`` not sampled (ignored by the losses);
        ``deltas``: ``[B, A, 4]`` float32 encoded ground-truth box of every positive anchor
        (anchor as reference), zeros elsewhere.
    """
    anchors = tf.cast(tf.convert_to_tensor(anchors), tf.float32)
    gt_boxes, gt_labels = pad_empty_ground_truth(gt_boxes, gt_labels)
    gt_boxes = tf.cast(tf.convert_to_tensor(gt_boxes), tf.float32)
    gt_valid = tf.convert_to_tensor(gt_labels) >= 0

    anchors_batched = anchors[None]  # [1, A, 4], broadcasts against the batch
    iou = pairwise_iou(anchors_batched, gt_boxes)  # [B, A, G]
    matched_gt, match_labels = match(
        iou, gt_valid, positive_threshold, negative_threshold, allow_low_quality_matches=True
    )
    positive, negative = sample_balanced(match_labels, num_samples, positive_fraction, seed=seed)

    labels = tf.where(positive, 1.0, tf.where(negative, 0.0, -1.0))
    matched_boxes = tf.gather(gt_boxes, matched_gt, batch_dims=1)  # [B, A, 4]
    # Non-positive anchors encode against themselves (deltas exactly 0, no log of garbage).
    matched_boxes = tf.where(positive[..., None], matched_boxes, anchors_batched)
    deltas = encode(matched_boxes, anchors_batched, weights=box_weights)
    deltas = tf.where(positive[..., None], deltas, 0.0)
    return {"labels": tf.stop_gradient(labels), "deltas": tf.stop_gradient(deltas)}
